/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "dockerproxy-owned.h"

typedef struct OwnedList {
        char **items;
        size_t n, cap;
} OwnedList;

struct OwnedSet {
        OwnedList lists[_OWNED_KIND_MAX];
};

static const char *const kind_names[_OWNED_KIND_MAX] = {
        [OWNED_CONTAINER] = "containers",
        [OWNED_VOLUME] = "volumes",
        [OWNED_NETWORK] = "networks",
        [OWNED_IMAGE] = "images",
};

const char *owned_kind_to_string(OwnedKind kind) {
        return kind > OWNED_NONE && kind < _OWNED_KIND_MAX ? kind_names[kind] : NULL;
}

int owned_set_new(OwnedSet **ret) {
        OwnedSet *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

OwnedSet *owned_set_free(OwnedSet *s) {
        if (!s)
                return NULL;
        for (size_t k = 0; k < _OWNED_KIND_MAX; k++) {
                for (size_t i = 0; i < s->lists[k].n; i++)
                        free(s->lists[k].items[i]);
                free(s->lists[k].items);
        }
        free(s);
        return NULL;
}

/* Ids are printable ASCII without spaces: what the engine hands out and
 * what image references are made of. */
static bool id_is_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n == 0 || n > OWNED_ID_MAX)
                return false;
        for (const char *p = id; *p; p++)
                if (*p <= ' ' || *p >= 0x7f)
                        return false;
        return true;
}

static OwnedList *list_of(const OwnedSet *s, OwnedKind kind) {
        if (!s || kind <= OWNED_NONE || kind >= _OWNED_KIND_MAX)
                return NULL;
        return (OwnedList *) &s->lists[kind];
}

static ssize_t find(const OwnedList *l, const char *id) {
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->items[i], id))
                        return (ssize_t) i;
        return -1;
}

bool owned_set_has(const OwnedSet *s, OwnedKind kind, const char *id) {
        const OwnedList *l = list_of(s, kind);

        return l && id && find(l, id) >= 0;
}

int owned_set_add(OwnedSet *s, OwnedKind kind, const char *id) {
        OwnedList *l = list_of(s, kind);
        char *d;

        if (!l || !id_is_valid(id))
                return -EINVAL;
        if (find(l, id) >= 0)
                return 0;
        if (l->n >= OWNED_MAX)
                return -ENOSPC;
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 16;
                char **t = realloc(l->items, cap * sizeof(char *));
                if (!t)
                        return -ENOMEM;
                l->items = t;
                l->cap = cap;
        }
        d = strdup(id);
        if (!d)
                return -ENOMEM;
        l->items[l->n++] = d;
        return 1;
}

int owned_set_remove(OwnedSet *s, OwnedKind kind, const char *id) {
        OwnedList *l = list_of(s, kind);
        ssize_t i;

        if (!l || !id || (i = find(l, id)) < 0)
                return 0;
        free(l->items[i]);
        memmove(l->items + i, l->items + i + 1, (l->n - (size_t) i - 1) * sizeof(char *));
        l->n--;
        return 1;
}

size_t owned_set_size(const OwnedSet *s, OwnedKind kind) {
        const OwnedList *l = list_of(s, kind);
        return l ? l->n : 0;
}

const char *owned_set_get(const OwnedSet *s, OwnedKind kind, size_t i) {
        const OwnedList *l = list_of(s, kind);
        return l && i < l->n ? l->items[i] : NULL;
}

json_t *owned_set_to_json(const OwnedSet *s) {
        json_t *o = json_object();

        if (!o)
                return NULL;
        for (size_t k = OWNED_NONE + 1; k < _OWNED_KIND_MAX; k++) {
                json_t *a = json_array();
                if (!a || json_object_set_new(o, kind_names[k], a) < 0) {
                        json_decref(o);
                        return NULL;
                }
                for (size_t i = 0; i < s->lists[k].n; i++)
                        if (json_array_append_new(a, json_string(s->lists[k].items[i])) < 0) {
                                json_decref(o);
                                return NULL;
                        }
        }
        return o;
}

int owned_set_from_json(OwnedSet *s, json_t *j) {
        if (!json_is_object(j))
                return -EBADMSG;
        for (size_t k = OWNED_NONE + 1; k < _OWNED_KIND_MAX; k++) {
                json_t *a = json_object_get(j, kind_names[k]), *v;
                size_t i;

                json_array_foreach(a, i, v) {
                        int r = owned_set_add(s, (OwnedKind) k, json_string_value(v));
                        if (r == -ENOMEM)
                                return r;
                }
        }
        return 0;
}
