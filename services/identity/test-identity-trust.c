/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "identity-trust.h"

#define NOW 1700000000ULL
#define EXT "https://token.actions.example"


static JwtKey *ext_key, *other_key;
static char *jwks;

static int setup(void **state) {
        _cleanup_(jwt_keyset_freep) JwtKeySet *ks = NULL;
        _cleanup_(json_decrefp) json_t *j = NULL;
        (void) state;

        assert_int_equal(jwt_key_generate(JWT_ALG_ES256, &ext_key), 0);
        assert_int_equal(jwt_key_generate(JWT_ALG_ES256, &other_key), 0);
        assert_int_equal(jwt_keyset_new(&ks), 0);
        assert_int_equal(jwt_keyset_add(ks, ext_key), 0);
        assert_int_equal(jwt_keyset_to_json(ks, &j), 0);
        jwks = json_dumps(j, JSON_COMPACT);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        jwt_key_unref(ext_key);
        jwt_key_unref(other_key);
        free(jwks);
        return 0;
}

static char *ext_token(const JwtKey *k, const char *iss, const char *sub, const char *aud, uint64_t exp) {
        _cleanup_(json_decrefp) json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", iss, "sub", sub, "aud", aud,
                                                      "iat", (json_int_t) NOW - 10, "exp", (json_int_t) exp);
        char *t;
        assert_int_equal(jwt_sign(k, c, &t), 0);
        return t;
}

static TrustRelationship spec(void) {
        return (TrustRelationship){ .issuer = EXT, .jwks_json = jwks, .subject_pattern = "repo:acme/*:ref:refs/heads/main",
                                    .audience = "hostmesh-sts", .tenant_id = "acme", .max_duration = 900 };
}

static void expect_refused(TrustStore *s, const char *token, const char *needle) {
        _cleanup_free_ char *err = NULL;
        const TrustRelationship *t = NULL;
        json_t *claims = NULL;

        assert_int_equal(truststore_match(s, token, NOW, 60, 0, &t, &claims, &err), -EPERM);
        assert_non_null(err);
        if (!strstr(err, needle))
                fail_msg("'%s' does not mention '%s'", err, needle);
}

static void test_matching_external_token_exchanges(void **state) {
        _cleanup_(truststore_freep) TrustStore *s = NULL;
        _cleanup_(json_decrefp) json_t *claims = NULL;
        _cleanup_free_ char *tok = ext_token(ext_key, EXT, "repo:acme/app:ref:refs/heads/main", "hostmesh-sts", NOW + 300);
        TrustRelationship sp = spec();
        const TrustRelationship *t = NULL;
        const char *id;
        (void) state;

        assert_int_equal(truststore_load(NULL, &s), 0);
        assert_int_equal(truststore_add(s, &sp, NOW, &id, NULL), 0);
        assert_true(strncmp(id, "tr-", 3) == 0);
        assert_int_equal(truststore_match(s, tok, NOW, 60, 0, &t, &claims, NULL), 0);
        assert_string_equal(t->tenant_id, "acme");
        assert_int_equal(t->max_duration, 900);
        assert_string_equal(json_string_value(json_object_get(claims, "sub")), "repo:acme/app:ref:refs/heads/main");
}

static void test_each_refusal_names_the_failed_check(void **state) {
        _cleanup_(truststore_freep) TrustStore *s = NULL;
        _cleanup_free_ char *unknown = ext_token(ext_key, "https://other.example", "repo:acme/app:ref:refs/heads/main", "hostmesh-sts", NOW + 300);
        _cleanup_free_ char *aud = ext_token(ext_key, EXT, "repo:acme/app:ref:refs/heads/main", "someone-else", NOW + 300);
        _cleanup_free_ char *sub = ext_token(ext_key, EXT, "repo:evil/app:ref:refs/heads/main", "hostmesh-sts", NOW + 300);
        _cleanup_free_ char *exp = ext_token(ext_key, EXT, "repo:acme/app:ref:refs/heads/main", "hostmesh-sts", NOW - 100);
        _cleanup_free_ char *sig = ext_token(other_key, EXT, "repo:acme/app:ref:refs/heads/main", "hostmesh-sts", NOW + 300);
        TrustRelationship sp = spec();
        (void) state;

        assert_int_equal(truststore_load(NULL, &s), 0);
        assert_int_equal(truststore_add(s, &sp, NOW, NULL, NULL), 0);
        expect_refused(s, unknown, "unknown_issuer");
        expect_refused(s, aud, "audience_mismatch");
        expect_refused(s, sub, "subject_mismatch");
        expect_refused(s, exp, "expired");
        expect_refused(s, sig, "unknown_kid");
        expect_refused(s, "garbage", "malformed");
}

static void test_add_validates_every_field_and_persists(void **state) {
        _cleanup_(truststore_freep) TrustStore *s = NULL, *again = NULL;
        _cleanup_free_ char *err = NULL;
        char dir[] = "/tmp/test-identity-trust-XXXXXX", path[64];
        TrustRelationship sp;
        const char *id;
        (void) state;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/trust.json", dir);
        assert_int_equal(truststore_load(path, &s), 0);

        sp = spec();
        sp.audience = NULL;
        assert_int_equal(truststore_add(s, &sp, NOW, NULL, &err), -EINVAL);
        assert_non_null(strstr(err, "audience"));
        err = (free(err), NULL);
        sp = spec();
        sp.jwks_json = (char *) "{\"keys\":[]}";
        assert_int_equal(truststore_add(s, &sp, NOW, NULL, &err), -EINVAL);
        assert_non_null(strstr(err, "JWKS"));
        err = (free(err), NULL);
        sp = spec();
        sp.jwks_file = (char *) "/x";
        assert_int_equal(truststore_add(s, &sp, NOW, NULL, &err), -EINVAL);
        err = (free(err), NULL);
        sp = spec();
        sp.tenant_id = (char *) "a/b";
        assert_int_equal(truststore_add(s, &sp, NOW, NULL, &err), -EINVAL);
        err = (free(err), NULL);

        sp = spec();
        sp.id = (char *) "github";
        assert_int_equal(truststore_add(s, &sp, NOW, &id, NULL), 0);
        assert_string_equal(id, "github");
        assert_int_equal(truststore_add(s, &sp, NOW, NULL, &err), -EEXIST);

        assert_int_equal(truststore_load(path, &again), 0);
        assert_int_equal(truststore_size(again), 1);
        assert_string_equal(truststore_get(again, 0)->subject_pattern, "repo:acme/*:ref:refs/heads/main");
        assert_int_equal(truststore_remove(again, "github"), 0);
        assert_int_equal(truststore_remove(again, "github"), -ENOENT);
        again = truststore_free(again);
        assert_int_equal(truststore_load(path, &again), 0);
        assert_int_equal(truststore_size(again), 0);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_matching_external_token_exchanges),
                cmocka_unit_test(test_each_refusal_names_the_failed_check),
                cmocka_unit_test(test_add_validates_every_field_and_persists),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
