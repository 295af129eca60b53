/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "macro.h"
#include "metrics.h"

static void test_metrics_exposition_is_exact(void **state) {
        Metrics *m = metrics_new();
        Metric *ok, *err, *g, *h;
        char *text;

        ok = metrics_counter(m, "hm_calls_total", "Calls handled.", "method=\"/a.B/C\",code=\"OK\"");
        err = metrics_counter(m, "hm_calls_total", "ignored: the first help wins", "method=\"/a.B/C\",code=\"INTERNAL\"");
        g = metrics_gauge(m, "hm_disks", "Disks in the pool,\nby backend \\ kind.", NULL);
        h = metrics_histogram(m, "hm_latency_seconds", "Latency.", "op=\"create\"");
        assert_non_null(ok);
        assert_non_null(err);
        assert_non_null(g);
        assert_non_null(h);
        /* Get-or-create returns the same series. */
        assert_ptr_equal(metrics_counter(m, "hm_calls_total", NULL, "method=\"/a.B/C\",code=\"OK\""), ok);
        /* A name belongs to one type. */
        assert_null(metrics_gauge(m, "hm_calls_total", "x", NULL));

        metric_add(ok, 3);
        metric_add(ok, 2);
        metric_add(err, 1);
        metric_set(g, -4);
        metric_observe(h, 0.00004);  /* first bucket */
        metric_observe(h, 0.003);    /* le=0.005 */
        metric_observe(h, 20);       /* +Inf only */

        assert_int_equal(metrics_format(m, "part=\"disk\"", &text), 0);
        assert_string_equal(text,
                "# HELP hm_calls_total Calls handled.\n"
                "# TYPE hm_calls_total counter\n"
                "hm_calls_total{method=\"/a.B/C\",code=\"OK\",part=\"disk\"} 5\n"
                "hm_calls_total{method=\"/a.B/C\",code=\"INTERNAL\",part=\"disk\"} 1\n"
                "# HELP hm_disks Disks in the pool,\\nby backend \\\\ kind.\n"
                "# TYPE hm_disks gauge\n"
                "hm_disks{part=\"disk\"} -4\n"
                "# HELP hm_latency_seconds Latency.\n"
                "# TYPE hm_latency_seconds histogram\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"5e-05\"} 1\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.0001\"} 1\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.00025\"} 1\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.0005\"} 1\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.001\"} 1\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.0025\"} 1\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.005\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.01\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.025\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.05\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.1\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.25\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"0.5\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"1\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"2.5\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"5\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"10\"} 2\n"
                "hm_latency_seconds_bucket{op=\"create\",part=\"disk\",le=\"+Inf\"} 3\n"
                "hm_latency_seconds_sum{op=\"create\",part=\"disk\"} 20.00304\n"
                "hm_latency_seconds_count{op=\"create\",part=\"disk\"} 3\n");
        free(text);
        metrics_free(m);
}

static void test_metrics_without_labels_have_no_braces(void **state) {
        Metrics *m = metrics_new();
        char *text;

        metric_add(metrics_counter(m, "x_total", "X.", NULL), 1);
        metric_add(metrics_counter(m, "y_total", "Y.", ""), 2);
        assert_int_equal(metrics_format(m, NULL, &text), 0);
        assert_string_equal(text,
                            "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n"
                            "# HELP y_total Y.\n# TYPE y_total counter\ny_total 2\n");
        free(text);
        metrics_free(m);

        m = metrics_new();
        assert_int_equal(metrics_format(m, NULL, &text), 0);
        assert_string_equal(text, "");
        free(text);
        metrics_free(m);
        assert_null(metrics_free(NULL));
}

#define THREADS 4
#define ROUNDS 100000

static void *hammer(void *userdata) {
        Metrics *m = userdata;
        for (int i = 0; i < ROUNDS; i++) {
                metric_add(metrics_counter(m, "c_total", "C.", "t=\"shared\""), 1);
                metric_observe(metrics_histogram(m, "h_seconds", "H.", NULL), 0.5);
        }
        return NULL;
}

static void test_metrics_updates_are_atomic_across_threads(void **state) {
        Metrics *m = metrics_new();
        pthread_t t[THREADS];
        char *text;

        for (int i = 0; i < THREADS; i++)
                assert_int_equal(pthread_create(&t[i], NULL, hammer, m), 0);
        for (int i = 0; i < THREADS; i++)
                assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(metrics_format(m, NULL, &text), 0);
        assert_non_null(strstr(text, "c_total{t=\"shared\"} 400000\n"));
        assert_non_null(strstr(text, "h_seconds_count 400000\n"));
        assert_non_null(strstr(text, "h_seconds_sum 200000\n"));
        assert_non_null(strstr(text, "h_seconds_bucket{le=\"0.25\"} 0\n"));
        assert_non_null(strstr(text, "h_seconds_bucket{le=\"0.5\"} 400000\n"));
        free(text);
        metrics_free(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_metrics_exposition_is_exact),
                cmocka_unit_test(test_metrics_without_labels_have_no_braces),
                cmocka_unit_test(test_metrics_updates_are_atomic_across_threads),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
