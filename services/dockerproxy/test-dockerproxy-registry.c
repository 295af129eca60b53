/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#include "dockerproxy-registry.h"
#include "fs-util.h"

static void test_state_file_round_trips(void **state) {
        char dir[] = "/tmp/test-dockerproxy-registry-XXXXXX", path[128], cmd[160];
        Registration *a = NULL, *b = NULL, **loaded = NULL;
        char *anc[] = { (char *) "parent", (char *) "a", (char *) "../bad", NULL }; /* self and invalid dropped */
        char *caps[] = { (char *) "NET_ADMIN" };
        size_t n = 0;
        (void) state;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/registrations.json", dir);
        assert_int_equal(registration_new("a", "/roots/a", "/run/x/a.sock", &a), 0);
        assert_int_equal(registration_set_ancestors(a, anc), 0);
        assert_int_equal(registration_set_cap_allow(a, caps, 1), 0);
        a->policy.allow_host_network = true;
        assert_int_equal(owned_set_add(a->owned, OWNED_CONTAINER, "c0ffee"), 1);
        assert_int_equal(owned_set_add(a->owned, OWNED_VOLUME, "data"), 1);
        assert_int_equal(owned_set_add(a->owned, OWNED_IMAGE, "docker.io/library/app:v1"), 1);
        assert_int_equal(owned_set_add(a->owned, OWNED_IMAGE, "docker.io/library/app:v1"), 0);
        assert_int_equal(owned_set_add(a->owned, OWNED_VOLUME, "with space"), -EINVAL);
        assert_int_equal(registration_new("b", "/roots/b", "/run/x/b.sock", &b), 0);
        assert_int_equal(registry_save(path, (Registration *[]){ a, b }, 2), 0);

        assert_int_equal(registry_load(path, "/run/y", &loaded, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(loaded[0]->id, "a");
        assert_string_equal(loaded[0]->root, "/roots/a");
        /* Socket paths follow the configured directory, not the old one. */
        assert_string_equal(loaded[0]->socket_path, "/run/y/a.sock");
        assert_string_equal(loaded[0]->ancestors[0], "parent");
        assert_null(loaded[0]->ancestors[1]);
        assert_string_equal(loaded[0]->policy.cap_add_allow[0], "NET_ADMIN");
        assert_true(loaded[0]->policy.allow_host_network);
        assert_false(loaded[0]->policy.allow_privileged);
        assert_string_equal(loaded[0]->caller.id, "a");
        assert_false(loaded[1]->policy.allow_host_network);
        /* Records come back with their registration, and only with it. */
        assert_true(owned_set_has(loaded[0]->owned, OWNED_CONTAINER, "c0ffee"));
        assert_true(owned_set_has(loaded[0]->owned, OWNED_VOLUME, "data"));
        assert_true(owned_set_has(loaded[0]->owned, OWNED_IMAGE, "docker.io/library/app:v1"));
        assert_false(owned_set_has(loaded[0]->owned, OWNED_CONTAINER, "data"));
        assert_ptr_equal(loaded[0]->caller.owned, loaded[0]->owned);
        assert_int_equal(owned_set_size(loaded[1]->owned, OWNED_CONTAINER), 0);

        for (size_t i = 0; i < n; i++)
                registration_free(loaded[i]);
        free(loaded);
        registration_free(a);
        registration_free(b);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_bad_entries_are_skipped_and_missing_file_is_empty(void **state) {
        char dir[] = "/tmp/test-dockerproxy-registry-XXXXXX", path[128], cmd[160];
        const char *text = "{\"registrations\":[{\"container_id\":\"../x\",\"root\":\"/r\"},"
                           "{\"container_id\":\"ok\",\"root\":\"relative\"},"
                           "{\"container_id\":\"good\",\"root\":\"/r\",\"policy\":{\"cap_add_allow\":[\"NET_RAW\"]}},"
                           "{\"container_id\":\"badcap\",\"root\":\"/r\",\"policy\":{\"cap_add_allow\":[\"X;Y\"]}}]}";
        Registration **loaded = NULL;
        size_t n = 9;
        (void) state;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/registrations.json", dir);
        assert_int_equal(registry_load(path, "/run", &loaded, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(write_file_atomic(path, text, strlen(text), 0600), 0);
        assert_int_equal(registry_load(path, "/run", &loaded, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(loaded[0]->id, "good");
        registration_free(loaded[0]);
        free(loaded);
        assert_int_equal(write_file_atomic(path, "[]", 2, 0600), 0);
        assert_int_equal(registry_load(path, "/run", &loaded, &n), -EBADMSG);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_ids_must_be_safe_names(void **state) {
        (void) state;
        assert_true(registration_id_is_valid("3f2a9c_ctr-1.x"));
        assert_false(registration_id_is_valid(""));
        assert_false(registration_id_is_valid(".."));
        assert_false(registration_id_is_valid(".hidden"));
        assert_false(registration_id_is_valid("a/b"));
        assert_false(registration_id_is_valid("a=b"));
        assert_false(registration_id_is_valid(NULL));
}

static void test_records_are_capped(void **state) {
        _cleanup_(owned_set_freep) OwnedSet *s = NULL;
        char id[32];
        (void) state;
        assert_int_equal(owned_set_new(&s), 0);
        for (unsigned i = 0; i < OWNED_MAX; i++) {
                snprintf(id, sizeof(id), "c%u", i);
                assert_int_equal(owned_set_add(s, OWNED_CONTAINER, id), 1);
        }
        assert_int_equal(owned_set_add(s, OWNED_CONTAINER, "one-more"), -ENOSPC);
        /* Per kind. */
        assert_int_equal(owned_set_add(s, OWNED_NETWORK, "one-more"), 1);
        assert_int_equal(owned_set_remove(s, OWNED_CONTAINER, "c7"), 1);
        assert_int_equal(owned_set_remove(s, OWNED_CONTAINER, "c7"), 0);
        assert_int_equal(owned_set_add(s, OWNED_CONTAINER, "one-more"), 1);
        assert_int_equal(owned_set_add(s, OWNED_NONE, "x"), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_state_file_round_trips),
                cmocka_unit_test(test_bad_entries_are_skipped_and_missing_file_is_empty),
                cmocka_unit_test(test_ids_must_be_safe_names),
                cmocka_unit_test(test_records_are_capped),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
