/* SPDX-License-Identifier: MIT */
/* Measures token issuance and validation.
 *
 *   bench-identity inproc ES256|RS256 SECONDS
 *       issue and validate in this process with identity_core (what
 *       identityd does per call, without the RPC), one thread.
 *   bench-identity grpc unix:/path/identity.sock THREADS SECONDS [issue|jwks]
 *       IssueInstanceToken (or GetJwks: the rpc runtime alone, no crypto)
 *       over gRPC, THREADS blocking callers each with its own channel;
 *       prints calls/s and latency percentiles.
 *
 * Output is key=value lines for bench/identity/run. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "hostmesh/identity/v1/identity.pb-c.h"
#include "identity-issue.h"
#include "identity-validate.h"
#include "rpc.h"

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* User CPU time of this thread: what `openssl speed` reports by default
 * (ops per user CPU second), so both stay comparable on a loaded machine.
 * Wall-clock rates are printed too. */
static uint64_t cpu_usec(void) {
        struct rusage ru;
        getrusage(RUSAGE_THREAD, &ru);
        return (uint64_t) ru.ru_utime.tv_sec * USEC_PER_SEC + (uint64_t) ru.ru_utime.tv_usec;
}

static int inproc(const char *alg_name, double seconds) {
        _cleanup_(jwt_key_unrefp) JwtKey *key = NULL;
        _cleanup_(jwt_keyset_freep) JwtKeySet *ks = NULL;
        JwtAlg alg = jwt_alg_from_string(alg_name);
        const char *const aud[] = { "hostmesh", NULL };
        uint64_t start, end, n = 0, t = (uint64_t) (seconds * USEC_PER_SEC), w0;
        char *tokens[64] = {};
        time_t wall = time(NULL);
        int r;

        if (alg < 0 || jwt_key_generate(alg, &key) < 0 || jwt_keyset_new(&ks) < 0 || jwt_keyset_add(ks, key) < 0)
                return fprintf(stderr, "key setup failed\n"), 1;

        start = cpu_usec();
        w0 = now_usec();
        do {
                TokenIssued ti = {};
                for (int i = 0; i < 16; i++) {
                        r = token_issue(key, "https://bench.example",
                                        &(TokenRequest){ .tenant_id = "tenant", .instance_id = "instance-0001",
                                                         .audience = aud, .lifetime = 3600 },
                                        (uint64_t) wall, &ti);
                        if (r < 0)
                                return fprintf(stderr, "issue failed: %s\n", strerror(-r)), 1;
                        if (n < 64)
                                tokens[n] = TAKE_PTR(ti.token);
                        token_issued_done(&ti);
                        n++;
                }
                end = cpu_usec();
        } while (end - start < t);
        printf("inproc_%s_issue_per_sec=%.0f\n", alg_name, (double) n * USEC_PER_SEC / (double) (end - start));
        printf("inproc_%s_issue_per_wall_sec=%.0f\n", alg_name, (double) n * USEC_PER_SEC / (double) (now_usec() - w0));

        n = 0;
        start = cpu_usec();
        w0 = now_usec();
        do {
                for (int i = 0; i < 16; i++) {
                        json_t *claims = NULL;
                        TokenRefusal why;
                        r = token_validate(tokens[n % 64], ks, NULL,
                                           &(TokenPolicy){ .issuer = "https://bench.example", .audience = "hostmesh",
                                                           .now = (uint64_t) wall, .leeway = 60 },
                                           &claims, &why, NULL);
                        if (r < 0)
                                return fprintf(stderr, "validate failed: %s\n", token_refusal_to_string(why)), 1;
                        json_decref(claims);
                        n++;
                }
                end = cpu_usec();
        } while (end - start < t);
        printf("inproc_%s_validate_per_sec=%.0f\n", alg_name, (double) n * USEC_PER_SEC / (double) (end - start));
        printf("inproc_%s_validate_per_wall_sec=%.0f\n", alg_name, (double) n * USEC_PER_SEC / (double) (now_usec() - w0));
        for (size_t i = 0; i < 64; i++)
                free(tokens[i]);
        return 0;
}

typedef struct Worker {
        const char *target;
        bool jwks;          /* GetJwks instead: the rpc runtime without crypto */
        uint64_t deadline;
        uint64_t calls, errors;
        uint64_t *lat;
        size_t n_lat, max_lat;
        pthread_t thread;
} Worker;

static void *worker_run(void *userdata) {
        Worker *w = userdata;
        RpcClient *client = NULL;
        Hostmesh__Identity__V1__IssueInstanceTokenRequest req = HOSTMESH__IDENTITY__V1__ISSUE_INSTANCE_TOKEN_REQUEST__INIT;
        char *aud[] = { (char *) "hostmesh" };

        req.tenant_id = (char *) "tenant";
        req.instance_id = (char *) "instance-0001";
        req.n_audience = 1;
        req.audience = aud;
        if (rpc_client_new(NULL, w->target, &client) < 0) {
                w->errors++;
                return NULL;
        }
        while (now_usec() < w->deadline) {
                ProtobufCMessage *resp = NULL;
                uint64_t t0 = now_usec();
                Hostmesh__Identity__V1__GetJwksRequest jreq = HOSTMESH__IDENTITY__V1__GET_JWKS_REQUEST__INIT;
                int r = w->jwks ? rpc_client_call(client, "/hostmesh.identity.v1.Identity/GetJwks", NULL, &jreq.base,
                                                  &hostmesh__identity__v1__get_jwks_response__descriptor,
                                                  10 * USEC_PER_SEC, &resp, NULL)
                                : rpc_client_call(client, "/hostmesh.identity.v1.Identity/IssueInstanceToken", NULL,
                                                  &req.base,
                                                  &hostmesh__identity__v1__issue_instance_token_response__descriptor,
                                                  10 * USEC_PER_SEC, &resp, NULL);
                uint64_t dt = now_usec() - t0;
                if (r < 0) {
                        w->errors++;
                        continue;
                }
                protobuf_c_message_free_unpacked(resp, NULL);
                w->calls++;
                if (w->n_lat < w->max_lat)
                        w->lat[w->n_lat++] = dt;
        }
        rpc_client_free(client);
        return NULL;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static int grpc_bench(const char *target, int threads, double seconds, bool jwks) {
        const char *what = jwks ? "jwks" : "issue";
        Worker *w = calloc((size_t) threads, sizeof(Worker));
        uint64_t start, end, calls = 0, errors = 0, *all;
        size_t n_all = 0;

        if (!w)
                return 1;
        start = now_usec();
        for (int i = 0; i < threads; i++) {
                w[i] = (Worker){ .target = target, .jwks = jwks, .deadline = start + (uint64_t) (seconds * USEC_PER_SEC),
                                 .max_lat = 2000000 };
                w[i].lat = malloc(w[i].max_lat * sizeof(uint64_t));
                pthread_create(&w[i].thread, NULL, worker_run, &w[i]);
        }
        for (int i = 0; i < threads; i++)
                pthread_join(w[i].thread, NULL);
        end = now_usec();
        all = malloc(threads * 2000000 * sizeof(uint64_t));
        for (int i = 0; i < threads; i++) {
                calls += w[i].calls;
                errors += w[i].errors;
                memcpy(all + n_all, w[i].lat, w[i].n_lat * sizeof(uint64_t));
                n_all += w[i].n_lat;
                free(w[i].lat);
        }
        qsort(all, n_all, sizeof(uint64_t), cmp_u64);
        printf("grpc_%s_%d_per_sec=%.0f\n", what, threads, (double) calls * USEC_PER_SEC / (double) (end - start));
        printf("grpc_%s_%d_errors=%" PRIu64 "\n", what, threads, errors);
        if (n_all > 0) {
                printf("grpc_%s_%d_p50_us=%" PRIu64 "\n", what, threads, all[n_all / 2]);
                printf("grpc_%s_%d_p99_us=%" PRIu64 "\n", what, threads, all[n_all * 99 / 100]);
        }
        free(all);
        free(w);
        return errors > 0 && calls == 0;
}

int main(int argc, char **argv) {
        if (argc == 4 && streq(argv[1], "inproc"))
                return inproc(argv[2], atof(argv[3]));
        if ((argc == 5 || argc == 6) && streq(argv[1], "grpc"))
                return grpc_bench(argv[2], atoi(argv[3]), atof(argv[4]), argc == 6 && streq(argv[5], "jwks"));
        fprintf(stderr, "usage: %s inproc ES256|RS256 SECONDS | grpc TARGET THREADS SECONDS [issue|jwks]\n", argv[0]);
        return 2;
}
