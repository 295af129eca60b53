/* SPDX-License-Identifier: MIT */
#pragma once

/* Counters, gauges and histograms with Prometheus text exposition (format
 * 0.0.4). Families are created on first use and looked up by name plus a
 * label string ("method=\"/a.B/C\",code=\"OK\""). Updates are atomic, so
 * gRPC threads and the loop may both touch them. */

#include <stdint.h>

typedef struct Metrics Metrics;
typedef struct Metric Metric;

Metrics *metrics_new(void);
Metrics *metrics_free(Metrics *m);

/* Get-or-create. `labels` may be NULL. Returns NULL only on OOM or when the
 * name is used with another type. */
Metric *metrics_counter(Metrics *m, const char *name, const char *help, const char *labels);
Metric *metrics_gauge(Metrics *m, const char *name, const char *help, const char *labels);
/* Histogram with fixed latency buckets in seconds (50µs … 10s). */
Metric *metrics_histogram(Metrics *m, const char *name, const char *help, const char *labels);

void metric_add(Metric *c, uint64_t n);        /* counter */
void metric_set(Metric *g, int64_t v);         /* gauge */
void metric_observe(Metric *h, double value);  /* histogram */

/* Prometheus text. `extra_labels` (e.g. "part=\"dns\"") is added to every
 * sample; may be NULL. Caller frees *ret. */
int metrics_format(Metrics *m, const char *extra_labels, char **ret);
