/* SPDX-License-Identifier: MIT */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "latency.h"

uint64_t bench_now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static void reserve(Latencies *l, size_t n) {
        size_t cap = l->cap ? l->cap : 65536;

        if (l->n + n <= l->cap)
                return;
        while (cap < l->n + n)
                cap *= 2;
        l->ns = realloc(l->ns, cap * sizeof(uint64_t));
        if (!l->ns)
                abort();
        l->cap = cap;
}

void latencies_add(Latencies *l, uint64_t ns) {
        reserve(l, 1);
        l->ns[l->n++] = ns;
}

void latencies_take(Latencies *all, Latencies *part) {
        if (part->n > 0) {
                reserve(all, part->n);
                memcpy(all->ns + all->n, part->ns, part->n * sizeof(uint64_t));
                all->n += part->n;
        }
        latencies_done(part);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

LatencySummary latencies_summarize(Latencies *l) {
        if (l->n == 0)
                return (LatencySummary){};
        qsort(l->ns, l->n, sizeof(uint64_t), cmp_u64);
        return (LatencySummary){
                .calls = l->n,
                .p50_us = (double) l->ns[l->n / 2] / 1e3,
                .p99_us = (double) l->ns[l->n * 99 / 100] / 1e3,
        };
}

void latencies_done(Latencies *l) {
        free(l->ns);
        *l = (Latencies){};
}
