/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "dockerproxy-registry.h"
#include "fs-util.h"

#define STATE_FILE_MAX (16U * 1024U * 1024U)

bool registration_id_is_valid(const char *id) {
        return id && filename_is_valid(id, REGISTRATION_ID_MAX) > 0 && id[0] != '.';
}

int registration_new(const char *id, const char *root, const char *socket_path, Registration **ret) {
        _cleanup_(registration_freep) Registration *r = NULL;

        if (!registration_id_is_valid(id))
                return -EINVAL;
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->id = strdup(id);
        r->root = strdup(root);
        r->socket_path = strdup(socket_path);
        r->ancestors = calloc(1, sizeof(char *));
        r->policy.cap_add_allow = calloc(1, sizeof(char *));
        if (!r->id || !r->root || !r->socket_path || !r->ancestors || !r->policy.cap_add_allow ||
            owned_set_new(&r->owned) < 0)
                return -ENOMEM;
        r->caller = (DockerCaller){ .id = r->id, .root = r->root, .ancestors = r->ancestors, .policy = &r->policy,
                                    .owned = r->owned };
        *ret = TAKE_PTR(r);
        return 0;
}

Registration *registration_free(Registration *r) {
        if (!r)
                return NULL;
        proxy_free(r->proxy);
        free(r->id);
        free(r->root);
        free(r->socket_path);
        strv_free(r->ancestors);
        strv_free(r->policy.cap_add_allow);
        owned_set_free(r->owned);
        free(r);
        return NULL;
}

int registration_set_ancestors(Registration *r, char *const *ancestors) {
        size_t n = 0, k = 0;
        char **c;

        while (ancestors && ancestors[n])
                n++;
        c = calloc(n + 1, sizeof(char *));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n && i < 64; i++) {
                /* A registration is not its own ancestor; ids must be valid label suffixes. */
                if (streq(ancestors[i], r->id) || !registration_id_is_valid(ancestors[i]))
                        continue;
                if (!(c[k++] = strdup(ancestors[i]))) {
                        strv_free(c);
                        return -ENOMEM;
                }
        }
        strv_free(r->ancestors);
        r->ancestors = c;
        r->caller.ancestors = c;
        return 0;
}

int registration_set_cap_allow(Registration *r, char *const *caps, size_t n) {
        char **c = calloc(n + 1, sizeof(char *));

        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                for (const char *p = caps[i]; *p; p++)
                        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_')) {
                                strv_free(c);
                                return -EINVAL;
                        }
                if (!*caps[i] || strlen(caps[i]) > 64 || !(c[i] = strdup(caps[i]))) {
                        strv_free(c);
                        return *caps[i] && strlen(caps[i]) <= 64 ? -ENOMEM : -EINVAL;
                }
        }
        strv_free(r->policy.cap_add_allow);
        r->policy.cap_add_allow = c;
        return 0;
}

json_t *registration_to_json(const Registration *r) {
        json_t *anc = json_array(), *caps = json_array();
        const DockerPolicy *p = &r->policy;

        for (char **a = r->ancestors; a && *a; a++)
                json_array_append_new(anc, json_string(*a));
        for (char **a = p->cap_add_allow; a && *a; a++)
                json_array_append_new(caps, json_string(*a));
        return json_pack("{s:s,s:s,s:o,s:o,s:{s:b,s:o,s:b,s:b,s:b,s:b,s:b,s:b,s:b}}", "container_id", r->id, "root", r->root,
                         "ancestors", anc, "owned", owned_set_to_json(r->owned), "policy", "allow_privileged", p->allow_privileged, "cap_add_allow", caps,
                         "allow_devices", p->allow_devices, "allow_host_namespaces", p->allow_host_namespaces,
                         "allow_host_network", p->allow_host_network, "allow_unconfined", p->allow_unconfined,
                         "allow_sysctls", p->allow_sysctls, "allow_privileged_exec", p->allow_privileged_exec,
                         "see_all_containers", p->see_all_containers);
}

int registration_from_json(json_t *j, const char *socket_dir, Registration **ret) {
        _cleanup_(registration_freep) Registration *r = NULL;
        _cleanup_free_ char *sock = NULL;
        const char *id, *root;
        json_t *pol, *anc, *caps, *v;
        char **list = NULL;
        size_t i, n;
        int k;

        id = json_string_value(json_object_get(j, "container_id"));
        root = json_string_value(json_object_get(j, "root"));
        if (!registration_id_is_valid(id) || !root || root[0] != '/')
                return -EBADMSG;
        if (asprintf(&sock, "%s/%s.sock", socket_dir, id) < 0)
                return -ENOMEM;
        k = registration_new(id, root, sock, &r);
        if (k < 0)
                return k;

        anc = json_object_get(j, "ancestors");
        n = json_array_size(anc);
        list = calloc(n + 1, sizeof(char *));
        if (!list)
                return -ENOMEM;
        json_array_foreach(anc, i, v)
                list[i] = (char *) (json_string_value(v) ?: "");
        k = registration_set_ancestors(r, list);
        free(list);
        if (k < 0)
                return k;

        pol = json_object_get(j, "policy");
        r->policy.allow_privileged = json_is_true(json_object_get(pol, "allow_privileged"));
        r->policy.allow_devices = json_is_true(json_object_get(pol, "allow_devices"));
        r->policy.allow_host_namespaces = json_is_true(json_object_get(pol, "allow_host_namespaces"));
        r->policy.allow_host_network = json_is_true(json_object_get(pol, "allow_host_network"));
        r->policy.allow_unconfined = json_is_true(json_object_get(pol, "allow_unconfined"));
        r->policy.allow_sysctls = json_is_true(json_object_get(pol, "allow_sysctls"));
        r->policy.allow_privileged_exec = json_is_true(json_object_get(pol, "allow_privileged_exec"));
        r->policy.see_all_containers = json_is_true(json_object_get(pol, "see_all_containers"));
        caps = json_object_get(pol, "cap_add_allow");
        n = json_array_size(caps);
        list = calloc(n + 1, sizeof(char *));
        if (!list)
                return -ENOMEM;
        json_array_foreach(caps, i, v)
                list[i] = (char *) (json_string_value(v) ?: "");
        k = registration_set_cap_allow(r, list, n);
        free(list);
        if (k < 0)
                return -EBADMSG;
        /* Older state files have no records: nothing is owned then. */
        k = owned_set_from_json(r->owned, json_object_get(j, "owned"));
        if (k == -ENOMEM)
                return k;
        *ret = TAKE_PTR(r);
        return 0;
}

int registry_save(const char *path, Registration *const *regs, size_t n) {
        json_t *a = json_array(), *doc;
        char *text;
        int r;

        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, registration_to_json(regs[i]));
        doc = json_pack("{s:i,s:o}", "version", 1, "registrations", a);
        if (!doc)
                return -ENOMEM;
        text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(doc);
        if (!text)
                return -ENOMEM;
        r = write_file_atomic(path, text, strlen(text), 0600);
        free(text);
        return r;
}

int registry_load(const char *path, const char *socket_dir, Registration ***ret, size_t *ret_n) {
        _cleanup_free_ char *text = NULL;
        Registration **regs = NULL;
        size_t len, n = 0, i;
        json_t *doc, *a, *e;
        int r;

        r = read_full_file(path, &text, &len, STATE_FILE_MAX);
        if (r == -ENOENT) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        if (r < 0)
                return r;
        doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        a = json_object_get(doc, "registrations");
        if (!json_is_array(a)) {
                json_decref(doc);
                return -EBADMSG;
        }
        regs = calloc(json_array_size(a) + 1, sizeof(Registration *));
        if (!regs) {
                json_decref(doc);
                return -ENOMEM;
        }
        json_array_foreach(a, i, e) {
                if (n >= REGISTRATIONS_MAX)
                        break;
                if (registration_from_json(e, socket_dir, &regs[n]) >= 0)
                        n++;
        }
        json_decref(doc);
        *ret = regs;
        *ret_n = n;
        return 0;
}
