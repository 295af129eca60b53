/* SPDX-License-Identifier: MIT */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "identity-jwt.h"

struct JwtKey {
        unsigned n_ref;
        JwtAlg alg;
        EVP_PKEY *pkey;
        bool has_private;
        char *kid;
        /* Prepared once: OpenSSL 3 looks algorithms up in its provider on
         * every *Init() call, which costs more than an ECDSA signature. */
        EVP_PKEY_CTX *sign_ctx;
        EVP_PKEY_CTX *verify_ctx;
        char *header_b64;       /* {"alg","kid","typ"} never changes for a key */
};

struct JwtKeySet {
        JwtKey **keys;
        size_t n_keys;
};

DEFINE_VOID_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_VOID_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_VOID_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_VOID_CLEANUP_FUNC(BIGNUM *, BN_free);
DEFINE_VOID_CLEANUP_FUNC(ECDSA_SIG *, ECDSA_SIG_free);
DEFINE_VOID_CLEANUP_FUNC(OSSL_PARAM_BLD *, OSSL_PARAM_BLD_free);
DEFINE_VOID_CLEANUP_FUNC(OSSL_PARAM *, OSSL_PARAM_free);
DEFINE_VOID_CLEANUP_FUNC(EVP_PKEY_CTX *, EVP_PKEY_CTX_free);

static const char *const alg_names[_JWT_ALG_MAX] = {
        [JWT_ALG_ES256] = "ES256",
        [JWT_ALG_RS256] = "RS256",
};

const char *jwt_alg_to_string(JwtAlg a) {
        return a >= 0 && a < _JWT_ALG_MAX ? alg_names[a] : NULL;
}

JwtAlg jwt_alg_from_string(const char *s) {
        if (!s)
                return _JWT_ALG_INVALID;
        for (JwtAlg a = 0; a < _JWT_ALG_MAX; a++)
                if (streq(s, alg_names[a]))
                        return a;
        return _JWT_ALG_INVALID;
}

/* ---- base64url ------------------------------------------------------------ */

static const char b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *base64url_encode(const void *data, size_t len) {
        const uint8_t *p = data;
        char *out, *o;

        if (len > (SIZE_MAX - 4) / 4 * 3)
                return NULL;
        out = o = malloc((len + 2) / 3 * 4 + 1);
        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                size_t left = len - i;

                if (left > 1)
                        v |= (uint32_t) p[i + 1] << 8;
                if (left > 2)
                        v |= p[i + 2];
                *o++ = b64url_alphabet[(v >> 18) & 63];
                *o++ = b64url_alphabet[(v >> 12) & 63];
                if (left > 1)
                        *o++ = b64url_alphabet[(v >> 6) & 63];
                if (left > 2)
                        *o++ = b64url_alphabet[v & 63];
        }
        *o = 0;
        return out;
}

static int b64url_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '-')
                return 62;
        if (c == '_')
                return 63;
        return -1;
}

int base64url_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len) {
        _cleanup_free_ uint8_t *out = NULL;
        uint32_t acc = 0;
        unsigned bits = 0;
        size_t n = 0;

        /* A single leftover character carries only 6 bits: never valid. */
        if (len % 4 == 1)
                return -EBADMSG;
        out = malloc(len / 4 * 3 + 3);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                int v = b64url_value(s[i]);
                if (v < 0)
                        return -EBADMSG;
                acc = (acc << 6) | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (uint8_t) (acc >> bits);
                        acc &= (1U << bits) - 1;
                }
        }
        /* Non-canonical encodings (leftover bits set) would give one token
         * several spellings; refuse them. */
        if (acc != 0)
                return -EBADMSG;
        *ret = TAKE_PTR(out);
        *ret_len = n;
        return 0;
}

/* ---- keys ----------------------------------------------------------------- */

static int key_new(EVP_PKEY *pkey, bool has_private, JwtKey **ret) {
        _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;
        int r;

        k = calloc(1, sizeof(*k));
        if (!k)
                return -ENOMEM;
        k->n_ref = 1;
        switch (EVP_PKEY_get_base_id(pkey)) {
        case EVP_PKEY_EC: {
                char group[64];
                size_t glen = 0;
                if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) ||
                    !(streq(group, "prime256v1") || streq(group, "P-256")))
                        return -EOPNOTSUPP;
                k->alg = JWT_ALG_ES256;
                break;
        }
        case EVP_PKEY_RSA:
                /* RFC 7518 §3.3: keys of 2048 bits or larger MUST be used. */
                if (EVP_PKEY_get_bits(pkey) < 2048)
                        return -EOPNOTSUPP;
                k->alg = JWT_ALG_RS256;
                break;
        default:
                return -EOPNOTSUPP;
        }
        k->pkey = pkey;
        k->has_private = has_private;
        r = jwt_key_thumbprint(k, &k->kid);
        if (r < 0) {
                k->pkey = NULL;
                return r;
        }
        *ret = TAKE_PTR(k);
        return 0;
}

int jwt_key_generate(JwtAlg alg, JwtKey **ret) {
        EVP_PKEY *pkey;
        int r;

        if (alg == JWT_ALG_ES256)
                pkey = EVP_EC_gen("P-256");
        else if (alg == JWT_ALG_RS256)
                pkey = EVP_RSA_gen(2048);
        else
                return -EINVAL;
        if (!pkey)
                return -EIO;
        r = key_new(pkey, /* has_private= */ true, ret);
        if (r < 0)
                EVP_PKEY_free(pkey);
        return r;
}

int jwt_key_from_private_pem(const char *pem, JwtKey **ret) {
        _cleanup_(BIO_freep) BIO *b = NULL;
        EVP_PKEY *pkey;
        int r;

        b = BIO_new_mem_buf(pem, -1);
        if (!b)
                return -ENOMEM;
        pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        if (!pkey)
                return -EBADMSG;
        r = key_new(pkey, /* has_private= */ true, ret);
        if (r < 0)
                EVP_PKEY_free(pkey);
        return r;
}

int jwt_key_to_private_pem(const JwtKey *k, char **ret) {
        _cleanup_(BIO_freep) BIO *b = NULL;
        char *data, *s;
        long len;

        if (!k->has_private)
                return -ENOKEY;
        b = BIO_new(BIO_s_secmem());
        if (!b)
                return -ENOMEM;
        if (!PEM_write_bio_PrivateKey(b, k->pkey, NULL, NULL, 0, NULL, NULL))
                return -EIO;
        len = BIO_get_mem_data(b, &data);
        if (len <= 0)
                return -EIO;
        s = strndup(data, (size_t) len);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

JwtKey *jwt_key_ref(JwtKey *k) {
        if (k)
                k->n_ref++;
        return k;
}

JwtKey *jwt_key_unref(JwtKey *k) {
        if (!k || --k->n_ref > 0)
                return NULL;
        EVP_PKEY_CTX_free(k->sign_ctx);
        EVP_PKEY_CTX_free(k->verify_ctx);
        EVP_PKEY_free(k->pkey);
        free(k->kid);
        free(k->header_b64);
        free(k);
        return NULL;
}

const char *jwt_key_kid(const JwtKey *k) {
        return k->kid;
}

JwtAlg jwt_key_alg(const JwtKey *k) {
        return k->alg;
}

bool jwt_key_has_private(const JwtKey *k) {
        return k->has_private;
}

static char *bn_param_b64(const EVP_PKEY *pkey, const char *name, size_t pad) {
        _cleanup_(BN_freep) BIGNUM *bn = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        int n;

        if (!EVP_PKEY_get_bn_param(pkey, name, &bn))
                return NULL;
        n = pad > 0 ? (int) pad : BN_num_bytes(bn);
        if (n <= 0)
                n = 1;
        buf = malloc((size_t) n);
        if (!buf || BN_bn2binpad(bn, buf, n) < 0)
                return NULL;
        return base64url_encode(buf, (size_t) n);
}

/* The members RFC 7638 §3.2 requires, in lexicographic order, as JSON with
 * no whitespace. */
static int key_public_members(const JwtKey *k, json_t **ret) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        json_t *o;

        if (k->alg == JWT_ALG_ES256) {
                a = bn_param_b64(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32);
                b = bn_param_b64(k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
                if (!a || !b)
                        return -EIO;
                o = json_pack("{s:s, s:s, s:s, s:s}", "crv", "P-256", "kty", "EC", "x", a, "y", b);
        } else {
                a = bn_param_b64(k->pkey, OSSL_PKEY_PARAM_RSA_E, 0);
                b = bn_param_b64(k->pkey, OSSL_PKEY_PARAM_RSA_N, 0);
                if (!a || !b)
                        return -EIO;
                o = json_pack("{s:s, s:s, s:s}", "e", a, "kty", "RSA", "n", b);
        }
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

int jwt_key_thumbprint(const JwtKey *k, char **ret) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        _cleanup_free_ char *s = NULL;
        uint8_t digest[32];
        unsigned dlen = 0;
        char *t;
        int r;

        r = key_public_members(k, &o);
        if (r < 0)
                return r;
        s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
                return -ENOMEM;
        if (!EVP_Digest(s, strlen(s), digest, &dlen, EVP_sha256(), NULL))
                return -EIO;
        t = base64url_encode(digest, dlen);
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

int jwt_key_to_jwk(const JwtKey *k, json_t **ret) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        int r;

        r = key_public_members(k, &o);
        if (r < 0)
                return r;
        if (json_object_set_new(o, "kid", json_string(k->kid)) < 0 ||
            json_object_set_new(o, "alg", json_string(jwt_alg_to_string(k->alg))) < 0 ||
            json_object_set_new(o, "use", json_string("sig")) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int jwk_bytes(json_t *jwk, const char *name, size_t max, uint8_t **ret, size_t *ret_len) {
        const char *s = json_string_value(json_object_get(jwk, name));
        int r;

        if (!s)
                return -EBADMSG;
        r = base64url_decode(s, strlen(s), ret, ret_len);
        if (r < 0)
                return r;
        if (*ret_len == 0 || *ret_len > max) {
                *ret = (free(*ret), NULL);
                return -EBADMSG;
        }
        return 0;
}

static int pkey_from_params(const char *type, OSSL_PARAM_BLD *bld, EVP_PKEY **ret) {
        _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *pkey = NULL;

        params = OSSL_PARAM_BLD_to_param(bld);
        if (!params)
                return -ENOMEM;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
        if (!ctx)
                return -ENOMEM;
        if (EVP_PKEY_fromdata_init(ctx) <= 0 || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
                return -EBADMSG;
        *ret = pkey;
        return 0;
}

static int jwk_to_pkey_ec(json_t *jwk, EVP_PKEY **ret) {
        _cleanup_free_ uint8_t *x = NULL, *y = NULL;
        _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *check = NULL;
        size_t xl, yl;
        uint8_t point[65];
        EVP_PKEY *pkey = NULL;
        int r;

        if (!streq_ptr(json_string_value(json_object_get(jwk, "crv")), "P-256"))
                return -EOPNOTSUPP;
        r = jwk_bytes(jwk, "x", 32, &x, &xl);
        if (r < 0)
                return r;
        r = jwk_bytes(jwk, "y", 32, &y, &yl);
        if (r < 0)
                return r;
        /* RFC 7518 §6.2.1.2: x and y are the full 32 octets. */
        if (xl != 32 || yl != 32)
                return -EBADMSG;
        point[0] = 0x04;
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        bld = OSSL_PARAM_BLD_new();
        if (!bld ||
            !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
                return -ENOMEM;
        r = pkey_from_params("EC", bld, &pkey);
        if (r < 0)
                return r;
        /* An off-curve point must never reach a verify operation. */
        check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (!check || EVP_PKEY_public_check(check) != 1) {
                EVP_PKEY_free(pkey);
                return -EBADMSG;
        }
        *ret = pkey;
        return 0;
}

static int jwk_to_pkey_rsa(json_t *jwk, EVP_PKEY **ret) {
        _cleanup_free_ uint8_t *n = NULL, *e = NULL;
        _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
        _cleanup_(BN_freep) BIGNUM *bn = NULL, *be = NULL;
        size_t nl, el;
        int r;

        r = jwk_bytes(jwk, "n", 1024, &n, &nl);  /* up to 8192 bits */
        if (r < 0)
                return r;
        r = jwk_bytes(jwk, "e", 8, &e, &el);
        if (r < 0)
                return r;
        bn = BN_bin2bn(n, (int) nl, NULL);
        be = BN_bin2bn(e, (int) el, NULL);
        if (!bn || !be)
                return -ENOMEM;
        if (BN_num_bits(bn) < 2048 || BN_is_zero(be) || !BN_is_odd(be))
                return -EBADMSG;
        bld = OSSL_PARAM_BLD_new();
        if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
                return -ENOMEM;
        return pkey_from_params("RSA", bld, ret);
}

int jwt_key_from_jwk(json_t *jwk, JwtKey **ret) {
        _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;
        const char *kty, *alg, *use, *kid;
        EVP_PKEY *pkey = NULL;
        JwtAlg want;
        int r;

        if (!json_is_object(jwk))
                return -EBADMSG;
        kty = json_string_value(json_object_get(jwk, "kty"));
        if (!kty)
                return -EBADMSG;
        use = json_string_value(json_object_get(jwk, "use"));
        if (json_object_get(jwk, "use") && !streq_ptr(use, "sig"))
                return -EOPNOTSUPP;
        if (streq(kty, "EC")) {
                want = JWT_ALG_ES256;
                r = jwk_to_pkey_ec(jwk, &pkey);
        } else if (streq(kty, "RSA")) {
                want = JWT_ALG_RS256;
                r = jwk_to_pkey_rsa(jwk, &pkey);
        } else
                return -EOPNOTSUPP;
        if (r < 0)
                return r;
        r = key_new(pkey, /* has_private= */ false, &k);
        if (r < 0) {
                EVP_PKEY_free(pkey);
                return r;
        }
        /* A JWK that names an algorithm pins the key to it (RFC 7517 §4.4). */
        if (json_object_get(jwk, "alg")) {
                alg = json_string_value(json_object_get(jwk, "alg"));
                if (jwt_alg_from_string(alg) != want)
                        return -EOPNOTSUPP;
        }
        kid = json_string_value(json_object_get(jwk, "kid"));
        if (json_object_get(jwk, "kid")) {
                if (!kid || strlen(kid) == 0 || strlen(kid) > 256)
                        return -EBADMSG;
                if (!streq(kid, k->kid)) {
                        char *c = strdup(kid);
                        if (!c)
                                return -ENOMEM;
                        free(k->kid);
                        k->kid = c;
                }
        }
        *ret = TAKE_PTR(k);
        return 0;
}

/* ---- key sets ------------------------------------------------------------- */

int jwt_keyset_new(JwtKeySet **ret) {
        JwtKeySet *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

JwtKeySet *jwt_keyset_free(JwtKeySet *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++)
                jwt_key_unref(s->keys[i]);
        free(s->keys);
        free(s);
        return NULL;
}

int jwt_keyset_add(JwtKeySet *s, JwtKey *k) {
        JwtKey **a;

        if (jwt_keyset_find(s, k->kid))
                return -EEXIST;
        if (s->n_keys >= JWK_MAX_KEYS)
                return -E2BIG;
        a = realloc(s->keys, (s->n_keys + 1) * sizeof(*a));
        if (!a)
                return -ENOMEM;
        s->keys = a;
        s->keys[s->n_keys++] = jwt_key_ref(k);
        return 0;
}

const JwtKey *jwt_keyset_find(const JwtKeySet *s, const char *kid) {
        if (!s || !kid)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++)
                if (streq(s->keys[i]->kid, kid))
                        return s->keys[i];
        return NULL;
}

size_t jwt_keyset_size(const JwtKeySet *s) {
        return s ? s->n_keys : 0;
}

const JwtKey *jwt_keyset_get(const JwtKeySet *s, size_t i) {
        return s && i < s->n_keys ? s->keys[i] : NULL;
}

int jwt_keyset_parse(const char *json, size_t len, JwtKeySet **ret) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        _cleanup_(jwt_keyset_freep) JwtKeySet *s = NULL;
        json_t *keys, *jwk;
        size_t i;
        int r;

        root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
        if (!root)
                return -EBADMSG;
        keys = json_object_get(root, "keys");
        if (!json_is_array(keys))
                return -EBADMSG;
        if (json_array_size(keys) > JWK_MAX_KEYS)
                return -E2BIG;
        r = jwt_keyset_new(&s);
        if (r < 0)
                return r;
        json_array_foreach(keys, i, jwk) {
                _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;

                r = jwt_key_from_jwk(jwk, &k);
                if (r == -EOPNOTSUPP)
                        continue;
                if (r < 0)
                        return r;
                r = jwt_keyset_add(s, k);
                if (r < 0)
                        return r == -EEXIST ? -EBADMSG : r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

int jwt_keyset_to_json(const JwtKeySet *s, json_t **ret) {
        _cleanup_(json_decrefp) json_t *arr = json_array();
        int r;

        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_keys; i++) {
                json_t *jwk;
                r = jwt_key_to_jwk(s->keys[i], &jwk);
                if (r < 0)
                        return r;
                if (json_array_append_new(arr, jwk) < 0)
                        return -ENOMEM;
        }
        *ret = json_pack("{s:O}", "keys", arr);
        return *ret ? 0 : -ENOMEM;
}

/* ---- ECDSA signature formats ---------------------------------------------- */

int ecdsa_der_to_raw(const uint8_t *der, size_t der_len, uint8_t raw[64]) {
        _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = NULL;
        const uint8_t *p = der;
        const BIGNUM *r, *s;

        sig = d2i_ECDSA_SIG(NULL, &p, (long) der_len);
        if (!sig || p != der + der_len)
                return -EBADMSG;
        ECDSA_SIG_get0(sig, &r, &s);
        if (BN_num_bytes(r) > 32 || BN_num_bytes(s) > 32)
                return -EBADMSG;
        if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32)
                return -EBADMSG;
        return 0;
}

int ecdsa_raw_to_der(const uint8_t raw[64], uint8_t **ret, size_t *ret_len) {
        _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = NULL;
        BIGNUM *r, *s;
        uint8_t *der = NULL;
        int n;

        sig = ECDSA_SIG_new();
        r = BN_bin2bn(raw, 32, NULL);
        s = BN_bin2bn(raw + 32, 32, NULL);
        if (!sig || !r || !s || !ECDSA_SIG_set0(sig, r, s)) {
                BN_free(r);
                BN_free(s);
                return -ENOMEM;
        }
        n = i2d_ECDSA_SIG(sig, &der);
        if (n <= 0)
                return -ENOMEM;
        *ret = der;   /* OPENSSL_malloc'ed; OPENSSL_free() it */
        *ret_len = (size_t) n;
        return 0;
}

/* ---- tokens --------------------------------------------------------------- */

static char *json_b64(json_t *o) {
        _cleanup_free_ char *s = json_dumps(o, JSON_COMPACT);
        return s ? base64url_encode(s, strlen(s)) : NULL;
}

static const EVP_MD *sha256(void) {
        static EVP_MD *md = NULL;

        /* Fetched once; EVP_sha256() would be looked up on every use. */
        if (!md)
                md = EVP_MD_fetch(NULL, "SHA256", NULL);
        return md;
}

static int digest(const void *data, size_t len, uint8_t out[32]) {
        unsigned n = 0;
        if (!sha256() || !EVP_Digest(data, len, out, &n, sha256(), NULL) || n != 32)
                return -EIO;
        return 0;
}

static EVP_PKEY_CTX *prepare_ctx(const JwtKey *k, bool sign) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);

        if (!ctx)
                return NULL;
        if ((sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) <= 0 ||
            (k->alg == JWT_ALG_RS256 && (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0 ||
                                         EVP_PKEY_CTX_set_signature_md(ctx, sha256()) <= 0))) {
                EVP_PKEY_CTX_free(ctx);
                return NULL;
        }
        return ctx;
}

int jwt_sign(const JwtKey *k, json_t *claims, char **ret_token) {
        _cleanup_free_ char *payload = json_dumps(claims, JSON_COMPACT);

        if (!payload)
                return -ENOMEM;
        return jwt_sign_payload(k, payload, strlen(payload), ret_token);
}

int jwt_sign_payload(const JwtKey *k_const, const char *payload, size_t plen, char **ret_token) {
        JwtKey *k = (JwtKey *) k_const;  /* lazily prepared contexts only */
        uint8_t der[600], raw[64], md[32];
        size_t der_len = sizeof(der), hlen, slen, total;
        char *token, *p;
        int r;

        if (!k->has_private)
                return -ENOKEY;
        if (!k->header_b64) {
                _cleanup_(json_decrefp) json_t *header =
                        json_pack("{s:s, s:s, s:s}", "alg", jwt_alg_to_string(k->alg), "kid", k->kid, "typ", "JWT");
                if (!header || !(k->header_b64 = json_b64(header)))
                        return -ENOMEM;
        }
        if (!k->sign_ctx && !(k->sign_ctx = prepare_ctx(k, /* sign= */ true)))
                return -EIO;
        hlen = strlen(k->header_b64);
        slen = k->alg == JWT_ALG_ES256 ? 86 : ((size_t) EVP_PKEY_get_size(k->pkey) + 2) / 3 * 4;
        total = hlen + 1 + (plen + 2) / 3 * 4 + 1 + slen + 1;
        token = malloc(total);
        if (!token)
                return -ENOMEM;
        memcpy(token, k->header_b64, hlen);
        token[hlen] = '.';
        p = base64url_encode(payload, plen);
        if (!p) {
                free(token);
                return -ENOMEM;
        }
        memcpy(token + hlen + 1, p, strlen(p) + 1);
        free(p);

        r = digest(token, strlen(token), md);
        if (r < 0 || EVP_PKEY_sign(k->sign_ctx, der, &der_len, md, sizeof(md)) <= 0) {
                free(token);
                return -EIO;
        }
        if (k->alg == JWT_ALG_ES256) {
                if (ecdsa_der_to_raw(der, der_len, raw) < 0) {
                        free(token);
                        return -EIO;
                }
                p = base64url_encode(raw, sizeof(raw));
        } else
                p = base64url_encode(der, der_len);
        if (!p) {
                free(token);
                return -ENOMEM;
        }
        strcat(token, ".");
        strcat(token, p);
        free(p);
        *ret_token = token;
        return 0;
}

static int decode_json_part(const char *s, size_t len, json_t **ret) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t n;
        json_t *o;
        int r;

        r = base64url_decode(s, len, &buf, &n);
        if (r < 0)
                return r;
        /* Duplicate member names are ambiguous between parsers (RFC 7515
         * §5.2 lets us reject them): a classic way to smuggle claims. */
        o = json_loadb((const char *) buf, n, JSON_REJECT_DUPLICATES, NULL);
        if (!o)
                return -EBADMSG;
        if (!json_is_object(o)) {
                json_decref(o);
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

void jwt_parsed_done(JwtParsed *p) {
        json_decref(p->header);
        json_decref(p->payload);
        free(p->signature);
        *p = (JwtParsed){};
}

int jwt_parse(const char *token, size_t max_size, JwtParsed *ret) {
        _cleanup_(jwt_parsed_done) JwtParsed p = {};
        const char *d1, *d2, *end;
        size_t len;
        json_t *v;
        int r;

        len = strnlen(token, max_size + 1);
        if (len > max_size)
                return -EMSGSIZE;
        end = token + len;
        d1 = memchr(token, '.', len);
        if (!d1)
                return -EBADMSG;
        d2 = memchr(d1 + 1, '.', (size_t) (end - d1 - 1));
        if (!d2 || memchr(d2 + 1, '.', (size_t) (end - d2 - 1)))
                return -EBADMSG;
        if (d1 == token || d2 == d1 + 1)
                return -EBADMSG;

        r = decode_json_part(token, (size_t) (d1 - token), &p.header);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        r = decode_json_part(d1 + 1, (size_t) (d2 - d1 - 1), &p.payload);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        r = base64url_decode(d2 + 1, (size_t) (end - d2 - 1), &p.signature, &p.signature_len);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;

        p.alg = json_string_value(json_object_get(p.header, "alg"));
        if (!p.alg)
                return -EBADMSG;
        v = json_object_get(p.header, "kid");
        if (v && !json_is_string(v))
                return -EBADMSG;
        p.kid = json_string_value(v);
        /* RFC 7515 §4.1.11: "crit" names extensions we would have to
         * understand; we understand none. */
        if (json_object_get(p.header, "crit"))
                return -EBADMSG;
        p.signing_input_len = (size_t) (d2 - token);
        *ret = p;
        p = (JwtParsed){};
        return 0;
}

int jwt_verify_signature(const JwtKey *k_const, const void *input, size_t input_len, const uint8_t *signature,
                         size_t signature_len) {
        JwtKey *k = (JwtKey *) k_const;  /* lazily prepared context only */
        uint8_t *der = NULL, md[32];
        size_t der_len;
        int r;

        if (k->alg == JWT_ALG_ES256) {
                if (signature_len != 64)
                        return -EKEYREJECTED;
                r = ecdsa_raw_to_der(signature, &der, &der_len);
                if (r < 0)
                        return r;
        } else {
                /* RSASSA-PKCS1-v1_5 signatures are exactly the modulus length. */
                if (signature_len != (size_t) EVP_PKEY_get_size(k->pkey))
                        return -EKEYREJECTED;
        }
        if (!k->verify_ctx && !(k->verify_ctx = prepare_ctx(k, /* sign= */ false))) {
                OPENSSL_free(der);
                return -EIO;
        }
        r = digest(input, input_len, md);
        if (r < 0) {
                OPENSSL_free(der);
                return r;
        }
        r = EVP_PKEY_verify(k->verify_ctx, der ?: signature, der ? der_len : signature_len, md, sizeof(md));
        OPENSSL_free(der);
        return r == 1 ? 0 : -EKEYREJECTED;
}
