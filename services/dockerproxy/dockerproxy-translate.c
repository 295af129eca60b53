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

static int strv_push(char ***l, const char *s) {
        size_t n = 0;
        char **t, *d;

        while (*l && (*l)[n])
                n++;
        d = strdup(s);
        if (!d)
                return -ENOMEM;
        t = realloc(*l, (n + 2) * sizeof(char *));
        if (!t) {
                free(d);
                return -ENOMEM;
        }
        t[n] = d;
        t[n + 1] = NULL;
        *l = t;
        return 0;
}

void docker_decision_done(DockerDecision *d) {
        free(d->message);
        free(d->new_query);
        free(d->new_body);
        strv_free(d->must_own);
        free(d->must_own_exec);
        *d = (DockerDecision){};
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
                if (!*ref)
                        return deny(d, 400, "invalid-field", "HostConfig.%s names no container.", field);
                if (!c->policy->see_all_containers)
                        return strv_push(&d->must_own, ref);
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
                if (s[0] != '/')
                        continue; /* named volume */
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

static int check_volume_driver_opts(DockerDecision *d, json_t *opts, const char *what) {
        const char *key;
        json_t *v;

        if (!opts || json_is_null(opts))
                return 0;
        if (!json_is_object(opts))
                return deny(d, 400, "invalid-field", "%s must be an object.", what);
        /* The local driver mounts `device` with `type` and `o`: type=none
         * o=bind binds a host path, a device path mounts a host block device. */
        json_object_foreach(opts, key, v) {
                const char *s = json_string_value(v);
                if (!s)
                        return deny(d, 400, "invalid-field", "%s values must be strings.", what);
                if ((streq(key, "type") && strcasecmp(s, "none") == 0) ||
                    (streq(key, "o") && strstr(s, "bind")) || (streq(key, "device") && s[0] == '/'))
                        return deny(d, 403, "volume-host-bind",
                                    "%s %s=%s would bind a host path into a volume; not allowed.", what, key, s);
        }
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
                json_t *type, *source, *target, *vo, *dc, *opts;
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
                        GET(vo, "DriverConfig", &dc);
                        GET(dc, "Options", &opts);
                        r = check_volume_driver_opts(d, opts, "Mount VolumeOptions.DriverConfig.Options");
                        if (r < 0 || d->status)
                                return r;
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
                        if (!p->see_all_containers && (r = strv_push(&d->must_own, ref)) < 0)
                                return r;
                }
        }

        GET(hc, "Links", &v);
        if (v && !json_is_null(v)) {
                if (!json_is_array(v))
                        return deny(d, 400, "invalid-field", "HostConfig.Links must be an array.");
                json_array_foreach(v, i, e) {
                        _cleanup_free_ char *ref = NULL;
                        const char *s = json_string_value(e);
                        if (!s || !*s)
                                return deny(d, 400, "invalid-field", "HostConfig.Links entries must be strings.");
                        ref = strndup(s + (s[0] == '/'), strcspn(s + (s[0] == '/'), ":"));
                        if (!ref)
                                return -ENOMEM;
                        if (!p->see_all_containers && (r = strv_push(&d->must_own, ref)) < 0)
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

        GET(top, "HostConfig", &hc);
        r = check_hostconfig(c, d, hc);
        if (r < 0 || d->status)
                return r;
        r = add_owner_labels(c, d, top);
        if (r < 0 || d->status)
                return r;
        d->rule = "create";
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

static int decide_volume_create(DockerDecision *d, const char *body, size_t len) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *v;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        GET(top, "DriverOpts", &v);
        r = check_volume_driver_opts(d, v, "Volume DriverOpts");
        if (r < 0 || d->status)
                return r;
        d->rule = "volume-create";
        return set_body(d, top);
}

static int decide_service(DockerDecision *d, const char *body, size_t len) {
        _cleanup_(json_decrefp) json_t *top = NULL;
        json_t *tt, *cs, *mounts;
        int r;

        r = load_object(body, len, &top, d);
        if (r < 0 || d->status)
                return r;
        GET(top, "TaskTemplate", &tt);
        GET(tt, "ContainerSpec", &cs);
        GET(cs, "Mounts", &mounts);
        if (nonempty(mounts))
                return deny(d, 403, "service-mounts", "Services with mounts are not allowed.");
        d->rule = "service";
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
        if (!json_is_string(v))
                return deny(d, 400, "invalid-field", "Container must be a string.");
        if (!c->policy->see_all_containers && (r = strv_push(&d->must_own, json_string_value(v))) < 0)
                return r;
        d->rule = "network-connect";
        return set_body(d, top);
}

/* ---- routing -------------------------------------------------------------- */

/* Splits "/a/b/c" into at most 4 segments. Returns the count. */
static size_t split_path(const char *path, char seg[4][256]) {
        size_t n = 0;

        for (const char *p = path; *p == '/' && n < 4;) {
                size_t l = strcspn(p + 1, "/");
                if (l >= 256)
                        return 5;
                memcpy(seg[n], p + 1, l);
                seg[n][l] = '\0';
                n++;
                p += 1 + l;
                if (*p == '\0')
                        break;
                if (n == 4)
                        return 5; /* deeper than any route we know */
        }
        return n;
}

/* Adds a label filter for the caller's owner label to a query's `filters`
 * (JSON map of lists, or the older map of maps), replacing every filters=
 * pair by one. */
static int add_label_filter(const DockerCaller *c, DockerDecision *d, const char *query) {
        _cleanup_(json_decrefp) json_t *filters = NULL;
        _cleanup_free_ char *old = NULL, *own = NULL, *dumped = NULL;
        char *out = NULL;
        size_t out_len = 0;
        json_t *label;
        FILE *f;
        int r;

        r = http_query_get(query, "filters", &old);
        if (r < 0)
                return deny(d, 400, "invalid-query", "The query string is malformed.");
        if (r > 0 && *old) {
                json_error_t err;
                filters = json_loads(old, JSON_REJECT_DUPLICATES, &err);
                if (!json_is_object(filters))
                        return deny(d, 400, "invalid-query", "The filters parameter is not a JSON object.");
        } else
                filters = json_object();
        if (!filters)
                return -ENOMEM;
        if (asprintf(&own, DOCKER_LABEL_OWNER_PREFIX "%s", c->id) < 0)
                return -ENOMEM;
        {
                const char *k;
                json_t *v;
                json_object_foreach(filters, k, v)
                        if (!streq(k, "label") && fold_equal(k, "label"))
                                return deny(d, 400, "invalid-query", "Filter \"%s\" differs only in case from \"label\".", k);
        }
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

static bool startswith_segment(const char *path, const char *first) {
        size_t l = strlen(first);
        return path[0] == '/' && strncmp(path + 1, first, l) == 0 && (path[1 + l] == '/' || path[1 + l] == '\0');
}

static bool method_is(const char *m, const char *a) {
        return streq(m, a);
}

int docker_decide_request(const DockerCaller *c, const char *method, const char *path, const char *query,
                          DockerDecision *d) {
        char seg[4][256];
        size_t n = split_path(path, seg);
        bool get = method_is(method, "GET") || method_is(method, "HEAD");
        bool post = method_is(method, "POST");
        int r;

        *d = (DockerDecision){ .rule = "endpoint" };
        /* Images and builds are shared by everyone on the engine; image
         * names may hold any number of '/'. */
        if (startswith_segment(path, "images") || startswith_segment(path, "distribution"))
                return d->rule = "images", 0;
        if (n == 0 || n > 4)
                return deny(d, 403, "endpoint", "%s %s is not an allowed Docker API endpoint.", method, path);

        /* System. */
        if (n == 1 && (streq(seg[0], "_ping") || streq(seg[0], "version") || streq(seg[0], "info")) && get)
                return d->rule = "system", 0;
        if (n == 2 && streq(seg[0], "system") && streq(seg[1], "df") && get)
                return d->rule = "system", 0;
        if (n == 1 && streq(seg[0], "events") && get) {
                d->rule = "events";
                return c->policy->see_all_containers ? 0 : add_label_filter(c, d, query);
        }
        if (n == 1 && streq(seg[0], "auth") && post)
                return d->rule = "auth", 0;

        /* Containers. */
        if (streq(seg[0], "containers")) {
                if (n == 2 && streq(seg[1], "json") && get) {
                        d->rule = "list-filter";
                        return c->policy->see_all_containers ? 0 : add_label_filter(c, d, query);
                }
                if (n == 2 && streq(seg[1], "create") && post)
                        return d->rule = "create", d->needs_body = true, 0;
                if (n == 2 && streq(seg[1], "prune") && post) {
                        d->rule = "prune-filter";
                        return c->policy->see_all_containers ? 0 : add_label_filter(c, d, query);
                }
                if (n >= 2) {
                        d->rule = "own-container";
                        if (!c->policy->see_all_containers && (r = strv_push(&d->must_own, seg[1])) < 0)
                                return r;
                        if (n == 3 && post && (streq(seg[2], "exec") || streq(seg[2], "update")))
                                d->needs_body = true;
                        if (n == 3 && post && (streq(seg[2], "start") || streq(seg[2], "restart")))
                                d->verify_mounts = true;
                        if ((n == 3 && post && streq(seg[2], "attach")) ||
                            (n == 4 && get && streq(seg[2], "attach") && streq(seg[3], "ws")))
                                d->hijack = true;
                        return 0;
                }
        }
        if (streq(seg[0], "exec") && n == 3) {
                d->rule = "own-exec";
                if (!c->policy->see_all_containers && !(d->must_own_exec = strdup(seg[1])))
                        return -ENOMEM;
                if (post && streq(seg[2], "start"))
                        d->hijack = true;
                return 0;
        }

        if (streq(seg[0], "build") && (n == 1 || (n == 2 && streq(seg[1], "prune") && post))) {
                _cleanup_free_ char *nm = NULL;
                if (http_query_get(query, "networkmode", &nm) > 0 && strcasecmp(nm, "host") == 0 &&
                    !c->policy->allow_host_network)
                        return deny(d, 403, "host-network", "Builds with networkmode=host are not allowed.");
                return d->rule = "build", 0;
        }
        if (n == 1 && streq(seg[0], "commit") && post) {
                _cleanup_free_ char *ct = NULL;
                d->rule = "own-container";
                if (http_query_get(query, "container", &ct) <= 0 || !*ct)
                        return deny(d, 400, "invalid-query", "commit needs a container.");
                if (!c->policy->see_all_containers && (r = strv_push(&d->must_own, ct)) < 0)
                        return r;
                return 0;
        }

        /* Volumes: named volumes are shared; host-binding driver options are not. */
        if (streq(seg[0], "volumes")) {
                if (n == 2 && streq(seg[1], "create") && post)
                        return d->rule = "volume-create", d->needs_body = true, 0;
                if (n == 2 && streq(seg[1], "prune"))
                        return deny(d, 403, "volume-prune", "Pruning volumes would remove other containers' data.");
                return d->rule = "volumes", 0;
        }
        if (streq(seg[0], "networks")) {
                if (n == 3 && post && (streq(seg[2], "connect") || streq(seg[2], "disconnect")))
                        return d->rule = "network-connect", d->needs_body = true, 0;
                return d->rule = "networks", 0;
        }
        if (streq(seg[0], "services") && post && ((n == 2 && streq(seg[1], "create")) || (n == 3 && streq(seg[2], "update"))))
                return d->rule = "service", d->needs_body = true, 0;

        return deny(d, 403, "endpoint", "%s %s is not an allowed Docker API endpoint.", method, path);
}

int docker_decide_body(const DockerCaller *c, const char *method, const char *path, const char *body, size_t len,
                       DockerDecision *d) {
        char seg[4][256];
        size_t n = split_path(path, seg);

        (void) method;
        if (n == 2 && streq(seg[0], "containers") && streq(seg[1], "create"))
                return docker_translate_create(c, body, len, d);
        if (n == 3 && streq(seg[0], "containers") && streq(seg[2], "exec"))
                return decide_exec_create(c, body, len, d);
        if (n == 3 && streq(seg[0], "containers") && streq(seg[2], "update"))
                return decide_update(c, d, body, len);
        if (n == 2 && streq(seg[0], "volumes"))
                return decide_volume_create(d, body, len);
        if (n == 3 && streq(seg[0], "networks"))
                return decide_network_connect(c, d, body, len);
        if (streq(seg[0], "services"))
                return decide_service(d, body, len);
        return deny(d, 403, "endpoint", "No body check for %s.", path);
}

/* ---- inspect responses ---------------------------------------------------- */

int docker_inspect_is_owned(const DockerCaller *c, const char *body, size_t len, bool *ret_owned, char **ret_id) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        _cleanup_free_ char *own = NULL;
        json_t *labels;

        j = json_loadb(body, len, 0, NULL);
        if (!json_is_object(j))
                return -EBADMSG;
        labels = json_object_get(json_object_get(j, "Config"), "Labels");
        if (asprintf(&own, DOCKER_LABEL_OWNER_PREFIX "%s", c->id) < 0)
                return -ENOMEM;
        *ret_owned = c->policy->see_all_containers || (json_is_object(labels) && json_object_get(labels, own));
        if (ret_id) {
                const char *id = json_string_value(json_object_get(j, "Id"));
                *ret_id = id ? strdup(id) : NULL;
                if (id && !*ret_id)
                        return -ENOMEM;
        }
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

int docker_inspect_owners(const char *body, size_t len, char ***ret_owners) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        char **owners = NULL;
        const char *key;
        json_t *labels, *v;
        int r;

        j = json_loadb(body, len, 0, NULL);
        if (!json_is_object(j))
                return -EBADMSG;
        labels = json_object_get(json_object_get(j, "Config"), "Labels");
        if (json_is_object(labels))
                json_object_foreach(labels, key, v) {
                        if (strncmp(key, DOCKER_LABEL_OWNER_PREFIX, strlen(DOCKER_LABEL_OWNER_PREFIX)) != 0)
                                continue;
                        r = strv_push(&owners, key + strlen(DOCKER_LABEL_OWNER_PREFIX));
                        if (r < 0) {
                                strv_free(owners);
                                return r;
                        }
                }
        if (!owners && !(owners = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret_owners = owners;
        return 0;
}
