/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "fs-util.h"
#include "identity-keys.h"

#define T0 1700000000ULL

static const KeyStoreOptions opts = {
        .alg = JWT_ALG_ES256,
        .publish_ahead = 300,        /* JWKS max-age */
        .keep_after_retire = 3660,   /* 1 h tokens + 60 s leeway */
        .rotation_interval = 86400,
};

static void test_first_key_signs_at_once_and_restart_adds_none(void **state) {
        _cleanup_(keystore_freep) KeyStore *s = NULL, *again = NULL;
        char dir[] = "/tmp/test-identity-keys-XXXXXX", path[64];
        KeyStoreOptions o = opts;
        struct stat st;
        (void) state;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/keys.json", dir);
        o.path = path;
        assert_int_equal(keystore_open(&o, T0, &s), 0);
        assert_non_null(keystore_signing_key(s, T0));
        assert_int_equal(jwt_keyset_size(keystore_published(s)), 1);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        /* A restart (even much later) loads the same key and adds nothing. */
        assert_int_equal(keystore_open(&o, T0 + 1000, &again), 0);
        assert_int_equal(jwt_keyset_size(keystore_published(again)), 1);
        assert_string_equal(jwt_key_kid(keystore_signing_key(again, T0 + 1000)),
                            jwt_key_kid(keystore_signing_key(s, T0)));
        unlink(path);
        rmdir(dir);
}

static void test_rotation_publishes_ahead_and_retires_after_longest_token(void **state) {
        _cleanup_(keystore_freep) KeyStore *s = NULL;
        _cleanup_free_ char *old = NULL;
        const char *next;
        uint64_t from;
        (void) state;

        assert_int_equal(keystore_open(&opts, T0, &s), 0);
        old = strdup(jwt_key_kid(keystore_signing_key(s, T0)));
        assert_int_equal(keystore_rotate(s, T0 + 10, &next, &from), 0);
        assert_int_equal(from, T0 + 10 + 300);
        assert_string_not_equal(next, old);
        /* Published at once, but not signing before one max-age has passed. */
        assert_int_equal(jwt_keyset_size(keystore_published(s)), 2);
        assert_non_null(jwt_keyset_find(keystore_published(s), next));
        assert_string_equal(jwt_key_kid(keystore_signing_key(s, T0 + 309)), old);
        assert_string_equal(jwt_key_kid(keystore_signing_key(s, T0 + 310)), next);
        /* A second rotation while one is pending adds nothing. */
        assert_int_equal(keystore_rotate(s, T0 + 20, NULL, NULL), 0);
        assert_int_equal(jwt_keyset_size(keystore_published(s)), 2);
        assert_int_equal(keystore_next_change(s, T0 + 20), T0 + 310);

        /* The old key stays published until its last token has expired. */
        assert_int_equal(keystore_maintain(s, T0 + 310 + 3659), 0);
        assert_non_null(jwt_keyset_find(keystore_published(s), old));
        assert_int_equal(keystore_next_change(s, T0 + 400), T0 + 310 + 3660);
        assert_int_equal(keystore_maintain(s, T0 + 310 + 3660), 1);
        assert_null(jwt_keyset_find(keystore_published(s), old));
        assert_int_equal(jwt_keyset_size(keystore_published(s)), 1);
}

static void test_automatic_rotation_schedules_one_max_age_early(void **state) {
        _cleanup_(keystore_freep) KeyStore *s = NULL;
        const JwtKey *first;
        (void) state;

        assert_int_equal(keystore_open(&opts, T0, &s), 0);
        first = keystore_signing_key(s, T0);
        assert_int_equal(keystore_next_change(s, T0), T0 + 86400 - 300);
        assert_int_equal(keystore_maintain(s, T0 + 86400 - 301), 0);
        assert_int_equal(keystore_maintain(s, T0 + 86400 - 300), 1);
        assert_int_equal(jwt_keyset_size(keystore_published(s)), 2);
        assert_ptr_equal(keystore_signing_key(s, T0 + 86399), first);
        assert_ptr_not_equal(keystore_signing_key(s, T0 + 86400), first);
}

static void test_corrupt_key_file_is_an_error_not_a_new_key(void **state) {
        _cleanup_(keystore_freep) KeyStore *s = NULL;
        char dir[] = "/tmp/test-identity-keys-XXXXXX", path[64];
        KeyStoreOptions o = opts;
        (void) state;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/keys.json", dir);
        assert_int_equal(write_file_atomic(path, "{\"keys\":[{}]}", 13, 0600), 0);
        o.path = path;
        assert_int_equal(keystore_open(&o, T0, &s), -EBADMSG);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_first_key_signs_at_once_and_restart_adds_none),
                cmocka_unit_test(test_rotation_publishes_ahead_and_retires_after_longest_token),
                cmocka_unit_test(test_automatic_rotation_schedules_one_max_age_early),
                cmocka_unit_test(test_corrupt_key_file_is_an_error_not_a_new_key),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
