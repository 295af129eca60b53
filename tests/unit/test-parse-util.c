/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "macro.h"
#include "parse-util.h"

static void test_unhexchar_both_cases_and_nothing_else(void **state) {
        (void) state;
        assert_int_equal(unhexchar('0'), 0);
        assert_int_equal(unhexchar('9'), 9);
        assert_int_equal(unhexchar('a'), 10);
        assert_int_equal(unhexchar('F'), 15);
        for (const char *c = "gG/:@` x-"; *c; c++)
                assert_int_equal(unhexchar(*c), -1);
        assert_int_equal(unhexchar('\0'), -1);
}

static void test_safe_atou64_accepts_full_range(void **state) {
        uint64_t v;

        assert_int_equal(safe_atou64("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(safe_atou64("18446744073709551615", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(safe_atou64("007", &v), 0);
        assert_int_equal(v, 7);
}

static void test_safe_atou64_refuses_overflow_and_garbage(void **state) {
        uint64_t v = 42;

        assert_int_equal(safe_atou64("18446744073709551616", &v), -ERANGE);
        assert_int_equal(safe_atou64("99999999999999999999999", &v), -ERANGE);
        assert_int_equal(safe_atou64("", &v), -EINVAL);
        assert_int_equal(safe_atou64("-1", &v), -EINVAL);
        assert_int_equal(safe_atou64("+1", &v), -EINVAL);
        assert_int_equal(safe_atou64(" 1", &v), -EINVAL);
        assert_int_equal(safe_atou64("1 ", &v), -EINVAL);
        assert_int_equal(safe_atou64("0x10", &v), -EINVAL);
        assert_int_equal(safe_atou64("12a", &v), -EINVAL);
        assert_int_equal(safe_atou64(NULL, &v), -EINVAL);
        assert_int_equal(v, 42);
}

static void test_safe_atou32_and_signed(void **state) {
        uint32_t u;
        int64_t i64;
        int32_t i32;

        assert_int_equal(safe_atou32("4294967295", &u), 0);
        assert_true(u == UINT32_MAX);
        assert_int_equal(safe_atou32("4294967296", &u), -ERANGE);

        assert_int_equal(safe_atoi64("-9223372036854775808", &i64), 0);
        assert_true(i64 == INT64_MIN);
        assert_int_equal(safe_atoi64("9223372036854775807", &i64), 0);
        assert_true(i64 == INT64_MAX);
        assert_int_equal(safe_atoi64("9223372036854775808", &i64), -ERANGE);
        assert_int_equal(safe_atoi64("-9223372036854775809", &i64), -ERANGE);
        assert_int_equal(safe_atoi64("-", &i64), -EINVAL);
        assert_int_equal(safe_atoi64("--1", &i64), -EINVAL);

        assert_int_equal(safe_atoi32("-2147483648", &i32), 0);
        assert_int_equal(i32, INT32_MIN);
        assert_int_equal(safe_atoi32("2147483648", &i32), -ERANGE);
        assert_int_equal(safe_atoi32("+12", &i32), 0);
        assert_int_equal(i32, 12);
}

static void test_parse_range_u64_bounds_inclusive(void **state) {
        uint64_t v;

        assert_int_equal(parse_range_u64("1", 1, 10, &v), 0);
        assert_int_equal(parse_range_u64("10", 1, 10, &v), 0);
        assert_int_equal(v, 10);
        assert_int_equal(parse_range_u64("0", 1, 10, &v), -ERANGE);
        assert_int_equal(parse_range_u64("11", 1, 10, &v), -ERANGE);
        assert_int_equal(parse_range_u64("1x", 1, 10, &v), -EINVAL);
}

static void test_parse_usec_units_and_combinations(void **state) {
        static const struct {
                const char *in;
                uint64_t usec;
        } ok[] = {
                { "0", 0 },
                { "90", 90 * USEC_PER_SEC },  /* bare number = seconds */
                { "90s", 90 * USEC_PER_SEC },
                { "10m", 600 * USEC_PER_SEC },
                { "1h30m", 5400 * USEC_PER_SEC },
                { "1h 30m", 5400 * USEC_PER_SEC },
                { "250ms", 250 * USEC_PER_MSEC },
                { "2d", 2 * 86400 * USEC_PER_SEC },
                { "1w", 7 * 86400 * USEC_PER_SEC },
                { "5us", 5 },
                { "1.5s", 1500 * USEC_PER_MSEC },
                { "0.5ms", 500 },
                { "1min", 60 * USEC_PER_SEC },
                { "3sec", 3 * USEC_PER_SEC },
        };
        static const char *const bad[] = {
                "", "s", "10x", "1h30", "-1s", "1.s", "1..5s", ".5s", "10 m x", "1hh",
        };
        uint64_t v;

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                assert_int_equal(parse_usec(ok[i].in, &v), 0);
                assert_true(v == ok[i].usec);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(parse_usec(bad[i], &v), -EINVAL);
        assert_int_equal(parse_usec("99999999999999999d", &v), -ERANGE);
        assert_int_equal(parse_usec("18446744073709551615us 1us", &v), -ERANGE);
}

static void test_format_usec_is_shortest_and_round_trips(void **state) {
        static const struct {
                uint64_t usec;
                const char *out;
        } table[] = {
                { 0, "0" },
                { 5400 * USEC_PER_SEC, "1h30m" },
                { 250 * USEC_PER_MSEC, "250ms" },
                { 90 * USEC_PER_SEC, "1m30s" },
                { 86400 * USEC_PER_SEC + 1, "1d1us" },
                { 1500 * USEC_PER_MSEC, "1s500ms" },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char *s = format_usec(table[i].usec);
                uint64_t back;
                assert_string_equal(s, table[i].out);
                assert_int_equal(parse_usec(s, &back), 0);
                assert_true(back == table[i].usec);
                free(s);
        }
        char *s = format_usec(UINT64_MAX);
        uint64_t back;
        assert_int_equal(parse_usec(s, &back), 0);
        assert_true(back == UINT64_MAX);
        free(s);
}

static void test_parse_size_units(void **state) {
        static const struct {
                const char *in;
                uint64_t bytes;
        } ok[] = {
                { "4096", 4096 },
                { "4096B", 4096 },
                { "1K", 1024 },
                { "512M", 512ULL << 20 },
                { "64G", 64ULL << 30 },
                { "64GiB", 64ULL << 30 },
                { "64GB", 64ULL << 30 },
                { "64g", 64ULL << 30 },
                { "1.5G", 3ULL << 29 },
                { "2T", 2ULL << 40 },
                { "0", 0 },
                { "15E", 15ULL << 60 },
        };
        static const char *const bad[] = { "", "G", "1X", "1.5", "1.G", "1GiBx", "-1G", "1 G", "1iB", "1.5.5G" };
        uint64_t v;

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                assert_int_equal(parse_size(ok[i].in, &v), 0);
                assert_true(v == ok[i].bytes);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(parse_size(bad[i], &v), -EINVAL);
        assert_int_equal(parse_size("16E", &v), -ERANGE);
        assert_int_equal(parse_size("18446744073709551616", &v), -ERANGE);
}

static void test_format_size_round_trips(void **state) {
        static const struct {
                uint64_t bytes;
                const char *out;
        } table[] = {
                { 0, "0" }, { 4097, "4097" }, { 64ULL << 30, "64G" }, { 1536ULL << 20, "1536M" }, { 1024, "1K" },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char *s = format_size(table[i].bytes);
                uint64_t back;
                assert_string_equal(s, table[i].out);
                assert_int_equal(parse_size(s, &back), 0);
                assert_true(back == table[i].bytes);
                free(s);
        }
}

static void test_parse_boolean(void **state) {
        bool b;

        assert_int_equal(parse_boolean("yes", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("ON", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("1", &b), 0);
        assert_true(b);
        assert_int_equal(parse_boolean("false", &b), 0);
        assert_false(b);
        assert_int_equal(parse_boolean("off", &b), 0);
        assert_false(b);
        assert_int_equal(parse_boolean("0", &b), 0);
        assert_false(b);
        assert_int_equal(parse_boolean("maybe", &b), -EINVAL);
        assert_int_equal(parse_boolean("", &b), -EINVAL);
        assert_int_equal(parse_boolean("2", &b), -EINVAL);
}

static void test_parse_sockaddr_forms(void **state) {
        struct sockaddr_storage ss;
        struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
        char buf[INET6_ADDRSTRLEN];
        unsigned len;

        assert_int_equal(parse_sockaddr("127.0.0.1:5353", 53, &ss, &len), 0);
        assert_int_equal(ss.ss_family, AF_INET);
        assert_int_equal(len, sizeof(struct sockaddr_in));
        assert_int_equal(ntohs(sin->sin_port), 5353);
        assert_string_equal(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)), "127.0.0.1");

        assert_int_equal(parse_sockaddr("127.0.0.2", 53, &ss, &len), 0);
        assert_int_equal(ntohs(sin->sin_port), 53);

        assert_int_equal(parse_sockaddr("[::1]:8080", 53, &ss, &len), 0);
        assert_int_equal(ss.ss_family, AF_INET6);
        assert_int_equal(len, sizeof(struct sockaddr_in6));
        assert_int_equal(ntohs(sin6->sin6_port), 8080);
        assert_string_equal(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)), "::1");

        assert_int_equal(parse_sockaddr("[fe80::1]", 9, &ss, &len), 0);
        assert_int_equal(ntohs(sin6->sin6_port), 9);
        assert_int_equal(parse_sockaddr("::1", 9, &ss, &len), 0);
        assert_int_equal(ss.ss_family, AF_INET6);

        assert_int_equal(parse_sockaddr("127.0.0.1:65536", 53, &ss, &len), -ERANGE);
        assert_int_equal(parse_sockaddr("127.0.0.1:", 53, &ss, &len), -EINVAL);
        assert_int_equal(parse_sockaddr("127.0.0.1:x", 53, &ss, &len), -EINVAL);
        assert_int_equal(parse_sockaddr("localhost:53", 53, &ss, &len), -EINVAL); /* no DNS */
        assert_int_equal(parse_sockaddr("[::1", 53, &ss, &len), -EINVAL);
        assert_int_equal(parse_sockaddr("[::1]x", 53, &ss, &len), -EINVAL);
        assert_int_equal(parse_sockaddr("[127.0.0.1]:1", 53, &ss, &len), -EINVAL);
        assert_int_equal(parse_sockaddr("256.0.0.1", 53, &ss, &len), -EINVAL);
        assert_int_equal(parse_sockaddr("", 53, &ss, &len), -EINVAL);
}

static void test_parse_ipv4_prefix_networks_only(void **state) {
        struct in_addr a;
        unsigned len;
        char buf[INET_ADDRSTRLEN];

        assert_int_equal(parse_ipv4_prefix("10.88.0.0/16", &a, &len), 0);
        assert_string_equal(inet_ntop(AF_INET, &a, buf, sizeof(buf)), "10.88.0.0");
        assert_int_equal(len, 16);
        assert_int_equal(parse_ipv4_prefix("0.0.0.0/0", &a, &len), 0);
        assert_int_equal(len, 0);
        assert_int_equal(parse_ipv4_prefix("192.168.7.9/32", &a, &len), 0);
        assert_int_equal(parse_ipv4_prefix("10.88.0.1/16", &a, &len), -EINVAL); /* host bits set */
        assert_int_equal(parse_ipv4_prefix("10.88.0.0/33", &a, &len), -EINVAL);
        assert_int_equal(parse_ipv4_prefix("10.88.0.0", &a, &len), -EINVAL);
        assert_int_equal(parse_ipv4_prefix("10.88.0.0/", &a, &len), -EINVAL);
        assert_int_equal(parse_ipv4_prefix("fc00::/7", &a, &len), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unhexchar_both_cases_and_nothing_else),
                cmocka_unit_test(test_safe_atou64_accepts_full_range),
                cmocka_unit_test(test_safe_atou64_refuses_overflow_and_garbage),
                cmocka_unit_test(test_safe_atou32_and_signed),
                cmocka_unit_test(test_parse_range_u64_bounds_inclusive),
                cmocka_unit_test(test_parse_usec_units_and_combinations),
                cmocka_unit_test(test_format_usec_is_shortest_and_round_trips),
                cmocka_unit_test(test_parse_size_units),
                cmocka_unit_test(test_format_size_round_trips),
                cmocka_unit_test(test_parse_boolean),
                cmocka_unit_test(test_parse_sockaddr_forms),
                cmocka_unit_test(test_parse_ipv4_prefix_networks_only),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
