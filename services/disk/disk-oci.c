/* SPDX-License-Identifier: MIT */
/* OCI image-spec documents with jansson: descriptor.md, image-index.md,
 * manifest.md, config.md; and the Docker v2 schema 2 forms, which carry the
 * same fields under other media types. */

#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>

#include "disk-oci.h"
#include "error-util.h"
#include "macro.h"

bool oci_digest_is_valid(const char *d) {
        if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 7 + 64)
                return false;
        for (const char *p = d + 7; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

bool oci_host_is_loopback(const char *host) {
        char h[256];
        struct in_addr a4;
        struct in6_addr a6;
        const char *colon;

        /* Strip the port: "[::1]:5000", "127.0.0.1:5000", "localhost:5000". */
        if (host[0] == '[') {
                const char *end = strchr(host, ']');
                if (!end || (size_t) (end - host - 1) >= sizeof(h))
                        return false;
                memcpy(h, host + 1, (size_t) (end - host - 1));
                h[end - host - 1] = '\0';
                return inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
        }
        colon = strchr(host, ':');
        snprintf(h, sizeof(h), "%.*s", colon ? (int) (colon - host) : (int) strlen(host), host);
        if (streq(h, "localhost"))
                return true;
        return inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* distribution-spec: a repository name is path components of
 * [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*, separated by '/'. */
static bool repository_is_valid(const char *s) {
        size_t len = strlen(s);
        bool start = true;

        if (len == 0 || len > 255)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                if (alnum) {
                        start = false;
                        continue;
                }
                if (start || !strchr("._-/", c) || i + 1 == len)
                        return false;
                if (c == '/')
                        start = true;
                else if (!((s[i + 1] >= 'a' && s[i + 1] <= 'z') || (s[i + 1] >= '0' && s[i + 1] <= '9') ||
                           strchr("_-", s[i + 1])))
                        return false;
        }
        return true;
}

/* [A-Za-z0-9_][A-Za-z0-9._-]{0,127} */
static bool tag_is_valid(const char *s) {
        size_t len = strlen(s);
        if (len == 0 || len > 128 || s[0] == '.' || s[0] == '-')
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("._-", *p)))
                        return false;
        return true;
}

static bool host_is_valid(const char *s) {
        size_t len = strlen(s);
        if (len == 0 || len > 255)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr(".-:[]", *p)))
                        return false;
        return true;
}

int oci_ref_parse(const char *s, OciRef *ret, char **ret_error) {
        OciRef ref = {};
        char buf[1024];
        char *slash, *at, *colon, *name;

        if (!s || strlen(s) >= sizeof(buf) || !*s)
                return error_set(ret_error, -EINVAL, "Invalid image reference: give HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST].");
        strcpy(buf, s);
        slash = strchr(buf, '/');
        if (!slash || slash == buf)
                return error_set(ret_error, -EINVAL, "Invalid image reference '%s': it needs a registry host "
                            "(HOST[:PORT]/REPOSITORY[:TAG]); there is no default registry.", s);
        *slash = '\0';
        name = slash + 1;
        if (!host_is_valid(buf) || (!strchr(buf, '.') && !strchr(buf, ':') && !streq(buf, "localhost")))
                return error_set(ret_error, -EINVAL, "Invalid image reference '%s': '%s' is not a registry host.", s, buf);
        snprintf(ref.host, sizeof(ref.host), "%s", buf);
        at = strchr(name, '@');
        if (at) {
                *at = '\0';
                if (!oci_digest_is_valid(at + 1))
                        return error_set(ret_error, -EINVAL, "Invalid image reference '%s': the digest must be "
                                    "sha256: and 64 lowercase hex digits.", s);
                snprintf(ref.digest, sizeof(ref.digest), "%s", at + 1);
        }
        colon = strrchr(name, ':');
        if (colon && !strchr(colon, '/')) {
                *colon = '\0';
                if (!tag_is_valid(colon + 1))
                        return error_set(ret_error, -EINVAL, "Invalid image reference '%s': bad tag '%s'.", s, colon + 1);
                snprintf(ref.tag, sizeof(ref.tag), "%s", colon + 1);
        } else if (!at)
                snprintf(ref.tag, sizeof(ref.tag), "latest");
        if (!repository_is_valid(name))
                return error_set(ret_error, -EINVAL, "Invalid image reference '%s': bad repository name '%s' "
                            "(lowercase letters, digits and . _ - / separators).", s, name);
        snprintf(ref.repository, sizeof(ref.repository), "%s", name);
        *ret = ref;
        return 0;
}

int oci_ref_format(const OciRef *ref, char **ret) {
        int k;
        if (ref->tag[0])
                k = asprintf(ret, "%s/%s:%s", ref->host, ref->repository, ref->tag);
        else
                k = asprintf(ret, "%s/%s@%s", ref->host, ref->repository, ref->digest);
        return k < 0 ? -ENOMEM : 0;
}

/* Copies a string member into a fixed buffer; missing is "" when optional. */
static int get_string(json_t *obj, const char *key, char *dst, size_t size, bool required) {
        json_t *v = json_object_get(obj, key);
        if (!v) {
                dst[0] = '\0';
                return required ? -ENOENT : 0;
        }
        if (!json_is_string(v) || json_string_length(v) >= size || strlen(json_string_value(v)) != json_string_length(v))
                return -EINVAL;
        strcpy(dst, json_string_value(v));
        return 0;
}

static int descriptor_parse(json_t *o, OciDescriptor *d, const char *what, size_t i, char **ret_error) {
        json_t *size, *platform, *annotations;

        *d = (OciDescriptor){};
        if (!json_is_object(o))
                return error_set(ret_error, -EINVAL, "%s %zu is not an object.", what, i);
        if (get_string(o, "mediaType", d->media_type, sizeof(d->media_type), true) < 0)
                return error_set(ret_error, -EINVAL, "%s %zu has no valid mediaType.", what, i);
        if (get_string(o, "digest", d->digest, sizeof(d->digest), true) < 0 || !oci_digest_is_valid(d->digest))
                return error_set(ret_error, -EINVAL, "%s %zu has no sha256 digest (other algorithms are not supported).",
                            what, i);
        size = json_object_get(o, "size");
        if (!json_is_integer(size) || json_integer_value(size) < 0)
                return error_set(ret_error, -EINVAL, "%s %zu has no valid size.", what, i);
        d->size = (uint64_t) json_integer_value(size);
        platform = json_object_get(o, "platform");
        if (json_is_object(platform) &&
            (get_string(platform, "os", d->os, sizeof(d->os), false) < 0 ||
             get_string(platform, "architecture", d->architecture, sizeof(d->architecture), false) < 0 ||
             get_string(platform, "variant", d->variant, sizeof(d->variant), false) < 0))
                return error_set(ret_error, -EINVAL, "%s %zu has an invalid platform.", what, i);
        annotations = json_object_get(o, "annotations");
        if (json_is_object(annotations))
                (void) get_string(annotations, "org.opencontainers.image.ref.name", d->ref_name, sizeof(d->ref_name),
                                  false);
        return 0;
}

void oci_document_done(OciDocument *d) {
        free(d->entries);
        *d = (OciDocument){};
}

int oci_document_parse(const char *text, size_t len, const char *content_type, OciDocument *ret, char **ret_error) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        char media_type[128];
        OciDocument d = {};
        json_t *list, *v;
        json_error_t err;
        size_t i;
        int r;

        if (len > OCI_DOCUMENT_MAX)
                return error_set(ret_error, -E2BIG, "The image manifest is larger than %u bytes.", OCI_DOCUMENT_MAX);
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_object(root))
                return error_set(ret_error, -EINVAL, "The image manifest is not a JSON object.");
        v = json_object_get(root, "schemaVersion");
        if (!json_is_integer(v) || json_integer_value(v) != 2)
                return error_set(ret_error, -EINVAL, "The image manifest has schemaVersion other than 2 "
                            "(Docker schema 1 is not supported).");
        if (get_string(root, "mediaType", media_type, sizeof(media_type), false) < 0)
                return error_set(ret_error, -EINVAL, "The image manifest has an invalid mediaType.");
        if (!media_type[0] && content_type) {
                /* Content-Type may carry parameters ("; charset=utf-8"). */
                snprintf(media_type, sizeof(media_type), "%.*s", (int) strcspn(content_type, "; "), content_type);
        }
        if (streq(media_type, OCI_MT_INDEX) || streq(media_type, DOCKER_MT_LIST))
                d.kind = OCI_KIND_INDEX;
        else if (streq(media_type, OCI_MT_MANIFEST) || streq(media_type, DOCKER_MT_MANIFEST))
                d.kind = OCI_KIND_MANIFEST;
        else if (!media_type[0] || streq(media_type, "application/json") || streq(media_type, "application/octet-stream"))
                /* image-spec: mediaType is optional; the shape says which. */
                d.kind = json_object_get(root, "manifests") ? OCI_KIND_INDEX : OCI_KIND_MANIFEST;
        else
                return error_set(ret_error, -EINVAL, "Unsupported manifest media type '%s'.", media_type);

        if (d.kind == OCI_KIND_MANIFEST) {
                r = descriptor_parse(json_object_get(root, "config"), &d.config, "Config descriptor", 0, ret_error);
                if (r < 0)
                        return r;
        }
        list = json_object_get(root, d.kind == OCI_KIND_INDEX ? "manifests" : "layers");
        if (!json_is_array(list))
                return error_set(ret_error, -EINVAL, "The image %s has no '%s' array.",
                            d.kind == OCI_KIND_INDEX ? "index" : "manifest", d.kind == OCI_KIND_INDEX ? "manifests" : "layers");
        if (json_array_size(list) > (d.kind == OCI_KIND_INDEX ? OCI_MAX_MANIFESTS : OCI_MAX_LAYERS))
                return error_set(ret_error, -E2BIG, "The image has %zu %s, more than %d.", json_array_size(list),
                            d.kind == OCI_KIND_INDEX ? "manifests" : "layers",
                            d.kind == OCI_KIND_INDEX ? OCI_MAX_MANIFESTS : OCI_MAX_LAYERS);
        d.n_entries = json_array_size(list);
        d.entries = calloc(d.n_entries + 1, sizeof(OciDescriptor));
        if (!d.entries)
                return -ENOMEM;
        json_array_foreach(list, i, v) {
                r = descriptor_parse(v, &d.entries[i], d.kind == OCI_KIND_INDEX ? "Manifest" : "Layer", i, ret_error);
                if (r < 0) {
                        oci_document_done(&d);
                        return r;
                }
        }
        *ret = d;
        return 0;
}

int oci_index_pick(const OciDocument *index, const char *os, const char *architecture, const OciDescriptor **ret) {
        for (size_t i = 0; i < index->n_entries; i++) {
                const OciDescriptor *e = &index->entries[i];
                if (streq(e->os, os) && streq(e->architecture, architecture) &&
                    (streq(e->media_type, OCI_MT_MANIFEST) || streq(e->media_type, DOCKER_MT_MANIFEST))) {
                        *ret = e;
                        return 0;
                }
        }
        return -ENOENT;
}

int oci_layer_type_check(const char *mt) {
        static const char *const ok[] = {
                "application/vnd.oci.image.layer.v1.tar",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.image.rootfs.diff.tar",
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                if (streq(mt, ok[i]))
                        return 0;
        return -EOPNOTSUPP;
}

void oci_run_config_done(OciRunConfig *c) {
        strv_free(c->entrypoint);
        strv_free(c->cmd);
        strv_free(c->env);
        free(c->working_dir);
        free(c->user);
        *c = (OciRunConfig){};
}

void oci_config_done(OciConfig *c) {
        for (size_t i = 0; i < c->n_diff_ids; i++)
                free(c->diff_ids[i]);
        free(c->diff_ids);
        oci_run_config_done(&c->run);
        *c = (OciConfig){};
}

static bool string_is_clean(json_t *v) {
        return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
}

/* A list of strings, null or absent meaning none. -EINVAL names nothing:
 * the caller says which key. */
static int get_strv(json_t *obj, const char *key, bool env, char ***ret) {
        json_t *a = json_object_get(obj, key), *v;
        char **l;
        size_t i;

        if (a && !json_is_null(a) && (!json_is_array(a) || json_array_size(a) > OCI_RUN_STRINGS_MAX))
                return -EINVAL;
        l = calloc((a && json_is_array(a) ? json_array_size(a) : 0) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        if (a && json_is_array(a))
                json_array_foreach(a, i, v) {
                        const char *t = json_string_value(v);
                        /* Env entries are NAME=VALUE, the name not empty. */
                        if (!string_is_clean(v) || (env && (t[0] == '=' || !strchr(t, '=')))) {
                                strv_free(l);
                                return -EINVAL;
                        }
                        l[i] = strdup(t);
                        if (!l[i]) {
                                strv_free(l);
                                return -ENOMEM;
                        }
                }
        *ret = l;
        return 0;
}

static int get_optional_string(json_t *obj, const char *key, char **ret) {
        json_t *v = json_object_get(obj, key);

        if (v && !json_is_null(v) && !string_is_clean(v))
                return -EINVAL;
        *ret = strdup(v && json_is_string(v) ? json_string_value(v) : "");
        return *ret ? 0 : -ENOMEM;
}

/* image-spec config.md: "config" may be absent or null; each member too. */
static int run_config_parse(json_t *o, OciRunConfig *ret, char **ret_error) {
        _cleanup_(oci_run_config_done) OciRunConfig c = {};
        static const char *const keys[] = { "Entrypoint", "Cmd", "Env", "WorkingDir", "User" };
        int r[5];

        if (o && !json_is_null(o) && !json_is_object(o))
                return error_set(ret_error, -EINVAL, "The image config's \"config\" is not an object.");
        if (o && !json_is_object(o))
                o = NULL;
        r[0] = get_strv(o, keys[0], /* env= */ false, &c.entrypoint);
        r[1] = get_strv(o, keys[1], /* env= */ false, &c.cmd);
        r[2] = get_strv(o, keys[2], /* env= */ true, &c.env);
        r[3] = get_optional_string(o, keys[3], &c.working_dir);
        r[4] = get_optional_string(o, keys[4], &c.user);
        for (size_t i = 0; i < ELEMENTSOF(r); i++) {
                if (r[i] == -ENOMEM)
                        return -ENOMEM;
                if (r[i] < 0)
                        return error_set(ret_error, r[i], "The image config's config.%s is not %s.", keys[i],
                                         i == 2   ? "a list of NAME=VALUE strings"
                                         : i < 2  ? "a list of strings"
                                                  : "a string");
        }
        /* The guest hands WorkingDir to the runtime as the process's cwd:
         * it must be absolute (relative ones mean nothing without a base). */
        if (c.working_dir[0] && c.working_dir[0] != '/')
                return error_set(ret_error, -EINVAL, "The image config's config.WorkingDir '%.64s' is not absolute.",
                                 c.working_dir);
        *ret = c;
        c = (OciRunConfig){};
        return 0;
}

static json_t *strv_to_json(char *const *l) {
        json_t *a = json_array();

        for (size_t i = 0; a && l && l[i]; i++)
                if (json_array_append_new(a, json_string(l[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

int oci_run_config_to_json(const OciRunConfig *c, char **ret) {
        _cleanup_(json_decrefp) json_t *o = json_pack("{s:o, s:o, s:o, s:s, s:s}", "Entrypoint",
                                                      strv_to_json(c->entrypoint), "Cmd", strv_to_json(c->cmd), "Env",
                                                      strv_to_json(c->env), "WorkingDir", c->working_dir ?: "",
                                                      "User", c->user ?: "");
        if (!o)
                return -ENOMEM;
        *ret = json_dumps(o, JSON_COMPACT);
        return *ret ? 0 : -ENOMEM;
}

int oci_run_config_from_json(const char *text, OciRunConfig *ret) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        int r;

        root = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;
        if (!json_is_object(root))
                return -EINVAL;
        r = run_config_parse(root, ret, NULL);
        return r == -ENOMEM ? r : r < 0 ? -EINVAL : 0;
}

int oci_config_parse(const char *text, size_t len, OciConfig *ret, char **ret_error) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        OciConfig c = {};
        json_t *ids, *v;
        json_error_t err;
        size_t i;
        int r;

        if (len > OCI_DOCUMENT_MAX)
                return error_set(ret_error, -E2BIG, "The image config is larger than %u bytes.", OCI_DOCUMENT_MAX);
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_object(root))
                return error_set(ret_error, -EINVAL, "The image config is not a JSON object.");
        if (get_string(root, "os", c.os, sizeof(c.os), true) < 0 ||
            get_string(root, "architecture", c.architecture, sizeof(c.architecture), true) < 0)
                return error_set(ret_error, -EINVAL, "The image config has no valid os and architecture.");
        ids = json_object_get(json_object_get(root, "rootfs"), "diff_ids");
        if (!json_is_array(ids) || json_array_size(ids) > OCI_MAX_LAYERS)
                return error_set(ret_error, -EINVAL, "The image config has no valid rootfs.diff_ids.");
        c.diff_ids = calloc(json_array_size(ids) + 1, sizeof(char *));
        if (!c.diff_ids)
                return -ENOMEM;
        json_array_foreach(ids, i, v) {
                if (!json_is_string(v) || !oci_digest_is_valid(json_string_value(v))) {
                        oci_config_done(&c);
                        return error_set(ret_error, -EINVAL, "The image config's diff_id %zu is not a sha256 digest.", i);
                }
                c.diff_ids[i] = strdup(json_string_value(v));
                if (!c.diff_ids[i]) {
                        oci_config_done(&c);
                        return -ENOMEM;
                }
                c.n_diff_ids++;
        }
        r = run_config_parse(json_object_get(root, "config"), &c.run, ret_error);
        if (r < 0) {
                oci_config_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

void docker_save_done(DockerSave *d) {
        free(d->config);
        free(d->tag);
        strv_free(d->layers);
        *d = (DockerSave){};
}

/* A relative path inside the archive: no "/" at the start, no "..". */
static bool archive_path_is_valid(const char *p) {
        if (!p[0] || p[0] == '/' || strlen(p) > 1024)
                return false;
        for (const char *c = p; *c;) {
                const char *end = strchrnul(c, '/');
                if (end - c == 2 && c[0] == '.' && c[1] == '.')
                        return false;
                c = *end ? end + 1 : end;
        }
        return true;
}

int docker_save_parse(const char *text, size_t len, DockerSave *ret, char **ret_error) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        _cleanup_(docker_save_done) DockerSave d = {};
        json_t *img, *layers, *tags, *v;
        json_error_t err;
        size_t i;

        if (len > OCI_DOCUMENT_MAX)
                return error_set(ret_error, -E2BIG, "manifest.json is larger than %u bytes.", OCI_DOCUMENT_MAX);
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_array(root) || json_array_size(root) == 0)
                return error_set(ret_error, -EINVAL, "manifest.json is not a non-empty JSON array.");
        img = json_array_get(root, 0);
        v = json_object_get(img, "Config");
        if (!json_is_string(v) || !archive_path_is_valid(json_string_value(v)))
                return error_set(ret_error, -EINVAL, "manifest.json has no valid Config path.");
        d.config = strdup(json_string_value(v));
        tags = json_object_get(img, "RepoTags");
        if (json_is_array(tags) && json_is_string(json_array_get(tags, 0)))
                d.tag = strdup(json_string_value(json_array_get(tags, 0)));
        layers = json_object_get(img, "Layers");
        if (!json_is_array(layers) || json_array_size(layers) > OCI_MAX_LAYERS)
                return error_set(ret_error, -EINVAL, "manifest.json has no valid Layers array.");
        d.layers = calloc(json_array_size(layers) + 1, sizeof(char *));
        if (!d.config || !d.layers)
                return -ENOMEM;
        json_array_foreach(layers, i, v) {
                if (!json_is_string(v) || !archive_path_is_valid(json_string_value(v)))
                        return error_set(ret_error, -EINVAL, "manifest.json layer %zu is not a path inside the archive.", i);
                d.layers[i] = strdup(json_string_value(v));
                if (!d.layers[i])
                        return -ENOMEM;
                d.n_layers++;
        }
        *ret = d;
        d = (DockerSave){};
        return 0;
}
