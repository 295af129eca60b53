/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm-instance.h"
#include "vmm-log.h"
#include "vmm-qmp.h"

static void test_state_machine_allows_only_forward_transitions(void **state) {
        (void) state;
        assert_true(instance_state_transition_allowed(INSTANCE_PENDING, INSTANCE_CREATING));
        assert_true(instance_state_transition_allowed(INSTANCE_CREATING, INSTANCE_RUNNING));
        assert_true(instance_state_transition_allowed(INSTANCE_RUNNING, INSTANCE_DESTROYING));
        assert_true(instance_state_transition_allowed(INSTANCE_DESTROYING, INSTANCE_DESTROYED));
        assert_true(instance_state_transition_allowed(INSTANCE_CREATING, INSTANCE_ERROR));
        assert_false(instance_state_transition_allowed(INSTANCE_RUNNING, INSTANCE_CREATING));
        assert_false(instance_state_transition_allowed(INSTANCE_DESTROYED, INSTANCE_RUNNING));
        assert_false(instance_state_transition_allowed(INSTANCE_ERROR, INSTANCE_DESTROYING));
        assert_false(instance_state_transition_allowed(INSTANCE_PENDING, INSTANCE_RUNNING));
        assert_false(instance_state_transition_allowed(INSTANCE_RUNNING, INSTANCE_RUNNING));
}

static void test_state_names_round_trip(void **state) {
        (void) state;
        for (int s = 0; s < _INSTANCE_STATE_MAX; s++)
                assert_int_equal(instance_state_from_string(instance_state_to_string(s)), s);
        assert_int_equal(instance_state_from_string("BOOTING"), -EINVAL);
        assert_int_equal(instance_state_from_string(NULL), -EINVAL);
}

static void test_generated_ids_are_hostnames(void **state) {
        (void) state;
        for (int k = 0; k < 100; k++) {
                char *id = NULL;
                assert_int_equal(instance_generate_id(&id), 0);
                assert_int_equal(strlen(id), 20);
                assert_true(id[0] >= 'a' && id[0] <= 'z');
                assert_int_equal(strspn(id, "abcdefghijklmnopqrstuvwxyz234567"), 20);
                free(id);
        }
}

static void test_qmp_parses_the_four_message_shapes(void **state) {
        const char *greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
        const char *ret = "{\"return\": {\"status\": \"running\"}, \"id\": 7}\r\n";
        const char *err = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, \"id\": 8}\r\n";
        const char *ev = "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true}}\r\n";
        QmpMessage m;

        (void) state;
        assert_int_equal(qmp_message_parse(greeting, strlen(greeting), &m), 0);
        assert_int_equal(m.type, QMP_MESSAGE_GREETING);
        qmp_message_done(&m);
        assert_int_equal(qmp_message_parse(ret, strlen(ret), &m), 0);
        assert_int_equal(m.type, QMP_MESSAGE_RETURN);
        assert_true(m.has_id);
        assert_int_equal(m.id, 7);
        assert_string_equal(json_string_value(json_object_get(m.value, "status")), "running");
        qmp_message_done(&m);
        assert_int_equal(qmp_message_parse(err, strlen(err), &m), 0);
        assert_int_equal(m.type, QMP_MESSAGE_ERROR);
        assert_string_equal(m.error_desc, "nope");
        qmp_message_done(&m);
        assert_int_equal(qmp_message_parse(ev, strlen(ev), &m), 0);
        assert_int_equal(m.type, QMP_MESSAGE_EVENT);
        assert_string_equal(m.event, "SHUTDOWN");
        qmp_message_done(&m);
}

static void test_qmp_refuses_malformed_messages(void **state) {
        static const char *const bad[] = {
                "[1,2]", "{}", "{\"error\": 5}", "{\"event\": 3}", "{\"return\": {}, \"id\": -1}",
                "{\"return\": {}, \"id\": \"x\"}", "not json", "{\"QMP\": 1}",
        };
        QmpMessage m;

        (void) state;
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
                assert_int_equal(qmp_message_parse(bad[k], strlen(bad[k]), &m), -EBADMSG);
}

static void test_utf8_sanitize_replaces_invalid_bytes_only(void **state) {
        char s1[] = "h\xc3\xa9llo";          /* é: valid two-byte sequence */
        char s2[] = "a\xff" "b\xc3";          /* 0xff invalid, truncated sequence at the end */
        char s3[] = "x\x1b[0my\tz";           /* ESC is a control character, tab is kept */
        char s4[] = "\xed\xa0\x80";           /* UTF-16 surrogate, invalid in UTF-8 */

        (void) state;
        utf8_sanitize(s1, strlen(s1));
        assert_string_equal(s1, "h\xc3\xa9llo");
        utf8_sanitize(s2, strlen(s2));
        assert_string_equal(s2, "a?b?");
        utf8_sanitize(s3, strlen(s3));
        assert_string_equal(s3, "x?[0my\tz");
        utf8_sanitize(s4, strlen(s4));
        assert_string_equal(s4, "???");
}

static void test_log_is_bounded_and_tail_returns_last_lines(void **state) {
        char dir[] = "/tmp/test-vmm-log-XXXXXX";
        InstanceLog *l = NULL;
        char line[64];
        struct stat st1 = {}, st2 = {};
        char *tail;

        (void) state;
        assert_non_null(mkdtemp(dir));
        assert_int_equal(instance_log_open(dir, 64 * 1024, &l), 0);
        for (int k = 0; k < 5000; k++) {
                int n = snprintf(line, sizeof(line), "console line %d\n", k);
                instance_log_append(l, "console", line, (size_t) n);
        }
        instance_log_append(l, "stdout", "partial", 7);
        instance_log_flush(l);
        tail = instance_log_tail(dir, "console", 2);
        assert_string_equal(tail, "console line 4998\nconsole line 4999");
        free(tail);
        tail = instance_log_tail(dir, "stdout", 5);
        assert_string_equal(tail, "partial");
        free(tail);
        char p1[128], p2[128];
        snprintf(p1, sizeof(p1), "%s/log", dir);
        snprintf(p2, sizeof(p2), "%s/log.1", dir);
        assert_int_equal(stat(p1, &st1), 0);
        assert_int_equal(stat(p2, &st2), 0);
        assert_true(st1.st_size + st2.st_size <= 64 * 1024);
        instance_log_free(l);
        unlink(p1);
        unlink(p2);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_state_machine_allows_only_forward_transitions),
                cmocka_unit_test(test_state_names_round_trip),
                cmocka_unit_test(test_generated_ids_are_hostnames),
                cmocka_unit_test(test_qmp_parses_the_four_message_shapes),
                cmocka_unit_test(test_qmp_refuses_malformed_messages),
                cmocka_unit_test(test_utf8_sanitize_replaces_invalid_bytes_only),
                cmocka_unit_test(test_log_is_bounded_and_tail_returns_last_lines),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
