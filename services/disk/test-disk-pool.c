/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/stat.h>
#include <unistd.h>

#include "disk-pool.h"

#define GIB (1ULL << 30)

static void test_admission_reserve_refusal_gives_numbers(void **state) {
        PoolAdmission a = { .capacity = 100 * GIB, .free = 10 * GIB, .reserve = 10 * GIB, .overcommit = 4 };
        char *msg = NULL;

        /* An overlay needs 256 KiB now: with free == reserve there is no room. */
        assert_int_equal(pool_admit(&a, 64 * GIB, 256 << 10, &msg), -ENOSPC);
        assert_string_equal(msg, "The pool has 10 GiB free; a 64 GiB disk would leave 10.0 GiB, below the reserve "
                                 "of 10 GiB. Delete disks or images, or lower 'reserve' in disk.conf.");
        free(msg);
        a.free = 11 * GIB;
        assert_int_equal(pool_admit(&a, 64 * GIB, 256 << 10, &msg), 0);
        /* A full copy of a 2 GiB base does not fit in the 1 GiB above the reserve. */
        assert_int_equal(pool_admit(&a, 64 * GIB, 2 * GIB, &msg), -ENOSPC);
        free(msg);
}

static void test_admission_overcommit_refusal_gives_numbers(void **state) {
        PoolAdmission a = { .capacity = 100 * GIB, .free = 90 * GIB, .reserve = GIB, .overcommit = 1.5,
                            .virtual_total = 100 * GIB };
        char *msg = NULL;

        assert_int_equal(pool_admit(&a, 50 * GIB, 0, &msg), 0);            /* exactly at the limit */
        assert_int_equal(pool_admit(&a, 51 * GIB, 0, &msg), -ENOSPC);
        assert_string_equal(msg, "Disks in the pool already total 100 GiB of virtual size; a 51 GiB disk would pass "
                                 "the limit of 150 GiB (capacity 100 GiB x overcommit_ratio 1.5). Delete disks or "
                                 "raise 'overcommit_ratio' in disk.conf.");
        free(msg);
}

static void test_format_bytes(void **state) {
        static const struct {
                uint64_t v;
                const char *s;
        } table[] = {
                { 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1 KiB" }, { 1536, "1.5 KiB" },
                { 48 * GIB, "48 GiB" }, { 3ULL << 40, "3 TiB" },
        };
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                char *s = pool_format_bytes(table[i].v);
                assert_string_equal(s, table[i].s);
                free(s);
        }
}

static void test_pool_open_creates_layout_and_sparse_disk(void **state) {
        char dir[] = "/tmp/test-disk-pool-XXXXXX";
        Pool *p = NULL;
        char path[256];
        struct stat st;
        uint64_t allocated;

        assert_non_null(mkdtemp(dir));
        assert_int_equal(pool_open(dir, &p), 0);
        assert_int_equal(stat(p->disks_dir, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0700);
        snprintf(path, sizeof(path), "%s/d.raw", p->disks_dir);
        assert_int_equal(pool_create_sparse(path, 48 * GIB), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_true((uint64_t) st.st_size == 48 * GIB);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(pool_file_allocated(path, &allocated), 0);
        assert_true(allocated < (1 << 20));
        /* Never over an existing file. */
        assert_int_equal(pool_create_sparse(path, GIB), -EEXIST);
        assert_int_equal(pool_create_qcow2(path, GIB, NULL, NULL), -EEXIST);
        unlink(path);
        /* Reflink from a missing source fails cleanly and leaves nothing. */
        assert_int_equal(pool_create_reflink(path, GIB, "/nonexistent"), -ENOENT);
        assert_int_equal(access(path, F_OK), -1);
        rmdir(p->disks_dir);
        rmdir(p->images_dir);
        rmdir(dir);
        pool_free(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_admission_reserve_refusal_gives_numbers),
                cmocka_unit_test(test_admission_overcommit_refusal_gives_numbers),
                cmocka_unit_test(test_format_bytes),
                cmocka_unit_test(test_pool_open_creates_layout_and_sparse_disk),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
