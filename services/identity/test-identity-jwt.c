/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/crypto.h>

#include "identity-jwt.h"


static void test_base64url_round_trips_every_length(void **state) {
        uint8_t data[40];
        (void) state;

        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (uint8_t) (i * 37 + 11);
        for (size_t len = 0; len <= sizeof(data); len++) {
                _cleanup_free_ char *s = base64url_encode(data, len);
                _cleanup_free_ uint8_t *back = NULL;
                size_t n;

                assert_non_null(s);
                assert_null(strchr(s, '='));
                assert_null(strchr(s, '+'));
                assert_null(strchr(s, '/'));
                assert_int_equal(base64url_decode(s, strlen(s), &back, &n), 0);
                assert_int_equal(n, len);
                assert_memory_equal(back, data, len);
        }
}

static void test_base64url_refuses_padding_and_noncanonical_bits(void **state) {
        uint8_t *out = NULL;
        size_t n;
        (void) state;

        assert_int_equal(base64url_decode("Zm9v", 4, &out, &n), 0);   /* "foo" */
        assert_memory_equal(out, "foo", 3);
        free(out);
        assert_int_equal(base64url_decode("Zg==", 4, &out, &n), -EBADMSG);  /* padding */
        assert_int_equal(base64url_decode("Zh", 2, &out, &n), -EBADMSG);    /* 'h' leaves bits set */
        assert_int_equal(base64url_decode("Z", 1, &out, &n), -EBADMSG);     /* 6 bits only */
        assert_int_equal(base64url_decode("a+b/", 4, &out, &n), -EBADMSG);  /* standard alphabet */
        assert_int_equal(base64url_decode("ab c", 4, &out, &n), -EBADMSG);
}

/* RFC 7638 §3.1: the example RSA key and its thumbprint. */
static void test_thumbprint_matches_rfc7638_example(void **state) {
        _cleanup_(json_decrefp) json_t *jwk = NULL;
        _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;
        _cleanup_free_ char *tp = NULL;
        (void) state;

        jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "e", "AQAB", "alg", "RS256", "n",
                        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw");
        assert_int_equal(jwt_key_from_jwk(jwk, &k), 0);
        assert_int_equal(jwt_key_thumbprint(k, &tp), 0);
        assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_string_equal(jwt_key_kid(k), tp);
        assert_int_equal(jwt_key_alg(k), JWT_ALG_RS256);
        assert_false(jwt_key_has_private(k));
}

static void sign_and_verify(JwtAlg alg) {
        _cleanup_(jwt_key_unrefp) JwtKey *k = NULL, *pub = NULL, *reloaded = NULL;
        _cleanup_(json_decrefp) json_t *claims = json_pack("{s:s, s:i}", "sub", "t/i", "exp", 2000000000);
        _cleanup_(json_decrefp) json_t *jwk = NULL;
        _cleanup_free_ char *token = NULL, *pem = NULL;
        _cleanup_(jwt_parsed_done) JwtParsed p = {};

        assert_int_equal(jwt_key_generate(alg, &k), 0);
        assert_int_equal(jwt_sign(k, claims, &token), 0);
        assert_int_equal(jwt_parse(token, JWT_MAX_SIZE_DEFAULT, &p), 0);
        assert_string_equal(p.alg, jwt_alg_to_string(alg));
        assert_string_equal(p.kid, jwt_key_kid(k));
        assert_string_equal(json_string_value(json_object_get(p.header, "typ")), "JWT");
        assert_int_equal(json_object_size(p.header), 3);  /* alg, kid, typ only */
        if (alg == JWT_ALG_ES256)
                assert_int_equal(p.signature_len, 64);      /* raw R||S, not DER */
        else
                assert_int_equal(p.signature_len, 256);

        /* The public JWK alone verifies, and gets the same kid. */
        assert_int_equal(jwt_key_to_jwk(k, &jwk), 0);
        assert_null(json_object_get(jwk, "d"));
        assert_int_equal(jwt_key_from_jwk(jwk, &pub), 0);
        assert_string_equal(jwt_key_kid(pub), jwt_key_kid(k));
        assert_int_equal(jwt_verify_signature(pub, token, p.signing_input_len, p.signature, p.signature_len), 0);
        /* One flipped bit in the input or the signature breaks it. */
        token[5] ^= 1;
        assert_int_equal(jwt_verify_signature(pub, token, p.signing_input_len, p.signature, p.signature_len), -EKEYREJECTED);
        token[5] ^= 1;
        p.signature[10] ^= 0x80;
        assert_int_equal(jwt_verify_signature(pub, token, p.signing_input_len, p.signature, p.signature_len), -EKEYREJECTED);
        p.signature[10] ^= 0x80;
        assert_int_equal(jwt_verify_signature(pub, token, p.signing_input_len, p.signature, p.signature_len - 1), -EKEYREJECTED);

        /* PEM round trip keeps the key (and so the kid). */
        assert_int_equal(jwt_key_to_private_pem(k, &pem), 0);
        assert_int_equal(jwt_key_from_private_pem(pem, &reloaded), 0);
        assert_string_equal(jwt_key_kid(reloaded), jwt_key_kid(k));
        { char *x = NULL; assert_int_equal(jwt_key_to_private_pem(pub, &x), -ENOKEY); }
}

static void test_es256_sign_verify_with_raw_signature(void **state) {
        (void) state;
        sign_and_verify(JWT_ALG_ES256);
}

static void test_rs256_sign_verify(void **state) {
        (void) state;
        sign_and_verify(JWT_ALG_RS256);
}

static void test_ecdsa_der_raw_conversion_round_trips(void **state) {
        uint8_t raw[64], back[64], *der = NULL;
        size_t der_len;
        (void) state;

        /* r with a leading zero byte and s with the high bit set: DER pads
         * one and strips the other. */
        memset(raw, 0, 32);
        raw[31] = 0x01;
        memset(raw + 32, 0xff, 32);
        assert_int_equal(ecdsa_raw_to_der(raw, &der, &der_len), 0);
        assert_int_equal(der[0], 0x30);        /* SEQUENCE */
        assert_int_equal(der[2], 0x02);        /* INTEGER r */
        assert_int_equal(der[3], 0x01);        /* r is one byte long */
        assert_int_equal(ecdsa_der_to_raw(der, der_len, back), 0);
        assert_memory_equal(raw, back, 64);
        /* Trailing garbage after the DER is refused. */
        assert_int_equal(ecdsa_der_to_raw(der, der_len - 1, back), -EBADMSG);
        OPENSSL_free(der);
}

static void test_parse_refuses_malformed_shapes(void **state) {
        JwtParsed p = {};
        char big[64];
        (void) state;

        assert_int_equal(jwt_parse("", 100, &p), -EBADMSG);
        assert_int_equal(jwt_parse("abc", 100, &p), -EBADMSG);
        assert_int_equal(jwt_parse("a.b", 100, &p), -EBADMSG);
        assert_int_equal(jwt_parse("a.b.c.d", 100, &p), -EBADMSG);
        /* {"alg":"ES256"} . [] . sig: payload not an object */
        assert_int_equal(jwt_parse("eyJhbGciOiJFUzI1NiJ9.W10.AA", 100, &p), -EBADMSG);
        /* {"kid":"x"} . {} : header without alg */
        assert_int_equal(jwt_parse("eyJraWQiOiJ4In0.e30.AA", 100, &p), -EBADMSG);
        /* {"alg":"ES256","alg":"none"} . {} : duplicate member */
        assert_int_equal(jwt_parse("eyJhbGciOiJFUzI1NiIsImFsZyI6Im5vbmUifQ.e30.AA", 100, &p), -EBADMSG);
        /* {"alg":"ES256"} . {} . (empty signature) parses; verification refuses it later */
        assert_int_equal(jwt_parse("eyJhbGciOiJFUzI1NiJ9.e30.", 100, &p), 0);
        assert_int_equal(p.signature_len, 0);
        jwt_parsed_done(&p);
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        assert_int_equal(jwt_parse(big, 32, &p), -EMSGSIZE);
}

static void test_jwks_skips_foreign_keys_and_refuses_bad_ones(void **state) {
        _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;
        _cleanup_(jwt_keyset_freep) JwtKeySet *ks = NULL, *ks2 = NULL;
        _cleanup_(json_decrefp) json_t *jwk = NULL, *doc = NULL;
        _cleanup_free_ char *text = NULL;
        (void) state;

        assert_int_equal(jwt_key_generate(JWT_ALG_ES256, &k), 0);
        assert_int_equal(jwt_key_to_jwk(k, &jwk), 0);
        doc = json_pack("{s:[O, {s:s, s:s, s:s}, {s:s, s:s}]}", "keys", jwk, "kty", "OKP", "crv", "Ed25519", "x",
                        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kty", "oct", "k", "c2VjcmV0");
        text = json_dumps(doc, 0);
        assert_int_equal(jwt_keyset_parse(text, strlen(text), &ks), 0);
        assert_int_equal(jwt_keyset_size(ks), 1);
        assert_non_null(jwt_keyset_find(ks, jwt_key_kid(k)));
        assert_null(jwt_keyset_find(ks, "nope"));

        /* An EC key whose point is not on the curve is refused. */
        json_object_set_new(jwk, "y", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"));
        free(text);
        json_decref(doc);
        doc = json_pack("{s:[O]}", "keys", jwk);
        text = json_dumps(doc, 0);
        assert_int_equal(jwt_keyset_parse(text, strlen(text), &ks2), -EBADMSG);
        assert_int_equal(jwt_keyset_parse("{\"keys\":{}}", 11, &ks2), -EBADMSG);
        assert_int_equal(jwt_keyset_parse("not json", 8, &ks2), -EBADMSG);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_base64url_round_trips_every_length),
                cmocka_unit_test(test_base64url_refuses_padding_and_noncanonical_bits),
                cmocka_unit_test(test_thumbprint_matches_rfc7638_example),
                cmocka_unit_test(test_es256_sign_verify_with_raw_signature),
                cmocka_unit_test(test_rs256_sign_verify),
                cmocka_unit_test(test_ecdsa_der_raw_conversion_round_trips),
                cmocka_unit_test(test_parse_refuses_malformed_shapes),
                cmocka_unit_test(test_jwks_skips_foreign_keys_and_refuses_bad_ones),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
