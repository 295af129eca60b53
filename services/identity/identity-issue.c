/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>

#include "identity-issue.h"


void token_issued_done(TokenIssued *t) {
        free(t->token);
        *t = (TokenIssued){};
}

bool token_name_is_valid(const char *s) {
        size_t n;

        if (isempty(s))
                return false;
        n = strlen(s);
        if (n > TOKEN_FIELD_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                      s[i] == '.' || s[i] == '_' || s[i] == '-'))
                        return false;
        return true;
}

/* Token ids come from a buffer of CSPRNG output refilled 4 KiB at a time:
 * each RAND_bytes() call costs a getpid() system call for fork detection,
 * which on a busy host is a visible share of an issuance. Bytes are wiped
 * as they are handed out; a forked child starts with an empty buffer. */
static uint8_t random_pool[4096];
static size_t random_left = 0;
static pthread_mutex_t random_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t random_once = PTHREAD_ONCE_INIT;

static void random_pool_forget(void) {
        explicit_bzero(random_pool, sizeof(random_pool));
        random_left = 0;
}

static void random_pool_setup(void) {
        (void) pthread_atfork(NULL, NULL, random_pool_forget);
}

static int random_id(uint8_t out[16]) {
        int r = 0;

        (void) pthread_once(&random_once, random_pool_setup);
        pthread_mutex_lock(&random_lock);
        if (random_left < 16) {
                if (RAND_bytes(random_pool, sizeof(random_pool)) != 1)
                        r = -EIO;
                else
                        random_left = sizeof(random_pool);
        }
        if (r == 0) {
                random_left -= 16;
                memcpy(out, random_pool + random_left, 16);
                explicit_bzero(random_pool + random_left, 16);
        }
        pthread_mutex_unlock(&random_lock);
        return r;
}

/* The claims of an ordinary token are serialized by hand: building and
 * dumping a jansson object was a tenth of an issuance. Only printable ASCII
 * takes this path (escaping '"' and '\\' is then all JSON needs); anything
 * else, and tokens with extra claims, go through jansson. */
static bool plain_ascii(const char *s) {
        for (; s && *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
                        return false;
        return true;
}

static char *put_string(char *o, const char *s) {
        *o++ = '"';
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        *o++ = '\\';
                *o++ = *s;
        }
        *o++ = '"';
        return o;
}

static char *put_member(char *o, const char *name, const char *value) {
        o += sprintf(o, ",\"%s\":", name);
        return put_string(o, value);
}

static int claims_by_hand(const char *issuer, const char *sub, const TokenRequest *req, size_t n_aud, uint64_t now,
                          const char *jti, char **ret, size_t *ret_len) {
        size_t need = 256 + 2 * (strlen(issuer) + strlen(sub) + strlen(jti));
        char *buf, *o;

        if (!plain_ascii(issuer) || !plain_ascii(sub))
                return -EINVAL;
        for (size_t i = 0; i < n_aud; i++) {
                if (!plain_ascii(req->audience[i]))
                        return -EINVAL;
                need += 2 * strlen(req->audience[i]) + 4;
        }
        need += 2 * (strlen(req->tenant_id ?: "") + strlen(req->instance_id ?: "") + strlen(req->container_name ?: ""));
        o = buf = malloc(need);
        if (!buf)
                return -ENOMEM;
        o += sprintf(o, "{\"iss\":");
        o = put_string(o, issuer);
        o = put_member(o, "sub", sub);
        o += sprintf(o, ",\"aud\":");
        if (n_aud == 1)
                o = put_string(o, req->audience[0]);
        else {
                *o++ = '[';
                for (size_t i = 0; i < n_aud; i++) {
                        if (i > 0)
                                *o++ = ',';
                        o = put_string(o, req->audience[i]);
                }
                *o++ = ']';
        }
        o += sprintf(o, ",\"exp\":%" PRIu64 ",\"iat\":%" PRIu64 ",\"nbf\":%" PRIu64, now + req->lifetime, now, now);
        o = put_member(o, "jti", jti);
        if (req->tenant_id)
                o = put_member(o, "tenant_id", req->tenant_id);
        if (req->instance_id)
                o = put_member(o, "instance_id", req->instance_id);
        if (req->container_name)
                o = put_member(o, "container_name", req->container_name);
        *o++ = '}';
        *o = 0;
        *ret = buf;
        *ret_len = (size_t) (o - buf);
        return 0;
}

int token_issue(const JwtKey *key, const char *issuer, const TokenRequest *req, uint64_t now, TokenIssued *ret) {
        _cleanup_(json_decrefp) json_t *claims = NULL, *aud = NULL;
        _cleanup_free_ char *sub = NULL, *jti = NULL;
        uint8_t rnd[16];
        size_t n_aud = 0;
        int r;

        if (!req->audience || !req->audience[0])
                return -EINVAL;
        if (req->tenant_id && !token_name_is_valid(req->tenant_id))
                return -EINVAL;
        if (req->instance_id && !token_name_is_valid(req->instance_id))
                return -EINVAL;
        if (req->container_name && !token_name_is_valid(req->container_name))
                return -EINVAL;
        if (req->subject) {
                if (isempty(req->subject) || strlen(req->subject) > 1024)
                        return -EINVAL;
                sub = strdup(req->subject);
        } else {
                if (!req->tenant_id || !req->instance_id)
                        return -EINVAL;
                if (req->container_name)
                        r = asprintf(&sub, "%s/%s/%s", req->tenant_id, req->instance_id, req->container_name);
                else
                        r = asprintf(&sub, "%s/%s", req->tenant_id, req->instance_id);
                if (r < 0)
                        sub = NULL;
        }
        if (!sub)
                return -ENOMEM;

        for (n_aud = 0; req->audience[n_aud]; n_aud++)
                if (isempty(req->audience[n_aud]) || strlen(req->audience[n_aud]) > 1024)
                        return -EINVAL;
        if (n_aud > TOKEN_AUDIENCES_MAX)
                return -E2BIG;
        r = random_id(rnd);
        if (r < 0)
                return r;
        jti = base64url_encode(rnd, sizeof(rnd));
        if (!jti)
                return -ENOMEM;

        if (!req->extra) {
                _cleanup_free_ char *payload = NULL;
                size_t plen;

                r = claims_by_hand(issuer, sub, req, n_aud, now, jti, &payload, &plen);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        *ret = (TokenIssued){ .expires_at = now + req->lifetime };
                        r = jwt_sign_payload(key, payload, plen, &ret->token);
                        if (r < 0)
                                return r;
                        memcpy(ret->jti, jti, MIN(strlen(jti) + 1, sizeof(ret->jti)));
                        ret->jti[sizeof(ret->jti) - 1] = 0;
                        return 0;
                }
        }

        /* RFC 7519 §4.1.3: a single audience may be a plain string. jansson
         * refuses strings that are not UTF-8: those are bad requests. */
        if (n_aud == 1)
                aud = json_string(req->audience[0]);
        else {
                aud = json_array();
                for (size_t i = 0; aud && i < n_aud; i++)
                        if (json_array_append_new(aud, json_string(req->audience[i])) < 0)
                                return -EINVAL;
        }
        if (!aud)
                return -EINVAL;

        claims = json_pack("{s:s, s:s, s:O, s:I, s:I, s:I, s:s}", "iss", issuer, "sub", sub, "aud", aud, "exp",
                           (json_int_t) (now + req->lifetime), "iat", (json_int_t) now, "nbf", (json_int_t) now,
                           "jti", jti);
        if (!claims)
                return -EINVAL;  /* issuer or subject not UTF-8 */
        if ((req->tenant_id && json_object_set_new(claims, "tenant_id", json_string(req->tenant_id)) < 0) ||
            (req->instance_id && json_object_set_new(claims, "instance_id", json_string(req->instance_id)) < 0) ||
            (req->container_name &&
             json_object_set_new(claims, "container_name", json_string(req->container_name)) < 0))
                return -ENOMEM;
        if (req->extra && json_object_update_missing(claims, req->extra) < 0)
                return -ENOMEM;

        *ret = (TokenIssued){ .expires_at = now + req->lifetime };
        r = jwt_sign(key, claims, &ret->token);
        if (r < 0)
                return r;
        memcpy(ret->jti, jti, MIN(strlen(jti) + 1, sizeof(ret->jti)));
        ret->jti[sizeof(ret->jti) - 1] = 0;
        return 0;
}
