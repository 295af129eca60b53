/* SPDX-License-Identifier: MIT */
/* The image's User (see init-user.h). Static, libc only: it runs inside
 * containers whose images may have no libc at all. */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent-protocol.h"
#include "init-user.h"

#define ACCOUNT_FILE_MAX (1024 * 1024)

/* A decimal id in [0, INT32_MAX] (what runc accepts), the whole of s[0..n). */
static bool parse_id(const char *s, size_t n, unsigned long *ret) {
        unsigned long v = 0;

        if (n == 0 || n > 10)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned long) (s[i] - '0');
        }
        if (v > INT32_MAX)
                return false;
        *ret = v;
        return true;
}

/* Field k (0-based) of a ':'-separated line [line, end): its start and length. */
static bool field(const char *line, const char *end, int k, const char **ret, size_t *ret_len) {
        const char *p = line;

        for (int i = 0; i < k; i++) {
                p = memchr(p, ':', (size_t) (end - p));
                if (!p)
                        return false;
                p++;
        }
        const char *q = memchr(p, ':', (size_t) (end - p));
        *ret = p;
        *ret_len = (size_t) ((q ? q : end) - p);
        return true;
}

/* Walks the lines of an /etc/passwd or /etc/group text; calls match on
 * each well-formed one (at least min_fields fields) until it returns true. */
static bool each_line(const char *text, int min_fields, bool (*match)(const char *, const char *, void *),
                      void *userdata) {
        for (const char *line = text; line && *line;) {
                const char *end = strchr(line, '\n'), *f;
                size_t n;

                if (!end)
                        end = line + strlen(line);
                if (*line != '#' && field(line, end, min_fields - 1, &f, &n) && match(line, end, userdata))
                        return true;
                line = *end ? end + 1 : NULL;
        }
        return false;
}

typedef struct Lookup {
        const char *name;           /* the name or number asked for */
        size_t name_len;
        unsigned long id;
        bool numeric;
        unsigned long found_id, found_gid;
        const char *found_name;
        size_t found_name_len;
        const char *found_home;
        size_t found_home_len;
} Lookup;

/* passwd: name:password:uid:gid:gecos:home:shell */
static bool passwd_match(const char *line, const char *end, void *userdata) {
        Lookup *l = userdata;
        const char *name, *uid, *gid;
        size_t nn, nu, ng;
        unsigned long u, g;

        if (!field(line, end, 0, &name, &nn) || !field(line, end, 2, &uid, &nu) || !field(line, end, 3, &gid, &ng) ||
            !parse_id(uid, nu, &u) || !parse_id(gid, ng, &g))
                return false;
        if (l->numeric ? u != l->id : !(nn == l->name_len && memcmp(name, l->name, nn) == 0))
                return false;
        l->found_id = u;
        l->found_gid = g;
        l->found_name = name;
        l->found_name_len = nn;
        if (!field(line, end, 5, &l->found_home, &l->found_home_len))
                l->found_home_len = 0;
        return true;
}

/* group: name:password:gid:member,member */
static bool group_match(const char *line, const char *end, void *userdata) {
        Lookup *l = userdata;
        const char *name, *gid;
        size_t nn, ng;
        unsigned long g;

        if (!field(line, end, 0, &name, &nn) || !field(line, end, 2, &gid, &ng) || !parse_id(gid, ng, &g))
                return false;
        if (l->numeric ? g != l->id : !(nn == l->name_len && memcmp(name, l->name, nn) == 0))
                return false;
        l->found_id = g;
        return true;
}

typedef struct Members {
        const char *user;
        size_t user_len;
        UserIds *ids;
} Members;

static bool group_lists_user(const char *line, const char *end, void *userdata) {
        Members *m = userdata;
        const char *list, *gid;
        size_t nl, ng;
        unsigned long g;

        if (!field(line, end, 2, &gid, &ng) || !parse_id(gid, ng, &g) || !field(line, end, 3, &list, &nl))
                return false;
        for (const char *p = list; p < list + nl;) {
                const char *c = memchr(p, ',', (size_t) (list + nl - p));
                size_t n = (size_t) ((c ? c : list + nl) - p);
                if (n == m->user_len && memcmp(p, m->user, n) == 0 && m->ids->n_groups < USER_GROUPS_MAX) {
                        m->ids->groups[m->ids->n_groups++] = (gid_t) g;
                        break;
                }
                p += n + 1;
        }
        return false; /* every line */
}

static void lookup_init(Lookup *l, const char *s, size_t n) {
        *l = (Lookup){ .name = s, .name_len = n };
        l->numeric = parse_id(s, n, &l->id);
}

int user_resolve(const char *spec, const char *passwd, const char *group, UserIds *ret, const char **ret_error) {
        const char *colon;
        size_t user_len;
        Lookup u, g;
        UserIds ids = {};

        if (!spec || !agent_user_valid(spec)) {
                *ret_error = "not a user, uid, user:group or uid:gid";
                return -EINVAL;
        }
        colon = strchr(spec, ':');
        user_len = colon ? (size_t) (colon - spec) : strlen(spec);
        lookup_init(&u, spec, user_len);
        if (each_line(passwd, 4, passwd_match, &u)) {
                ids.uid = (uid_t) u.found_id;
                ids.gid = (gid_t) u.found_gid;
                /* An absolute home that fits; anything else is "/", as for
                 * a user not in passwd. */
                if (u.found_home_len > 0 && u.found_home[0] == '/' && u.found_home_len < sizeof(ids.home))
                        memcpy(ids.home, u.found_home, u.found_home_len);
        } else if (u.numeric)
                ids.uid = (uid_t) u.id;     /* gid 0, as runc does */
        else {
                *ret_error = "no such user in the image's /etc/passwd";
                return -ENOENT;
        }
        if (colon) {
                lookup_init(&g, colon + 1, strlen(colon + 1));
                if (each_line(group, 3, group_match, &g))
                        ids.gid = (gid_t) g.found_id;
                else if (g.numeric)
                        ids.gid = (gid_t) g.id;
                else {
                        *ret_error = "no such group in the image's /etc/group";
                        return -ENOENT;
                }
        } else if (u.found_name) {
                /* No group given: the groups that list the user too. */
                Members m = { .user = u.found_name, .user_len = u.found_name_len, .ids = &ids };
                (void) each_line(group, 4, group_lists_user, &m);
        }
        if (!ids.home[0])
                strcpy(ids.home, "/");
        *ret = ids;
        return 0;
}

static char *read_account_file(const char *path) {
        char *buf = calloc(1, ACCOUNT_FILE_MAX + 1);
        size_t got = 0;
        int fd;

        if (!buf)
                return NULL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return buf; /* none: "" */
        while (got < ACCOUNT_FILE_MAX) {
                ssize_t n = read(fd, buf + got, ACCOUNT_FILE_MAX - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t) n;
        }
        close(fd);
        buf[got] = '\0';
        return buf;
}

int user_helper_main(int argc, char **argv) {
        const char *spec = NULL, *error = NULL;
        char *passwd, *group;
        bool set_home = false;
        UserIds ids;
        int k = 2, r;

        if (argc >= 4 && strncmp(argv[1], "--user=", 7) == 0) {
                if (strcmp(argv[k], "--home") == 0) {
                        set_home = true;
                        k++;
                }
                if (k + 1 < argc && strcmp(argv[k], "--") == 0)
                        spec = argv[1] + 7;
        }
        if (!spec) {
                fprintf(stderr, "hostmesh: usage: %s --user=SPEC [--home] -- COMMAND...\n", USER_HELPER_PATH);
                return 126;
        }
        passwd = read_account_file("/etc/passwd");
        group = read_account_file("/etc/group");
        if (!passwd || !group) {
                fprintf(stderr, "hostmesh: out of memory\n");
                return 126;
        }
        r = user_resolve(spec, passwd, group, &ids, &error);
        free(passwd);
        free(group);
        if (r < 0) {
                fprintf(stderr, "hostmesh: cannot run as the image's user '%s': %s\n", spec, error);
                return 126;
        }
        /* Groups first: after setuid() the right to change them is gone. */
        if (setgroups(ids.n_groups, ids.groups) < 0 || setgid(ids.gid) < 0 || setuid(ids.uid) < 0) {
                fprintf(stderr, "hostmesh: cannot switch to the image's user '%s' (uid %u, gid %u): %s\n", spec,
                        (unsigned) ids.uid, (unsigned) ids.gid, strerror(errno));
                return 126;
        }
        if (set_home && setenv("HOME", ids.home, 1) < 0) {
                fprintf(stderr, "hostmesh: cannot set HOME: %s\n", strerror(errno));
                return 126;
        }
        execvp(argv[k + 1], argv + k + 1);
        fprintf(stderr, "hostmesh: cannot run %s: %s\n", argv[k + 1], strerror(errno));
        return errno == ENOENT ? 127 : 126;
}
