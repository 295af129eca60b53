/* SPDX-License-Identifier: MIT */
/* Instance network setup and teardown: the network helper (rtnetlink and
 * one nftables batch per step, through hostmesh-vmm-nethelper) against the
 * shell-out equivalent (`ip -batch` for the tap and `nft -f` of the same
 * rules from nft_text_*). Runs in a network namespace of its own.
 *
 *   hostmesh-net-bench HELPER [ITERATIONS] [INSTANCES]
 *
 * Prints one table: p50/p90 in microseconds per path and step, and the
 * ratio shell-out / helper. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmm-nethelper.h"
#include "vmm-nft.h"

extern char **environ;

static char tmpdir[] = "/tmp/hostmesh-net-bench.XXXXXX";

static uint64_t now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void die(const char *what, int r, const char *msg) {
        fprintf(stderr, "%s: %s%s%s\n", what, strerror(r < 0 ? -r : r), msg ? ": " : "", msg ?: "");
        exit(1);
}

static void run(char *const argv[]) {
        pid_t pid;
        int status, r;

        r = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
        if (r != 0)
                die(argv[0], r, NULL);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                die(argv[0], EIO, argv[2]);
}

static void write_file(const char *name, const char *text) {
        char path[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
        f = fopen(path, "we");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
                die(path, errno, NULL);
}

static const char *file(const char *name) {
        static char paths[8][256];
        static unsigned next;
        char *p = paths[next++ % 8];

        snprintf(p, 256, "%s/%s", tmpdir, name);
        return p;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, unsigned p) {
        qsort(v, n, sizeof(*v), cmp_u64);
        return v[(n - 1) * p / 100];
}

static void apply(NetHelper *h, NftBatch *b) {
        char *error = NULL;
        int r;

        r = nethelper_apply(h, nft_batch_data(b), nft_batch_size(b), &error);
        if (r < 0)
                die("apply", r, error);
}

static void report(const char *what, uint64_t *helper, uint64_t *shell, size_t n) {
        uint64_t h50 = pct(helper, n, 50), h90 = pct(helper, n, 90);
        uint64_t s50 = pct(shell, n, 50), s90 = pct(shell, n, 90);

        printf("%-34s %9llu %9llu %9llu %9llu %7.1fx\n", what, (unsigned long long) h50, (unsigned long long) h90,
               (unsigned long long) s50, (unsigned long long) s90, h50 ? (double) s50 / (double) h50 : 0.0);
}

int main(int argc, char *argv[]) {
        NftNetwork net = { .bridge = "hm0", .prefixlen = 16, .dns_port = 5353 };
        NftInstance inst = { .tap = "hmtb", .mac = { 0x02, 0x48, 0x4d, 0, 0x10, 0x01 } };
        NftPair pairs[2];
        size_t iterations = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
        size_t n_instances = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
        uint64_t *h_all, *h_rules, *s_all, *s_rules, *h_up, *h_down, *s_up, *s_down;
        char *text, *error = NULL;
        NetHelper *h = NULL;
        NftBatch *b;
        int r;

        /* Tap names and addresses are numbered within the /16 pool. */
        if (argc < 2 || iterations == 0 || n_instances > 60000) {
                fprintf(stderr, "usage: %s HELPER [ITERATIONS] [INSTANCES]\n", argv[0]);
                return 2;
        }
        if (unshare(CLONE_NEWNET) < 0)
                die("unshare(CLONE_NEWNET)", errno, "needs root");
        if (!mkdtemp(tmpdir))
                die("mkdtemp", errno, NULL);
        run((char *[]) { "ip", "link", "set", "lo", "up", NULL });

        inet_pton(AF_INET, "10.88.0.1", &net.gateway);
        inet_pton(AF_INET, "10.88.0.0", &net.pool);
        inet_pton(AF_INET, "10.88.16.1", &inst.address);
        pairs[0] = (NftPair) { .a = inst.address, .b = net.gateway };
        inet_pton(AF_INET, "10.88.0.9", &pairs[0].b);
        pairs[1] = (NftPair) { .a = pairs[0].b, .b = inst.address };

        r = nethelper_spawn(argv[1], &h);
        if (r < 0)
                die(argv[1], r, NULL);
        r = nethelper_setup_bridge(h, net.bridge, net.gateway, net.prefixlen, &error);
        if (r < 0)
                die("setup_bridge", r, error);
        nft_batch_new(&b);
        r = nft_batch_replace_table(b, &net, NULL, 0, NULL, 0);
        if (r < 0)
                die("replace_table", r, NULL);
        apply(h, b);
        nft_batch_free(b);

        /* The shell-out peer's files are written once, outside the timing:
         * a daemon would generate the same text in memory. */
        if (nft_text_add_instance(&net, &inst, pairs, 2, &text) < 0)
                die("text", ENOMEM, NULL);
        write_file("add.nft", text);
        free(text);
        if (nft_text_remove_instance(&net, &inst, pairs, 2, &text) < 0)
                die("text", ENOMEM, NULL);
        write_file("remove.nft", text);
        free(text);
        write_file("tap-up.ip", "tuntap add dev hmtb mode tap vnet_hdr\n"
                                "link set dev hmtb master hm0\n"
                                "link set dev hmtb type bridge_slave isolated on\n"
                                "link set dev hmtb up\n"
                                "neigh replace 10.88.16.1 lladdr 02:48:4d:00:10:01 dev hm0 nud permanent\n");
        write_file("tap-down.ip", "link del dev hmtb\nneigh del 10.88.16.1 dev hm0\n");

        h_all = calloc(iterations, sizeof(uint64_t));
        h_rules = calloc(iterations, sizeof(uint64_t));
        s_all = calloc(iterations, sizeof(uint64_t));
        s_rules = calloc(iterations, sizeof(uint64_t));
        h_up = calloc(iterations, sizeof(uint64_t));
        h_down = calloc(iterations, sizeof(uint64_t));
        s_up = calloc(iterations, sizeof(uint64_t));
        s_down = calloc(iterations, sizeof(uint64_t));
        if (!h_all || !h_rules || !s_all || !s_rules || !h_up || !h_down || !s_up || !s_down)
                die("calloc", ENOMEM, NULL);

        /* Interleaved, so that both paths see the same machine load. */
        for (size_t k = 0; k < iterations; k++) {
                uint64_t t0, t1, t2, t3, t4;
                int fd = -1;

                t0 = now_us();
                r = nethelper_create_tap(h, net.bridge, inst.tap, inst.mac, inst.address, &fd, &error);
                if (r < 0)
                        die("create_tap", r, error);
                t1 = now_us();
                nft_batch_new(&b);
                nft_batch_add_instance(b, &net, &inst, pairs, 2);
                apply(h, b);
                nft_batch_free(b);
                nft_batch_new(&b);
                nft_batch_remove_instance(b, &net, &inst, pairs, 2);
                apply(h, b);
                nft_batch_free(b);
                t2 = now_us();
                close(fd);
                r = nethelper_delete_tap(h, net.bridge, inst.tap, inst.address, &error);
                if (r < 0)
                        die("delete_tap", r, error);
                t3 = now_us();
                h_all[k] = t3 - t0;
                h_rules[k] = t2 - t1;
                h_up[k] = t1 - t0;
                h_down[k] = t3 - t2;

                t0 = now_us();
                run((char *[]) { "ip", "-batch", (char *) file("tap-up.ip"), NULL });
                t1 = now_us();
                run((char *[]) { "nft", "-f", (char *) file("add.nft"), NULL });
                run((char *[]) { "nft", "-f", (char *) file("remove.nft"), NULL });
                t2 = now_us();
                run((char *[]) { "ip", "-batch", (char *) file("tap-down.ip"), NULL });
                t4 = now_us();
                s_all[k] = t4 - t0;
                s_rules[k] = t2 - t1;
                s_up[k] = t1 - t0;
                s_down[k] = t4 - t2;
        }

        printf("%zu iterations; microseconds; ratio = shell-out p50 / helper p50\n", iterations);
        printf("%-34s %9s %9s %9s %9s %8s\n", "step", "helper50", "helper90", "shell50", "shell90", "ratio");
        report("instance up + down (tap + rules)", h_all, s_all, iterations);
        report("rules only (add + remove batch)", h_rules, s_rules, iterations);
        report("tap up (create_tap / ip -batch)", h_up, s_up, iterations);
        report("tap down (delete_tap / ip -batch)", h_down, s_down, iterations);

        /* The start-up reconciliation: the whole table for n_instances
         * (their taps must exist for the ingress chains). */
        if (n_instances > 0) {
                NftInstance *is = calloc(n_instances, sizeof(*is));
                NftPair *ps = calloc(n_instances, sizeof(*ps));
                char (*names)[IFNAMSIZ] = calloc(n_instances, IFNAMSIZ);
                uint64_t hr[5], sr[5];
                size_t batch_size = 0;
                int *fds = calloc(n_instances, sizeof(int));

                if (!is || !ps || !names || !fds)
                        die("calloc", ENOMEM, NULL);
                for (size_t k = 0; k < n_instances; k++) {
                        snprintf(names[k], IFNAMSIZ, "hmr%u", (unsigned) (k % 100000));
                        is[k] = (NftInstance) { .tap = names[k],
                                                .mac = { 0x02, 0x48, 0x4e, 0, (uint8_t) (k >> 8), (uint8_t) k } };
                        is[k].address.s_addr = htonl(0x0a580000u + 0x100u + (uint32_t) k);
                        r = nethelper_create_tap(h, net.bridge, is[k].tap, is[k].mac, is[k].address, &fds[k], &error);
                        if (r < 0)
                                die("create_tap", r, error);
                }
                /* Each instance may talk to the next. */
                for (size_t k = 0; k < n_instances; k++)
                        ps[k] = (NftPair) { .a = is[k].address, .b = is[(k + 1) % n_instances].address };
                if (nft_text_replace_table(&net, is, n_instances, ps, n_instances, &text) < 0)
                        die("text", ENOMEM, NULL);
                write_file("replace.nft", text);
                free(text);
                for (size_t k = 0; k < ELEMENTSOF(hr); k++) {
                        uint64_t t0 = now_us();

                        nft_batch_new(&b);
                        r = nft_batch_replace_table(b, &net, is, n_instances, ps, n_instances);
                        if (r < 0)
                                die("replace_table", r, NULL);
                        batch_size = nft_batch_size(b);
                        apply(h, b);
                        nft_batch_free(b);
                        hr[k] = now_us() - t0;
                        t0 = now_us();
                        run((char *[]) { "nft", "-f", (char *) file("replace.nft"), NULL });
                        sr[k] = now_us() - t0;
                }
                {
                        char what[64];

                        snprintf(what, sizeof(what), "replace table, %zu instances", n_instances);
                        report(what, hr, sr, ELEMENTSOF(hr));
                }
                printf("(replace table: 5 runs each, batch of %zu bytes)\n", batch_size);
                for (size_t k = 0; k < n_instances; k++)
                        close(fds[k]);
                free(is);
                free(ps);
                free(names);
                free(fds);
        }

        nethelper_free(h);
        run((char *[]) { "rm", "-rf", tmpdir, NULL });
        return 0;
}
