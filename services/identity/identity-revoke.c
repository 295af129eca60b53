/* SPDX-License-Identifier: MIT */
#include <sys/stat.h>

#include "fs-util.h"
#include "identity-revoke.h"

/* jansson objects are hash tables keyed by string: lookups stay O(1) with
 * many entries, and the same objects are what we persist. */
struct Revocations {
        char *path;
        size_t max_entries;
        json_t *jti;        /* jti → until */
        json_t *subjects;   /* subject → [revoked_at, until] */
};

#define REVOCATIONS_FILE_MAX (64U * 1024U * 1024U)


Revocations *revocations_free(Revocations *r) {
        if (!r)
                return NULL;
        json_decref(r->jti);
        json_decref(r->subjects);
        free(r->path);
        free(r);
        return NULL;
}

static int save(Revocations *r) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        _cleanup_free_ char *s = NULL;

        if (!r->path)
                return 0;
        root = json_pack("{s:O, s:O}", "jti", r->jti, "subjects", r->subjects);
        if (!root)
                return -ENOMEM;
        s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
                return -ENOMEM;
        return write_file_atomic(r->path, s, strlen(s), 0600);
}

static bool id_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        return n > 0 && n <= REVOCATION_ID_MAX;
}

int revocations_load(const char *path, size_t max_entries, Revocations **ret) {
        _cleanup_(revocations_freep) Revocations *r = NULL;
        _cleanup_free_ char *data = NULL;
        _cleanup_(json_decrefp) json_t *root = NULL;
        size_t len;
        const char *k;
        json_t *v;
        int q;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->max_entries = max_entries ?: REVOCATIONS_MAX_DEFAULT;
        if (path) {
                r->path = strdup(path);
                if (!r->path)
                        return -ENOMEM;
                q = read_full_file(path, &data, &len, REVOCATIONS_FILE_MAX);
                if (q < 0 && q != -ENOENT)
                        return q;
        }
        if (data) {
                root = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
                if (!json_is_object(root))
                        return -EBADMSG;
                r->jti = json_incref(json_object_get(root, "jti"));
                r->subjects = json_incref(json_object_get(root, "subjects"));
                if (!json_is_object(r->jti) || !json_is_object(r->subjects))
                        return -EBADMSG;
                json_object_foreach(r->jti, k, v)
                        if (!json_is_integer(v) || json_integer_value(v) < 0)
                                return -EBADMSG;
                json_object_foreach(r->subjects, k, v)
                        if (!json_is_array(v) || json_array_size(v) != 2 ||
                            !json_is_integer(json_array_get(v, 0)) || !json_is_integer(json_array_get(v, 1)))
                                return -EBADMSG;
        } else {
                r->jti = json_object();
                r->subjects = json_object();
                if (!r->jti || !r->subjects)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(r);
        return 0;
}

size_t revocations_count(const Revocations *r) {
        return json_object_size(r->jti) + json_object_size(r->subjects);
}

int revocations_add_jti(Revocations *r, const char *jti, uint64_t until) {
        json_t *old;

        if (!id_valid(jti) || until > INT64_MAX)
                return -EINVAL;
        old = json_object_get(r->jti, jti);
        if (!old && revocations_count(r) >= r->max_entries)
                return -ENOSPC;
        if (old && (uint64_t) json_integer_value(old) >= until)
                return 0;
        if (json_object_set_new(r->jti, jti, json_integer((json_int_t) until)) < 0)
                return -ENOMEM;
        return save(r);
}

int revocations_add_subject(Revocations *r, const char *subject, uint64_t revoked_at, uint64_t until) {
        json_t *old;

        if (!id_valid(subject) || until > INT64_MAX || revoked_at > INT64_MAX)
                return -EINVAL;
        old = json_object_get(r->subjects, subject);
        if (!old && revocations_count(r) >= r->max_entries)
                return -ENOSPC;
        if (old) {
                revoked_at = MAX(revoked_at, (uint64_t) json_integer_value(json_array_get(old, 0)));
                until = MAX(until, (uint64_t) json_integer_value(json_array_get(old, 1)));
        }
        if (json_object_set_new(r->subjects, subject,
                                json_pack("[I, I]", (json_int_t) revoked_at, (json_int_t) until)) < 0)
                return -ENOMEM;
        return save(r);
}

bool revocations_check(const Revocations *r, const char *jti, const char *subject, uint64_t iat) {
        json_t *v;

        if (!r)
                return false;
        if (jti && json_object_get(r->jti, jti))
                return true;
        if (subject) {
                v = json_object_get(r->subjects, subject);
                if (v && iat <= (uint64_t) json_integer_value(json_array_get(v, 0)))
                        return true;
        }
        return false;
}

int revocations_prune(Revocations *r, uint64_t now) {
        const char *k;
        json_t *v;
        void *tmp;
        int n = 0, q;

        json_object_foreach_safe(r->jti, tmp, k, v)
                if ((uint64_t) json_integer_value(v) < now) {
                        json_object_del(r->jti, k);
                        n++;
                }
        json_object_foreach_safe(r->subjects, tmp, k, v)
                if ((uint64_t) json_integer_value(json_array_get(v, 1)) < now) {
                        json_object_del(r->subjects, k);
                        n++;
                }
        if (n > 0) {
                q = save(r);
                if (q < 0)
                        return q;
        }
        return n;
}

int revocations_to_json(const Revocations *r, json_t **ret) {
        _cleanup_(json_decrefp) json_t *j = json_array(), *s = json_array();
        const char *k;
        json_t *v;

        if (!j || !s)
                return -ENOMEM;
        json_object_foreach(r->jti, k, v)
                if (json_array_append_new(j, json_pack("{s:s, s:O}", "id", k, "until", v)) < 0)
                        return -ENOMEM;
        json_object_foreach(r->subjects, k, v)
                if (json_array_append_new(s, json_pack("{s:s, s:O, s:O}", "id", k, "revoked_at",
                                                       json_array_get(v, 0), "until", json_array_get(v, 1))) < 0)
                        return -ENOMEM;
        *ret = json_pack("{s:O, s:O}", "jti", j, "subjects", s);
        return *ret ? 0 : -ENOMEM;
}
