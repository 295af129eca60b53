/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "macro.h"

static char dir[] = "/tmp/test-fs-util-XXXXXX";

static int setup(void **state) {
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static void test_write_file_atomic_replaces_with_mode(void **state) {
        char *path = path_join(dir, "state"), *data = NULL;
        struct stat st;
        size_t len;

        assert_int_equal(write_file_atomic(path, "first", 5, 0600), 0);
        assert_int_equal(write_file_atomic(path, "second", 6, 0640), 0);
        assert_int_equal(read_full_file(path, &data, &len, 1024), 0);
        assert_int_equal(len, 6);
        assert_string_equal(data, "second");
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);
        free(data);

        /* No temp file left behind. */
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq 1", dir);
        assert_int_equal(system(cmd), 0);

        /* A missing directory is an error, not a crash. */
        char *bad = path_join(dir, "missing/file");
        assert_int_equal(write_file_atomic(bad, "x", 1, 0600), -ENOENT);
        free(bad);
        assert_int_equal(unlink(path), 0);
        free(path);
}

static void test_read_full_file_limits(void **state) {
        char *path = path_join(dir, "big"), *data = NULL;
        char buf[10000];
        size_t len;

        memset(buf, 'a', sizeof(buf));
        assert_int_equal(write_file_atomic(path, buf, sizeof(buf), 0600), 0);
        assert_int_equal(read_full_file(path, &data, &len, sizeof(buf)), 0);
        assert_int_equal(len, sizeof(buf));
        assert_int_equal(data[len], '\0');
        free(data);
        data = NULL;
        assert_int_equal(read_full_file(path, &data, &len, sizeof(buf) - 1), -EFBIG);
        assert_null(data);
        assert_int_equal(read_full_file(path, &data, &len, 0), -EFBIG);

        assert_int_equal(write_file_atomic(path, "", 0, 0600), 0);
        assert_int_equal(read_full_file(path, &data, &len, 0), 0);
        assert_int_equal(len, 0);
        assert_string_equal(data, "");
        free(data);

        char *missing = path_join(dir, "nope");
        assert_int_equal(read_full_file(missing, &data, &len, 10), -ENOENT);
        free(missing);
        assert_int_equal(unlink(path), 0);
        free(path);
}

static void test_mkdir_p_creates_and_checks(void **state) {
        char *deep = path_join(dir, "a/b//c/"), *file = path_join(dir, "a/f");
        char *under_file = path_join(dir, "a/f/x");
        struct stat st;

        assert_int_equal(mkdir_p(deep, 0750), 0);
        assert_int_equal(mkdir_p(deep, 0750), 0); /* idempotent */
        assert_int_equal(stat(deep, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(write_file_atomic(file, "x", 1, 0600), 0);
        assert_int_equal(mkdir_p(file, 0750), -ENOTDIR);
        assert_int_equal(mkdir_p(under_file, 0750), -ENOTDIR);
        assert_int_equal(mkdir_p("", 0750), -EINVAL);
        free(deep);
        free(file);
        free(under_file);
}

static void test_path_join_one_slash(void **state) {
        static const struct {
                const char *a, *b, *out;
        } table[] = {
                { "/var/lib", "disk", "/var/lib/disk" },
                { "/var/lib/", "disk", "/var/lib/disk" },
                { "/var/lib//", "/disk", "/var/lib/disk" },
                { "/", "disk", "/disk" },
                { "rel", "x/y", "rel/x/y" },
                { "", "x", "x" },
                { "a", "", "a" },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char *p = path_join(table[i].a, table[i].b);
                assert_string_equal(p, table[i].out);
                free(p);
        }
}

static void test_filename_is_valid(void **state) {
        assert_true(filename_is_valid("disk-1.qcow2", 64));
        assert_true(filename_is_valid("A_b.C-d", 7));
        assert_false(filename_is_valid("A_b.C-d", 6)); /* too long */
        assert_false(filename_is_valid("", 64));
        assert_false(filename_is_valid(".", 64));
        assert_false(filename_is_valid("..", 64));
        assert_false(filename_is_valid("a/b", 64));
        assert_false(filename_is_valid("a b", 64));
        assert_false(filename_is_valid("a\nb", 64));
        assert_false(filename_is_valid("é", 64));
        assert_false(filename_is_valid(NULL, 64));
        assert_true(filename_is_valid("...", 64));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_write_file_atomic_replaces_with_mode),
                cmocka_unit_test(test_read_full_file_limits),
                cmocka_unit_test(test_mkdir_p_creates_and_checks),
                cmocka_unit_test(test_path_join_one_slash),
                cmocka_unit_test(test_filename_is_valid),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
