/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk-ops.h"
#include "fs-util.h"

#define GIB (1ULL << 30)

static char dir[] = "/tmp/test-disk-ops-XXXXXX";

static Manager *manager_for_test(void) {
        Manager *m = calloc(1, sizeof(*m));

        disk_config_defaults(&m->config);
        m->config.reserve = 0;
        m->config.overcommit_ratio = 1000;
        m->state_dir = strdup(dir);
        m->config.pool = path_join(dir, "pool");
        assert_int_equal(manager_open_state(m), 0);
        return m;
}

static int setup(void **state) {
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static void touch(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        close(fd);
}

static void test_create_delete_and_idempotence(void **state) {
        Manager *m = manager_for_test();
        DiskRecord a = {}, b = {};
        char *error = NULL;

        assert_int_equal(disk_create(m, &(DiskCreateParams){ .instance_id = "vm1", .shape = "8x16" }, &a, &error), 0);
        assert_null(error);
        assert_true(a.size == 96 * GIB);
        assert_string_equal(a.backend, "sparse");
        assert_int_equal(access(a.path, F_OK), 0);
        assert_int_equal(disk_create(m, &(DiskCreateParams){ .instance_id = "vm1", .shape = "8x16" }, &b, &error), 0);
        assert_string_equal(a.id, b.id);
        disk_record_done(&b);
        assert_int_equal(disk_create(m, &(DiskCreateParams){ .instance_id = "vm1", .shape = "2x4" }, &b, &error),
                         -EEXIST);
        assert_non_null(strstr(error, a.id));
        free(error);
        error = NULL;

        assert_int_equal(disk_create(m, &(DiskCreateParams){ .shape = "4x6" }, &b, &error), -EINVAL);
        assert_non_null(strstr(error, "Invalid shape '4x6'"));
        free(error);
        error = NULL;
        assert_int_equal(disk_create(m, &(DiskCreateParams){ .shape = "16x128" }, &b, &error), -EPERM);
        free(error);
        error = NULL;
        char *tenants[] = { (char *) "big", NULL };
        m->config.large_shape_tenants = tenants;
        assert_int_equal(disk_create(m, &(DiskCreateParams){ .shape = "16x128", .tenant_id = "big" }, &b, &error), 0);
        assert_true(b.size == (32 + 64 * 8) * GIB);
        assert_int_equal(disk_delete(m, b.id, NULL), 1);
        disk_record_done(&b);
        m->config.large_shape_tenants = NULL;

        assert_int_equal(disk_delete(m, a.id, &error), 1);
        assert_int_equal(access(a.path, F_OK), -1);
        assert_int_equal(disk_delete(m, a.id, &error), 0);
        assert_int_equal(disk_delete(m, "disk-../../x", &error), -EINVAL);
        free(error);
        disk_record_done(&a);
        manager_free(m);
}

static void test_recover_rolls_back_creates_and_finishes_deletes(void **state) {
        Manager *m = manager_for_test();
        DiskRecord kept = {};
        char *half = NULL, *deleting = NULL, *orphan = NULL, *error = NULL;
        DiskRecord *list = NULL;
        size_t n = 0;

        assert_int_equal(disk_create(m, &(DiskCreateParams){ .instance_id = "kept", .shape = "2x4" }, &kept, &error), 0);

        /* A create that crashed after making its file, before its record. */
        half = path_join(m->pool->disks_dir, "disk-0000000000000001.qcow2");
        touch(half);
        assert_int_equal(store_intent_add(m->store, "create-disk", "disk-0000000000000001", half, NULL), 0);
        /* A delete that crashed after dropping the record, before the unlink. */
        deleting = path_join(m->pool->disks_dir, "disk-0000000000000002.raw");
        touch(deleting);
        assert_int_equal(store_intent_add(m->store, "delete-disk", "disk-0000000000000002", deleting, NULL), 0);
        /* A file nobody knows, and an intent pointing outside the pool. */
        orphan = path_join(m->pool->disks_dir, "stray.raw");
        touch(orphan);
        assert_int_equal(store_intent_add(m->store, "create-disk", "disk-0000000000000003", "/etc/passwd", NULL), 0);
        manager_free(m);

        m = manager_for_test(); /* "restart": recovery runs */
        assert_int_equal(access(half, F_OK), -1);
        assert_int_equal(access(deleting, F_OK), -1);
        assert_int_equal(access(orphan, F_OK), -1);
        assert_int_equal(access("/etc/passwd", F_OK), 0);
        assert_int_equal(access(kept.path, F_OK), 0);
        IntentRecord *intents = NULL;
        assert_int_equal(store_intent_list(m->store, &intents, &n), 0);
        assert_int_equal(n, 0);
        intent_records_free(intents, n);

        /* A record whose file vanished is dropped. */
        assert_int_equal(unlink(kept.path), 0);
        manager_free(m);
        m = manager_for_test();
        assert_int_equal(disk_list(m, NULL, &list, &n, NULL), 0);
        assert_int_equal(n, 0);
        disk_records_free(list, n);

        free(half);
        free(deleting);
        free(orphan);
        disk_record_done(&kept);
        manager_free(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_create_delete_and_idempotence),
                cmocka_unit_test(test_recover_rolls_back_creates_and_finishes_deletes),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
