/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "gateway-manager.h"
#include "gateway-metrics.h"
#include "hostmesh/common/v1/metrics.pb-c.h"
#include "metrics.h"
#include "paths.h"
#include "rpc-raw.h"

typedef struct Collect {
        Manager *manager;
        unsigned pending;
        char *parts_text[HOSTMESH_PARTS_MAX];
        json_t *errors;
        GatewayMetricsDone done;
        void *userdata;
} Collect;

typedef struct CollectOne {
        Collect *collect;
        size_t index;
} CollectOne;

/* Adds part="<name>" to every sample line of an exposition. */
static char *label_text(const char *text, const char *part) {
        size_t cap = strlen(text) * 2 + 64, len = 0;
        char *out = malloc(cap);
        const char *line = text;

        if (!out)
                return NULL;
        while (*line) {
                const char *end = strchr(line, '\n');
                size_t l = end ? (size_t) (end - line) : strlen(line);
                char extra[96];
                const char *brace = memchr(line, '{', l), *space = memchr(line, ' ', l);
                size_t need;

                if (line[0] == '#' || l == 0 || !space)
                        snprintf(extra, sizeof(extra), "%s", "");
                else if (brace && brace < space)
                        snprintf(extra, sizeof(extra), "part=\"%s\",", part);
                else
                        snprintf(extra, sizeof(extra), "{part=\"%s\"}", part);
                need = len + l + strlen(extra) + 2;
                if (need > cap) {
                        char *n = realloc(out, need * 2);
                        if (!n)
                                return free(out), NULL;
                        out = n;
                        cap = need * 2;
                }
                if (!*extra || line[0] == '#') {
                        memcpy(out + len, line, l);
                        len += l;
                } else if (brace && brace < space) {
                        size_t pre = (size_t) (brace - line) + 1;
                        memcpy(out + len, line, pre);
                        len += pre;
                        memcpy(out + len, extra, strlen(extra));
                        len += strlen(extra);
                        memcpy(out + len, line + pre, l - pre);
                        len += l - pre;
                } else {
                        size_t pre = (size_t) (space - line);
                        memcpy(out + len, line, pre);
                        len += pre;
                        memcpy(out + len, extra, strlen(extra));
                        len += strlen(extra);
                        memcpy(out + len, line + pre, l - pre);
                        len += l - pre;
                }
                out[len++] = '\n';
                line = end ? end + 1 : line + l;
        }
        out[len] = 0;
        return out;
}

static void collect_finish(Collect *c) {
        size_t total = 1;
        char *text, *p;

        for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++)
                total += c->parts_text[i] ? strlen(c->parts_text[i]) : 0;
        text = malloc(total);
        if (text) {
                p = text;
                for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++)
                        if (c->parts_text[i])
                                p = stpcpy(p, c->parts_text[i]);
                *p = 0;
        }
        c->done(text ? text : "", c->errors, c->userdata);
        free(text);
        for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++)
                free(c->parts_text[i]);
        json_decref(c->errors);
        free(c);
}

static void on_part_metrics(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        CollectOne *one = userdata;
        Collect *c = one->collect;
        const char *part = hostmesh_parts[one->index];

        if (r < 0)
                json_object_set_new(c->errors, part, json_string(status->message ? status->message : "unavailable"));
        else {
                const Hostmesh__Common__V1__GetMetricsResponse *resp = (const void *) response;
                c->parts_text[one->index] = label_text(resp->text, part);
        }
        free(one);
        if (--c->pending == 0)
                collect_finish(c);
}

int gateway_metrics_collect(Manager *m, const char *only_part, GatewayMetricsDone done, void *userdata) {
        Hostmesh__Common__V1__GetMetricsRequest req = HOSTMESH__COMMON__V1__GET_METRICS_REQUEST__INIT;
        Collect *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->manager = m;
        c->done = done;
        c->userdata = userdata;
        c->errors = json_object();
        c->pending = 1; /* held until every request is out */

        for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++) {
                const char *part = hostmesh_parts[i];
                CollectOne *one;
                Backend *b;
                RpcClient *client;
                int r;

                if (!isempty(only_part) && !streq(only_part, part))
                        continue;
                if (streq(part, "gateway")) {
                        _cleanup_free_ char *text = NULL;
                        if (metrics_format(rpc_server_metrics(m->server), NULL, &text) >= 0)
                                c->parts_text[i] = label_text(text, part);
                        continue;
                }
                b = manager_find_backend(m, part);
                client = b ? backend_client(m, b) : NULL;
                one = malloc(sizeof(*one));
                if (!client || !one) {
                        free(one);
                        json_object_set_new(c->errors, part, json_string("no channel"));
                        continue;
                }
                *one = (CollectOne){ c, i };
                c->pending++;
                r = rpc_client_call_async(client, "/hostmesh.common.v1.Metrics/GetMetrics", NULL, &req.base,
                                          &hostmesh__common__v1__get_metrics_response__descriptor,
                                          2 * USEC_PER_SEC, on_part_metrics, one);
                if (r < 0) {
                        c->pending--;
                        free(one);
                        json_object_set_new(c->errors, part, json_string(strerror(-r)));
                }
        }
        if (--c->pending == 0)
                collect_finish(c);
        return 0;
}
