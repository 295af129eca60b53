/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "macro.h"
#include "shape.h"

#define GIB (1024ULL * 1024ULL * 1024ULL)

static void test_shape_disk_size_table(void **state) {
        static const struct {
                const char *shape;
                unsigned units;
                uint64_t disk_gib;
        } table[] = {
                { "2x4", 2, 48 },     /* max(2, 2) */
                { "4x8", 4, 64 },     /* max(4, 4) */
                { "8x16", 8, 96 },    /* max(8, 8) */
                { "16x32", 16, 160 }, /* max(16, 16) */
                { "32x64", 32, 288 }, /* max(32, 32) */
                { "2x2", 2, 48 },     /* vCPU dominates: max(2, 1) */
                { "2x16", 8, 96 },    /* memory dominates: max(2, 8) */
                { "4x64", 32, 288 },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                Shape s;
                char buf[16];
                assert_int_equal(shape_parse(table[i].shape, false, &s), 0);
                assert_int_equal(shape_units(&s), table[i].units);
                assert_int_equal(shape_disk_bytes(&s), table[i].disk_gib * GIB);
                assert_string_equal(shape_to_string(&s, buf, sizeof(buf)), table[i].shape);
        }
}

static void test_shape_large_needs_permission(void **state) {
        Shape s;

        assert_int_equal(shape_parse("32x128", false, &s), -EPERM);
        assert_int_equal(shape_parse("8x80", false, &s), -EPERM);
        assert_int_equal(shape_parse("32x128", true, &s), 0);
        assert_int_equal(s.vcpu, 32);
        assert_int_equal(s.memory_gb, 128);
        assert_int_equal(shape_disk_bytes(&s), (32 + 64 * 8) * GIB);
        assert_int_equal(shape_parse("32x512", true, &s), 0);
        assert_int_equal(shape_disk_bytes(&s), (32 + 256 * 8) * GIB);
}

static void test_shape_refuses_values_outside_the_sets(void **state) {
        static const char *const not_allowed[] = {
                "3x8",    /* vCPU not in the set */
                "64x128", /* vCPU too large */
                "1x2",    /* vCPU too small */
                "4x6",    /* RAM not in the set */
                "4x2",    /* RAM below vCPU */
                "32x16",  /* RAM below vCPU */
                "2x1024", /* RAM not in the set */
        };
        static const char *const malformed[] = {
                "", "x", "4x", "x8", "4", "4x8x", "4X8", " 4x8", "4x8 ", "+4x8", "-4x8", "04x8", "4x08",
                "4 x 8", "4x8G", "0x0", "2x0", "99999999999x8", "4x18446744073709551620",
        };
        Shape s = { 7, 7 };

        for (size_t i = 0; i < ELEMENTSOF(not_allowed); i++)
                assert_int_equal(shape_parse(not_allowed[i], true, &s), -EDOM);
        for (size_t i = 0; i < ELEMENTSOF(malformed); i++)
                assert_int_equal(shape_parse(malformed[i], true, &s), -EINVAL);
        assert_int_equal(shape_parse(NULL, true, &s), -EINVAL);
        /* Nothing written on failure. */
        assert_int_equal(s.vcpu, 7);
        assert_int_equal(s.memory_gb, 7);
}

static void test_shape_validate_struct(void **state) {
        assert_int_equal(shape_validate(&(Shape){ 16, 32 }, false), 0);
        assert_int_equal(shape_validate(&(Shape){ 16, 8 }, false), -EDOM);
        assert_int_equal(shape_validate(&(Shape){ 16, 96 }, false), -EPERM);
        assert_int_equal(shape_validate(&(Shape){ 0, 0 }, true), -EDOM);
}

static void test_shape_help_lists_valid_values(void **state) {
        const char *h = shape_valid_help();
        assert_non_null(strstr(h, "2, 4, 8, 16, 32"));
        assert_non_null(strstr(h, "2, 4, 8, 16, 32, 64, 80, 96, 112, 128, 256, 384, 512"));
        assert_non_null(strstr(h, "64 GB"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_shape_disk_size_table),
                cmocka_unit_test(test_shape_large_needs_permission),
                cmocka_unit_test(test_shape_refuses_values_outside_the_sets),
                cmocka_unit_test(test_shape_validate_struct),
                cmocka_unit_test(test_shape_help_lists_valid_values),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
