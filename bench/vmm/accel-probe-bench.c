/* SPDX-License-Identifier: MIT */
/* The accelerator probe's parts, timed: the /dev/kvm ioctls, and one QEMU
 * run of the probe guest (under the accelerator given, default tcg, which
 * every machine has; kvm where it works) against a bare QEMU that starts
 * the same machine and exits at once (-S with "quit" on QMP is more than a
 * probe needs; `-version` is QEMU's own floor).
 *
 *   hostmesh-accel-probe-bench [ROUNDS] [ACCEL]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "vmm-accel.h"
#include "vmm-qemu.h"

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n) {
        qsort(v, (size_t) n, sizeof(*v), cmp_u64);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct Run {
        bool done;
        int r;
} Run;

static void on_done(int r, const char *words, void *userdata) {
        Run *run = userdata;
        (void) words;
        run->done = true;
        run->r = r;
}

int main(int argc, char **argv) {
        int rounds = argc > 1 ? atoi(argv[1]) : 10;
        const char *accel = argc > 2 ? argv[2] : "tcg";
        _cleanup_free_ char *qemu = NULL;
        char dir[] = "/tmp/hostmesh-accel-bench-XXXXXX";
        uint64_t dev[100], run[100], bare[100];
        AccelQemuProbe *p = NULL;
        sd_event *e = NULL;

        if (rounds < 1 || rounds > 100 || qemu_find_binary("qemu-system-x86_64", &qemu) < 0 || !mkdtemp(dir)) {
                fprintf(stderr, "usage: %s [ROUNDS 1..100] [tcg|kvm]; needs qemu-system-x86_64\n", argv[0]);
                return 2;
        }
        if (sd_event_new(&e) < 0 || accel_qemu_probe_new(qemu, "microvm", dir, &p) < 0)
                return 1;
        accel_qemu_probe_set(p, accel, 30 * USEC_PER_SEC);
        for (int k = 0; k < rounds; k++) {
                _cleanup_free_ char *error = NULL;
                uint64_t t0 = now_usec();
                int r = accel_qemu_probe_ops.device_check(p, &error);

                dev[k] = now_usec() - t0;
                if (k == 0)
                        printf("device check: %s\n", r < 0 ? error : "KVM answers");

                Run res = {};
                t0 = now_usec();
                if (accel_qemu_probe_ops.run_start(p, e, "max", on_done, &res) < 0)
                        return 1;
                while (!res.done)
                        (void) sd_event_run(e, UINT64_MAX);
                run[k] = now_usec() - t0;
                if (res.r < 0) {
                        fprintf(stderr, "probe run under %s failed: %s\n", accel, strerror(-res.r));
                        return 1;
                }

                t0 = now_usec();
                pid_t pid = fork();
                if (pid == 0) {
                        if (!freopen("/dev/null", "w", stdout))
                                _exit(127);
                        execlp(qemu, qemu, "-version", (char *) NULL);
                        _exit(127);
                }
                (void) waitpid(pid, NULL, 0);
                bare[k] = now_usec() - t0;
        }
        printf("rounds: %d, probe guest under %s\n", rounds, accel);
        printf("/dev/kvm ioctls (median): %.3f ms\n", median(dev, rounds) / 1000.0);
        printf("QEMU probe run, spawn -> second line (median): %.1f ms\n", median(run, rounds) / 1000.0);
        printf("bare `qemu-system-x86_64 -version` (median): %.1f ms\n", median(bare, rounds) / 1000.0);
        printf("ratio probe run / bare QEMU exec: %.2f\n", (double) median(run, rounds) / (double) median(bare, rounds));
        accel_qemu_probe_free(p);
        sd_event_unref(e);
        (void) rmdir(dir);
        return 0;
}
