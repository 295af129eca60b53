/* SPDX-License-Identifier: MIT */
/* Prometheus counters, gauges and histograms. The registry (the list of
 * families and their labelled series) is guarded by one mutex, taken only
 * when a series is created or the exposition is written; the values
 * themselves are C11 atomics, so updates from gRPC threads and the loop never
 * block each other. Series are never removed while the registry lives, which
 * is what lets callers keep Metric pointers. */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "macro.h"
#include "metrics.h"

typedef enum MetricType {
        METRIC_COUNTER,
        METRIC_GAUGE,
        METRIC_HISTOGRAM,
} MetricType;

/* Latency buckets in seconds, 50µs … 10s: the range between a cached
 * lookup and a VM boot. */
static const double histogram_bounds[] = {
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
        0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,    5,     10,
};
#define N_BUCKETS ELEMENTSOF(histogram_bounds)

typedef struct MetricFamily MetricFamily;

struct Metric {
        MetricFamily *family;
        char *labels;
        _Atomic uint64_t counter;
        _Atomic int64_t gauge;
        _Atomic uint64_t buckets[N_BUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
        _Atomic uint64_t sum_bits;               /* a double, updated by compare-and-swap */
        Metric *next;
};

struct MetricFamily {
        char *name;
        char *help;
        MetricType type;
        Metric *first, *last;
        MetricFamily *next;
};

struct Metrics {
        pthread_mutex_t lock;
        MetricFamily *first, *last;
};

Metrics *metrics_new(void) {
        Metrics *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        pthread_mutex_init(&m->lock, NULL);
        return m;
}

Metrics *metrics_free(Metrics *m) {
        if (!m)
                return NULL;
        for (MetricFamily *f = m->first, *fn; f; f = fn) {
                fn = f->next;
                for (Metric *s = f->first, *sn; s; s = sn) {
                        sn = s->next;
                        free(s->labels);
                        free(s);
                }
                free(f->name);
                free(f->help);
                free(f);
        }
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
}

static Metric *metric_get(Metrics *m, MetricType type, const char *name, const char *help, const char *labels) {
        MetricFamily *f;
        Metric *s = NULL;

        if (!m || !name)
                return NULL;
        if (!labels)
                labels = "";

        pthread_mutex_lock(&m->lock);
        for (f = m->first; f; f = f->next)
                if (streq(f->name, name))
                        break;
        if (f && f->type != type)
                goto out; /* the name is taken by another type */
        if (!f) {
                f = calloc(1, sizeof(*f));
                if (!f)
                        goto out;
                f->name = strdup(name);
                f->help = strdup(help ? help : "");
                f->type = type;
                if (!f->name || !f->help) {
                        free(f->name);
                        free(f->help);
                        free(f);
                        goto out;
                }
                if (m->last)
                        m->last->next = f;
                else
                        m->first = f;
                m->last = f;
        }
        for (s = f->first; s; s = s->next)
                if (streq(s->labels, labels))
                        goto out;
        s = calloc(1, sizeof(*s));
        if (!s)
                goto out;
        s->family = f;
        s->labels = strdup(labels);
        if (!s->labels) {
                free(s);
                s = NULL;
                goto out;
        }
        if (f->last)
                f->last->next = s;
        else
                f->first = s;
        f->last = s;
out:
        pthread_mutex_unlock(&m->lock);
        return s;
}

Metric *metrics_counter(Metrics *m, const char *name, const char *help, const char *labels) {
        return metric_get(m, METRIC_COUNTER, name, help, labels);
}

Metric *metrics_gauge(Metrics *m, const char *name, const char *help, const char *labels) {
        return metric_get(m, METRIC_GAUGE, name, help, labels);
}

Metric *metrics_histogram(Metrics *m, const char *name, const char *help, const char *labels) {
        return metric_get(m, METRIC_HISTOGRAM, name, help, labels);
}

void metric_add(Metric *c, uint64_t n) {
        if (c)
                atomic_fetch_add_explicit(&c->counter, n, memory_order_relaxed);
}

void metric_set(Metric *g, int64_t v) {
        if (g)
                atomic_store_explicit(&g->gauge, v, memory_order_relaxed);
}

static uint64_t double_to_bits(double d) {
        uint64_t u;
        memcpy(&u, &d, sizeof(u));
        return u;
}

static double bits_to_double(uint64_t u) {
        double d;
        memcpy(&d, &u, sizeof(d));
        return d;
}

void metric_observe(Metric *h, double value) {
        uint64_t old, new;
        size_t i;

        if (!h || isnan(value))
                return;
        for (i = 0; i < N_BUCKETS; i++)
                if (value <= histogram_bounds[i])
                        break;
        atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
        old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
        do
                new = double_to_bits(bits_to_double(old) + value);
        while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, new, memory_order_relaxed,
                                                      memory_order_relaxed));
}

/* Shortest text that reads back as the same double; Prometheus' spelling
 * of the infinities. */
static void format_double(char *buf, size_t size, double d) {
        if (isinf(d)) {
                snprintf(buf, size, "%s", d > 0 ? "+Inf" : "-Inf");
                return;
        }
        /* Whole numbers in plain digits ("200000", not "2e+05"). */
        if (d == floor(d) && fabs(d) < 1e15) {
                snprintf(buf, size, "%.0f", d);
                return;
        }
        for (int prec = 1; prec <= 17; prec++) {
                snprintf(buf, size, "%.*g", prec, d);
                if (strtod(buf, NULL) == d)
                        return;
        }
}

/* Exposition format 0.0.4: backslash and newline escaped in HELP. */
static void write_help(FILE *f, const char *help) {
        for (const char *p = help; *p; p++)
                if (*p == '\\')
                        fputs("\\\\", f);
                else if (*p == '\n')
                        fputs("\\n", f);
                else
                        fputc(*p, f);
}

/* `{a,b,c}` from the non-empty parts, nothing when all are empty. */
static void write_labels(FILE *f, const char *a, const char *b, const char *c) {
        const char *parts[] = { a, b, c };
        bool open = false;

        for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
                if (isempty(parts[i]))
                        continue;
                fputc(open ? ',' : '{', f);
                fputs(parts[i], f);
                open = true;
        }
        if (open)
                fputc('}', f);
}

int metrics_format(Metrics *m, const char *extra_labels, char **ret) {
        static const char *const type_names[] = {
                [METRIC_COUNTER] = "counter",
                [METRIC_GAUGE] = "gauge",
                [METRIC_HISTOGRAM] = "histogram",
        };
        char *text = NULL;
        size_t len = 0;
        FILE *f;

        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;

        pthread_mutex_lock(&m->lock);
        for (MetricFamily *fam = m->first; fam; fam = fam->next) {
                fprintf(f, "# HELP %s ", fam->name);
                write_help(f, fam->help);
                fprintf(f, "\n# TYPE %s %s\n", fam->name, type_names[fam->type]);

                for (Metric *s = fam->first; s; s = s->next) {
                        char num[64], le[80];
                        uint64_t cumulative = 0;

                        switch (fam->type) {
                        case METRIC_COUNTER:
                                fputs(fam->name, f);
                                write_labels(f, s->labels, extra_labels, NULL);
                                fprintf(f, " %llu\n",
                                        (unsigned long long) atomic_load_explicit(&s->counter, memory_order_relaxed));
                                break;
                        case METRIC_GAUGE:
                                fputs(fam->name, f);
                                write_labels(f, s->labels, extra_labels, NULL);
                                fprintf(f, " %lld\n", (long long) atomic_load_explicit(&s->gauge, memory_order_relaxed));
                                break;
                        case METRIC_HISTOGRAM:
                                for (size_t i = 0; i <= N_BUCKETS; i++) {
                                        cumulative += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
                                        format_double(num, sizeof(num), i < N_BUCKETS ? histogram_bounds[i] : INFINITY);
                                        snprintf(le, sizeof(le), "le=\"%s\"", num);
                                        fprintf(f, "%s_bucket", fam->name);
                                        write_labels(f, s->labels, extra_labels, le);
                                        fprintf(f, " %llu\n", (unsigned long long) cumulative);
                                }
                                format_double(num, sizeof(num),
                                              bits_to_double(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)));
                                fprintf(f, "%s_sum", fam->name);
                                write_labels(f, s->labels, extra_labels, NULL);
                                fprintf(f, " %s\n", num);
                                fprintf(f, "%s_count", fam->name);
                                write_labels(f, s->labels, extra_labels, NULL);
                                /* The count is the +Inf bucket, read once above, so that
                                 * a concurrent observe never makes them disagree. */
                                fprintf(f, " %llu\n", (unsigned long long) cumulative);
                                break;
                        }
                }
        }
        pthread_mutex_unlock(&m->lock);

        if (fclose(f) != 0) {
                free(text);
                return -ENOMEM;
        }
        *ret = text;
        return 0;
}
