/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "identity-issue.h"
#include "identity-validate.h"

#define ISS "https://id.example.test"
#define NOW 1700000000ULL


static JwtKey *key_a, *key_b, *key_rsa;
static JwtKeySet *keys;

static int setup(void **state) {
        (void) state;
        assert_int_equal(jwt_key_generate(JWT_ALG_ES256, &key_a), 0);
        assert_int_equal(jwt_key_generate(JWT_ALG_ES256, &key_b), 0);
        assert_int_equal(jwt_key_generate(JWT_ALG_RS256, &key_rsa), 0);
        assert_int_equal(jwt_keyset_new(&keys), 0);
        assert_int_equal(jwt_keyset_add(keys, key_a), 0);
        assert_int_equal(jwt_keyset_add(keys, key_b), 0);
        assert_int_equal(jwt_keyset_add(keys, key_rsa), 0);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        jwt_keyset_free(keys);
        jwt_key_unref(key_a);
        jwt_key_unref(key_b);
        jwt_key_unref(key_rsa);
        return 0;
}

static const TokenPolicy policy = { .issuer = ISS, .audience = "aud1", .now = NOW, .leeway = 60 };

static char *sign_claims(const JwtKey *k, const char *iss, const char *aud, uint64_t iat, uint64_t nbf, uint64_t exp) {
        _cleanup_(json_decrefp) json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "iss", iss, "sub", "t1/i1",
                                                      "aud", aud, "iat", (json_int_t) iat, "nbf", (json_int_t) nbf,
                                                      "exp", (json_int_t) exp, "jti", "jti-1");
        char *t = NULL;
        assert_int_equal(jwt_sign(k, c, &t), 0);
        return t;
}

static void expect(const char *token, const TokenPolicy *p, const Revocations *rev, TokenRefusal want, int want_r) {
        _cleanup_(json_decrefp) json_t *claims = NULL;
        _cleanup_free_ char *msg = NULL;
        TokenRefusal why = _TOKEN_REFUSAL_MAX;
        int r;

        r = token_validate(token, keys, rev, p, &claims, &why, &msg);
        if (why != want)
                fail_msg("want %s, got %s (%s)", token_refusal_to_string(want), token_refusal_to_string(why), msg ?: "");
        assert_int_equal(r, want_r);
        if (want == TOKEN_VALID)
                assert_non_null(claims);
        else
                assert_non_null(msg);
}

static char *with_part(const char *token, int part, const char *json) {
        _cleanup_free_ char *b = base64url_encode(json, strlen(json));
        const char *d1 = strchr(token, '.'), *d2 = strchr(d1 + 1, '.');
        char *out = NULL;

        if (part == 0)
                assert_true(asprintf(&out, "%s%s", b, d1) > 0);
        else
                assert_true(asprintf(&out, "%.*s.%s%s", (int) (d1 - token), token, b, d2) > 0);
        return out;
}

static void test_valid_es256_and_rs256_tokens_pass(void **state) {
        _cleanup_free_ char *t1 = sign_claims(key_a, ISS, "aud1", NOW, NOW, NOW + 3600);
        _cleanup_free_ char *t2 = sign_claims(key_rsa, ISS, "aud1", NOW, NOW, NOW + 3600);
        (void) state;
        expect(t1, &policy, NULL, TOKEN_VALID, 0);
        expect(t2, &policy, NULL, TOKEN_VALID, 0);
}

static void test_tampered_payload_is_bad_signature(void **state) {
        _cleanup_free_ char *t = sign_claims(key_a, ISS, "aud1", NOW, NOW, NOW + 3600), *forged = NULL;
        (void) state;
        forged = with_part(t, 1, "{\"iss\":\"" ISS "\",\"sub\":\"t1/admin\",\"aud\":\"aud1\",\"exp\":1800000000}");
        expect(forged, &policy, NULL, TOKEN_BAD_SIGNATURE, -EKEYREJECTED);
}

static void test_swapped_kid_is_bad_signature(void **state) {
        _cleanup_free_ char *t = sign_claims(key_a, ISS, "aud1", NOW, NOW, NOW + 3600), *forged = NULL, *h = NULL;
        (void) state;
        assert_true(asprintf(&h, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", jwt_key_kid(key_b)) > 0);
        forged = with_part(t, 0, h);
        expect(forged, &policy, NULL, TOKEN_BAD_SIGNATURE, -EKEYREJECTED);
}

static void test_unknown_kid_and_missing_kid_are_refused(void **state) {
        _cleanup_free_ char *t = sign_claims(key_a, ISS, "aud1", NOW, NOW, NOW + 3600), *f1 = NULL, *f2 = NULL;
        (void) state;
        f1 = with_part(t, 0, "{\"alg\":\"ES256\",\"kid\":\"someone-else\",\"typ\":\"JWT\"}");
        expect(f1, &policy, NULL, TOKEN_UNKNOWN_KID, -ENOKEY);
        f2 = with_part(t, 0, "{\"alg\":\"ES256\",\"typ\":\"JWT\"}");
        expect(f2, &policy, NULL, TOKEN_UNKNOWN_KID, -ENOKEY);
}

static void test_alg_none_hs256_and_mismatched_alg_are_refused(void **state) {
        _cleanup_free_ char *t = sign_claims(key_a, ISS, "aud1", NOW, NOW, NOW + 3600);
        _cleanup_free_ char *none = NULL, *hs = NULL, *rs = NULL, *h = NULL, *unsigned_none = NULL;
        const char *d2;
        (void) state;

        assert_true(asprintf(&h, "{\"alg\":\"none\",\"kid\":\"%s\"}", jwt_key_kid(key_a)) > 0);
        none = with_part(t, 0, h);
        expect(none, &policy, NULL, TOKEN_ALG_NOT_ALLOWED, -EKEYREJECTED);
        /* The classic "alg":"none" with an empty signature part. */
        d2 = strrchr(none, '.');
        unsigned_none = strndup(none, (size_t) (d2 - none + 1));
        expect(unsigned_none, &policy, NULL, TOKEN_ALG_NOT_ALLOWED, -EKEYREJECTED);
        free(h);
        assert_true(asprintf(&h, "{\"alg\":\"HS256\",\"kid\":\"%s\"}", jwt_key_kid(key_a)) > 0);
        hs = with_part(t, 0, h);
        expect(hs, &policy, NULL, TOKEN_ALG_NOT_ALLOWED, -EKEYREJECTED);
        /* The key decides the algorithm: an EC key never verifies RS256. */
        free(h);
        assert_true(asprintf(&h, "{\"alg\":\"RS256\",\"kid\":\"%s\"}", jwt_key_kid(key_a)) > 0);
        rs = with_part(t, 0, h);
        expect(rs, &policy, NULL, TOKEN_ALG_NOT_ALLOWED, -EKEYREJECTED);
}

static void test_time_claims_with_leeway(void **state) {
        _cleanup_free_ char *expired = sign_claims(key_a, ISS, "aud1", NOW - 7200, NOW - 7200, NOW - 61);
        _cleanup_free_ char *in_leeway = sign_claims(key_a, ISS, "aud1", NOW - 7200, NOW - 7200, NOW - 59);
        _cleanup_free_ char *future = sign_claims(key_a, ISS, "aud1", NOW, NOW + 61, NOW + 3600);
        _cleanup_free_ char *soon = sign_claims(key_a, ISS, "aud1", NOW, NOW + 59, NOW + 3600);
        _cleanup_free_ char *iat_future = sign_claims(key_a, ISS, "aud1", NOW + 600, NOW, NOW + 3600);
        (void) state;

        expect(expired, &policy, NULL, TOKEN_EXPIRED, -EKEYEXPIRED);
        expect(in_leeway, &policy, NULL, TOKEN_VALID, 0);
        expect(future, &policy, NULL, TOKEN_NOT_YET_VALID, -EKEYREJECTED);
        expect(soon, &policy, NULL, TOKEN_VALID, 0);
        expect(iat_future, &policy, NULL, TOKEN_NOT_YET_VALID, -EKEYREJECTED);
}

static void test_issuer_and_audience_must_match(void **state) {
        _cleanup_free_ char *wrong_iss = sign_claims(key_a, "https://evil.test", "aud1", NOW, NOW, NOW + 60);
        _cleanup_free_ char *wrong_aud = sign_claims(key_a, ISS, "aud2", NOW, NOW, NOW + 60);
        TokenPolicy empty_aud = policy;
        (void) state;

        expect(wrong_iss, &policy, NULL, TOKEN_WRONG_ISSUER, -EKEYREJECTED);
        expect(wrong_aud, &policy, NULL, TOKEN_AUDIENCE_MISMATCH, -EKEYREJECTED);
        empty_aud.audience = "";
        expect(wrong_aud, &empty_aud, NULL, TOKEN_AUDIENCE_MISMATCH, -EKEYREJECTED);
}

static void test_audience_array_claim(void **state) {
        _cleanup_(json_decrefp) json_t *aud = json_pack("[s, s]", "x", "aud1");
        (void) state;
        assert_true(token_audience_contains(aud, "aud1"));
        assert_false(token_audience_contains(aud, "aud"));
        assert_false(token_audience_contains(aud, ""));
}

static void test_revoked_by_jti_and_by_subject(void **state) {
        _cleanup_(revocations_freep) Revocations *rev = NULL;
        _cleanup_free_ char *t = sign_claims(key_a, ISS, "aud1", NOW, NOW, NOW + 3600);
        _cleanup_free_ char *later = sign_claims(key_a, ISS, "aud1", NOW + 10, NOW + 10, NOW + 3600);
        (void) state;

        assert_int_equal(revocations_load(NULL, 10, &rev), 0);
        expect(t, &policy, rev, TOKEN_VALID, 0);
        assert_int_equal(revocations_add_jti(rev, "jti-1", NOW + 3600), 0);
        expect(t, &policy, rev, TOKEN_REVOKED, -EKEYREVOKED);
        assert_int_equal(revocations_prune(rev, NOW + 3601), 1);
        expect(t, &policy, rev, TOKEN_VALID, 0);

        /* A subject revocation covers tokens issued up to it, not after. */
        assert_int_equal(revocations_add_subject(rev, "t1/i1", NOW + 5, NOW + 7200), 0);
        expect(t, &policy, rev, TOKEN_REVOKED, -EKEYREVOKED);
        TokenPolicy p2 = policy;
        p2.now = NOW + 20;
        expect(later, &p2, rev, TOKEN_VALID, 0);
        assert_int_equal(revocations_add_jti(rev, "", NOW), -EINVAL);
}

static void test_too_large_and_malformed(void **state) {
        char *big = malloc(20000);
        (void) state;
        memset(big, 'a', 19999);
        big[19999] = 0;
        expect(big, &policy, NULL, TOKEN_TOO_LARGE, -EMSGSIZE);
        free(big);
        expect("", &policy, NULL, TOKEN_MALFORMED, -EBADMSG);
        expect("a.b.c", &policy, NULL, TOKEN_MALFORMED, -EBADMSG);
}

static void test_issued_tokens_carry_the_claims(void **state) {
        _cleanup_(json_decrefp) json_t *claims = NULL;
        TokenIssued a = {}, b = {};
        TokenRefusal why;
        (void) state;

        assert_int_equal(token_issue(key_a, ISS,
                                     &(TokenRequest){ .tenant_id = "t1", .instance_id = "i1", .container_name = "web",
                                                      .audience = (const char *const[]){ "aud1", "aud2", NULL },
                                                      .lifetime = 600 },
                                     NOW, &a),
                         0);
        assert_int_equal(token_validate(a.token, keys, NULL, &policy, &claims, &why, NULL), 0);
        assert_string_equal(json_string_value(json_object_get(claims, "sub")), "t1/i1/web");
        assert_string_equal(json_string_value(json_object_get(claims, "tenant_id")), "t1");
        assert_string_equal(json_string_value(json_object_get(claims, "instance_id")), "i1");
        assert_string_equal(json_string_value(json_object_get(claims, "container_name")), "web");
        assert_string_equal(json_string_value(json_object_get(claims, "jti")), a.jti);
        assert_int_equal(json_integer_value(json_object_get(claims, "exp")), NOW + 600);
        assert_int_equal(a.expires_at, NOW + 600);
        assert_int_equal(token_issue(key_a, ISS,
                                     &(TokenRequest){ .tenant_id = "t1", .instance_id = "i1",
                                                      .audience = (const char *const[]){ "aud1", NULL }, .lifetime = 600 },
                                     NOW, &b),
                         0);
        assert_string_not_equal(a.jti, b.jti);
        assert_int_equal(token_issue(key_a, ISS,
                                     &(TokenRequest){ .tenant_id = "t/1", .instance_id = "i1",
                                                      .audience = (const char *const[]){ "aud1", NULL }, .lifetime = 600 },
                                     NOW, &b),
                         -EINVAL);
        token_issued_done(&a);
        token_issued_done(&b);
}

/* Claims are serialized by hand for printable ASCII and by jansson
 * otherwise: both must give the same, valid JSON. */
static void test_issued_claims_escape_audiences(void **state) {
        const char *const tricky[] = { "a\"b\\c", "caf\xc3\xa9", "x\ty", NULL };
        (void) state;

        for (size_t i = 0; tricky[i]; i++) {
                _cleanup_(json_decrefp) json_t *claims = NULL;
                TokenPolicy p = policy;
                TokenIssued t = {};
                TokenRefusal why;

                assert_int_equal(token_issue(key_a, ISS,
                                             &(TokenRequest){ .subject = "t1/x\"y", .tenant_id = "t1",
                                                              .audience = (const char *const[]){ tricky[i], NULL },
                                                              .lifetime = 60 },
                                             NOW, &t),
                                 0);
                p.audience = tricky[i];
                assert_int_equal(token_validate(t.token, keys, NULL, &p, &claims, &why, NULL), 0);
                assert_string_equal(json_string_value(json_object_get(claims, "aud")), tricky[i]);
                assert_string_equal(json_string_value(json_object_get(claims, "sub")), "t1/x\"y");
                token_issued_done(&t);
        }
        /* Not UTF-8: refused, not mistaken for a lack of memory. */
        TokenIssued bad = {};
        assert_int_equal(token_issue(key_a, ISS,
                                     &(TokenRequest){ .tenant_id = "t1", .instance_id = "i1",
                                                      .audience = (const char *const[]){ "\xff\xfe", NULL },
                                                      .lifetime = 60 },
                                     NOW, &bad),
                         -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_valid_es256_and_rs256_tokens_pass),
                cmocka_unit_test(test_tampered_payload_is_bad_signature),
                cmocka_unit_test(test_swapped_kid_is_bad_signature),
                cmocka_unit_test(test_unknown_kid_and_missing_kid_are_refused),
                cmocka_unit_test(test_alg_none_hs256_and_mismatched_alg_are_refused),
                cmocka_unit_test(test_time_claims_with_leeway),
                cmocka_unit_test(test_issuer_and_audience_must_match),
                cmocka_unit_test(test_audience_array_claim),
                cmocka_unit_test(test_revoked_by_jti_and_by_subject),
                cmocka_unit_test(test_too_large_and_malformed),
                cmocka_unit_test(test_issued_tokens_carry_the_claims),
                cmocka_unit_test(test_issued_claims_escape_audiences),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
