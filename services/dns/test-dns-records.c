/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dns-local.h"

static const char state_file[] =
        "[{\"name\": \"vm.hostmesh.internal\", \"type\": \"A\", \"value\": \"10.88.0.5\", \"ttl\": 30},"
        " {\"name\": \"vm.hostmesh.internal\", \"type\": \"AAAA\", \"value\": \"fc00::5\", \"ttl\": 30},"
        " {\"name\": \"t.hostmesh.internal\", \"type\": \"TXT\", \"value\": \"hello there\", \"ttl\": 60}]";

static void test_records_round_trip_through_the_state_file(void **state) {
        DnsLocal *a = NULL, *b = NULL;
        size_t loaded = 0, skipped = 1;
        char *dump = NULL;

        assert_int_equal(dns_local_new(&a), 0);
        assert_int_equal(dns_local_load_json(a, state_file, strlen(state_file), &loaded, &skipped), 0);
        assert_int_equal(loaded, 3);
        assert_int_equal(skipped, 0);
        assert_int_equal(dns_local_dump_json(a, &dump), 0);
        assert_non_null(strstr(dump, "\"value\": \"10.88.0.5\""));
        assert_int_equal(dns_local_new(&b), 0);
        assert_int_equal(dns_local_load_json(b, dump, strlen(dump), &loaded, &skipped), 0);
        assert_int_equal(loaded, 3);
        assert_int_equal(dns_local_count(b), 3);
        /* The same records again only refresh them. */
        assert_int_equal(dns_local_load_json(b, dump, strlen(dump), &loaded, &skipped), 0);
        assert_int_equal(dns_local_count(b), 3);
        free(dump);
        dns_local_free(a);
        dns_local_free(b);
}

static void test_bad_entries_are_skipped_and_counted(void **state) {
        static const char text[] =
                "[{\"name\": \"ok.hostmesh.internal\", \"type\": \"A\", \"value\": \"10.88.0.9\", \"ttl\": 30},"
                " {\"name\": \"bad.hostmesh.internal\", \"type\": \"A\", \"value\": \"300.1.1.1\", \"ttl\": 30},"
                " {\"name\": \"neg.hostmesh.internal\", \"type\": \"A\", \"value\": \"10.0.0.1\", \"ttl\": -1},"
                " {\"name\": \"big.hostmesh.internal\", \"type\": \"A\", \"value\": \"10.0.0.1\", \"ttl\": 4294967296},"
                " {\"name\": \"type.hostmesh.internal\", \"type\": \"MX\", \"value\": \"x\", \"ttl\": 1},"
                " {\"type\": \"A\"}, 17, null]";
        DnsLocal *l = NULL;
        size_t loaded = 0, skipped = 0;

        assert_int_equal(dns_local_new(&l), 0);
        assert_int_equal(dns_local_load_json(l, text, strlen(text), &loaded, &skipped), 0);
        assert_int_equal(loaded, 1);
        assert_int_equal(skipped, 7);
        assert_int_equal(dns_local_count(l), 1);
        dns_local_free(l);
}

static void test_a_state_file_that_is_not_a_list_is_refused(void **state) {
        static const char *const bad[] = { "", "{}", "[", "\"x\"", "{\"a\": 1, \"a\": 2}",
                                           "[{\"name\": \"a\", \"name\": \"b\"}]", NULL };
        DnsLocal *l = NULL;

        assert_int_equal(dns_local_new(&l), 0);
        for (size_t k = 0; bad[k]; k++)
                assert_int_equal(dns_local_load_json(l, bad[k], strlen(bad[k]), NULL, NULL), -EBADMSG);
        assert_int_equal(dns_local_count(l), 0);
        dns_local_free(l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_records_round_trip_through_the_state_file),
                cmocka_unit_test(test_bad_entries_are_skipped_and_counted),
                cmocka_unit_test(test_a_state_file_that_is_not_a_list_is_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
