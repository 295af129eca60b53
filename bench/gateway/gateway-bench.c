/* SPDX-License-Identifier: MIT */
/* DescribeInstance through the gateway's unix socket, the same call four
 * ways: gRPC (HTTP/2, the message forwarded as bytes), Connect with JSON
 * (HTTP/1.1, transcoded both ways), Connect with binary proto (HTTP/1.1,
 * no transcoding) and Connect with JSON over HTTP/2 (h2c, prior knowledge;
 * an nghttp2 client). N callers, each on its own connection, as separate
 * clients would be.
 *
 *   hostmesh-gateway-bench SOCKET INSTANCE_ID --mode grpc|json|proto|h2json [--callers N] [--seconds S]
 *
 * Prints one line of JSON. */

#include <getopt.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "latency.h"
#include "macro.h"
#include "namespace/cloud/compute/v1beta/compute.pb-c.h"
#include "rpc.h"

#define METHOD "/namespace.cloud.compute.v1beta.ComputeService/DescribeInstance"

typedef struct Worker {
        pthread_t thread;
        const char *socket, *instance, *mode;
        double seconds;
        Latencies lat;
        int errors;
        int fd;
        RpcClient *client;
        char buf[65536];
        size_t have;
        /* h2json */
        nghttp2_session *h2;
        char body[256];
        size_t body_len, body_sent;
        bool done;
        int status;
} Worker;

static int grpc_call(Worker *w) {
        Namespace__Cloud__Compute__V1beta__DescribeInstanceRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__DESCRIBE_INSTANCE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        int r;

        req.instance_id = (char *) w->instance;
        r = rpc_client_call(w->client, METHOD, NULL, &req.base,
                            &namespace__cloud__compute__v1beta__describe_instance_response__descriptor,
                            10 * USEC_PER_SEC, &resp, NULL);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

/* One HTTP/1.1 request on the kept-alive connection; reads the whole answer. */
static int connect_call(Worker *w) {
        char req[1024], body[256];
        size_t blen;
        int n;

        if (streq(w->mode, "json"))
                blen = (size_t) snprintf(body, sizeof(body), "{\"instanceId\":\"%s\"}", w->instance);
        else {
                /* DescribeInstanceRequest: field 1 (instance_id), length-delimited */
                size_t l = strlen(w->instance);
                body[0] = 0x0a;
                body[1] = (char) l;
                memcpy(body + 2, w->instance, l);
                blen = l + 2;
        }
        n = snprintf(req, sizeof(req),
                     "POST " METHOD " HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/%s\r\n"
                     "Connect-Protocol-Version: 1\r\nContent-Length: %zu\r\n\r\n",
                     streq(w->mode, "json") ? "json" : "proto", blen);
        memcpy(req + n, body, blen);
        if (write(w->fd, req, (size_t) n + blen) != (ssize_t) ((size_t) n + blen))
                return -EIO;
        w->have = 0;
        for (;;) {
                ssize_t k = read(w->fd, w->buf + w->have, sizeof(w->buf) - 1 - w->have);
                char *end, *cl;
                if (k <= 0)
                        return -EIO;
                w->have += (size_t) k;
                w->buf[w->have] = 0;
                end = strstr(w->buf, "\r\n\r\n");
                if (!end)
                        continue;
                cl = strstr(w->buf, "Content-Length: ");
                if (!cl || cl > end)
                        return -EBADMSG;
                if (w->have >= (size_t) (end + 4 - w->buf) + strtoul(cl + 16, NULL, 10))
                        return strncmp(w->buf, "HTTP/1.1 200 ", 13) == 0 ? 0 : -EBADMSG;
        }
}

/* ---- Connect JSON over h2c, with an nghttp2 client on a blocking socket ---- */

static ssize_t h2_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *userdata) {
        Worker *w = userdata;
        (void) s;
        (void) flags;
        ssize_t n = send(w->fd, data, len, MSG_NOSIGNAL);
        return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

static int h2_header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *userdata) {
        Worker *w = userdata;
        (void) s;
        (void) f;
        (void) flags;
        if (namelen == 7 && memcmp(name, ":status", 7) == 0)
                w->status = (int) strtol((const char *) value, NULL, 10) * (valuelen > 0);
        return 0;
}

static int h2_data_cb(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *userdata) {
        Worker *w = userdata;
        (void) s;
        (void) flags;
        (void) id;
        if (w->have + len < sizeof(w->buf))
                memcpy(w->buf + w->have, data, len);
        w->have += len;
        return 0;
}

static int h2_close_cb(nghttp2_session *s, int32_t id, uint32_t error_code, void *userdata) {
        Worker *w = userdata;
        (void) s;
        (void) id;
        if (error_code != 0)
                w->status = -1;
        w->done = true;
        return 0;
}

static ssize_t h2_body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                          nghttp2_data_source *src, void *userdata) {
        Worker *w = userdata;
        size_t n = MIN(len, w->body_len - w->body_sent);
        (void) s;
        (void) id;
        (void) src;
        memcpy(buf, w->body + w->body_sent, n);
        w->body_sent += n;
        if (w->body_sent == w->body_len)
                *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t) n;
}

static int h2_setup(Worker *w) {
        nghttp2_session_callbacks *cbs;
        if (nghttp2_session_callbacks_new(&cbs) != 0)
                return -ENOMEM;
        nghttp2_session_callbacks_set_send_callback(cbs, h2_send_cb);
        nghttp2_session_callbacks_set_on_header_callback(cbs, h2_header_cb);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_data_cb);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_close_cb);
        int r = nghttp2_session_client_new(&w->h2, cbs, w);
        nghttp2_session_callbacks_del(cbs);
        if (r != 0 || nghttp2_submit_settings(w->h2, NGHTTP2_FLAG_NONE, NULL, 0) != 0)
                return -ENOMEM;
        return 0;
}

static int h2_connect_call(Worker *w) {
        char length[16] = "";
        nghttp2_nv nv[] = {
#define NV(n, v) { (uint8_t *) (n), (uint8_t *) (v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }
                NV(":method", "POST"), NV(":scheme", "http"), NV(":authority", "gateway"), NV(":path", METHOD),
                NV("content-type", "application/json"), NV("connect-protocol-version", "1"), NV("content-length", length),
#undef NV
        };
        nghttp2_data_provider prd = { .read_callback = h2_body_cb };

        w->body_len = (size_t) snprintf(w->body, sizeof(w->body), "{\"instanceId\":\"%s\"}", w->instance);
        snprintf(length, sizeof(length), "%zu", w->body_len);
        nv[6].valuelen = strlen(length);
        w->body_sent = 0;
        w->have = 0;
        w->done = false;
        w->status = 0;
        if (nghttp2_submit_request(w->h2, NULL, nv, ELEMENTSOF(nv), &prd, NULL) < 0)
                return -EIO;
        while (!w->done) {
                uint8_t in[16384];
                ssize_t n;
                if (nghttp2_session_send(w->h2) != 0)
                        return -EIO;
                if (w->done)
                        break;
                n = recv(w->fd, in, sizeof(in), 0);
                if (n <= 0 || nghttp2_session_mem_recv(w->h2, in, (size_t) n) < 0)
                        return -EIO;
        }
        (void) nghttp2_session_send(w->h2);  /* WINDOW_UPDATEs, SETTINGS ACK */
        return w->status == 200 && w->have > 0 ? 0 : -EBADMSG;
}

static void *worker_run(void *userdata) {
        Worker *w = userdata;
        bool grpc = streq(w->mode, "grpc"), h2 = streq(w->mode, "h2json");
        uint64_t end;
#define CALL(w) (grpc ? grpc_call(w) : h2 ? h2_connect_call(w) : connect_call(w))

        if (grpc) {
                char target[256];
                snprintf(target, sizeof(target), "unix:%s", w->socket);
                if (rpc_client_new(NULL, target, &w->client) < 0)
                        return NULL;
        } else {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", w->socket);
                w->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (w->fd < 0 || connect(w->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        return NULL;
                /* nghttp2's client sends the preface itself. */
                if (h2 && h2_setup(w) < 0)
                        return NULL;
        }
        /* Warm up the connection outside the measurement. */
        for (int i = 0; i < 50; i++)
                (void) CALL(w);
        end = bench_now_ns() + (uint64_t) (w->seconds * 1e9);
        while (bench_now_ns() < end) {
                uint64_t t = bench_now_ns();
                if (CALL(w) < 0)
                        w->errors++;
                latencies_add(&w->lat, bench_now_ns() - t);
        }
        if (grpc)
                rpc_client_free(w->client);
        else {
                nghttp2_session_del(w->h2);
                close(w->fd);
        }
        return NULL;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "mode", required_argument, NULL, 'm' },
                { "callers", required_argument, NULL, 'c' },
                { "seconds", required_argument, NULL, 's' },
                {}
        };
        const char *mode = "grpc";
        unsigned callers = 1;
        double seconds = 3;
        Worker *w;
        Latencies all = {};
        int c, errors = 0;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'm':
                        mode = optarg;
                        break;
                case 'c':
                        callers = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 's':
                        seconds = strtod(optarg, NULL);
                        break;
                default:
                        return 2;
                }
        if (optind + 2 != argc || callers == 0 || callers > 256 ||
            (!streq(mode, "grpc") && !streq(mode, "json") && !streq(mode, "proto") && !streq(mode, "h2json")))
                return fprintf(stderr, "usage: hostmesh-gateway-bench SOCKET INSTANCE_ID --mode grpc|json|proto|h2json "
                               "[--callers N] [--seconds S]\n"), 2;
        w = calloc(callers, sizeof(Worker));
        if (!w)
                return 1;
        for (unsigned i = 0; i < callers; i++) {
                w[i].socket = argv[optind];
                w[i].instance = argv[optind + 1];
                w[i].mode = mode;
                w[i].seconds = seconds;
                w[i].fd = -1;
                pthread_create(&w[i].thread, NULL, worker_run, &w[i]);
        }
        for (unsigned i = 0; i < callers; i++) {
                pthread_join(w[i].thread, NULL);
                errors += w[i].errors;
                latencies_take(&all, &w[i].lat);
        }
        LatencySummary sum = latencies_summarize(&all);
        printf("{\"mode\": \"%s\", \"callers\": %u, \"calls\": %zu, \"errors\": %d, \"per_sec\": %.0f, "
               "\"p50_us\": %.1f, \"p99_us\": %.1f}\n",
               mode, callers, sum.calls, errors, (double) sum.calls / seconds, sum.p50_us, sum.p99_us);
        latencies_done(&all);
        free(w);
        return errors > 0 && sum.calls == 0;
}
