/* SPDX-License-Identifier: MIT */
/* DescribeInstance through the gateway's unix socket, the same call three
 * ways: gRPC (HTTP/2, the message forwarded as bytes), Connect with JSON
 * (HTTP/1.1, transcoded both ways) and Connect with binary proto (HTTP/1.1,
 * no transcoding). N callers, each on its own connection, as separate
 * clients would be.
 *
 *   hostmesh-gateway-bench SOCKET INSTANCE_ID --mode grpc|json|proto [--callers N] [--seconds S]
 *
 * Prints one line of JSON. */

#include <getopt.h>
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

static void *worker_run(void *userdata) {
        Worker *w = userdata;
        bool grpc = streq(w->mode, "grpc");
        uint64_t end;

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
        }
        /* Warm up the connection outside the measurement. */
        for (int i = 0; i < 50; i++)
                (void) (grpc ? grpc_call(w) : connect_call(w));
        end = bench_now_ns() + (uint64_t) (w->seconds * 1e9);
        while (bench_now_ns() < end) {
                uint64_t t = bench_now_ns();
                if ((grpc ? grpc_call(w) : connect_call(w)) < 0)
                        w->errors++;
                latencies_add(&w->lat, bench_now_ns() - t);
        }
        if (grpc)
                rpc_client_free(w->client);
        else
                close(w->fd);
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
            (!streq(mode, "grpc") && !streq(mode, "json") && !streq(mode, "proto")))
                return fprintf(stderr, "usage: hostmesh-gateway-bench SOCKET INSTANCE_ID --mode grpc|json|proto "
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
