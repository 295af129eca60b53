/* SPDX-License-Identifier: MIT */
#include <sys/stat.h>

#include "fs-util.h"
#include "identity-keys.h"

#define KEYSTORE_FILE_MAX (4U * 1024U * 1024U)
#define KEYSTORE_MAX_KEYS 16U

typedef struct KeyEntry {
        JwtKey *key;
        uint64_t created;
        uint64_t activate_at;
} KeyEntry;

struct KeyStore {
        KeyStoreOptions opts;
        char *path;
        KeyEntry *entries;   /* sorted by activate_at */
        size_t n_entries;
        JwtKeySet *published;
};


KeyStore *keystore_free(KeyStore *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_entries; i++)
                jwt_key_unref(s->entries[i].key);
        free(s->entries);
        jwt_keyset_free(s->published);
        free(s->path);
        free(s);
        return NULL;
}

static int rebuild_published(KeyStore *s) {
        _cleanup_(jwt_keyset_freep) JwtKeySet *ks = NULL;
        int r;

        r = jwt_keyset_new(&ks);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n_entries; i++) {
                r = jwt_keyset_add(ks, s->entries[i].key);
                if (r < 0)
                        return r;
        }
        jwt_keyset_free(s->published);
        s->published = TAKE_PTR(ks);
        return 0;
}

static int save(KeyStore *s) {
        _cleanup_(json_decrefp) json_t *arr = json_array(), *root = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!s->path)
                return rebuild_published(s);
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_entries; i++) {
                _cleanup_free_ char *pem = NULL;
                r = jwt_key_to_private_pem(s->entries[i].key, &pem);
                if (r < 0)
                        return r;
                if (json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I, s:s}", "kid",
                                                         jwt_key_kid(s->entries[i].key), "alg",
                                                         jwt_alg_to_string(jwt_key_alg(s->entries[i].key)),
                                                         "created", (json_int_t) s->entries[i].created,
                                                         "activate_at", (json_int_t) s->entries[i].activate_at,
                                                         "private_key", pem)) < 0) {
                        explicit_bzero(pem, strlen(pem));
                        return -ENOMEM;
                }
                explicit_bzero(pem, strlen(pem));
        }
        root = json_pack("{s:i, s:O}", "version", 1, "keys", arr);
        if (!root)
                return -ENOMEM;
        text = json_dumps(root, JSON_INDENT(1));
        if (!text)
                return -ENOMEM;
        r = write_file_atomic(s->path, text, strlen(text), 0600);
        explicit_bzero(text, strlen(text));
        if (r < 0)
                return r;
        return rebuild_published(s);
}

static int entry_cmp(const void *a, const void *b) {
        const KeyEntry *x = a, *y = b;
        if (x->activate_at != y->activate_at)
                return x->activate_at < y->activate_at ? -1 : 1;
        return x->created < y->created ? -1 : x->created > y->created;
}

static int add_entry(KeyStore *s, JwtKey *k, uint64_t created, uint64_t activate_at) {
        KeyEntry *a;

        if (s->n_entries >= KEYSTORE_MAX_KEYS)
                return -E2BIG;
        for (size_t i = 0; i < s->n_entries; i++)
                if (streq(jwt_key_kid(s->entries[i].key), jwt_key_kid(k)))
                        return -EEXIST;
        a = realloc(s->entries, (s->n_entries + 1) * sizeof(*a));
        if (!a)
                return -ENOMEM;
        s->entries = a;
        s->entries[s->n_entries++] = (KeyEntry){ .key = jwt_key_ref(k), .created = created, .activate_at = activate_at };
        qsort(s->entries, s->n_entries, sizeof(KeyEntry), entry_cmp);
        return 0;
}

static int load(KeyStore *s) {
        _cleanup_free_ char *data = NULL;
        _cleanup_(json_decrefp) json_t *root = NULL;
        size_t len, i;
        json_t *e;
        int r;

        r = read_full_file(s->path, &data, &len, KEYSTORE_FILE_MAX);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        root = json_loadb(data, len, 0, NULL);
        explicit_bzero(data, len);
        if (!root || !json_is_array(json_object_get(root, "keys")))
                return -EBADMSG;
        json_array_foreach(json_object_get(root, "keys"), i, e) {
                _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;
                const char *pem = json_string_value(json_object_get(e, "private_key"));
                json_t *c = json_object_get(e, "created"), *a = json_object_get(e, "activate_at");

                if (!pem || !json_is_integer(c) || !json_is_integer(a) || json_integer_value(a) < 0)
                        return -EBADMSG;
                r = jwt_key_from_private_pem(pem, &k);
                if (r < 0)
                        return r;
                /* The kid is derived, never trusted from the file. */
                r = add_entry(s, k, (uint64_t) json_integer_value(c), (uint64_t) json_integer_value(a));
                if (r < 0)
                        return r;
        }
        return 0;
}

int keystore_open(const KeyStoreOptions *o, uint64_t now, KeyStore **ret) {
        _cleanup_(keystore_freep) KeyStore *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->opts = *o;
        if (o->path) {
                s->path = strdup(o->path);
                if (!s->path)
                        return -ENOMEM;
                s->opts.path = s->path;
                r = load(s);
                if (r < 0)
                        return r;
        }
        if (s->n_entries == 0) {
                _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;

                r = jwt_key_generate(o->alg, &k);
                if (r < 0)
                        return r;
                r = add_entry(s, k, now, now);
                if (r < 0)
                        return r;
                r = save(s);
        } else
                r = rebuild_published(s);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

/* Index of the signing entry, or -1. */
static ssize_t signing_index(const KeyStore *s, uint64_t now) {
        ssize_t idx = -1;
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i].activate_at <= now)
                        idx = (ssize_t) i;
        return idx;
}

const JwtKey *keystore_signing_key(const KeyStore *s, uint64_t now) {
        ssize_t i = signing_index(s, now);
        return i >= 0 ? s->entries[i].key : NULL;
}

const JwtKeySet *keystore_published(const KeyStore *s) {
        return s->published;
}

static const KeyEntry *pending_entry(const KeyStore *s, uint64_t now) {
        if (s->n_entries > 0 && s->entries[s->n_entries - 1].activate_at > now)
                return &s->entries[s->n_entries - 1];
        return NULL;
}

static int schedule(KeyStore *s, uint64_t now, uint64_t activate_at) {
        _cleanup_(jwt_key_unrefp) JwtKey *k = NULL;
        int r;

        r = jwt_key_generate(s->opts.alg, &k);
        if (r < 0)
                return r;
        r = add_entry(s, k, now, activate_at);
        if (r < 0)
                return r;
        return save(s);
}

int keystore_rotate(KeyStore *s, uint64_t now, const char **ret_kid, uint64_t *ret_activate_at) {
        const KeyEntry *p = pending_entry(s, now);
        int r;

        if (!p) {
                r = schedule(s, now, now + s->opts.publish_ahead);
                if (r < 0)
                        return r;
                p = pending_entry(s, now);
                if (!p) /* publish_ahead == 0: it signs already */
                        p = &s->entries[s->n_entries - 1];
        }
        if (ret_kid)
                *ret_kid = jwt_key_kid(p->key);
        if (ret_activate_at)
                *ret_activate_at = p->activate_at;
        return 0;
}

/* A superseded entry i is removed at its successor's activation plus the
 * longest lifetime a token it signed can have. */
static uint64_t remove_at(const KeyStore *s, size_t i) {
        return s->entries[i + 1].activate_at + s->opts.keep_after_retire;
}

int keystore_maintain(KeyStore *s, uint64_t now) {
        ssize_t sig = signing_index(s, now);
        bool changed = false;
        int r;

        /* Drop superseded keys whose tokens have all expired. */
        for (ssize_t i = sig - 1; i >= 0; i--)
                if (remove_at(s, (size_t) i) <= now) {
                        jwt_key_unref(s->entries[i].key);
                        memmove(s->entries + i, s->entries + i + 1, (s->n_entries - (size_t) i - 1) * sizeof(KeyEntry));
                        s->n_entries--;
                        sig--;
                        changed = true;
                }

        if (s->opts.rotation_interval > 0 && sig >= 0 && !pending_entry(s, now)) {
                uint64_t due = s->entries[sig].activate_at + s->opts.rotation_interval;
                if (due <= now + s->opts.publish_ahead) {
                        r = schedule(s, now, MAX(due, now + s->opts.publish_ahead));
                        if (r < 0)
                                return r;
                        return 1;
                }
        }
        if (changed) {
                r = save(s);
                if (r < 0)
                        return r;
        }
        return changed;
}

uint64_t keystore_next_change(const KeyStore *s, uint64_t now) {
        ssize_t sig = signing_index(s, now);
        uint64_t next = UINT64_MAX;

        for (ssize_t i = 0; i < sig; i++)
                next = MIN(next, remove_at(s, (size_t) i));
        if (pending_entry(s, now))
                next = MIN(next, pending_entry(s, now)->activate_at);
        else if (s->opts.rotation_interval > 0 && sig >= 0) {
                uint64_t due = s->entries[sig].activate_at + s->opts.rotation_interval;
                next = MIN(next, due > s->opts.publish_ahead ? due - s->opts.publish_ahead : 0);
        }
        return next;
}

int keystore_status_json(const KeyStore *s, uint64_t now, json_t **ret) {
        _cleanup_(json_decrefp) json_t *arr = json_array();
        ssize_t sig = signing_index(s, now);

        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_entries; i++) {
                const char *state = (ssize_t) i == sig ? "signing" : (ssize_t) i > sig ? "pending" : "retired";
                json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "kid", jwt_key_kid(s->entries[i].key), "alg",
                                      jwt_alg_to_string(jwt_key_alg(s->entries[i].key)), "state", state,
                                      "activate_at", (json_int_t) s->entries[i].activate_at);
                if (!o)
                        return -ENOMEM;
                if ((ssize_t) i < sig) {
                        json_object_set_new(o, "retired_at", json_integer((json_int_t) s->entries[i + 1].activate_at));
                        json_object_set_new(o, "remove_at", json_integer((json_int_t) remove_at(s, i)));
                }
                if (json_array_append_new(arr, o) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(arr);
        return 0;
}
