/* SPDX-License-Identifier: MIT */
#pragma once

/* The identity daemon's manager: owns the loop, the rpc server, the config,
 * the key store, revocations, trust relationships and the federation
 * listener. Every operation the gRPC layer offers is a manager_*() verb. */

#include <stdio.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "identity-http.h"
#include "identity-issue.h"
#include "identity-keys.h"
#include "identity-revoke.h"
#include "identity-trust.h"
#include "identity-validate.h"
#include "rpc.h"

typedef struct IdentityConfig {
        RpcServerOptions rpc;
        char *issuer;                 /* https://..., no trailing slash */
        char *jwks_path;              /* below the issuer: /.well-known/jwks.json */
        char *algorithm;              /* ES256 | RS256 for new keys */
        uint64_t default_duration;    /* usec */
        uint64_t min_duration;
        uint64_t max_duration;
        uint64_t leeway;
        uint64_t jwks_max_age;
        uint64_t rotation_interval;
        uint64_t max_token_size;
        char *internal_audience;      /* what a hostmesh token must be for to be exchanged */
        char **principals;            /* UID:TENANT:SUBJECT */
        char **admin_uids;
        char *http_listen;            /* host:port; empty = only a socket passed by systemd */
        char *tls_certificate;
        char *tls_private_key;
        uint64_t http_timeout;
        uint64_t max_revocations;
} IdentityConfig;

typedef struct LocalPrincipal {
        uid_t uid;
        char *tenant_id;
        char *subject;
} LocalPrincipal;

typedef enum PrincipalKind {
        PRINCIPAL_NONE,
        PRINCIPAL_ADMIN,     /* root, identityd's own uid, admin_uids */
        PRINCIPAL_LOCAL,     /* a uid mapped in principals= */
        PRINCIPAL_BEARER,    /* a bearer token verified by the gateway */
} PrincipalKind;

typedef struct Principal {
        PrincipalKind kind;
        uid_t uid;
        const char *tenant_id;   /* borrowed */
        const char *subject;     /* borrowed */
} Principal;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        IdentityConfig config;

        char *state_dir;
        JwtAlg alg;
        KeyStore *keys;
        Revocations *revocations;
        TrustStore *trust;
        LocalPrincipal *principals;
        size_t n_principals;
        uid_t *admin_uids;
        size_t n_admin_uids;

        IdentityHttp *http;
        sd_event_source *maintenance;

        char *issuer_path;       /* the issuer URL's path ("" for none) */
        char *jwks_uri;
        char *jwks_json;
        char *jwks_etag;
        char *discovery_json;
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);

/* Checks the issuer and the duration bounds of a loaded config; *ret_error names the key. */
int identity_config_check(const IdentityConfig *c, char **ret_error);

uint64_t manager_now(void);
/* requested_usec 0 → default. -EINVAL with *ret_error naming the bound. */
int manager_lifetime(Manager *m, uint64_t requested_usec, uint64_t cap_sec, uint64_t *ret_sec, char **ret_error);
int manager_issue(Manager *m, const TokenRequest *req, TokenIssued *ret);
int manager_validate(Manager *m, const char *token, const char *audience, json_t **ret_claims,
                     TokenRefusal *ret_refusal, char **ret_message);

/* -EPERM with *ret_error when `audience` names internal_audience, which
 * exchanges and bearer callers must never get (a new gateway credential). */
int manager_check_minted_audience(Manager *m, const char *const *audience, char **ret_error);

typedef struct ExchangeResult {
        TokenIssued issued;
        char *subject;
        char *tenant_id;
        const char *relationship_id;   /* NULL for a hostmesh token */
} ExchangeResult;
void exchange_result_done(ExchangeResult *r);
/* -EINVAL (bad request), -EPERM (subject token refused; *ret_error says why). */
int manager_exchange(Manager *m, const char *subject_token, const char *const *audience, uint64_t duration_usec,
                     ExchangeResult *ret, char **ret_error);

int manager_revoke_jti(Manager *m, const char *jti, uint64_t *ret_until);
int manager_revoke_subject(Manager *m, const char *subject, uint64_t *ret_until);
int manager_rotate(Manager *m, const char **ret_next_kid, uint64_t *ret_from);
/* Rebuilds the JWKS and discovery documents (after the key set changed). */
int manager_refresh_documents(Manager *m);

Principal manager_principal_for_uid(Manager *m, uid_t uid);
