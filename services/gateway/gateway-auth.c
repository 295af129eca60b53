/* SPDX-License-Identifier: MIT */
#include <grp.h>
#include <pwd.h>

#include "gateway-auth.h"
#include "gateway-manager.h"
#include "log.h"
#include "parse-util.h"

static int append_id(unsigned **array, size_t *n, unsigned id) {
        unsigned *a = realloc(*array, (*n + 1) * sizeof(unsigned));
        if (!a)
                return -ENOMEM;
        a[(*n)++] = id;
        *array = a;
        return 0;
}

int gateway_auth_resolve(Manager *m) {
        bool groups_configured = m->config.allow_groups != NULL;
        int r;

        for (char **p = m->config.allow_users; p && *p; p++) {
                uint32_t uid;
                if (safe_atou32(*p, &uid) < 0) {
                        struct passwd *pw = getpwnam(*p);
                        if (!pw)
                                return log_error_errno(-ENOENT, "Unknown user '%s' in allow_users.", *p);
                        uid = pw->pw_uid;
                }
                r = append_id((unsigned **) &m->allowed_uids, &m->n_allowed_uids, uid);
                if (r < 0)
                        return r;
        }
        for (char **p = m->config.allow_groups; p && *p; p++) {
                uint32_t gid;
                if (safe_atou32(*p, &gid) < 0) {
                        struct group *gr = getgrnam(*p);
                        if (!gr)
                                return log_error_errno(-ENOENT, "Unknown group '%s' in allow_groups.", *p);
                        gid = gr->gr_gid;
                }
                r = append_id((unsigned **) &m->allowed_gids, &m->n_allowed_gids, gid);
                if (r < 0)
                        return r;
        }
        if (!groups_configured) {
                struct group *gr = getgrnam("hostmesh");
                if (gr) {
                        r = append_id((unsigned **) &m->allowed_gids, &m->n_allowed_gids, gr->gr_gid);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static bool uid_in_group(uid_t uid, gid_t primary, gid_t gid) {
        struct passwd *pw;
        gid_t groups[256];
        int n = ELEMENTSOF(groups);

        if (primary == gid)
                return true;
        pw = getpwuid(uid);
        if (!pw || getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                return false;
        for (int i = 0; i < n; i++)
                if (groups[i] == gid)
                        return true;
        return false;
}

int gateway_auth_check(Manager *m, const RpcPeer *peer) {
        if (!peer->known)
                return -EPERM;
        /* Root, and the gateway's own user (the dev launcher runs everything as one user). */
        if (peer->uid == 0 || peer->uid == getuid())
                return 0;
        for (size_t i = 0; i < m->n_allowed_uids; i++)
                if (m->allowed_uids[i] == peer->uid)
                        return 0;
        for (size_t i = 0; i < m->n_allowed_gids; i++)
                if (uid_in_group(peer->uid, peer->gid, m->allowed_gids[i]))
                        return 0;
        return -EPERM;
}

/* ---- bearer-token callers ------------------------------------------------ */

/* The public API: the Namespace-compatible compute services (vmmd checks the
 * tenant of every instance), the token call a workload is entitled to
 * (identityd refuses to mint a gateway credential with it) and health.
 * Everything under hostmesh.<part>.v1 administers the host and is for local
 * callers unless bearer_allow says otherwise. An entry ending in '.' or '/'
 * is a prefix of "pkg.Service/Method"; any other entry names one method. */
static const char *const public_api[] = {
        "namespace.cloud.compute.v1beta.",
        "namespace.cloud.iam.v1beta.TokenService/IssueIdToken",
        "grpc.health.v1.Health/",
};

const char gateway_auth_public_api[] =
        "namespace.cloud.compute.v1beta.*, namespace.cloud.iam.v1beta.TokenService/IssueIdToken, grpc.health.v1.Health";

static const char *skip_slash(const char *s) {
        return s[0] == '/' ? s + 1 : s;
}

static bool method_matches(const char *method, const char *entry) {
        size_t n;

        entry = skip_slash(entry);
        n = strlen(entry);
        if (n > 0 && (entry[n - 1] == '.' || entry[n - 1] == '/'))
                return strncmp(method, entry, n) == 0;
        return streq(method, entry);
}

int gateway_auth_check_bearer_allow(Manager *m) {
        for (char **p = m->config.bearer_allow; p && *p; p++) {
                const char *e = skip_slash(*p);
                bool ok = *e != 0;

                for (const char *c = e; *c && ok; c++)
                        ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                             *c == '.' || *c == '_' || *c == '/';
                if (!ok)
                        return log_error_errno(-EINVAL, "Invalid [gateway] bearer_allow entry '%s': expected "
                                               "pkg.Service/Method, or a prefix ending in '.' or '/' "
                                               "(hostmesh.dns.v1.Dns/Lookup, hostmesh.dns.v1.).", *p);
                /* The gateway's own methods stay local whatever the list says:
                 * naming them is a mistake worth hearing about. */
                if (strncmp(e, "hostmesh.gateway.", 17) == 0)
                        return log_error_errno(-EINVAL, "Invalid [gateway] bearer_allow entry '%s': the gateway's "
                                               "own methods are only served on its unix socket.", *p);
        }
        return 0;
}

int gateway_auth_bearer_method(Manager *m, const char *method) {
        method = skip_slash(method);
        for (size_t i = 0; i < ELEMENTSOF(public_api); i++)
                if (method_matches(method, public_api[i]))
                        return 0;
        for (char **p = m->config.bearer_allow; p && *p; p++)
                if (method_matches(method, *p))
                        return 0;
        return -EPERM;
}
