/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "fs-util.h"
#include "identity-grpc.h"
#include "identity-manager.h"
#include "log.h"
#include "parse-util.h"
#include "paths.h"

#define IDENTITY_MAINTENANCE_MAX_USEC (3600 * USEC_PER_SEC)

static const ConfigItem config_table[] = {
        DAEMON_RPC_CONFIG_ITEMS(IdentityConfig, rpc),
        CONFIG_ITEM("identity", "issuer", config_type_string, IdentityConfig, issuer,
                    "Issuer URL put in every token (https://..., no trailing slash)"),
        CONFIG_ITEM("identity", "jwks_path", config_type_string, IdentityConfig, jwks_path,
                    "Path of the JWKS below the issuer URL"),
        CONFIG_ITEM("identity", "algorithm", config_type_string, IdentityConfig, algorithm,
                    "Signing algorithm for new keys: ES256 or RS256"),
        CONFIG_ITEM("identity", "default_token_duration", config_type_usec, IdentityConfig, default_duration,
                    "Lifetime of a token when the request names none"),
        CONFIG_ITEM("identity", "min_token_duration", config_type_usec, IdentityConfig, min_duration,
                    "Shortest lifetime a request may ask for"),
        CONFIG_ITEM("identity", "max_token_duration", config_type_usec, IdentityConfig, max_duration,
                    "Longest lifetime a request may ask for"),
        CONFIG_ITEM("identity", "leeway", config_type_usec, IdentityConfig, leeway,
                    "Clock skew tolerated when validating exp/nbf/iat"),
        CONFIG_ITEM("identity", "jwks_max_age", config_type_usec, IdentityConfig, jwks_max_age,
                    "Cache-Control max-age of the JWKS; a new key is published this long before it signs"),
        CONFIG_ITEM("identity", "rotation_interval", config_type_usec, IdentityConfig, rotation_interval,
                    "How long a key signs before its successor takes over (0 = only RotateKeys)"),
        CONFIG_ITEM("identity", "max_token_size", config_type_size, IdentityConfig, max_token_size,
                    "Longest token accepted for validation or exchange"),
        CONFIG_ITEM("identity", "internal_audience", config_type_string, IdentityConfig, internal_audience,
                    "Audience a hostmesh token must carry to be exchanged"),
        CONFIG_ITEM("identity", "principals", config_type_strv, IdentityConfig, principals,
                    "Local callers: UID:TENANT:SUBJECT, one per word"),
        CONFIG_ITEM("identity", "admin_uids", config_type_strv, IdentityConfig, admin_uids,
                    "Uids with admin rights besides root and identityd's own uid"),
        CONFIG_ITEM("identity", "http_listen", config_type_string, IdentityConfig, http_listen,
                    "Address of the federation HTTP listener (host:port; empty = none unless systemd passes one)"),
        CONFIG_ITEM("identity", "tls_certificate", config_type_string, IdentityConfig, tls_certificate,
                    "PEM certificate chain for the federation listener (empty = plain HTTP)"),
        CONFIG_ITEM("identity", "tls_private_key", config_type_string, IdentityConfig, tls_private_key,
                    "PEM private key for the federation listener"),
        CONFIG_ITEM("identity", "http_timeout", config_type_usec, IdentityConfig, http_timeout,
                    "Time a federation client has to send its request and read the answer"),
        CONFIG_ITEM("identity", "max_revocations", config_type_uint64, IdentityConfig, max_revocations,
                    "Most revocation entries kept at once"),
};

static const char *const claims_supported[] = {
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tenant_id", "instance_id", "container_name",
};


uint64_t manager_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec;
}

static uint64_t sec(uint64_t usec) {
        return usec / USEC_PER_SEC;
}

int identity_config_check(const IdentityConfig *c, char **ret_error) {
        const char *host;
        int r = 0;

#define BAD(...) do { r = asprintf(ret_error, __VA_ARGS__); return r < 0 ? -ENOMEM : -EINVAL; } while (0)
        if (isempty(c->issuer) || strncmp(c->issuer, "https://", 8) != 0)
                BAD("[identity] issuer must be an https:// URL (OIDC Discovery 1.0 §3).");
        host = c->issuer + 8;
        if (!*host || *host == '/' || c->issuer[strlen(c->issuer) - 1] == '/' || strpbrk(c->issuer, "?#") ||
            strpbrk(c->issuer, " \t\"\\"))
                BAD("[identity] issuer must have a host, no trailing slash, no query or fragment.");
        if (isempty(c->jwks_path) || c->jwks_path[0] != '/' || strpbrk(c->jwks_path, "?# \t\"\\"))
                BAD("[identity] jwks_path must start with '/' and have no query.");
        if (jwt_alg_from_string(c->algorithm) < 0)
                BAD("[identity] algorithm must be ES256 or RS256.");
        if (c->min_duration < USEC_PER_SEC || c->min_duration > c->max_duration)
                BAD("[identity] min_token_duration must be at least 1s and at most max_token_duration.");
        if (c->default_duration < c->min_duration || c->default_duration > c->max_duration)
                BAD("[identity] default_token_duration must lie between min_token_duration and max_token_duration.");
        if (isempty(c->internal_audience))
                BAD("[identity] internal_audience must not be empty.");
        if (!!c->tls_certificate != !!c->tls_private_key)
                BAD("[identity] tls_certificate and tls_private_key go together.");
        if (c->max_token_size < 256 || c->max_token_size > 1024 * 1024)
                BAD("[identity] max_token_size must lie between 256 and 1M.");
#undef BAD
        return 0;
}

static int parse_uid(const char *s, uid_t *ret) {
        uint64_t v;
        int r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (v >= (uid_t) -1)
                return -ERANGE;
        *ret = (uid_t) v;
        return 0;
}

static int load_principals(Manager *m) {
        for (char **p = m->config.principals; p && *p; p++) {
                _cleanup_free_ char *copy = strdup(*p);
                char *c1, *c2;
                LocalPrincipal *a;
                uid_t uid;

                if (!copy)
                        return -ENOMEM;
                c1 = strchr(copy, ':');
                c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        return log_error_errno(-EINVAL, "principals entry '%s' is not UID:TENANT:SUBJECT.", *p);
                *c1 = *c2 = 0;
                if (parse_uid(copy, &uid) < 0 || !token_name_is_valid(c1 + 1) || !token_name_is_valid(c2 + 1))
                        return log_error_errno(-EINVAL,
                                               "principals entry '%s': UID must be a number, TENANT and SUBJECT names of [A-Za-z0-9._-].",
                                               *p);
                a = realloc(m->principals, (m->n_principals + 1) * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                m->principals = a;
                a[m->n_principals] = (LocalPrincipal){ .uid = uid, .tenant_id = strdup(c1 + 1), .subject = NULL };
                if (!a[m->n_principals].tenant_id ||
                    asprintf(&a[m->n_principals].subject, "%s/%s", c1 + 1, c2 + 1) < 0) {
                        free(a[m->n_principals].tenant_id);
                        return -ENOMEM;
                }
                m->n_principals++;
        }
        for (char **p = m->config.admin_uids; p && *p; p++) {
                uid_t uid, *a;
                if (parse_uid(*p, &uid) < 0)
                        return log_error_errno(-EINVAL, "admin_uids entry '%s' is not a uid.", *p);
                a = realloc(m->admin_uids, (m->n_admin_uids + 1) * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                m->admin_uids = a;
                a[m->n_admin_uids++] = uid;
        }
        return 0;
}

Principal manager_principal_for_uid(Manager *m, uid_t uid) {
        if (uid == 0 || uid == getuid())
                return (Principal){ .kind = PRINCIPAL_ADMIN, .uid = uid, .subject = "admin" };
        for (size_t i = 0; i < m->n_admin_uids; i++)
                if (m->admin_uids[i] == uid)
                        return (Principal){ .kind = PRINCIPAL_ADMIN, .uid = uid, .subject = "admin" };
        for (size_t i = 0; i < m->n_principals; i++)
                if (m->principals[i].uid == uid)
                        return (Principal){ .kind = PRINCIPAL_LOCAL, .uid = uid, .tenant_id = m->principals[i].tenant_id,
                                            .subject = m->principals[i].subject };
        return (Principal){ .kind = PRINCIPAL_NONE, .uid = uid };
}

static int set_default_string(char **field, const char *value) {
        if (*field)
                return 0;
        *field = strdup(value);
        return *field ? 0 : -ENOMEM;
}

int manager_new(const DaemonArgs *args, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_free_ char *err = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->config.rpc = (RpcServerOptions){ .name = "identity", .idle_exit_usec = 60 * USEC_PER_SEC };
        m->config.default_duration = 3600 * USEC_PER_SEC;
        m->config.min_duration = 60 * USEC_PER_SEC;
        m->config.max_duration = 24 * 3600 * USEC_PER_SEC;
        m->config.leeway = 60 * USEC_PER_SEC;
        m->config.jwks_max_age = 300 * USEC_PER_SEC;
        m->config.rotation_interval = 7 * 24 * 3600 * USEC_PER_SEC;
        m->config.max_token_size = JWT_MAX_SIZE_DEFAULT;
        m->config.http_timeout = 10 * USEC_PER_SEC;
        m->config.max_revocations = REVOCATIONS_MAX_DEFAULT;
        if (set_default_string(&m->config.issuer, "https://identity.hostmesh.internal") < 0 ||
            set_default_string(&m->config.jwks_path, "/.well-known/jwks.json") < 0 ||
            set_default_string(&m->config.algorithm, "ES256") < 0 ||
            set_default_string(&m->config.internal_audience, "hostmesh") < 0)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = daemon_load_config(args, config_table, ELEMENTSOF(config_table), &m->config);
        if (r < 0)
                return r;
        r = identity_config_check(&m->config, &err);
        if (r < 0)
                return log_error_errno(r, "%s: %s", args->config_path, err ?: "invalid configuration");
        m->alg = jwt_alg_from_string(m->config.algorithm);
        r = load_principals(m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        identity_http_free(m->http);
        sd_event_source_disable_unref(m->maintenance);
        rpc_server_free(m->server);
        rpc_loop_free(m->rpc_loop);
        sd_event_unref(m->event);
        keystore_free(m->keys);
        revocations_free(m->revocations);
        truststore_free(m->trust);
        for (size_t i = 0; i < m->n_principals; i++) {
                free(m->principals[i].tenant_id);
                free(m->principals[i].subject);
        }
        free(m->principals);
        free(m->admin_uids);
        free(m->state_dir);
        free(m->issuer_path);
        free(m->jwks_uri);
        free(m->jwks_json);
        free(m->jwks_etag);
        free(m->discovery_json);
        config_done(config_table, ELEMENTSOF(config_table), &m->config);
        free(m);
        return NULL;
}

void manager_print_config(Manager *m, FILE *f) {
        config_print(config_table, ELEMENTSOF(config_table), &m->config, f);
}

/* ---- documents ------------------------------------------------------------ */

int manager_refresh_documents(Manager *m) {
        _cleanup_(json_decrefp) json_t *jwks = NULL, *disc = NULL, *algs = NULL, *claims = NULL;
        _cleanup_free_ char *jwks_text = NULL, *disc_text = NULL, *etag = NULL, *disc_path = NULL, *jwks_path = NULL;
        const JwtKeySet *ks = keystore_published(m->keys);
        uint8_t digest[32];
        unsigned dlen;
        bool have[_JWT_ALG_MAX] = {};
        int r;

        r = jwt_keyset_to_json(ks, &jwks);
        if (r < 0)
                return r;
        jwks_text = json_dumps(jwks, JSON_COMPACT);
        if (!jwks_text)
                return -ENOMEM;
        if (!EVP_Digest(jwks_text, strlen(jwks_text), digest, &dlen, EVP_sha256(), NULL))
                return -EIO;
        etag = malloc(35);
        if (!etag)
                return -ENOMEM;
        etag[0] = '"';
        for (size_t i = 0; i < 16; i++)
                snprintf(etag + 1 + 2 * i, 3, "%02x", digest[i]);
        memcpy(etag + 33, "\"", 2);

        algs = json_array();
        claims = json_array();
        if (!algs || !claims)
                return -ENOMEM;
        have[m->alg] = true;
        for (size_t i = 0; i < jwt_keyset_size(ks); i++)
                have[jwt_key_alg(jwt_keyset_get(ks, i))] = true;
        for (JwtAlg a = 0; a < _JWT_ALG_MAX; a++)
                if (have[a] && json_array_append_new(algs, json_string(jwt_alg_to_string(a))) < 0)
                        return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(claims_supported); i++)
                if (json_array_append_new(claims, json_string(claims_supported[i])) < 0)
                        return -ENOMEM;
        /* OpenID Connect Discovery 1.0 §3: the REQUIRED members plus the
         * ones relying parties such as AWS and GCP federation read. */
        disc = json_pack("{s:s, s:s, s:[s], s:[s], s:O, s:O, s:[s]}", "issuer", m->config.issuer, "jwks_uri",
                         m->jwks_uri, "response_types_supported", "id_token", "subject_types_supported", "public",
                         "id_token_signing_alg_values_supported", algs, "claims_supported", claims,
                         "scopes_supported", "openid");
        if (!disc)
                return -ENOMEM;
        disc_text = json_dumps(disc, JSON_INDENT(2));
        if (!disc_text)
                return -ENOMEM;

        if (m->http) {
                if (asprintf(&disc_path, "%s/.well-known/openid-configuration", m->issuer_path) < 0 ||
                    asprintf(&jwks_path, "%s%s", m->issuer_path, m->config.jwks_path) < 0)
                        return -ENOMEM;
                r = identity_http_set_document(m->http, disc_path, "application/json", disc_text,
                                               (unsigned) sec(m->config.jwks_max_age));
                if (r < 0)
                        return r;
                r = identity_http_set_document(m->http, jwks_path, "application/jwk-set+json", jwks_text,
                                               (unsigned) sec(m->config.jwks_max_age));
                if (r < 0)
                        return r;
        }
        free(m->jwks_json);
        m->jwks_json = TAKE_PTR(jwks_text);
        free(m->jwks_etag);
        m->jwks_etag = TAKE_PTR(etag);
        free(m->discovery_json);
        m->discovery_json = TAKE_PTR(disc_text);
        return 0;
}

/* ---- maintenance: rotation, pruning ---------------------------------------- */

static int arm_maintenance(Manager *m);

static int on_maintenance(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = manager_now();
        int r;
        (void) s;
        (void) usec;

        r = keystore_maintain(m->keys, now);
        if (r < 0)
                log_error_errno(r, "Failed to rotate or prune signing keys, retrying later: %m");
        else if (r > 0) {
                log_info("Signing keys changed; %zu published.", jwt_keyset_size(keystore_published(m->keys)));
                r = manager_refresh_documents(m);
                if (r < 0)
                        log_error_errno(r, "Failed to rebuild the JWKS, ignoring: %m");
        }
        r = revocations_prune(m->revocations, now);
        if (r < 0)
                log_warning_errno(r, "Failed to prune revocations, ignoring: %m");
        (void) arm_maintenance(m);
        return 0;
}

static int arm_maintenance(Manager *m) {
        uint64_t now = manager_now(), next, when;
        int r;

        next = keystore_next_change(m->keys, now);
        when = next == UINT64_MAX || next <= now ? 0 : (next - now) * USEC_PER_SEC;
        if (next <= now)
                when = USEC_PER_SEC;  /* due already: soon, but never a busy loop */
        when = MIN(when ?: IDENTITY_MAINTENANCE_MAX_USEC, IDENTITY_MAINTENANCE_MAX_USEC);
        if (!m->maintenance) {
                r = sd_event_add_time_relative(m->event, &m->maintenance, CLOCK_REALTIME, when, USEC_PER_SEC,
                                               on_maintenance, m);
                if (r < 0)
                        return r;
                /* Pending timers must not keep an idle daemon alive; socket
                 * activation starts it again and open() catches up. */
                return 0;
        }
        r = sd_event_source_set_time_relative(m->maintenance, when);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->maintenance, SD_EVENT_ONESHOT);
}

/* ---- federation listener --------------------------------------------------- */

static int setup_http(Manager *m) {
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_storage sa;
        unsigned salen;
        int r, one = 1;
        const char *p;

        /* The issuer path: everything after the host in https://host[:port]/path. */
        p = strchr(m->config.issuer + 8, '/');
        m->issuer_path = strdup(p ?: "");
        if (!m->issuer_path || asprintf(&m->jwks_uri, "%s%s", m->config.issuer, m->config.jwks_path) < 0)
                return -ENOMEM;

        fd = rpc_server_take_fd(m->server, "http");
        if (fd < 0 && !isempty(m->config.http_listen)) {
                r = parse_sockaddr(m->config.http_listen, 443, &sa, &salen);
                if (r < 0)
                        return log_error_errno(r, "[identity] http_listen = %s is not host:port: %m",
                                               m->config.http_listen);
                fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return log_error_errno(-errno, "Failed to create the federation socket: %m");
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, (struct sockaddr *) &sa, salen) < 0)
                        return log_error_errno(-errno, "Failed to bind the federation listener to %s: %m",
                                               m->config.http_listen);
                if (listen(fd, 128) < 0)
                        return log_error_errno(-errno, "Failed to listen on %s: %m", m->config.http_listen);
        }
        if (fd < 0)
                return 0;
        r = identity_http_new(m->event, TAKE_FD(fd), m->config.tls_certificate, m->config.tls_private_key,
                              m->config.http_timeout, &m->http);
        if (r < 0)
                return log_error_errno(r, "Failed to start the federation listener%s: %m",
                                       m->config.tls_certificate ? " (check tls_certificate and tls_private_key)" : "");
        log_info("Serving OIDC discovery for %s%s.", m->config.issuer,
                 m->config.tls_certificate ? " over TLS" : "");
        return 0;
}

/* ---- start ----------------------------------------------------------------- */

/* systemd names the federation socket "http" (FileDescriptorName=). The rpc
 * runtime's idle exit sees gRPC only; with HTTP clients of our own it must
 * not stop the process under them. */
static bool passed_http_socket(void) {
        const char *names = getenv("LISTEN_FDNAMES");
        size_t n = strlen("http");

        for (const char *p = names; p && *p; p += strcspn(p, ":"), p += *p == ':')
                if (strncmp(p, "http", n) == 0 && (p[n] == ':' || p[n] == 0))
                        return true;
        return false;
}

static int open_state(Manager *m) {
        _cleanup_free_ char *kp = NULL, *rp = NULL, *tp = NULL;
        uint64_t now = manager_now();
        int r;

        m->state_dir = hostmesh_state_dir("identity");
        if (!m->state_dir)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = mkdir_p(m->state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create state directory %s: %m", m->state_dir);
        kp = path_join(m->state_dir, "keys.json");
        rp = path_join(m->state_dir, "revocations.json");
        tp = path_join(m->state_dir, "trust.json");
        if (!kp || !rp || !tp)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = keystore_open(&(KeyStoreOptions){ .path = kp, .alg = m->alg, .publish_ahead = sec(m->config.jwks_max_age),
                                              .keep_after_retire = sec(m->config.max_duration) + sec(m->config.leeway),
                                              .rotation_interval = sec(m->config.rotation_interval) },
                          now, &m->keys);
        if (r < 0)
                return log_error_errno(r, "Failed to open the key store %s (refusing to start with new keys): %m", kp);
        r = keystore_maintain(m->keys, now);
        if (r < 0)
                return log_error_errno(r, "Failed to rotate signing keys: %m");
        r = revocations_load(rp, m->config.max_revocations, &m->revocations);
        if (r < 0)
                return log_error_errno(r, "Failed to load revocations from %s (refusing to start without them): %m", rp);
        (void) revocations_prune(m->revocations, now);
        r = truststore_load(tp, &m->trust);
        if (r < 0)
                return log_error_errno(r, "Failed to load trust relationships from %s: %m", tp);
        return 0;
}

int manager_start(Manager *m) {
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        r = open_state(m);
        if (r < 0)
                return r;
        r = rpc_loop_new(m->event, &m->rpc_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to start the rpc loop: %m");
        /* The federation listener we bind ourselves lives in this process:
         * exiting on gRPC idleness would take it down with nobody to start
         * it again. */
        if (!isempty(m->config.http_listen) || passed_http_socket())
                m->config.rpc.idle_exit_usec = 0;
        r = rpc_server_new(m->rpc_loop, &m->config.rpc, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to create the rpc server: %m");
        r = identity_grpc_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register methods: %m");
        r = rpc_server_start(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to start serving: %m");
        r = setup_http(m);
        if (r < 0)
                return r;
        r = manager_refresh_documents(m);
        if (r < 0)
                return log_error_errno(r, "Failed to build the JWKS and discovery documents: %m");
        r = arm_maintenance(m);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the key rotation timer: %m");
        return 0;
}

int manager_run(Manager *m) {
        return sd_event_loop(m->event);
}

/* ---- verbs ----------------------------------------------------------------- */

int manager_lifetime(Manager *m, uint64_t requested_usec, uint64_t cap_sec, uint64_t *ret_sec, char **ret_error) {
        uint64_t lifetime = requested_usec ?: m->config.default_duration;
        int r;

        if (lifetime < m->config.min_duration) {
                r = asprintf(ret_error, "duration %" PRIu64 "s is below min_token_duration (%" PRIu64 "s).",
                             sec(lifetime), sec(m->config.min_duration));
                return r < 0 ? -ENOMEM : -EINVAL;
        }
        if (lifetime > m->config.max_duration) {
                r = asprintf(ret_error, "duration %" PRIu64 "s is above max_token_duration (%" PRIu64 "s).",
                             sec(lifetime), sec(m->config.max_duration));
                return r < 0 ? -ENOMEM : -EINVAL;
        }
        if (cap_sec > 0 && sec(lifetime) > cap_sec) {
                r = asprintf(ret_error, "duration %" PRIu64 "s is above the %" PRIu64 "s this exchange allows.",
                             sec(lifetime), cap_sec);
                return r < 0 ? -ENOMEM : -EINVAL;
        }
        *ret_sec = sec(lifetime);
        return 0;
}

int manager_issue(Manager *m, const TokenRequest *req, TokenIssued *ret) {
        uint64_t now = manager_now();
        const JwtKey *k = keystore_signing_key(m->keys, now);

        if (!k)
                return -EBUSY;  /* no key active: the clock went back before the first key */
        return token_issue(k, m->config.issuer, req, now, ret);
}

int manager_validate(Manager *m, const char *token, const char *audience, json_t **ret_claims,
                     TokenRefusal *ret_refusal, char **ret_message) {
        return token_validate(token, keystore_published(m->keys), m->revocations,
                              &(TokenPolicy){ .issuer = m->config.issuer, .audience = audience, .now = manager_now(),
                                              .leeway = sec(m->config.leeway), .max_size = m->config.max_token_size },
                              ret_claims, ret_refusal, ret_message);
}

int manager_check_minted_audience(Manager *m, const char *const *audience, char **ret_error) {
        /* A token for internal_audience is a credential for hostmesh itself
         * (the gateway's bearer_audience). Minting one from another token
         * would turn any instance or external token into a fresh gateway
         * credential with its own jti, beyond the reach of a revocation of
         * the token it came from. */
        for (const char *const *a = audience; a && *a; a++)
                if (streq(*a, m->config.internal_audience))
                        return asprintf(ret_error, "audience %s is hostmesh's own (internal_audience, what the gateway "
                                        "accepts): no token exchange or bearer caller may mint it; ask for the "
                                        "audience of the service the token is for.", *a) < 0 ? -ENOMEM : -EPERM;
        return 0;
}

void exchange_result_done(ExchangeResult *r) {
        token_issued_done(&r->issued);
        free(r->subject);
        free(r->tenant_id);
        *r = (ExchangeResult){};
}

static const char *claim_string(json_t *claims, const char *name) {
        return json_string_value(json_object_get(claims, name));
}

int manager_exchange(Manager *m, const char *subject_token, const char *const *audience, uint64_t duration_usec,
                     ExchangeResult *ret, char **ret_error) {
        _cleanup_(jwt_parsed_done) JwtParsed p = {};
        _cleanup_(json_decrefp) json_t *claims = NULL, *extra = NULL;
        _cleanup_free_ char *msg = NULL;
        ExchangeResult res = {};
        uint64_t now = manager_now(), lifetime, exp = 0;
        TokenRefusal why;
        const char *iss;
        int r;

        if (!audience || !audience[0])
                return asprintf(ret_error, "audience is required: name who the new token is for.") < 0 ? -ENOMEM : -EINVAL;
        r = manager_check_minted_audience(m, audience, ret_error);
        if (r < 0)
                return r;
        r = jwt_parse(subject_token, m->config.max_token_size, &p);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return asprintf(ret_error, "%s: the subject token is %s.", r == -EMSGSIZE ? "too_large" : "malformed",
                                r == -EMSGSIZE ? "too large" : "not a compact JWS") < 0 ? -ENOMEM : -EPERM;
        iss = claim_string(p.payload, "iss");

        if (streq_ptr(iss, m->config.issuer)) {
                /* Our own token: it must be valid and meant for hostmesh
                 * itself; the new one never outlives it (RFC 8693 §2.1 leaves
                 * the policy to us: no extension of a credential's life). */
                r = manager_validate(m, subject_token, m->config.internal_audience, &claims, &why, &msg);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return asprintf(ret_error, "%s: %s", token_refusal_to_string(why), msg) < 0 ? -ENOMEM : -EPERM;
                (void) token_claim_time(claims, "exp", &exp);
                /* Unasked, the new token lives as long as the default allows
                 * and the subject token still does. */
                if (duration_usec == 0)
                        duration_usec = MIN(m->config.default_duration, (exp > now ? exp - now : 1) * USEC_PER_SEC);
                r = manager_lifetime(m, duration_usec, exp > now ? exp - now : 1, &lifetime, ret_error);
                if (r < 0)
                        return r;
                res.subject = strdup(claim_string(claims, "sub") ?: "");
                res.tenant_id = claim_string(claims, "tenant_id") ? strdup(claim_string(claims, "tenant_id")) : NULL;
                if (!res.subject)
                        return -ENOMEM;
                r = manager_issue(m,
                                  &(TokenRequest){ .subject = res.subject, .tenant_id = res.tenant_id,
                                                   .instance_id = claim_string(claims, "instance_id"),
                                                   .container_name = claim_string(claims, "container_name"),
                                                   .audience = audience, .lifetime = lifetime },
                                  &res.issued);
        } else {
                const TrustRelationship *t = NULL;

                r = truststore_match(m->trust, subject_token, now, sec(m->config.leeway), m->config.max_token_size, &t,
                                     &claims, ret_error);
                if (r < 0)
                        return r;
                r = manager_lifetime(m, duration_usec ?: MIN(t->max_duration * USEC_PER_SEC, m->config.default_duration),
                                     t->max_duration, &lifetime, ret_error);
                if (r < 0)
                        return r;
                /* The external subject stays visible but namespaced, so it
                 * can never collide with an instance subject of the tenant. */
                if (asprintf(&res.subject, "%s/ext:%s:%s", t->tenant_id, t->id, claim_string(claims, "sub")) < 0)
                        return -ENOMEM;
                res.tenant_id = strdup(t->tenant_id);
                res.relationship_id = t->id;
                extra = json_pack("{s:s, s:s, s:s}", "ext_iss", t->issuer, "ext_sub", claim_string(claims, "sub"),
                                  "trust_relationship", t->id);
                if (!res.tenant_id || !extra)
                        return -ENOMEM;
                r = manager_issue(m,
                                  &(TokenRequest){ .subject = res.subject, .tenant_id = res.tenant_id,
                                                   .audience = audience, .lifetime = lifetime, .extra = extra },
                                  &res.issued);
        }
        if (r < 0) {
                exchange_result_done(&res);
                if (r == -EINVAL)
                        return asprintf(ret_error, "An audience is empty or too long, or more than %u were given.",
                                        TOKEN_AUDIENCES_MAX) < 0 ? -ENOMEM : -EINVAL;
                return r;
        }
        *ret = res;
        return 0;
}

static uint64_t revocation_horizon(Manager *m) {
        return manager_now() + sec(m->config.max_duration) + sec(m->config.leeway);
}

int manager_revoke_jti(Manager *m, const char *jti, uint64_t *ret_until) {
        uint64_t until = revocation_horizon(m);
        int r = revocations_add_jti(m->revocations, jti, until);
        if (r >= 0 && ret_until)
                *ret_until = until;
        return r;
}

int manager_revoke_subject(Manager *m, const char *subject, uint64_t *ret_until) {
        uint64_t until = revocation_horizon(m);
        int r = revocations_add_subject(m->revocations, subject, manager_now(), until);
        if (r >= 0 && ret_until)
                *ret_until = until;
        return r;
}

int manager_rotate(Manager *m, const char **ret_next_kid, uint64_t *ret_from) {
        int r;

        r = keystore_rotate(m->keys, manager_now(), ret_next_kid, ret_from);
        if (r < 0)
                return r;
        r = manager_refresh_documents(m);
        if (r < 0)
                return r;
        return arm_maintenance(m);
}
