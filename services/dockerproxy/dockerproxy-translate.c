/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "dockerproxy-http.h"
#include "dockerproxy-translate.h"


#define SYMLINKS_MAX 40

void docker_decision_done(DockerDecision *d) {
        free(d->message);
        free(d->new_query);
        free(d->new_body);
        for (size_t i = 0; i < d->n_checks; i++)
                free(d->checks[i].ref);
        free(d->checks);
        free(d->path_id);
        for (size_t i = 0; i < d->n_records; i++)
                free(d->records[i].id);
        free(d->records);
        free(d->pull_ref);
        *d = (DockerDecision){};
}

static int add_check(DockerDecision *d, DockerCheckKind kind, const char *ref, bool in_path) {
        DockerCheck *t;
        char *r;

        /* Bounded like everything a caller can make us allocate. */
        if (d->n_checks >= 256)
                return -E2BIG;
        r = strdup(ref);
        if (!r)
                return -ENOMEM;
        t = realloc(d->checks, (d->n_checks + 1) * sizeof(DockerCheck));
        if (!t) {
                free(r);
                return -ENOMEM;
        }
        d->checks = t;
        d->checks[d->n_checks++] = (DockerCheck){ .kind = kind, .ref = r, .in_path = in_path };
        return 0;
}

static int add_record(DockerDecision *d, OwnedKind kind, const char *id, bool add) {
        DockerRecord *t;
        char *r;

        if (d->n_records >= 256)
                return -E2BIG;
        r = strdup(id);
        if (!r)
                return -ENOMEM;
        t = realloc(d->records, (d->n_records + 1) * sizeof(DockerRecord));
        if (!t) {
                free(r);
                return -ENOMEM;
        }
        d->records = t;
        d->records[d->n_records++] = (DockerRecord){ .kind = kind, .id = r, .add = add };
        return 0;
}

/* Container, volume and network names and ids as the engine allows them
 * ([a-zA-Z0-9][a-zA-Z0-9_.-]*): one path segment, nothing a router or a
 * link name ("/web/db") could split. */
static bool name_is_valid(const char *s) {
        if (!s || !*s || strlen(s) > 255 || !isalnum((unsigned char) s[0]))
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("_.-", *p))
                        return false;
        return true;
}

/* An image name or id as the engine reads one in a path. */
static bool image_name_is_valid(const char *s) {
        if (!s || !*s || strlen(s) > 255)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-/:@", *p))
                        return false;
        return true;
}

static bool owns(const DockerCaller *c, OwnedKind kind, const char *id) {
        return (kind == OWNED_CONTAINER && c->policy->see_all_containers) || owned_set_has(c->owned, kind, id);
}

static int deny(DockerDecision *d, unsigned status, const char *rule, const char *fmt, ...) _printf_(4, 5);

/* docker pull sends fromImage=NAME&tag=TAG (docker run of a missing image
 * too). The reference is checked and normalized here, so that a malformed
 * one is refused before anything leaves the instance. */
static int decide_pull_via_host(const char *query, const char *from, DockerDecision *d) {
        _cleanup_free_ char *tag = NULL, *joined = NULL, *ref = NULL;
        int r;

        if (http_query_get(query, "tag", &tag) < 0)
                return deny(d, 400, "invalid-query", "The query string is malformed.");
        if (!isempty(tag) && (strchr(tag, ':') || strchr(tag, '@')))
                return deny(d, 400, "invalid-reference",
                            "Pulling by digest is not available inside an instance; name a tag (%s).", from);
        if (strchr(from, '@'))
                return deny(d, 400, "invalid-reference",
                            "Pulling by digest is not available inside an instance; name a tag (%s).", from);
        if (!isempty(tag) && asprintf(&joined, "%s:%s", from, tag) < 0)
                return -ENOMEM;
        r = docker_image_ref_normalize(joined ?: from, &ref);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || strlen(ref) > 255)
                return deny(d, 400, "invalid-reference", "invalid reference format: %s is not an image reference.",
                            joined ?: from);
        d->rule = "image-pull-host";
        d->pull_ref = TAKE_PTR(ref);
        return 0;
}

static int json_line(json_t *j, char **ret) {
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int docker_pull_started(const char *ref, char **ret_line) {
        _cleanup_free_ char *status = NULL, *line = NULL;

        if (asprintf(&status, "Pulling %s through the host (images never come over the instance's network)", ref) < 0)
                return -ENOMEM;
        if (json_line(json_pack("{s:s}", "status", status), &line) < 0 || asprintf(ret_line, "%s\n", line) < 0)
                return -ENOMEM;
        return 0;
}

int docker_pull_result(const char *ref, unsigned status, const char *message, char **ret_lines) {
        _cleanup_free_ char *text = NULL, *registry = NULL, *line = NULL, *done = NULL;
        const char *slash = strchr(ref, '/');
        const char *m = isempty(message) ? "no details" : message;
        int n;

        registry = slash ? strndup(ref, (size_t) (slash - ref)) : strdup("docker.io");
        if (!registry)
                return -ENOMEM;
        /* The numbers are AgentPullStatus (guest/agent-protocol.h). */
        switch (status) {
        case 0:
                if (asprintf(&done, "Status: Downloaded newer image for %s", ref) < 0 ||
                    json_line(json_pack("{s:s}", "status", done), &line) < 0 || asprintf(ret_lines, "%s\n", line) < 0)
                        return -ENOMEM;
                return 0;
        case 1:
                n = asprintf(&text, "invalid reference format: %s (%s)", ref, m);
                break;
        case 2:
                n = asprintf(&text, "%s: repository or tag not found in %s (%s); check the name and tag", ref, registry, m);
                break;
        case 3:
                n = asprintf(&text, "%s: refused by the host's registry policy: %s", ref, m);
                break;
        case 4:
                n = asprintf(&text, "%s: registry %s is not reachable from the host (%s); is it up?", ref, registry, m);
                break;
        case 5:
                n = asprintf(&text, "%s: %s", ref, m);
                break;
        default:
                n = asprintf(&text, "pulling %s through the host failed: %s", ref, m);
        }
        if (n < 0 || json_line(json_pack("{s:{s:s},s:s}", "errorDetail", "message", text, "error", text), &line) < 0 ||
            asprintf(ret_lines, "%s\n", line) < 0)
                return -ENOMEM;
        return 0;
}

_printf_(4, 5) static int deny(DockerDecision *d, unsigned status, const char *rule, const char *fmt, ...) {
        va_list ap;

        d->status = status;
        d->rule = rule;
        free(d->message);
        va_start(ap, fmt);
        if (vasprintf(&d->message, fmt, ap) < 0)
                d->message = NULL;
        va_end(ap);
        return d->message ? 0 : -ENOMEM;
}

/* ---- field lookup with the engine's case-insensitive matching ----------- */

/* Go's encoding/json matches object keys to struct fields case-insensitively
 * (exact match preferred), with Unicode simple folding: besides ASCII case,
 * U+017F (ſ) folds to 's' and U+212A (Kelvin sign) to 'k'. fold_equal()
 * reproduces that for the ASCII field names we care about. */
static bool fold_equal(const char *key, const char *field) {
        const unsigned char *k = (const unsigned char *) key;
        const unsigned char *f = (const unsigned char *) field;

        for (;;) {
                unsigned char fc = (unsigned char) tolower(*f);

                if (!*f)
                        return !*k;
                if (k[0] == 0xC5 && k[1] == 0xBF) { /* U+017F */
                        if (fc != 's')
                                return false;
                        k += 2;
                } else if (k[0] == 0xE2 && k[1] == 0x84 && k[2] == 0xAA) { /* U+212A */
                        if (fc != 'k')
                                return false;
                        k += 3;
                } else {
                        if (!*k || (unsigned char) tolower(*k) != fc)
                                return false;
                        k++;
                }
                f++;
        }
}

/* Returns the value of `name` in `obj` (NULL when absent). A key that is not
 * spelled exactly `name` but that the engine would take for it is refused
 * (-EBADMSG, *ret_bad set), so that we never check one key while the engine
 * uses another. */
static int get_field(json_t *obj, const char *name, json_t **ret, const char **ret_bad) {
        const char *key;
        json_t *v;

        *ret = NULL;
        if (!json_is_object(obj))
                return 0;
        json_object_foreach(obj, key, v) {
                if (streq(key, name))
                        *ret = v;
                else if (fold_equal(key, name)) {
                        *ret_bad = key;
                        return -EBADMSG;
                }
        }
        return 0;
}

#define GET(obj, name, ret)                                                                                    \
        ({                                                                                                     \
                const char *_bad = NULL;                                                                       \
                int _r = get_field((obj), (name), (ret), &_bad);                                               \
                if (_r < 0)                                                                                    \
                        return deny(d, 400, "case-variant-key",                                                \
                                    "JSON key \"%s\" differs only in case from \"%s\"; use the exact name.",    \
                                    _bad, (name));                                                             \
        })

static const char *const hostconfig_checked_fields[] = {
        "Binds", "Mounts", "Privileged", "CapAdd", "Devices", "DeviceRequests", "DeviceCgroupRules",
        "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "Cgroup", "NetworkMode",
        "SecurityOpt", "Sysctls", "VolumesFrom", "MaskedPaths", "ReadonlyPaths", "Links", "CgroupParent",
        "Runtime", "VolumeDriver",
};

static int load_object(const char *body, size_t len, json_t **ret, DockerDecision *d) {
        json_error_t err;
        json_t *j;

        /* Duplicate keys are refused: the engine's decoder keeps the last one,
         * a checker could look at the first. */
        j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
        if (!j)
                return deny(d, 400, "invalid-json", "Request body is not valid JSON: %s.", err.text);
        if (!json_is_object(j)) {
                json_decref(j);
                return deny(d, 400, "invalid-json", "Request body must be a JSON object.");
        }
        *ret = j;
        return 0;
}

static int set_body(DockerDecision *d, json_t *j) {
        size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
        char *b;

        if (n == 0)
                return -ENOMEM;
        b = malloc(n);
        if (!b)
                return -ENOMEM;
        json_dumpb(j, b, n, JSON_COMPACT);
        free(d->new_body);
        d->new_body = b;
        d->new_body_len = n;
        return 0;
}

/* ---- path resolution ---------------------------------------------------- */

static bool is_forbidden_top(const char *path) {
        static const char *const top[] = { "proc", "sys", "dev" };
        const char *p = path;
        size_t n;

        while (*p == '/')
                p++;
        n = strcspn(p, "/");
        for (size_t i = 0; i < ELEMENTSOF(top); i++)
                if (n == strlen(top[i]) && strncmp(p, top[i], n) == 0)
                        return true;
        return false;
}

static int reasonf(char **ret_reason, const char *fmt, ...) _printf_(2, 3);
static int reasonf(char **ret_reason, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(ret_reason, fmt, ap) < 0)
                *ret_reason = NULL;
        va_end(ap);
        return *ret_reason ? -EPERM : -ENOMEM;
}

/* A list of path components still to walk, in order. */
typedef struct Pending {
        char **items;
        size_t n;
} Pending;

static void pending_done(Pending *p) {
        for (size_t i = 0; i < p->n; i++)
                free(p->items[i]);
        free(p->items);
}

/* Puts the components of `path` in front of the pending ones. */
static int pending_prepend(Pending *p, const char *path) {
        size_t k = 0, at = 0;
        char **t;

        for (const char *s = path; *s;) {
                size_t n = strcspn(s, "/");
                if (n > 0 && !(n == 1 && s[0] == '.'))
                        k++;
                s += n;
                while (*s == '/')
                        s++;
        }
        if (k == 0)
                return 0;
        t = realloc(p->items, (p->n + k) * sizeof(char *));
        if (!t)
                return -ENOMEM;
        p->items = t;
        memmove(p->items + k, p->items, p->n * sizeof(char *));
        for (const char *s = path; *s;) {
                size_t n = strcspn(s, "/");
                if (n > 0 && !(n == 1 && s[0] == '.')) {
                        p->items[at] = strndup(s, n);
                        if (!p->items[at]) {
                                /* keep the list consistent: shift back what we have */
                                memmove(p->items + at, p->items + k, p->n * sizeof(char *));
                                p->n += at;
                                return -ENOMEM;
                        }
                        at++;
                }
                s += n;
                while (*s == '/')
                        s++;
        }
        p->n += k;
        return 0;
}

static char *pending_pop(Pending *p) {
        char *s;

        if (p->n == 0)
                return NULL;
        s = p->items[0];
        memmove(p->items, p->items + 1, (p->n - 1) * sizeof(char *));
        p->n--;
        return s;
}

static int openat2_beneath(int dirfd, const char *rel) {
        struct open_how how = {
                .flags = O_PATH | O_CLOEXEC,
                /* The walk already resolved every link, so the final path
                 * must have none: RESOLVE_NO_SYMLINKS also catches a link
                 * swapped in since. */
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dirfd, *rel ? rel : ".", &how, sizeof(how));
        return fd < 0 ? -errno : (int) fd;
}

int docker_resolve_in_root(const char *root, const char *path, char **ret_host_path, char **ret_reason) {
        _cleanup_close_ int rootfd = -EBADF, fd = -EBADF;
        _cleanup_(pending_done) Pending pend = {};
        _cleanup_free_ char *rel = NULL;
        char **stack = NULL;
        size_t depth = 0, rel_len = 0;
        unsigned links = 0;
        int r;

        *ret_reason = NULL;
        if (!path || path[0] != '/')
                return reasonf(ret_reason, "source \"%s\" is not an absolute path", path ?: "");
        for (const char *s = path; *s;) {
                size_t n = strcspn(s, "/");
                if (n == 2 && s[0] == '.' && s[1] == '.')
                        return reasonf(ret_reason, "source \"%s\" contains \"..\"", path);
                s += n;
                while (*s == '/')
                        s++;
        }
        if (is_forbidden_top(path))
                return reasonf(ret_reason, "source \"%s\" is under /proc, /sys or /dev, which are not the container's files", path);

        rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return -errno;
        r = pending_prepend(&pend, path);
        if (r < 0)
                return r;
        stack = calloc(PATH_MAX / 2 + 1, sizeof(char *));
        if (!stack)
                return -ENOMEM;

        fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
                r = -errno;
                goto finish;
        }
        /* Component walk with O_NOFOLLOW: every symlink is read and judged
         * here, so the reason a path is refused can be named precisely. */
        for (;;) {
                _cleanup_free_ char *comp = pending_pop(&pend);
                _cleanup_close_ int next = -EBADF;
                struct stat st;

                if (!comp)
                        break;
                if (streq(comp, "..")) {
                        /* Only a symlink target can bring ".." here. */
                        if (depth == 0) {
                                r = reasonf(ret_reason, "source \"%s\": a symlink points outside the container's root", path);
                                goto finish;
                        }
                        free(stack[--depth]);
                        safe_close(fd);
                        fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
                        if (fd < 0) {
                                r = -errno;
                                goto finish;
                        }
                        for (size_t i = 0; i < depth; i++) {
                                int nfd = openat(fd, stack[i], O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
                                if (nfd < 0) {
                                        r = -errno;
                                        goto finish;
                                }
                                safe_close(fd);
                                fd = nfd;
                        }
                        continue;
                }
                next = openat(fd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0) {
                        r = -errno;
                        if (r == -ENOENT)
                                r = reasonf(ret_reason, "source \"%s\" does not exist in the container's root", path);
                        goto finish;
                }
                if (fstat(next, &st) < 0) {
                        r = -errno;
                        goto finish;
                }
                if (S_ISLNK(st.st_mode)) {
                        char target[PATH_MAX];
                        ssize_t n;

                        if (++links > SYMLINKS_MAX) {
                                r = reasonf(ret_reason, "source \"%s\": too many symlinks", path);
                                goto finish;
                        }
                        n = readlinkat(next, "", target, sizeof(target) - 1);
                        if (n < 0) {
                                r = -errno;
                                goto finish;
                        }
                        target[n] = '\0';
                        /* An absolute target names a host path outside the
                         * root: refused rather than reinterpreted. */
                        if (target[0] == '/') {
                                r = reasonf(ret_reason, "source \"%s\": symlink \"%s\" points to the absolute path \"%s\" outside the container's root",
                                            path, comp, target);
                                goto finish;
                        }
                        r = pending_prepend(&pend, target);
                        if (r < 0)
                                goto finish;
                        continue;
                }
                if (depth >= PATH_MAX / 2) {
                        r = -ENAMETOOLONG;
                        goto finish;
                }
                stack[depth++] = TAKE_PTR(comp);
                safe_close(fd);
                fd = TAKE_FD(next);
                if (pend.n > 0 && !S_ISDIR(st.st_mode)) {
                        r = reasonf(ret_reason, "source \"%s\": a path component is not a directory", path);
                        goto finish;
                }
        }

        for (size_t i = 0; i < depth; i++)
                rel_len += strlen(stack[i]) + 1;
        rel = malloc(rel_len + 1);
        if (!rel) {
                r = -ENOMEM;
                goto finish;
        }
        rel[0] = '\0';
        for (size_t i = 0; i < depth; i++) {
                if (i > 0)
                        strcat(rel, "/");
                strcat(rel, stack[i]);
        }

        /* Second opinion from the kernel where openat2() exists (Linux 5.6). */
        r = openat2_beneath(rootfd, rel);
        if (r == -ENOSYS)
                r = 0;
        else if (r == -EXDEV || r == -ELOOP) {
                r = reasonf(ret_reason, "source \"%s\" changed while it was resolved", path);
                goto finish;
        } else if (r < 0)
                goto finish;
        else
                r = safe_close(r), r = 0;

        {
                size_t rl = strlen(root);
                while (rl > 1 && root[rl - 1] == '/')
                        rl--;
                if (asprintf(ret_host_path, "%.*s%s%s", (int) rl, root, *rel ? "/" : "", rel) < 0)
                        r = -ENOMEM;
        }

finish:
        for (size_t i = 0; i < depth; i++)
                free(stack[i]);
        free(stack);
        return r;
}

/* ---- create-body checks ------------------------------------------------- */

static bool cap_allowed(const DockerPolicy *p, const char *cap) {
        const char *c = strncasecmp(cap, "CAP_", 4) == 0 ? cap + 4 : cap;

        for (char **a = p->cap_add_allow; a && *a; a++) {
                const char *x = strncasecmp(*a, "CAP_", 4) == 0 ? *a + 4 : *a;
                if (strcasecmp(x, "ALL") == 0 || strcasecmp(x, c) == 0)
                        return true;
        }
        return false;
}

static bool nonempty(json_t *v) {
        if (!v || json_is_null(v))
                return false;
        if (json_is_array(v))
                return json_array_size(v) > 0;
        if (json_is_object(v))
                return json_object_size(v) > 0;
        if (json_is_string(v))
                return json_string_length(v) > 0;
        return !json_is_false(v);
}

/* "container:<ref>" → ref. */
static const char *container_ref(const char *mode) {
        return strncmp(mode, "container:", 10) == 0 ? mode + 10 : NULL;
}

static int check_mode(const DockerCaller *c, DockerDecision *d, json_t *hc, const char *field, bool host_allowed) {
        json_t *v;
        const char *s, *ref;

        GET(hc, field, &v);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return deny(d, 400, "invalid-field", "HostConfig.%s must be a string.", field);
        s = json_string_value(v);
        if (strcasecmp(s, "host") == 0 && !host_allowed)
                return deny(d, 403, streq(field, "NetworkMode") ? "host-network" : "host-namespace",
                            "HostConfig.%s=host is not allowed for this container.", field);
        ref = container_ref(s);
        if (ref) {
                if (!name_is_valid(ref))
                        return deny(d, 400, "invalid-field", "HostConfig.%s must name one container.", field);
                if (!c->policy->see_all_containers)
                        return add_check(d, DOCKER_CHECK_CONTAINER, ref, /* in_path= */ false);
                return 0;
        }
        /* A user-defined network is joined by name: it must be the caller's. */
        if (streq(field, "NetworkMode") && !streq(s, "") && !streq(s, "default") && !streq(s, "bridge") &&
            !streq(s, "none") && strcasecmp(s, "host") != 0) {
                if (!name_is_valid(s))
                        return deny(d, 400, "invalid-field", "HostConfig.NetworkMode \"%s\" is not a network name.", s);
                return add_check(d, DOCKER_CHECK_NETWORK, s, /* in_path= */ false);
        }
        return 0;
}

static int check_security_opts(const DockerCaller *c, DockerDecision *d, json_t *hc) {
        json_t *v, *e;
        size_t i;

        GET(hc, "SecurityOpt", &v);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return deny(d, 400, "invalid-field", "HostConfig.SecurityOpt must be an array.");
        json_array_foreach(v, i, e) {
                const char *s = json_string_value(e), *sep;
                if (!s)
                        return deny(d, 400, "invalid-field", "HostConfig.SecurityOpt entries must be strings.");
                if (c->policy->allow_unconfined)
                        continue;
                /* key=value, or the old key:value form. */
                sep = strpbrk(s, "=:");
                if (strcasestr(s, "unconfined") ||
                    (sep && strncasecmp(s, "seccomp", (size_t) (sep - s)) == 0 && sep - s == 7) ||
                    (sep && strncasecmp(s, "label", 5) == 0 && sep - s == 5 && strcasecmp(sep + 1, "disable") == 0))
                        return deny(d, 403, "unconfined", "HostConfig.SecurityOpt \"%s\" is not allowed.", s);
        }
        return 0;
}

static int check_named_volume(const DockerCaller *c, DockerDecision *d, const char *name);

static int translate_binds(const DockerCaller *c, DockerDecision *d, json_t *hc) {
        json_t *v, *e;
        size_t i;
        int r;

        GET(hc, "Binds", &v);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return deny(d, 400, "invalid-field", "HostConfig.Binds must be an array.");
        json_array_foreach(v, i, e) {
                _cleanup_free_ char *src = NULL, *host = NULL, *reason = NULL, *rewritten = NULL;
                const char *s = json_string_value(e), *colon;
                size_t parts = 1;

                if (!s)
                        return deny(d, 400, "invalid-field", "HostConfig.Binds entries must be strings.");
                for (const char *p = s; *p; p++)
                        parts += *p == ':';
                /* The engine's linux parser: dst | src:dst | src:dst:mode. */
                if (parts > 3 || !*s)
                        return deny(d, 400, "invalid-bind", "Bind \"%s\" is not src:dst[:opts].", s);
                if (parts == 1)
                        continue; /* anonymous volume at a container path */
                colon = strchr(s, ':');
                if (s[0] != '/') {
                        _cleanup_free_ char *name = strndup(s, (size_t) (colon - s));
                        if (!name)
                                return -ENOMEM;
                        r = check_named_volume(c, d, name);
                        if (r < 0 || d->status)
                                return r;
                        continue;
                }
                src = strndup(s, (size_t) (colon - s));
                if (!src)
                        return -ENOMEM;
                r = docker_resolve_in_root(c->root, src, &host, &reason);
                if (r == -EPERM)
                        return deny(d, 403, "bind-escape", "Bind mount \"%s\" refused: %s.", s, reason);
                if (r < 0)
                        return deny(d, 403, "bind-escape", "Bind mount \"%s\" refused: cannot resolve the source: %s.", s,
                                    strerror(-r));
                if (strchr(host, ':'))
                        return deny(d, 403, "bind-escape", "Bind mount \"%s\" refused: the host path contains ':'.", s);
                if (asprintf(&rewritten, "%s%s", host, colon) < 0)
                        return -ENOMEM;
                if (json_array_set_new(v, i, json_string(rewritten)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* A named volume in a create body: the caller's own, or a name that does
 * not exist yet (the engine creates it, and it becomes the caller's). */
static int check_named_volume(const DockerCaller *c, DockerDecision *d, const char *name) {
        int r;

        if (!name_is_valid(name))
                return deny(d, 400, "invalid-field", "Volume name \"%s\" is not valid.", name);
        if (owns(c, OWNED_VOLUME, name))
                return 0;
        r = add_check(d, DOCKER_CHECK_VOLUME_FREE, name, /* in_path= */ false);
        if (r >= 0)
                r = add_record(d, OWNED_VOLUME, name, /* add= */ true);
        return r;
}

static bool all_digits(const char *s, size_t n, unsigned base) {
        if (n == 0 || n > 20)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(base == 8 ? s[i] >= '0' && s[i] <= '7' : isdigit((unsigned char) s[i])))
                        return false;
        return true;
}

/* Is one "o=" mount option of a tmpfs volume a size-like one? */
static bool tmpfs_option_allowed(const char *opt, size_t n) {
        static const char *const numeric[] = { "size=", "nr_inodes=", "uid=", "gid=" };
        const char *v;

        for (size_t k = 0; k < ELEMENTSOF(numeric); k++) {
                size_t l = strlen(numeric[k]);
                if (n > l && strncmp(opt, numeric[k], l) == 0) {
                        v = opt + l;
                        n -= l;
                        /* size=64m, size=50%: a number with one unit suffix */
                        if (streq(numeric[k], "size=") && n > 1 && strchr("kKmMgG%", v[n - 1]))
                                n--;
                        return all_digits(v, n, 10);
                }
        }
        if (n > 5 && strncmp(opt, "mode=", 5) == 0)
                return all_digits(opt + 5, n - 5, 8);
        return false;
}

/* The local driver mounts `device` with `type` and `o` as given: type=proc,
 * cgroup or overlay, a block device, or o=bind all put the host's
 * filesystems into a volume. So the allow-list is the size of a volume:
 * `size` (quota-capable storage), and a tmpfs (type=tmpfs, device=tmpfs)
 * whose `o` holds only size, nr_inodes, mode, uid and gid. */
static int check_volume_driver_opts(DockerDecision *d, json_t *opts) {
        const char *key, *type = NULL, *device = NULL;
        json_t *v;

        if (!opts || json_is_null(opts))
                return 0;
        if (!json_is_object(opts))
                return deny(d, 400, "invalid-field", "DriverOpts must be an object.");
        json_object_foreach(opts, key, v) {
                const char *s = json_string_value(v);
                if (!s)
                        return deny(d, 400, "invalid-field", "DriverOpts values must be strings.");
                if (streq(key, "type"))
                        type = s;
                else if (streq(key, "device"))
                        device = s;
                else if (streq(key, "o")) {
                        for (const char *p = s; *p;) {
                                size_t n = strcspn(p, ",");
                                if (!tmpfs_option_allowed(p, n))
                                        return deny(d, 403, "volume-driver-opts",
                                                    "Volume DriverOpts o=%s: only size, nr_inodes, mode, uid and gid options of a tmpfs volume are allowed (%.*s is not).",
                                                    s, (int) n, p);
                                p += n;
                                if (*p)
                                        p++;
                        }
                } else if (!streq(key, "size"))
                        return deny(d, 403, "volume-driver-opts",
                                    "Volume DriverOpts %s=%s is not allowed: only size, or a tmpfs volume's size options.", key, s);
        }
        if ((type || device || json_object_get(opts, "o")) &&
            (!type || !streq(type, "tmpfs") || !device || !streq(device, "tmpfs")))
                return deny(d, 403, "volume-driver-opts",
                            "Volume DriverOpts type=%s device=%s would mount a host filesystem; only type=tmpfs device=tmpfs is allowed.",
                            type ?: "", device ?: "");
        return 0;
}

static int translate_mounts(const DockerCaller *c, DockerDecision *d, json_t *hc) {
        json_t *v, *m;
        size_t i;
        int r;

        GET(hc, "Mounts", &v);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return deny(d, 400, "invalid-field", "HostConfig.Mounts must be an array.");
        json_array_foreach(v, i, m) {
                _cleanup_free_ char *host = NULL, *reason = NULL;
                json_t *type, *source, *target, *vo, *dc;
                const char *t;

                if (!json_is_object(m))
                        return deny(d, 400, "invalid-field", "HostConfig.Mounts entries must be objects.");
                GET(m, "Type", &type);
                GET(m, "Source", &source);
                GET(m, "Target", &target);
                GET(m, "VolumeOptions", &vo);
                t = json_string_value(type);
                if (!t)
                        return deny(d, 400, "invalid-field", "HostConfig.Mounts[%zu].Type must be a string.", i);
                if (source && !json_is_null(source) && !json_is_string(source))
                        return deny(d, 400, "invalid-field", "HostConfig.Mounts[%zu].Source must be a string.", i);
                if (streq(t, "bind")) {
                        const char *s = json_string_value(source);
                        r = docker_resolve_in_root(c->root, s ?: "", &host, &reason);
                        if (r == -EPERM)
                                return deny(d, 403, "bind-escape", "Mount %s→%s refused: %s.", s ?: "",
                                            json_string_value(target) ?: "", reason);
                        if (r < 0)
                                return deny(d, 403, "bind-escape", "Mount %s refused: cannot resolve the source: %s.",
                                            s ?: "", strerror(-r));
                        if (json_object_set_new(m, "Source", json_string(host)) < 0)
                                return -ENOMEM;
                } else if (streq(t, "volume")) {
                        const char *name = json_string_value(source);
                        /* The engine would create the volume with these options,
                         * unchecked by a volume create: no driver config at all. */
                        GET(vo, "DriverConfig", &dc);
                        if (dc && !json_is_null(dc))
                                return deny(d, 403, "volume-driver-opts",
                                            "HostConfig.Mounts[%zu].VolumeOptions.DriverConfig is not allowed; create the volume first.", i);
                        if (name && *name) {
                                r = check_named_volume(c, d, name);
                                if (r < 0 || d->status)
                                        return r;
                        }
                } else if (!streq(t, "tmpfs"))
                        return deny(d, 403, "mount-type", "Mount type \"%s\" is not allowed.", t);
        }
        return 0;
}

static int check_hostconfig(const DockerCaller *c, DockerDecision *d, json_t *hc) {
        const DockerPolicy *p = c->policy;
        json_t *v, *e;
        size_t i;
        int r;

        if (!hc || json_is_null(hc))
                return 0;
        if (!json_is_object(hc))
                return deny(d, 400, "invalid-field", "HostConfig must be an object.");
        for (size_t k = 0; k < ELEMENTSOF(hostconfig_checked_fields); k++)
                GET(hc, hostconfig_checked_fields[k], &v);

        GET(hc, "Privileged", &v);
        if (v && !json_is_boolean(v) && !json_is_null(v))
                return deny(d, 400, "invalid-field", "HostConfig.Privileged must be a boolean.");
        if (json_is_true(v) && !p->allow_privileged)
                return deny(d, 403, "privileged", "Privileged containers are not allowed for this container.");

        GET(hc, "CapAdd", &v);
        if (v && !json_is_null(v)) {
                if (!json_is_array(v))
                        return deny(d, 400, "invalid-field", "HostConfig.CapAdd must be an array.");
                json_array_foreach(v, i, e) {
                        if (!json_is_string(e))
                                return deny(d, 400, "invalid-field", "HostConfig.CapAdd entries must be strings.");
                        if (!cap_allowed(p, json_string_value(e)))
                                return deny(d, 403, "cap-add", "Capability %s is not in this container's allowlist.",
                                            json_string_value(e));
                }
        }

        if (!p->allow_devices) {
                static const char *const dev_fields[] = { "Devices", "DeviceRequests", "DeviceCgroupRules" };
                for (size_t k = 0; k < ELEMENTSOF(dev_fields); k++) {
                        GET(hc, dev_fields[k], &v);
                        if (nonempty(v))
                                return deny(d, 403, "devices", "HostConfig.%s is not allowed for this container.",
                                            dev_fields[k]);
                }
        }

        static const char *const ns_fields[] = { "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "Cgroup" };
        for (size_t k = 0; k < ELEMENTSOF(ns_fields); k++) {
                r = check_mode(c, d, hc, ns_fields[k], p->allow_host_namespaces);
                if (r < 0 || d->status)
                        return r;
        }
        r = check_mode(c, d, hc, "NetworkMode", p->allow_host_network);
        if (r < 0 || d->status)
                return r;

        r = check_security_opts(c, d, hc);
        if (r < 0 || d->status)
                return r;

        if (!p->allow_unconfined) {
                /* An empty MaskedPaths unmasks /proc/kcore and friends. */
                static const char *const mask_fields[] = { "MaskedPaths", "ReadonlyPaths" };
                for (size_t k = 0; k < ELEMENTSOF(mask_fields); k++) {
                        GET(hc, mask_fields[k], &v);
                        if (v && !json_is_null(v))
                                return deny(d, 403, "unconfined", "HostConfig.%s may not be set.", mask_fields[k]);
                }
                GET(hc, "CgroupParent", &v);
                if (nonempty(v))
                        return deny(d, 403, "cgroup-parent", "HostConfig.CgroupParent may not be set.");
        }

        GET(hc, "Sysctls", &v);
        if (nonempty(v) && !p->allow_sysctls)
                return deny(d, 403, "sysctls", "HostConfig.Sysctls is not allowed for this container.");

        /* Volume plugins are refused with the plugin API; "local" is the one driver. */
        GET(hc, "VolumeDriver", &v);
        if (nonempty(v) && !(json_is_string(v) && streq(json_string_value(v), "local")))
                return deny(d, 403, "volume-driver-opts", "HostConfig.VolumeDriver may only be \"local\".");

        GET(hc, "VolumesFrom", &v);
        if (v && !json_is_null(v)) {
                if (!json_is_array(v))
                        return deny(d, 400, "invalid-field", "HostConfig.VolumesFrom must be an array.");
                json_array_foreach(v, i, e) {
                        _cleanup_free_ char *ref = NULL;
                        const char *s = json_string_value(e);
                        if (!s || !*s)
                                return deny(d, 400, "invalid-field", "HostConfig.VolumesFrom entries must be strings.");
                        ref = strndup(s, strcspn(s, ":"));
                        if (!ref)
                                return -ENOMEM;
                        if (!name_is_valid(ref))
                                return deny(d, 400, "invalid-field", "HostConfig.VolumesFrom \"%s\" must name one container.", s);
                        if (!p->see_all_containers && (r = add_check(d, DOCKER_CHECK_CONTAINER, ref, false)) < 0)
                                return r;
                }
        }

        GET(hc, "Links", &v);
        if (v && !json_is_null(v)) {
                if (!json_is_array(v))
                        return deny(d, 400, "invalid-field", "HostConfig.Links must be an array.");
                json_array_foreach(v, i, e) {
                        _cleanup_free_ char *ref = NULL;
                        const char *s = json_string_value(e), *alias;
                        if (!s || !*s)
                                return deny(d, 400, "invalid-field", "HostConfig.Links entries must be strings.");
                        ref = strndup(s + (s[0] == '/'), strcspn(s + (s[0] == '/'), ":"));
                        if (!ref)
                                return -ENOMEM;
                        /* "name[:alias]": the engine names the link "/<this>/<alias>",
                         * a path of its own; both must be single names. */
                        alias = strchr(s, ':');
                        if (!name_is_valid(ref) || (alias && !name_is_valid(alias + 1 + (alias[1] == '/'))))
                                return deny(d, 403, "links", "HostConfig.Links \"%s\" must be container:alias with single names.", s);
                        if (!p->see_all_containers && (r = add_check(d, DOCKER_CHECK_CONTAINER, ref, false)) < 0)
                                return r;
                }
        }

        r = translate_binds(c, d, hc);
        if (r < 0 || d->status)
                return r;
        return translate_mounts(c, d, hc);
}

static int add_owner_labels(const DockerCaller *c, DockerDecision *d, json_t *top) {
        _cleanup_free_ char *own = NULL;
        json_t *labels;
        const char *key;
        json_t *v;

        GET(top, "Labels", &labels);
        if (!labels || json_is_null(labels)) {
                labels = json_object();
                if (!labels || json_object_set_new(top, "Labels", labels) < 0)
                        return -ENOMEM;
        }
        if (!json_is_object(labels))
                return deny(d, 400, "invalid-field", "Labels must be an object.");
        json_object_foreach(labels, key, v)
                if (strncmp(key, DOCKER_LABEL_RESERVED, strlen(DOCKER_LABEL_RESERVED)) == 0)
                        return deny(d, 403, "reserved-label", "Label \"%s\" is reserved for the proxy.", key);

        if (asprintf(&own, DOCKER_LABEL_OWNER_PREFIX "%s", c->id) < 0)
                return -ENOMEM;
        if (json_object_set_new(labels, own, json_string("")) < 0 ||
            json_object_set_new(labels, DOCKER_LABEL_CREATOR, json_string(c->id)) < 0)
                return -ENOMEM;
        for (char *const *a = c->ancestors; a && *a; a++) {
                _cleanup_free_ char *k = NULL;
                if (asprintf(&k, DOCKER_LABEL_OWNER_PREFIX "%s", *a) < 0)
                        return -ENOMEM;
                if (json_object_set_new(labels, k, json_string("")) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* NetworkingConfig.EndpointsConfig names the networks to join: each
 * user-defined one must be the caller's. */
static int check_networking_config(DockerDecision *d, json_t *top) {
        json_t *nc, *ec, *v;
        const char *key;
        int r;

        GET(top, "NetworkingConfig", &nc);
        if (!nc || json_is_null(nc))
                return 0;
        if (!json_is_object(nc))
                return deny(d, 400, "invalid-field", "NetworkingConfig must be an object.");
        GET(nc, "EndpointsConfig", &ec);
        if (!ec || json_is_null(ec))
                return 0;
        if (!json_is_object(ec))
                return deny(d, 400, "invalid-field", "NetworkingConfig.EndpointsConfig must be an object.");
        json_object_foreach(ec, key, v) {
                if (streq(key, "default") || streq(key, "bridge") || streq(key, "none"))
                        continue;
                if (!name_is_valid(key))
                        return deny(d, 400, "invalid-field", "NetworkingConfig names the network \"%s\", which is not a network name.", key);
                r = add_check(d, DOCKER_CHECK_NETWORK, key, /* in_path= */ false);
                if (r < 0)
                        return r;
        }
        return 0;
}

static const char *const config_fields[] = {
        "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
        "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes", "WorkingDir",
        "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
        "HostConfig", "NetworkingConfig", "Cpuset",
};

int docker_translate_create(const DockerCaller *c, const char *body, size_t len, DockerDecision *d) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        const char *key;
        json_t *v, *hc;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;

        /* The engine (20.10) still decodes HostConfig fields found at the top
         * level (a deprecated embedded struct) and uses them when HostConfig
         * is absent: refuse them instead of checking two places. */
        json_object_foreach(top, key, v) {
                for (size_t k = 0; k < ELEMENTSOF(config_fields); k++)
                        if (!streq(key, config_fields[k]) && fold_equal(key, config_fields[k]))
                                return deny(d, 400, "case-variant-key",
                                            "JSON key \"%s\" differs only in case from \"%s\"; use the exact name.", key,
                                            config_fields[k]);
                for (size_t k = 0; k < ELEMENTSOF(hostconfig_checked_fields); k++)
                        if (fold_equal(key, hostconfig_checked_fields[k]))
                                return deny(d, 400, "toplevel-hostconfig",
                                            "\"%s\" belongs in HostConfig, not at the top level of the body.", key);
        }

        /* An image's labels become the container's: one that carries the
         * proxy's labels would make the container look like someone
         * else's to anything that reads labels (events, people). */
        GET(top, "Image", &v);
        if (v && !json_is_null(v)) {
                if (!json_is_string(v) || !image_name_is_valid(json_string_value(v)))
                        return deny(d, 400, "invalid-field", "Image must be an image name.");
                r = add_check(d, DOCKER_CHECK_IMAGE_LABELS, json_string_value(v), /* in_path= */ false);
                if (r < 0)
                        return r;
        }

        GET(top, "HostConfig", &hc);
        r = check_hostconfig(c, d, hc);
        if (r < 0 || d->status)
                return r;
        r = check_networking_config(d, top);
        if (r < 0 || d->status)
                return r;
        r = add_owner_labels(c, d, top);
        if (r < 0 || d->status)
                return r;
        d->rule = "create";
        d->record_answer = OWNED_CONTAINER;
        return set_body(d, top);
}

/* ---- other bodies -------------------------------------------------------- */

static int decide_exec_create(const DockerCaller *c, const char *body, size_t len, DockerDecision *d) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *v;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        GET(top, "Privileged", &v);
        if (v && !json_is_boolean(v) && !json_is_null(v))
                return deny(d, 400, "invalid-field", "Privileged must be a boolean.");
        if (json_is_true(v) && !c->policy->allow_privileged_exec)
                return deny(d, 403, "privileged-exec", "Privileged exec is not allowed for this container.");
        d->rule = "exec-create";
        return set_body(d, top);
}

static int decide_update(const DockerCaller *c, DockerDecision *d, const char *body, size_t len) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *v;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        if (!c->policy->allow_devices) {
                static const char *const dev_fields[] = { "Devices", "DeviceRequests", "DeviceCgroupRules" };
                for (size_t k = 0; k < ELEMENTSOF(dev_fields); k++) {
                        GET(top, dev_fields[k], &v);
                        if (nonempty(v))
                                return deny(d, 403, "devices", "%s is not allowed for this container.", dev_fields[k]);
                }
        }
        GET(top, "CgroupParent", &v);
        if (nonempty(v))
                return deny(d, 403, "cgroup-parent", "CgroupParent may not be set.");
        d->rule = "update";
        return set_body(d, top);
}

static int decide_volume_create(const DockerCaller *c, DockerDecision *d, const char *body, size_t len) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *v;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        GET(top, "Driver", &v);
        if (nonempty(v) && !(json_is_string(v) && streq(json_string_value(v), "local")))
                return deny(d, 403, "volume-driver-opts", "Volume Driver may only be \"local\".");
        GET(top, "DriverOpts", &v);
        r = check_volume_driver_opts(d, v);
        if (r < 0 || d->status)
                return r;
        /* Creating a volume that exists answers with that volume: a name
         * must be new (or the caller's) before the answer may be recorded. */
        GET(top, "Name", &v);
        if (v && !json_is_null(v) && !json_is_string(v))
                return deny(d, 400, "invalid-field", "Name must be a string.");
        if (nonempty(v)) {
                const char *name = json_string_value(v);
                if (!name_is_valid(name))
                        return deny(d, 400, "invalid-field", "Volume name \"%s\" is not valid.", name);
                if (!owns(c, OWNED_VOLUME, name) && (r = add_check(d, DOCKER_CHECK_VOLUME_FREE, name, false)) < 0)
                        return r;
        }
        d->rule = "volume-create";
        d->record_answer = OWNED_VOLUME;
        return set_body(d, top);
}

/* Bridge networks only: macvlan, ipvlan and driver options reach the
 * host's interfaces and bridges. */
static int decide_network_create(DockerDecision *d, const char *body, size_t len) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *v;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        GET(top, "Driver", &v);
        if (nonempty(v) && !(json_is_string(v) && streq(json_string_value(v), "bridge")))
                return deny(d, 403, "network-driver", "Network driver \"%s\" is not allowed; only bridge networks.",
                            json_string_value(v) ?: "?");
        GET(top, "Options", &v);
        if (nonempty(v))
                return deny(d, 403, "network-driver", "Network driver options are not allowed.");
        GET(top, "ConfigFrom", &v);
        if (nonempty(v))
                return deny(d, 403, "network-driver", "ConfigFrom is not allowed.");
        d->rule = "network-create";
        d->record_answer = OWNED_NETWORK;
        return set_body(d, top);
}

static int decide_network_connect(const DockerCaller *c, DockerDecision *d, const char *body, size_t len) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *v;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        GET(top, "Container", &v);
        if (!json_is_string(v) || !name_is_valid(json_string_value(v)))
                return deny(d, 400, "invalid-field", "Container must name one container.");
        if (!c->policy->see_all_containers && (r = add_check(d, DOCKER_CHECK_CONTAINER, json_string_value(v), false)) < 0)
                return r;
        d->rule = "network-connect";
        return set_body(d, top);
}

/* ---- routing -------------------------------------------------------------- */

/* Parses a query's `filters` (JSON map of lists, or the older map of maps)
 * into *ret (an empty object when absent). */
static int parse_filters(DockerDecision *d, const char *query, json_t **ret) {
        _cleanup_free_ char *old = NULL;
        json_t *filters;
        const char *k;
        json_t *v;
        int r;

        r = http_query_get(query, "filters", &old);
        if (r < 0)
                return deny(d, 400, "invalid-query", "The query string is malformed.");
        if (r > 0 && *old) {
                json_error_t err;
                filters = json_loads(old, JSON_REJECT_DUPLICATES, &err);
                if (!json_is_object(filters)) {
                        json_decref(filters);
                        return deny(d, 400, "invalid-query", "The filters parameter is not a JSON object.");
                }
        } else if (!(filters = json_object()))
                return -ENOMEM;
        json_object_foreach(filters, k, v)
                if ((!streq(k, "label") && fold_equal(k, "label")) || (!streq(k, "id") && fold_equal(k, "id"))) {
                        json_decref(filters);
                        return deny(d, 400, "invalid-query", "Filter \"%s\" differs only in case from a filter we set.", k);
                }
        *ret = filters;
        return 0;
}

/* Replaces every filters= pair of `query` by one holding `filters`. */
static int replace_filters(DockerDecision *d, const char *query, json_t *filters) {
        _cleanup_free_ char *dumped = NULL;
        char *out = NULL;
        size_t out_len = 0;
        FILE *f;

        dumped = json_dumps(filters, JSON_COMPACT);
        if (!dumped)
                return -ENOMEM;
        f = open_memstream(&out, &out_len);
        if (!f)
                return -ENOMEM;
        for (const char *p = query; *p;) {
                const char *e = strchrnul(p, '&');
                _cleanup_free_ char *k = NULL;
                const char *eq = memchr(p, '=', (size_t) (e - p));
                if (http_unescape(p, (size_t) ((eq ?: e) - p), &k) < 0) {
                        fclose(f);
                        free(out);
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                }
                if (!streq(k, "filters") && e > p)
                        fprintf(f, "%.*s&", (int) (e - p), p);
                p = *e ? e + 1 : e;
        }
        fputs("filters=", f);
        for (const unsigned char *s = (const unsigned char *) dumped; *s; s++)
                if (isalnum(*s) || strchr("-._~", *s))
                        fputc(*s, f);
                else
                        fprintf(f, "%%%02X", *s);
        if (fclose(f) != 0) {
                free(out);
                return -ENOMEM;
        }
        free(d->new_query);
        d->new_query = out;
        return 0;
}

/* Events: a filter on the caller's owner label. Events only tell; a label
 * a caller set on an image can add others' containers here, but every
 * action on a container goes by the records. */
static int add_label_filter(const DockerCaller *c, DockerDecision *d, const char *query) {
        _cleanup_(json_decrefp) json_t *filters = NULL;
        _cleanup_free_ char *own = NULL;
        json_t *label;
        int r;

        r = parse_filters(d, query, &filters);
        if (r < 0 || d->status)
                return r;
        if (asprintf(&own, DOCKER_LABEL_OWNER_PREFIX "%s", c->id) < 0)
                return -ENOMEM;
        label = json_object_get(filters, "label");
        if (json_is_object(label))
                r = json_object_set_new(label, own, json_true());
        else if (json_is_array(label))
                r = json_array_append_new(label, json_string(own));
        else if (!label)
                r = json_object_set_new(filters, "label", json_pack("[s]", own));
        else
                return deny(d, 400, "invalid-query", "The label filter must be a list.");
        if (r < 0)
                return -ENOMEM;
        return replace_filters(d, query, filters);
}

/* Container lists: the ids in the caller's records. The engine ORs the
 * values of one filter, so a caller's own id filter could only widen ours:
 * refused. No record at all matches nothing. */
static int add_id_filter(const DockerCaller *c, DockerDecision *d, const char *query) {
        _cleanup_(json_decrefp) json_t *filters = NULL;
        json_t *ids;
        size_t n = owned_set_size(c->owned, OWNED_CONTAINER);
        int r;

        r = parse_filters(d, query, &filters);
        if (r < 0 || d->status)
                return r;
        if (json_object_get(filters, "id"))
                return deny(d, 400, "invalid-query", "The id filter is not available through this socket; filter by name or label.");
        ids = json_array();
        if (!ids || json_object_set_new(filters, "id", ids) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(ids, json_string(owned_set_get(c->owned, OWNED_CONTAINER, i))) < 0)
                        return -ENOMEM;
        if (n == 0 && json_array_append_new(ids, json_string("no-container-of-this-caller")) < 0)
                return -ENOMEM;
        return replace_filters(d, query, filters);
}

/* Calls `cb` with the decoded value of every `key=` pair of a query. */
static int query_foreach(const char *query, const char *key, int (*cb)(const char *value, void *ud), void *ud) {
        for (const char *p = query; *p;) {
                const char *e = strchrnul(p, '&'), *eq = memchr(p, '=', (size_t) (e - p));
                _cleanup_free_ char *k = NULL, *v = NULL;
                int r;

                if (http_unescape(p, (size_t) ((eq ?: e) - p), &k) < 0 ||
                    (eq && http_unescape(eq + 1, (size_t) (e - eq - 1), &v) < 0))
                        return -EBADMSG;
                if (streq(k, key)) {
                        r = cb(v ?: "", ud);
                        if (r != 0)
                                return r;
                }
                p = *e ? e + 1 : e;
        }
        return 0;
}

typedef enum RouteId {
        ROUTE_SYSTEM,
        ROUTE_EVENTS,
        ROUTE_AUTH,
        ROUTE_CONTAINER_LIST,
        ROUTE_CONTAINER_CREATE,
        ROUTE_CONTAINER,           /* an own container, no body */
        ROUTE_CONTAINER_START,     /* … and re-check its bind sources */
        ROUTE_CONTAINER_ATTACH,    /* … hijacked */
        ROUTE_CONTAINER_BODY,      /* … with a body we check (exec, update) */
        ROUTE_CONTAINER_DELETE,
        ROUTE_EXEC,
        ROUTE_EXEC_START,
        ROUTE_IMAGE_READ,
        ROUTE_IMAGE_PULL,
        ROUTE_IMAGE_TAG,
        ROUTE_IMAGE_PUSH,
        ROUTE_IMAGE_DELETE,
        ROUTE_IMAGE_LOAD,
        ROUTE_BUILD,
        ROUTE_COMMIT,
        ROUTE_VOLUME_LIST,
        ROUTE_VOLUME_CREATE,
        ROUTE_VOLUME,
        ROUTE_VOLUME_DELETE,
        ROUTE_NETWORK_LIST,
        ROUTE_NETWORK_CREATE,
        ROUTE_NETWORK,
        ROUTE_NETWORK_DELETE,
        ROUTE_NETWORK_CONNECT,
        ROUTE_PRUNE,
} RouteId;

/* Every request must match one of these exactly (method and path without
 * the /vX.Y prefix); anything else is 403. "{c}" is one container name or
 * id, "{e}" an exec id, "{v}" a volume name, "{n}" a network name or id:
 * each exactly one path segment of [A-Za-z0-9_.-]. "{i}" is an image
 * name, which may span segments. GET also stands for HEAD. */
static const struct Route {
        const char *method;
        const char *pattern;
        RouteId id;
} routes[] = {
        { "GET", "/_ping", ROUTE_SYSTEM },
        { "GET", "/version", ROUTE_SYSTEM },
        { "GET", "/info", ROUTE_SYSTEM },
        { "GET", "/system/df", ROUTE_SYSTEM },
        { "GET", "/events", ROUTE_EVENTS },
        { "POST", "/auth", ROUTE_AUTH },

        { "GET", "/containers/json", ROUTE_CONTAINER_LIST },
        { "POST", "/containers/create", ROUTE_CONTAINER_CREATE },
        { "POST", "/containers/prune", ROUTE_PRUNE },
        { "GET", "/containers/{c}/json", ROUTE_CONTAINER },
        { "GET", "/containers/{c}/top", ROUTE_CONTAINER },
        { "GET", "/containers/{c}/logs", ROUTE_CONTAINER },
        { "GET", "/containers/{c}/changes", ROUTE_CONTAINER },
        { "GET", "/containers/{c}/export", ROUTE_CONTAINER },
        { "GET", "/containers/{c}/stats", ROUTE_CONTAINER },
        { "GET", "/containers/{c}/archive", ROUTE_CONTAINER },
        { "PUT", "/containers/{c}/archive", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/start", ROUTE_CONTAINER_START },
        { "POST", "/containers/{c}/restart", ROUTE_CONTAINER_START },
        { "POST", "/containers/{c}/stop", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/kill", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/pause", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/unpause", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/wait", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/resize", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/rename", ROUTE_CONTAINER },
        { "POST", "/containers/{c}/attach", ROUTE_CONTAINER_ATTACH },
        { "GET", "/containers/{c}/attach/ws", ROUTE_CONTAINER_ATTACH },
        { "POST", "/containers/{c}/exec", ROUTE_CONTAINER_BODY },
        { "POST", "/containers/{c}/update", ROUTE_CONTAINER_BODY },
        { "DELETE", "/containers/{c}", ROUTE_CONTAINER_DELETE },

        { "POST", "/exec/{e}/start", ROUTE_EXEC_START },
        { "POST", "/exec/{e}/resize", ROUTE_EXEC },
        { "GET", "/exec/{e}/json", ROUTE_EXEC },

        { "GET", "/images/json", ROUTE_IMAGE_READ },
        { "GET", "/images/search", ROUTE_IMAGE_READ },
        { "GET", "/images/get", ROUTE_IMAGE_READ },
        { "POST", "/images/create", ROUTE_IMAGE_PULL },
        { "POST", "/images/load", ROUTE_IMAGE_LOAD },
        { "POST", "/images/prune", ROUTE_PRUNE },
        { "GET", "/images/{i}/json", ROUTE_IMAGE_READ },
        { "GET", "/images/{i}/history", ROUTE_IMAGE_READ },
        { "GET", "/images/{i}/get", ROUTE_IMAGE_READ },
        { "POST", "/images/{i}/tag", ROUTE_IMAGE_TAG },
        { "POST", "/images/{i}/push", ROUTE_IMAGE_PUSH },
        { "DELETE", "/images/{i}", ROUTE_IMAGE_DELETE },
        { "GET", "/distribution/{i}/json", ROUTE_IMAGE_READ },
        { "POST", "/build", ROUTE_BUILD },
        { "POST", "/build/prune", ROUTE_PRUNE },
        { "POST", "/commit", ROUTE_COMMIT },

        { "GET", "/volumes", ROUTE_VOLUME_LIST },
        { "POST", "/volumes/create", ROUTE_VOLUME_CREATE },
        { "POST", "/volumes/prune", ROUTE_PRUNE },
        { "GET", "/volumes/{v}", ROUTE_VOLUME },
        { "DELETE", "/volumes/{v}", ROUTE_VOLUME_DELETE },

        { "GET", "/networks", ROUTE_NETWORK_LIST },
        { "POST", "/networks/create", ROUTE_NETWORK_CREATE },
        { "POST", "/networks/prune", ROUTE_PRUNE },
        { "GET", "/networks/{n}", ROUTE_NETWORK },
        { "DELETE", "/networks/{n}", ROUTE_NETWORK_DELETE },
        { "POST", "/networks/{n}/connect", ROUTE_NETWORK_CONNECT },
        { "POST", "/networks/{n}/disconnect", ROUTE_NETWORK_CONNECT },
};

#define PATH_SEGMENTS_MAX 32

typedef struct Segments {
        const char *s[PATH_SEGMENTS_MAX];
        size_t len[PATH_SEGMENTS_MAX];
        size_t n;
} Segments;

/* Splits "/a/b/c" into segments; false when it has too many or an empty one. */
static bool split_segments(const char *path, Segments *out) {
        out->n = 0;
        if (path[0] != '/')
                return false;
        for (const char *p = path; *p == '/';) {
                size_t l = strcspn(p + 1, "/");
                if (l == 0 || out->n >= PATH_SEGMENTS_MAX)
                        return false;
                out->s[out->n] = p + 1;
                out->len[out->n++] = l;
                p += 1 + l;
        }
        return true;
}

static bool seg_is(const Segments *g, size_t i, const char *lit) {
        return strlen(lit) == g->len[i] && strncmp(g->s[i], lit, g->len[i]) == 0;
}

/* Matches a route; *ret_param is the "{x}" part (one segment, or the image
 * name across segments). */
static bool route_match(const struct Route *rt, const char *method, const Segments *g, char **ret_param) {
        Segments pat;
        size_t star = SIZE_MAX;

        if (!streq(rt->method, method) && !(streq(rt->method, "GET") && streq(method, "HEAD")))
                return false;
        if (!split_segments(rt->pattern, &pat))
                return false;
        for (size_t i = 0; i < pat.n; i++)
                if (pat.s[i][0] == '{')
                        star = i;
        if (star == SIZE_MAX) {
                if (pat.n != g->n)
                        return false;
                for (size_t i = 0; i < pat.n; i++)
                        if (pat.len[i] != g->len[i] || strncmp(pat.s[i], g->s[i], g->len[i]) != 0)
                                return false;
                *ret_param = NULL;
                return true;
        }
        {
                bool multi = pat.s[star][1] == 'i';
                size_t tail = pat.n - star - 1, first, last;

                if (multi ? g->n < pat.n : g->n != pat.n)
                        return false;
                for (size_t i = 0; i < star; i++)
                        if (pat.len[i] != g->len[i] || strncmp(pat.s[i], g->s[i], g->len[i]) != 0)
                                return false;
                for (size_t i = 0; i < tail; i++)
                        if (pat.len[star + 1 + i] != g->len[g->n - tail + i] ||
                            strncmp(pat.s[star + 1 + i], g->s[g->n - tail + i], pat.len[star + 1 + i]) != 0)
                                return false;
                first = star;
                last = g->n - tail - 1;
                *ret_param = strndup(g->s[first], (size_t) (g->s[last] + g->len[last] - g->s[first]));
                return *ret_param != NULL;
        }
}

/* "repo" + "tag" query values as one reference ("" when repo is empty). */
static int query_ref(const char *query, char **ret) {
        _cleanup_free_ char *repo = NULL, *tag = NULL;

        if (http_query_get(query, "repo", &repo) < 0 || http_query_get(query, "tag", &tag) < 0)
                return -EBADMSG;
        if (isempty(repo)) {
                *ret = strdup("");
        } else if (asprintf(ret, "%s%s%s", repo, isempty(tag) ? "" : ":", tag ?: "") < 0)
                *ret = NULL;
        return *ret ? 0 : -ENOMEM;
}

/* Everything a caller can make us remember has a hard cap. */
static int records_full(const DockerCaller *c, DockerDecision *d, OwnedKind kind) {
        if (owned_set_size(c->owned, kind) < OWNED_MAX)
                return 0;
        return deny(d, 403, "records-full", "This container already made %u %s through its socket; remove some first.",
                    OWNED_MAX, owned_kind_to_string(kind));
}

/* An image name a caller gives (build -t, tag, commit): its own, or one
 * that does not exist yet; recorded as its own once the engine made it. */
static int claim_image_name(const DockerCaller *c, DockerDecision *d, const char *ref) {
        _cleanup_free_ char *norm = NULL;
        int r;

        r = docker_image_ref_normalize(ref, &norm);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return deny(d, 400, "image-name", "\"%s\" is not an image name this socket can give (no digests, no bare hex ids).", ref);
        r = records_full(c, d, OWNED_IMAGE);
        if (r < 0 || d->status)
                return r;
        if (!owns(c, OWNED_IMAGE, norm) && (r = add_check(d, DOCKER_CHECK_IMAGE_FREE, norm, false)) < 0)
                return r;
        return add_record(d, OWNED_IMAGE, norm, /* add= */ true);
}

typedef struct BuildTags {
        const DockerCaller *c;
        DockerDecision *d;
} BuildTags;

static int build_tag_cb(const char *value, void *ud) {
        BuildTags *b = ud;
        int r = claim_image_name(b->c, b->d, value);
        return r < 0 ? r : b->d->status ? 1 : 0;
}

/* An image the caller names to change or publish (delete, push): only one
 * it made. */
static int own_image(const DockerCaller *c, DockerDecision *d, const char *ref, const char *verb, char **ret_norm) {
        _cleanup_free_ char *norm = NULL;
        int r;

        r = docker_image_ref_normalize(ref, &norm);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return deny(d, 403, "image-owner", "Images are %s by the name this container gave them, not \"%s\".", verb, ref);
        if (!owns(c, OWNED_IMAGE, norm))
                return deny(d, 403, "image-owner", "Image %s was not made through this container's socket; it cannot be %s here.",
                            ref, verb);
        if (ret_norm)
                *ret_norm = TAKE_PTR(norm);
        return 0;
}

int docker_decide_request(const DockerCaller *c, const char *method, const char *path, const char *query,
                          DockerDecision *d) {
        _cleanup_free_ char *param = NULL;
        const struct Route *rt = NULL;
        bool see_all = c->policy->see_all_containers;
        Segments g;
        int r;

        *d = (DockerDecision){ .rule = "endpoint" };
        if (split_segments(path, &g))
                for (size_t i = 0; i < ELEMENTSOF(routes) && !rt; i++)
                        if (route_match(&routes[i], method, &g, &param))
                                rt = &routes[i];
        if (!rt)
                return deny(d, 403, "endpoint", "%s %s is not an allowed Docker API endpoint.", method, path);
        if (param) {
                bool ok = rt->pattern[strcspn(rt->pattern, "{") + 1] == 'i' ? image_name_is_valid(param) : name_is_valid(param);
                if (!ok)
                        return deny(d, 403, "endpoint", "%s %s is not an allowed Docker API endpoint (\"%s\" is not one name).",
                                    method, path, param);
        }

        switch (rt->id) {
        case ROUTE_SYSTEM:
                d->rule = "system";
                return 0;
        case ROUTE_EVENTS:
                d->rule = "events";
                return see_all ? 0 : add_label_filter(c, d, query);
        case ROUTE_AUTH:
                d->rule = "auth";
                return 0;

        case ROUTE_CONTAINER_LIST:
                d->rule = "list-filter";
                return see_all ? 0 : add_id_filter(c, d, query);
        case ROUTE_CONTAINER_CREATE: {
                _cleanup_free_ char *name = NULL;
                if (http_query_get(query, "name", &name) < 0)
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                if (!isempty(name) && !name_is_valid(name + (name[0] == '/')))
                        return deny(d, 400, "invalid-query", "Container name \"%s\" is not one name.", name);
                d->rule = "create";
                d->needs_body = true;
                return records_full(c, d, OWNED_CONTAINER);
        }
        case ROUTE_CONTAINER:
        case ROUTE_CONTAINER_START:
        case ROUTE_CONTAINER_ATTACH:
        case ROUTE_CONTAINER_BODY:
        case ROUTE_CONTAINER_DELETE:
                d->rule = "own-container";
                if (!see_all && (r = add_check(d, DOCKER_CHECK_CONTAINER, param, /* in_path= */ true)) < 0)
                        return r;
                d->verify_mounts = rt->id == ROUTE_CONTAINER_START;
                d->hijack = rt->id == ROUTE_CONTAINER_ATTACH;
                d->needs_body = rt->id == ROUTE_CONTAINER_BODY;
                if (rt->id == ROUTE_CONTAINER_DELETE)
                        d->forget_path = OWNED_CONTAINER;
                return 0;

        case ROUTE_EXEC:
        case ROUTE_EXEC_START:
                d->rule = "own-exec";
                if (!see_all && (r = add_check(d, DOCKER_CHECK_EXEC, param, /* in_path= */ false)) < 0)
                        return r;
                d->hijack = rt->id == ROUTE_EXEC_START;
                return 0;

        case ROUTE_IMAGE_READ:
                d->rule = "images";
                return 0;
        case ROUTE_IMAGE_PULL: {
                _cleanup_free_ char *src = NULL, *from = NULL;
                if (http_query_get(query, "fromSrc", &src) < 0 || http_query_get(query, "fromImage", &from) < 0)
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                if (src)
                        return deny(d, 403, "image-import", "Importing images (fromSrc) can replace any name on the engine; pull or build instead.");
                if (isempty(from))
                        return deny(d, 400, "invalid-query", "Pulling needs fromImage.");
                if (c->policy && c->policy->pull_via_host)
                        return decide_pull_via_host(query, from, d);
                if (c->policy && c->policy->refuse_pull)
                        return deny(d, 403, "image-pull",
                                    "Pulling images is not available inside an instance: images never reach it over "
                                    "the network; use the images the instance was created with.");
                d->rule = "images";
                return 0;
        }
        case ROUTE_IMAGE_LOAD:
                return deny(d, 403, "image-load", "Loading images can replace any name on the engine; pull or build instead.");
        case ROUTE_IMAGE_TAG: {
                _cleanup_free_ char *target = NULL;
                r = query_ref(query, &target);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || isempty(target))
                        return deny(d, 400, "invalid-query", "Tagging needs repo (and tag).");
                d->rule = "image-tag";
                return claim_image_name(c, d, target);
        }
        case ROUTE_IMAGE_PUSH: {
                _cleanup_free_ char *tag = NULL, *ref = NULL;
                if (http_query_get(query, "tag", &tag) < 0)
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                if (asprintf(&ref, "%s%s%s", param, isempty(tag) ? "" : ":", tag ?: "") < 0)
                        return -ENOMEM;
                d->rule = "image-push";
                return own_image(c, d, ref, "pushed", NULL);
        }
        case ROUTE_IMAGE_DELETE: {
                _cleanup_free_ char *norm = NULL;
                d->rule = "image-delete";
                r = own_image(c, d, param, "deleted", &norm);
                if (r < 0 || d->status)
                        return r;
                return add_record(d, OWNED_IMAGE, norm, /* add= */ false);
        }
        case ROUTE_BUILD: {
                _cleanup_free_ char *nm = NULL, *cgp = NULL;
                BuildTags b = { c, d };
                if (http_query_get(query, "networkmode", &nm) < 0 || http_query_get(query, "cgroupparent", &cgp) < 0)
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                if (nm && strcasecmp(nm, "host") == 0 && !c->policy->allow_host_network)
                        return deny(d, 403, "host-network", "Builds with networkmode=host are not allowed.");
                if (!isempty(cgp) && !c->policy->allow_unconfined)
                        return deny(d, 403, "cgroup-parent", "Builds with a cgroupparent are not allowed.");
                d->rule = "build";
                r = query_foreach(query, "t", build_tag_cb, &b);
                if (r == -EBADMSG)
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                return r < 0 ? r : 0;
        }
        case ROUTE_COMMIT: {
                _cleanup_free_ char *ct = NULL, *target = NULL;
                d->rule = "own-container";
                if (http_query_get(query, "container", &ct) < 0 || query_ref(query, &target) < 0)
                        return deny(d, 400, "invalid-query", "The query string is malformed.");
                if (isempty(ct) || !name_is_valid(ct))
                        return deny(d, 400, "invalid-query", "commit needs one container.");
                if (!see_all && (r = add_check(d, DOCKER_CHECK_CONTAINER, ct, false)) < 0)
                        return r;
                return isempty(target) ? 0 : claim_image_name(c, d, target);
        }

        case ROUTE_VOLUME_LIST:
        case ROUTE_NETWORK_LIST:
                d->rule = rt->id == ROUTE_VOLUME_LIST ? "volumes" : "networks";
                return 0;
        case ROUTE_VOLUME_CREATE:
                d->rule = "volume-create";
                d->needs_body = true;
                return records_full(c, d, OWNED_VOLUME);
        case ROUTE_VOLUME:
        case ROUTE_VOLUME_DELETE:
                d->rule = "own-volume";
                /* Volume names are exact (no prefixes): the records answer. */
                if (!owns(c, OWNED_VOLUME, param))
                        return deny(d, 404, "not-owned", "No such volume: %s", param);
                if (rt->id == ROUTE_VOLUME_DELETE)
                        return add_record(d, OWNED_VOLUME, param, /* add= */ false);
                return 0;
        case ROUTE_NETWORK_CREATE:
                d->rule = "network-create";
                d->needs_body = true;
                return records_full(c, d, OWNED_NETWORK);
        case ROUTE_NETWORK:
        case ROUTE_NETWORK_DELETE:
        case ROUTE_NETWORK_CONNECT:
                d->rule = rt->id == ROUTE_NETWORK_CONNECT ? "network-connect" : "own-network";
                r = add_check(d, DOCKER_CHECK_NETWORK, param, /* in_path= */ true);
                if (r < 0)
                        return r;
                d->needs_body = rt->id == ROUTE_NETWORK_CONNECT;
                if (rt->id == ROUTE_NETWORK_DELETE)
                        d->forget_path = OWNED_NETWORK;
                return 0;

        case ROUTE_PRUNE:
                return deny(d, 403, "prune", "%s %s would remove other containers' things; remove your own by name.", method, path);
        }
        return deny(d, 403, "endpoint", "%s %s is not an allowed Docker API endpoint.", method, path);
}

int docker_decide_body(const DockerCaller *c, const char *method, const char *path, const char *body, size_t len,
                       DockerDecision *d) {
        Segments g;

        (void) method;
        if (!split_segments(path, &g))
                return deny(d, 403, "endpoint", "No body check for %s.", path);
        if (g.n == 2 && seg_is(&g, 0, "containers") && seg_is(&g, 1, "create"))
                return docker_translate_create(c, body, len, d);
        if (g.n == 3 && seg_is(&g, 0, "containers") && seg_is(&g, 2, "exec"))
                return decide_exec_create(c, body, len, d);
        if (g.n == 3 && seg_is(&g, 0, "containers") && seg_is(&g, 2, "update"))
                return decide_update(c, d, body, len);
        if (g.n == 2 && seg_is(&g, 0, "volumes") && seg_is(&g, 1, "create"))
                return decide_volume_create(c, d, body, len);
        if (g.n == 2 && seg_is(&g, 0, "networks") && seg_is(&g, 1, "create"))
                return decide_network_create(d, body, len);
        if (g.n == 3 && seg_is(&g, 0, "networks") && (seg_is(&g, 2, "connect") || seg_is(&g, 2, "disconnect")))
                return decide_network_connect(c, d, body, len);
        return deny(d, 403, "endpoint", "No body check for %s.", path);
}

/* ---- engine answers ------------------------------------------------------- */

static int json_string_field(const char *body, size_t len, const char *field, char **ret) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        const char *v;

        j = json_loadb(body, len, 0, NULL);
        v = json_string_value(json_object_get(j, field));
        if (!v || !*v)
                return -EBADMSG;
        *ret = strdup(v);
        return *ret ? 0 : -ENOMEM;
}

int docker_inspect_id(const char *body, size_t len, char **ret_id) {
        return json_string_field(body, len, "Id", ret_id);
}

int docker_created_id(OwnedKind kind, const char *body, size_t len, char **ret_id) {
        return json_string_field(body, len, kind == OWNED_VOLUME ? "Name" : "Id", ret_id);
}

int docker_check_path(const DockerDecision *d, size_t i, char **ret_path) {
        static const char *const fmt[] = {
                [DOCKER_CHECK_CONTAINER] = "/containers/%s/json",
                [DOCKER_CHECK_EXEC] = "/exec/%s/json",
                [DOCKER_CHECK_NETWORK] = "/networks/%s",
                [DOCKER_CHECK_VOLUME_FREE] = "/volumes/%s",
                [DOCKER_CHECK_IMAGE_FREE] = "/images/%s/json",
                [DOCKER_CHECK_IMAGE_LABELS] = "/images/%s/json",
        };
        const DockerCheck *k;

        if (i >= d->n_checks)
                return -EINVAL;
        k = &d->checks[i];
        /* Refs were checked to be names (images: normalized references), so
         * nothing in them needs escaping; refuse rather than guess. */
        if (k->kind == DOCKER_CHECK_IMAGE_FREE || k->kind == DOCKER_CHECK_IMAGE_LABELS ? !image_name_is_valid(k->ref)
                                                                                        : !name_is_valid(k->ref))
                return -EINVAL;
        return asprintf(ret_path, fmt[k->kind], k->ref) < 0 ? -ENOMEM : 0;
}

int docker_check_answer(const DockerCaller *c, DockerDecision *d, size_t i, unsigned status, const char *body,
                        size_t len) {
        /* A container named in a request body (VolumesFrom, container:<id>
         * modes) that is missing or not the caller's gets 403: on create,
         * the docker CLI takes 404 for a missing image and would pull. The
         * answer never tells whether someone else's exists. */
        unsigned not_found = d->needs_body ? 403 : 404;
        _cleanup_free_ char *id = NULL, *ref = NULL;
        DockerCheck *k;
        int r;

        if (i >= d->n_checks)
                return -EINVAL;
        k = &d->checks[i];
        ref = strdup(k->ref);
        if (!ref)
                return -ENOMEM;
        switch (k->kind) {
        case DOCKER_CHECK_CONTAINER:
        case DOCKER_CHECK_NETWORK: {
                bool ctr = k->kind == DOCKER_CHECK_CONTAINER;
                const char *what = ctr ? "container" : "network";

                if (status == 404)
                        return deny(d, not_found, "not-found", "No such %s: %s", what, ref);
                if (status != 200)
                        return -EIO;
                r = docker_inspect_id(body, len, &id);
                if (r < 0)
                        return r;
                if (!owns(c, ctr ? OWNED_CONTAINER : OWNED_NETWORK, id))
                        return deny(d, not_found, "not-owned", "No such %s: %s", what, ref);
                if (k->in_path) {
                        free(d->path_id);
                        d->path_id = TAKE_PTR(id);
                        if (ctr && d->verify_mounts)
                                return docker_verify_mounts(c, body, len, d);
                }
                return 0;
        }
        case DOCKER_CHECK_EXEC:
                if (status == 404)
                        return deny(d, not_found, "not-found", "No such exec instance: %s", ref);
                if (status != 200)
                        return -EIO;
                r = docker_exec_inspect_container(body, len, &id);
                if (r < 0)
                        return r;
                /* Now the exec's container must be the caller's. */
                return add_check(d, DOCKER_CHECK_CONTAINER, id, /* in_path= */ false);
        case DOCKER_CHECK_IMAGE_LABELS: {
                _cleanup_(json_decrefp) json_t *j = NULL;
                const char *key;
                json_t *labels, *v;

                /* Missing: the engine answers the create with 404 and the
                 * CLI pulls and creates again, which is checked again. */
                if (status == 404)
                        return 0;
                if (status != 200)
                        return -EIO;
                j = json_loadb(body, len, 0, NULL);
                if (!json_is_object(j))
                        return -EBADMSG;
                labels = json_object_get(json_object_get(j, "Config"), "Labels");
                json_object_foreach(labels, key, v)
                        if (strncmp(key, DOCKER_LABEL_RESERVED, strlen(DOCKER_LABEL_RESERVED)) == 0)
                                return deny(d, 403, "reserved-label",
                                            "Image %s carries the label \"%s\", which is reserved for the proxy.", ref, key);
                return 0;
        }
        case DOCKER_CHECK_VOLUME_FREE:
        case DOCKER_CHECK_IMAGE_FREE: {
                bool vol = k->kind == DOCKER_CHECK_VOLUME_FREE;
                if (status == 404)
                        return 0;
                if (status != 200)
                        return -EIO;
                return deny(d, 403, vol ? "not-owned" : "image-name",
                            "%s %s exists and was not made through this container's socket; use another name.",
                            vol ? "Volume" : "Image", ref);
        }
        }
        return -EINVAL;
}

int docker_path_with_id(const char *path, const char *id, char **ret_path) {
        const char *second, *rest;

        if (path[0] != '/' || !(second = strchr(path + 1, '/')))
                return -EINVAL;
        rest = strchrnul(second + 1, '/');
        return asprintf(ret_path, "%.*s/%s%s", (int) (second - path), path, id, rest) < 0 ? -ENOMEM : 0;
}

static bool is_tag_valid(const char *t) {
        size_t n = strlen(t);

        if (n == 0 || n > 128 || !(isalnum((unsigned char) t[0]) || t[0] == '_'))
                return false;
        for (const char *p = t; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("_.-", *p))
                        return false;
        return true;
}

/* One path component of a repository: [a-z0-9]+ joined by '.', '_', '__'
 * or '-'s, as in the distribution reference grammar (approximately: no
 * leading or trailing separator, lower case only). */
static bool is_path_component_valid(const char *s, size_t n) {
        if (n == 0 || !(islower((unsigned char) s[0]) || isdigit((unsigned char) s[0])) ||
            !(islower((unsigned char) s[n - 1]) || isdigit((unsigned char) s[n - 1])))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!islower((unsigned char) s[i]) && !isdigit((unsigned char) s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

int docker_image_ref_normalize(const char *ref, char **ret) {
        _cleanup_free_ char *name = NULL;
        const char *slash, *colon, *tag = "latest", *domain = "docker.io", *rest;
        bool hex = true;

        if (!image_name_is_valid(ref) || strchr(ref, '@'))
                return -EINVAL;
        slash = strrchr(ref, '/');
        colon = strrchr(slash ?: ref, ':');
        name = strndup(ref, colon ? (size_t) (colon - ref) : strlen(ref));
        if (!name)
                return -ENOMEM;
        if (colon) {
                tag = colon + 1;
                if (!is_tag_valid(tag))
                        return -EINVAL;
        }
        rest = name;
        slash = strchr(name, '/');
        if (slash && (memchr(name, '.', (size_t) (slash - name)) || memchr(name, ':', (size_t) (slash - name)) ||
                      (slash - name == 9 && strncmp(name, "localhost", 9) == 0))) {
                name[slash - name] = '\0';
                domain = streq(name, "index.docker.io") ? "docker.io" : name;
                rest = slash + 1;
        }
        for (const char *p = rest; *p;) {
                size_t n = strcspn(p, "/");
                if (!is_path_component_valid(p, n))
                        return -EINVAL;
                p += n;
                if (*p)
                        p++;
                else
                        break;
        }
        /* A bare hex name is also read as an image id prefix by the engine. */
        for (const char *p = rest; *p; p++)
                if (!isxdigit((unsigned char) *p))
                        hex = false;
        if (hex && streq(domain, "docker.io"))
                return -EINVAL;
        if (asprintf(ret, "%s/%s%s:%s", domain, streq(domain, "docker.io") && !strchr(rest, '/') ? "library/" : "", rest,
                     tag) < 0)
                return -ENOMEM;
        return 0;
}

/* Is `host` (a bind source the proxy wrote) still inside the root, free of
 * symlinks? 0 when fine, else a negative errno. */
static int host_path_still_inside(const char *root, const char *host) {
        _cleanup_close_ int rootfd = -EBADF, fd = -EBADF;
        size_t rl = strlen(root);
        const char *rel;
        int r;

        if (strncmp(host, root, rl) != 0 || (host[rl] != '/' && host[rl] != '\0'))
                return -EXDEV;
        rel = host + rl;
        while (*rel == '/')
                rel++;
        for (const char *p = rel; *p;) {
                size_t n = strcspn(p, "/");
                if (n == 2 && p[0] == '.' && p[1] == '.')
                        return -EXDEV;
                p += n;
                while (*p == '/')
                        p++;
        }
        rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return -errno;
        r = openat2_beneath(rootfd, rel);
        if (r >= 0) {
                safe_close(r);
                return 0;
        }
        if (r != -ENOSYS)
                return r;
        /* No openat2(): walk with O_NOFOLLOW, refusing any symlink. */
        fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
        for (const char *p = rel; *p;) {
                size_t n = strcspn(p, "/");
                char comp[NAME_MAX + 1];
                struct stat st;
                int nfd;

                if (n > NAME_MAX)
                        return -ENAMETOOLONG;
                memcpy(comp, p, n);
                comp[n] = '\0';
                nfd = openat(fd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return -errno;
                safe_close(fd);
                fd = nfd;
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (S_ISLNK(st.st_mode))
                        return -ELOOP;
                p += n;
                while (*p == '/')
                        p++;
        }
        return 0;
}

int docker_verify_mounts(const DockerCaller *c, const char *body, size_t len, DockerDecision *d) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_t *hc, *v, *e;
        size_t i;
        int r;

        j = json_loadb(body, len, 0, NULL);
        if (!json_is_object(j))
                return -EBADMSG;
        hc = json_object_get(j, "HostConfig");
        v = json_object_get(hc, "Binds");
        json_array_foreach(v, i, e) {
                _cleanup_free_ char *src = NULL;
                const char *s = json_string_value(e), *colon;
                if (!s || s[0] != '/' || !(colon = strchr(s, ':')))
                        continue; /* named or anonymous volume */
                src = strndup(s, (size_t) (colon - s));
                if (!src)
                        return -ENOMEM;
                r = host_path_still_inside(c->root, src);
                if (r < 0)
                        return deny(d, 403, "bind-escape",
                                    "Bind source %s is no longer a plain path inside this container's root (%s); not starting.",
                                    src, strerror(-r));
        }
        v = json_object_get(hc, "Mounts");
        json_array_foreach(v, i, e) {
                const char *t = json_string_value(json_object_get(e, "Type"));
                const char *s = json_string_value(json_object_get(e, "Source"));
                if (!t || !streq(t, "bind"))
                        continue;
                r = host_path_still_inside(c->root, s ?: "");
                if (r < 0)
                        return deny(d, 403, "bind-escape",
                                    "Mount source %s is no longer a plain path inside this container's root (%s); not starting.",
                                    s ?: "", strerror(-r));
        }
        return 0;
}

int docker_exec_inspect_container(const char *body, size_t len, char **ret_container) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        const char *id;

        j = json_loadb(body, len, 0, NULL);
        id = json_string_value(json_object_get(j, "ContainerID"));
        if (!id || !*id)
                return -EBADMSG;
        *ret_container = strdup(id);
        return *ret_container ? 0 : -ENOMEM;
}
