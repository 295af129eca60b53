/* SPDX-License-Identifier: MIT */
/* Health-check latency and throughput against one target with N concurrent
 * callers, each on its own channel (as separate client processes would be).
 *
 *   hostmesh-rpc-bench TARGET [--part P] [--callers N] [--seconds S] [--first]
 *
 * --first measures only the first call (cold start under socket activation).
 * Prints one line of JSON. */

#include <getopt.h>
#include <pthread.h>
#include <time.h>

#include "latency.h"
#include "grpc/health/v1/health.pb-c.h"
#include "macro.h"
#include "parse-util.h"
#include "rpc.h"

typedef struct Worker {
        pthread_t thread;
        const char *target, *part;
        double seconds;
        Latencies lat;
        int errors;
} Worker;

static int one_call(RpcClient *c, const char *part) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        const char *md[] = { "x-hostmesh-part", part, NULL };
        int r;

        req.service = (char *) "";
        r = rpc_client_call(c, "/grpc.health.v1.Health/Check", part ? md : NULL, &req.base,
                            &grpc__health__v1__health_check_response__descriptor, 10 * USEC_PER_SEC, &resp, NULL);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

static void *worker_run(void *userdata) {
        Worker *w = userdata;
        RpcClient *c;
        uint64_t end;

        if (rpc_client_new(NULL, w->target, &c) < 0)
                return NULL;
        /* Warm up the connection outside the measurement. */
        for (int i = 0; i < 50; i++)
                (void) one_call(c, w->part);
        end = bench_now_ns() + (uint64_t) (w->seconds * 1e9);
        while (bench_now_ns() < end) {
                uint64_t t = bench_now_ns();
                if (one_call(c, w->part) < 0)
                        w->errors++;
                latencies_add(&w->lat, bench_now_ns() - t);
        }
        rpc_client_free(c);
        return NULL;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "part", required_argument, NULL, 'p' },
                { "callers", required_argument, NULL, 'c' },
                { "seconds", required_argument, NULL, 's' },
                { "first", no_argument, NULL, 'f' },
                {},
        };
        const char *part = NULL;
        unsigned callers = 1;
        double seconds = 3;
        bool first = false;
        int c;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'p':
                        part = optarg;
                        break;
                case 'c':
                        if (safe_atou32(optarg, &callers) < 0 || callers == 0 || callers > 256)
                                return fprintf(stderr, "--callers: 1..256\n"), 2;
                        break;
                case 's':
                        seconds = atof(optarg);
                        break;
                case 'f':
                        first = true;
                        break;
                default:
                        return 2;
                }
        if (optind != argc - 1)
                return fprintf(stderr, "usage: hostmesh-rpc-bench TARGET [--part P] [--callers N] [--seconds S] [--first]\n"), 2;

        if (first) {
                RpcClient *cl;
                uint64_t t = bench_now_ns();
                int r;
                if (rpc_client_new(NULL, argv[optind], &cl) < 0)
                        return 1;
                r = one_call(cl, part);
                printf("{\"first_call_ms\": %.2f, \"ok\": %s}\n", (double) (bench_now_ns() - t) / 1e6, r >= 0 ? "true" : "false");
                rpc_client_free(cl);
                return r < 0;
        }

        Worker *w = calloc(callers, sizeof(Worker));
        Latencies all = {};
        int errors = 0;
        for (unsigned i = 0; i < callers; i++) {
                w[i] = (Worker){ .target = argv[optind], .part = part, .seconds = seconds };
                pthread_create(&w[i].thread, NULL, worker_run, &w[i]);
        }
        for (unsigned i = 0; i < callers; i++) {
                pthread_join(w[i].thread, NULL);
                errors += w[i].errors;
                latencies_take(&all, &w[i].lat);
        }
        LatencySummary sum = latencies_summarize(&all);
        printf("{\"callers\": %u, \"calls\": %zu, \"errors\": %d, \"per_sec\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f}\n",
               callers, sum.calls, errors, (double) sum.calls / seconds, sum.p50_us, sum.p99_us);
        latencies_done(&all);
        free(w);
        return errors > 0;
}
