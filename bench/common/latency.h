/* SPDX-License-Identifier: MIT */
#pragma once

/* Latency samples of the load benchmarks (bench/rpc, bench/gateway): one
 * list per caller thread, merged and summarized once the threads are done. */

#include <stddef.h>
#include <stdint.h>

typedef struct Latencies {
        uint64_t *ns;
        size_t n, cap;
} Latencies;

typedef struct LatencySummary {
        size_t calls;
        double p50_us, p99_us;
} LatencySummary;

uint64_t bench_now_ns(void);

/* Appends one sample; aborts when out of memory (a benchmark has no use
 * for a partial list). */
void latencies_add(Latencies *l, uint64_t ns);

/* Moves every sample of part into all and frees part's list. */
void latencies_take(Latencies *all, Latencies *part);

/* Sorts the samples and returns their count and percentiles. */
LatencySummary latencies_summarize(Latencies *l);

void latencies_done(Latencies *l);
