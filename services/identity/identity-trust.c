/* SPDX-License-Identifier: MIT */
#include <fnmatch.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "error-util.h"
#include "fs-util.h"
#include "identity-trust.h"

#define TRUST_FILE_MAX (64U * 1024U * 1024U)

struct TrustStore {
        char *path;
        TrustRelationship *items;
        size_t n_items;
};


static void relationship_done(TrustRelationship *t) {
        free(t->id);
        free(t->issuer);
        free(t->jwks_json);
        free(t->jwks_file);
        free(t->subject_pattern);
        free(t->audience);
        free(t->tenant_id);
        *t = (TrustRelationship){};
}

TrustStore *truststore_free(TrustStore *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_items; i++)
                relationship_done(&s->items[i]);
        free(s->items);
        free(s->path);
        free(s);
        return NULL;
}

size_t truststore_size(const TrustStore *s) {
        return s->n_items;
}

const TrustRelationship *truststore_get(const TrustStore *s, size_t i) {
        return i < s->n_items ? &s->items[i] : NULL;
}

int trust_relationship_to_json(const TrustRelationship *t, json_t **ret) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "id", t->id, "issuer", t->issuer,
                              "subject_pattern", t->subject_pattern, "audience", t->audience, "tenant_id",
                              t->tenant_id, "max_duration", (json_int_t) t->max_duration, "created",
                              (json_int_t) t->created);
        if (!o)
                return -ENOMEM;
        if ((t->jwks_json && json_object_set_new(o, "jwks_json", json_string(t->jwks_json)) < 0) ||
            (t->jwks_file && json_object_set_new(o, "jwks_file", json_string(t->jwks_file)) < 0)) {
                json_decref(o);
                return -ENOMEM;
        }
        *ret = o;
        return 0;
}

static int save(TrustStore *s) {
        _cleanup_(json_decrefp) json_t *arr = json_array();
        _cleanup_free_ char *text = NULL;
        int r;

        if (!s->path)
                return 0;
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_items; i++) {
                json_t *o;
                r = trust_relationship_to_json(&s->items[i], &o);
                if (r < 0)
                        return r;
                if (json_array_append_new(arr, o) < 0)
                        return -ENOMEM;
        }
        text = json_dumps(arr, JSON_INDENT(1));
        if (!text)
                return -ENOMEM;
        return write_file_atomic(s->path, text, strlen(text), 0600);
}

static int load_jwks(const TrustRelationship *t, JwtKeySet **ret) {
        _cleanup_free_ char *data = NULL;
        size_t len;
        int r;

        if (t->jwks_json)
                return jwt_keyset_parse(t->jwks_json, strlen(t->jwks_json), ret);
        r = read_full_file(t->jwks_file, &data, &len, TRUST_JWKS_MAX);
        if (r < 0)
                return r;
        return jwt_keyset_parse(data, len, ret);
}

static bool text_ok(const char *s, size_t max) {
        if (isempty(s) || strlen(s) > max)
                return false;
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static int check_spec(const TrustRelationship *t, char **ret_error) {
        _cleanup_(jwt_keyset_freep) JwtKeySet *ks = NULL;
        int r;

        if (!text_ok(t->issuer, 1024))
                return error_set(ret_error, -EINVAL, "issuer must be a non-empty URL of at most 1024 characters.");
        if (t->id && !filename_is_valid(t->id, 64))
                return error_set(ret_error, -EINVAL, "id may only hold [A-Za-z0-9._-], at most 64 characters.");
        if (!!t->jwks_json == !!t->jwks_file)
                return error_set(ret_error, -EINVAL, "Give exactly one of jwks_json (inline JWKS) or jwks_file.");
        if (t->jwks_file && t->jwks_file[0] != '/')
                return error_set(ret_error, -EINVAL, "jwks_file must be an absolute path.");
        if (t->jwks_json && strlen(t->jwks_json) > TRUST_JWKS_MAX)
                return error_set(ret_error, -EINVAL, "jwks_json is larger than %u bytes.", TRUST_JWKS_MAX);
        if (!text_ok(t->subject_pattern, 1024))
                return error_set(ret_error, -EINVAL, "subject_pattern must be a non-empty glob (\"*\" matches all).");
        if (!text_ok(t->audience, 1024))
                return error_set(ret_error, -EINVAL, "audience must be given: the external token's \"aud\" must hold it.");
        if (!t->tenant_id || strlen(t->tenant_id) == 0 || strlen(t->tenant_id) > 253 ||
            !filename_is_valid(t->tenant_id, 253))
                return error_set(ret_error, -EINVAL, "tenant_id must be a name of [A-Za-z0-9._-].");
        if (t->max_duration == 0)
                return error_set(ret_error, -EINVAL, "max_duration must be positive.");
        r = load_jwks(t, &ks);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_set(ret_error, -EINVAL, "The JWKS cannot be used: %s.",
                            r == -EBADMSG ? "not a JWKS with valid EC P-256 or RSA ≥ 2048 keys" : strerror(-r));
        if (jwt_keyset_size(ks) == 0)
                return error_set(ret_error, -EINVAL, "The JWKS holds no ES256 or RS256 signing key.");
        return 0;
}

static int copy_spec(const TrustRelationship *spec, TrustRelationship *t) {
        *t = (TrustRelationship){ .max_duration = spec->max_duration, .created = spec->created };
#define DUP(f)                                                  \
        if (spec->f && !(t->f = strdup(spec->f))) {             \
                relationship_done(t);                           \
                return -ENOMEM;                                 \
        }
        DUP(id);
        DUP(issuer);
        DUP(jwks_json);
        DUP(jwks_file);
        DUP(subject_pattern);
        DUP(audience);
        DUP(tenant_id);
#undef DUP
        return 0;
}

static const TrustRelationship *find(const TrustStore *s, const char *id) {
        for (size_t i = 0; i < s->n_items; i++)
                if (streq(s->items[i].id, id))
                        return &s->items[i];
        return NULL;
}

static int append(TrustStore *s, const TrustRelationship *spec, const char **ret_id) {
        TrustRelationship *a;
        int r;

        a = realloc(s->items, (s->n_items + 1) * sizeof(*a));
        if (!a)
                return -ENOMEM;
        s->items = a;
        r = copy_spec(spec, &s->items[s->n_items]);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = s->items[s->n_items].id;
        s->n_items++;
        return 0;
}

int truststore_load(const char *path, TrustStore **ret) {
        _cleanup_(truststore_freep) TrustStore *s = NULL;
        _cleanup_free_ char *data = NULL;
        _cleanup_(json_decrefp) json_t *root = NULL;
        size_t len, i;
        json_t *o;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        if (path) {
                s->path = strdup(path);
                if (!s->path)
                        return -ENOMEM;
                r = read_full_file(path, &data, &len, TRUST_FILE_MAX);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        if (data) {
                root = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
                if (!json_is_array(root) || json_array_size(root) > TRUST_RELATIONSHIPS_MAX)
                        return -EBADMSG;
                json_array_foreach(root, i, o) {
                        json_t *md = json_object_get(o, "max_duration"), *cr = json_object_get(o, "created");
                        TrustRelationship t = {
                                .id = (char *) json_string_value(json_object_get(o, "id")),
                                .issuer = (char *) json_string_value(json_object_get(o, "issuer")),
                                .jwks_json = (char *) json_string_value(json_object_get(o, "jwks_json")),
                                .jwks_file = (char *) json_string_value(json_object_get(o, "jwks_file")),
                                .subject_pattern = (char *) json_string_value(json_object_get(o, "subject_pattern")),
                                .audience = (char *) json_string_value(json_object_get(o, "audience")),
                                .tenant_id = (char *) json_string_value(json_object_get(o, "tenant_id")),
                                .max_duration = json_is_integer(md) && json_integer_value(md) > 0 ?
                                                        (uint64_t) json_integer_value(md) : 0,
                                .created = json_is_integer(cr) ? (uint64_t) json_integer_value(cr) : 0,
                        };
                        /* A JWKS file may be missing for now; that is checked at use. */
                        if (!t.id || !t.issuer || !t.subject_pattern || !t.audience || !t.tenant_id ||
                            t.max_duration == 0 || !!t.jwks_json == !!t.jwks_file || find(s, t.id))
                                return -EBADMSG;
                        r = append(s, &t, NULL);
                        if (r < 0)
                                return r;
                }
        }
        *ret = TAKE_PTR(s);
        return 0;
}

int truststore_add(TrustStore *s, const TrustRelationship *spec, uint64_t now, const char **ret_id,
                   char **ret_error) {
        TrustRelationship t = *spec;
        char id[3 + 12 + 1];
        uint8_t rnd[6];
        int r;

        r = check_spec(spec, ret_error);
        if (r < 0)
                return r;
        if (s->n_items >= TRUST_RELATIONSHIPS_MAX)
                return error_set(ret_error, -ENOSPC, "At most %u trust relationships; remove one first.",
                            TRUST_RELATIONSHIPS_MAX);
        if (t.id && find(s, t.id))
                return error_set(ret_error, -EEXIST, "Trust relationship \"%s\" exists already.", t.id);
        if (!t.id) {
                if (RAND_bytes(rnd, sizeof(rnd)) != 1)
                        return -EIO;
                snprintf(id, sizeof(id), "tr-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
                t.id = id;
        }
        t.created = now;
        r = append(s, &t, ret_id);
        if (r < 0)
                return r;
        r = save(s);
        if (r < 0) {
                relationship_done(&s->items[--s->n_items]);
                return r;
        }
        return 0;
}

int truststore_remove(TrustStore *s, const char *id) {
        for (size_t i = 0; i < s->n_items; i++)
                if (streq(s->items[i].id, id)) {
                        TrustRelationship gone = s->items[i];
                        memmove(s->items + i, s->items + i + 1, (s->n_items - i - 1) * sizeof(*s->items));
                        s->n_items--;
                        relationship_done(&gone);
                        return save(s);
                }
        return -ENOENT;
}

int truststore_match(TrustStore *s, const char *token, uint64_t now, uint64_t leeway, size_t max_size,
                     const TrustRelationship **ret, json_t **ret_claims, char **ret_error) {
        _cleanup_(jwt_parsed_done) JwtParsed p = {};
        _cleanup_free_ char *last_error = NULL;
        const char *iss;
        int r;

        r = jwt_parse(token, max_size ?: JWT_MAX_SIZE_DEFAULT, &p);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_set(ret_error, -EPERM, "The subject token is %s.",
                            r == -EMSGSIZE ? "too large" : "not a compact JWS (malformed)");
        iss = json_string_value(json_object_get(p.payload, "iss"));
        if (!iss)
                return error_set(ret_error, -EPERM, "The subject token has no \"iss\" claim.");

        for (size_t i = 0; i < s->n_items; i++) {
                const TrustRelationship *t = &s->items[i];
                _cleanup_(jwt_keyset_freep) JwtKeySet *ks = NULL;
                _cleanup_(json_decrefp) json_t *claims = NULL;
                _cleanup_free_ char *msg = NULL;
                TokenRefusal why;
                const char *sub;

                if (!streq(t->issuer, iss))
                        continue;
                r = load_jwks(t, &ks);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        free(last_error);
                        if (asprintf(&last_error, "Trust relationship %s: its JWKS cannot be loaded (%s).", t->id,
                                     strerror(-r)) < 0)
                                last_error = NULL;
                        continue;
                }
                r = token_validate(token, ks, NULL,
                                   &(TokenPolicy){ .issuer = t->issuer, .audience = t->audience, .now = now,
                                                   .leeway = leeway, .max_size = max_size,
                                                   .allow_missing_kid = true },
                                   &claims, &why, &msg);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        free(last_error);
                        if (asprintf(&last_error, "Trust relationship %s: %s: %s", t->id,
                                     token_refusal_to_string(why), msg) < 0)
                                last_error = NULL;
                        continue;
                }
                sub = json_string_value(json_object_get(claims, "sub"));
                if (!sub || fnmatch(t->subject_pattern, sub, 0) != 0) {
                        free(last_error);
                        if (asprintf(&last_error, "Trust relationship %s: subject_mismatch: subject \"%.128s\" does not match \"%s\".",
                                     t->id, sub ?: "(none)", t->subject_pattern) < 0)
                                last_error = NULL;
                        continue;
                }
                *ret = t;
                *ret_claims = TAKE_PTR(claims);
                return 0;
        }
        if (last_error) {
                if (ret_error)
                        *ret_error = TAKE_PTR(last_error);
                return -EPERM;
        }
        return error_set(ret_error, -EPERM, "unknown_issuer: no trust relationship for issuer \"%.256s\".", iss);
}
