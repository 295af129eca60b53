/* SPDX-License-Identifier: MIT */
#include <inttypes.h>

#include "hostmesh/identity/v1/identity.pb-c.h"
#include "identity-grpc.h"
#include "identity-manager.h"
#include "log.h"
#include "namespace/cloud/iam/v1beta/token.pb-c.h"
#include "parse-util.h"

#define JWT_TYPE "urn:ietf:params:oauth:token-type:jwt"
#define ID_TOKEN_TYPE "urn:ietf:params:oauth:token-type:id_token"
#define ACCESS_TOKEN_TYPE "urn:ietf:params:oauth:token-type:access_token"


/* ---- who is calling -------------------------------------------------------- */

/* The gateway forwards local callers with x-hostmesh-peer-uid (read from
 * SO_PEERCRED on its own socket; it strips any such metadata a caller sends)
 * and bearer callers with x-hostmesh-subject / x-hostmesh-tenant. Those are
 * believed only when our own direct peer is root or our own uid, i.e. the
 * gateway or another hostmesh daemon; anybody else is who SO_PEERCRED says. */
static Principal call_principal(Manager *m, RpcCall *c) {
        const RpcPeer *peer = rpc_call_peer(c);
        const char *v;
        uint64_t uid;

        if (!peer || !peer->known)
                return (Principal){ .kind = PRINCIPAL_NONE, .uid = (uid_t) -1 };
        if (peer->uid == 0 || peer->uid == getuid()) {
                v = rpc_call_metadata(c, "x-hostmesh-subject");
                if (v) {
                        const char *tenant = rpc_call_metadata(c, "x-hostmesh-tenant");
                        if (isempty(v) || strlen(v) > 1024 || (tenant && !token_name_is_valid(tenant)))
                                return (Principal){ .kind = PRINCIPAL_NONE, .uid = (uid_t) -1 };
                        return (Principal){ .kind = PRINCIPAL_BEARER, .uid = (uid_t) -1, .subject = v,
                                            .tenant_id = tenant };
                }
                v = rpc_call_metadata(c, "x-hostmesh-peer-uid");
                if (v) {
                        if (safe_atou64(v, &uid) < 0 || uid >= (uid_t) -1)
                                return (Principal){ .kind = PRINCIPAL_NONE, .uid = (uid_t) -1 };
                        return manager_principal_for_uid(m, (uid_t) uid);
                }
        }
        return manager_principal_for_uid(m, peer->uid);
}

static bool require_admin(Manager *m, RpcCall *c) {
        Principal p = call_principal(m, c);

        if (p.kind == PRINCIPAL_ADMIN)
                return true;
        if (p.kind == PRINCIPAL_BEARER)
                rpc_call_fail(c, RPC_PERMISSION_DENIED, "%s is for administrators; bearer principal %s is not one.",
                              rpc_call_method(c), p.subject);
        else
                rpc_call_fail(c, RPC_PERMISSION_DENIED,
                              "%s is for administrators (root or [identity] admin_uids); uid %d is not one.",
                              rpc_call_method(c), (int) p.uid);
        return false;
}

/* ---- helpers ------------------------------------------------------------- */

static uint64_t duration_usec(const Google__Protobuf__Duration *d, bool *ok) {
        *ok = true;
        if (!d)
                return 0;
        if (d->seconds < 0 || d->nanos < 0 || d->nanos >= 1000000000 || d->seconds > 100LL * 365 * 24 * 3600) {
                *ok = false;
                return 0;
        }
        return (uint64_t) d->seconds * USEC_PER_SEC + (uint64_t) d->nanos / 1000;
}

static bool strings_ok(char **v, size_t n) {
        if (n == 0 || n > TOKEN_AUDIENCES_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (isempty(v[i]) || strlen(v[i]) > 1024)
                        return false;
        return true;
}

/* protobuf-c gives repeated strings without a terminator. */
static const char **strv_from(char **v, size_t n) {
        const char **l = calloc(n + 1, sizeof(char *));
        if (l)
                memcpy(l, v, n * sizeof(char *));
        return l;
}

/* ---- IssueInstanceToken ---------------------------------------------------- */

static void handle_issue_instance_token(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__IssueInstanceTokenRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__IssueInstanceTokenResponse resp = HOSTMESH__IDENTITY__V1__ISSUE_INSTANCE_TOKEN_RESPONSE__INIT;
        Google__Protobuf__Timestamp exp = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        _cleanup_(token_issued_done) TokenIssued t = {};
        _cleanup_free_ const char **aud = NULL;
        _cleanup_free_ char *err = NULL;
        Manager *m = userdata;
        uint64_t lifetime, d;
        bool ok;
        int r;

        if (!require_admin(m, c))
                return;
        if (!token_name_is_valid(req->tenant_id))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "tenant_id must be 1-253 characters of [A-Za-z0-9._-].");
        if (!token_name_is_valid(req->instance_id))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "instance_id must be 1-253 characters of [A-Za-z0-9._-].");
        if (!isempty(req->container_name) && !token_name_is_valid(req->container_name))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "container_name must be 1-253 characters of [A-Za-z0-9._-].");
        if (!strings_ok(req->audience, req->n_audience))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                            "audience must hold 1-%u non-empty names (e.g. \"hostmesh\").", TOKEN_AUDIENCES_MAX);
        d = duration_usec(req->duration, &ok);
        if (!ok)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "duration is negative or out of range.");
        r = manager_lifetime(m, d, 0, &lifetime, &err);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "%s", err ?: "bad duration");
        aud = strv_from(req->audience, req->n_audience);
        if (!aud)
                return (void) rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
        r = manager_issue(m,
                          &(TokenRequest){ .tenant_id = req->tenant_id, .instance_id = req->instance_id,
                                           .container_name = isempty(req->container_name) ? NULL : req->container_name,
                                           .audience = aud, .lifetime = lifetime },
                          &t);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "Failed to issue the token%s.",
                                                  r == -EBUSY ? ": no signing key is active yet (check the clock)" : "");
        log_debug("Issued token %s for %s/%s.", t.jti, req->tenant_id, req->instance_id);
        exp.seconds = (int64_t) t.expires_at;
        resp.token = t.token;
        resp.jti = t.jti;
        resp.expires_at = &exp;
        rpc_call_reply(c, &resp.base);
}

/* ---- IssueIdToken (internal and public) ------------------------------------ */

static int issue_for_caller(Manager *m, RpcCall *c, const char *const *aud, uint64_t d, TokenIssued *ret,
                            const char **ret_subject) {
        _cleanup_free_ char *err = NULL, *tenant = NULL, *instance = NULL, *container = NULL;
        Principal p = call_principal(m, c);
        uint64_t lifetime;
        int r;

        if (p.kind == PRINCIPAL_NONE) {
                rpc_call_fail(c, RPC_PERMISSION_DENIED,
                              "uid %d has no identity: map it in identity.conf ([identity] principals = UID:TENANT:SUBJECT) "
                              "or call with a bearer token.", (int) p.uid);
                return -EPERM;
        }
        if (p.kind == PRINCIPAL_BEARER) {
                r = manager_check_minted_audience(m, aud, &err);
                if (r < 0) {
                        rpc_call_fail_errno(c, r, "Refused for bearer principal %s: %s", p.subject, err ?: "denied");
                        return r;
                }
        }
        r = manager_lifetime(m, d, 0, &lifetime, &err);
        if (r < 0) {
                rpc_call_fail_errno(c, r, "%s", err ?: "bad duration");
                return r;
        }
        /* A bearer subject tenant/instance[/container] keeps its parts as claims. */
        if (p.kind == PRINCIPAL_BEARER && p.tenant_id) {
                size_t tl = strlen(p.tenant_id);
                if (strncmp(p.subject, p.tenant_id, tl) == 0 && p.subject[tl] == '/') {
                        const char *rest = p.subject + tl + 1, *slash = strchr(rest, '/');
                        instance = slash ? strndup(rest, (size_t) (slash - rest)) : strdup(rest);
                        container = slash ? strdup(slash + 1) : NULL;
                        if (!instance || (slash && !container)) {
                                rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
                                return -ENOMEM;
                        }
                        if (!token_name_is_valid(instance) || (container && !token_name_is_valid(container))) {
                                instance = (free(instance), NULL);
                                container = (free(container), NULL);
                        }
                }
        }
        r = manager_issue(m,
                          &(TokenRequest){ .subject = p.subject, .tenant_id = p.tenant_id, .instance_id = instance,
                                           .container_name = container, .audience = aud, .lifetime = lifetime },
                          ret);
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Failed to issue the token%s.",
                                    r == -EINVAL ? ": an audience is empty or too long" : "");
                return r;
        }
        if (ret_subject)
                *ret_subject = p.subject;
        return 0;
}

static void handle_issue_id_token(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__IssueIdTokenRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__IssueIdTokenResponse resp = HOSTMESH__IDENTITY__V1__ISSUE_ID_TOKEN_RESPONSE__INIT;
        Google__Protobuf__Timestamp exp = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        _cleanup_(token_issued_done) TokenIssued t = {};
        _cleanup_free_ const char **aud = NULL;
        const char *subject = NULL;
        uint64_t d;
        bool ok;

        if (!strings_ok(req->audience, req->n_audience))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                            "audience must hold 1-%u non-empty names: who is the token for?", TOKEN_AUDIENCES_MAX);
        d = duration_usec(req->duration, &ok);
        if (!ok)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "duration is negative or out of range.");
        aud = strv_from(req->audience, req->n_audience);
        if (!aud)
                return (void) rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
        if (issue_for_caller(userdata, c, aud, d, &t, &subject) < 0)
                return;
        exp.seconds = (int64_t) t.expires_at;
        resp.id_token = t.token;
        resp.jti = t.jti;
        resp.expires_at = &exp;
        resp.subject = (char *) subject;
        rpc_call_reply(c, &resp.base);
}

static void handle_public_issue_id_token(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Namespace__Cloud__Iam__V1beta__IssueIdTokenRequest *req = (const void *) msg;
        Namespace__Cloud__Iam__V1beta__IssueIdTokenResponse resp = NAMESPACE__CLOUD__IAM__V1BETA__ISSUE_ID_TOKEN_RESPONSE__INIT;
        _cleanup_(token_issued_done) TokenIssued t = {};

        if (isempty(req->audience))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "audience is required: who is the token for?");
        if (strlen(req->audience) > 1024)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "audience is longer than 1024 characters.");
        if (issue_for_caller(userdata, c, (const char *const[]){ req->audience, NULL }, 0, &t, NULL) < 0)
                return;
        resp.id_token = t.token;
        rpc_call_reply(c, &resp.base);
}

/* ---- ValidateToken --------------------------------------------------------- */

static void handle_validate_token(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__ValidateTokenRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__ValidateTokenResponse resp = HOSTMESH__IDENTITY__V1__VALIDATE_TOKEN_RESPONSE__INIT;
        Google__Protobuf__Timestamp exp = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        _cleanup_(json_decrefp) json_t *claims = NULL;
        _cleanup_free_ char *message = NULL, *claims_json = NULL;
        TokenRefusal why = TOKEN_MALFORMED;
        uint64_t e;
        int r;

        /* Fail closed, and loudly: an empty expected audience is a caller bug. */
        if (isempty(req->audience))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                            "audience is required: an empty audience matches no token.");
        r = manager_validate(userdata, req->token, req->audience, &claims, &why, &message);
        if (r == -ENOMEM)
                return (void) rpc_call_fail_errno(c, r, "Out of memory.");
        resp.valid = r == 0;
        resp.reason = (char *) token_refusal_to_string(why);
        resp.message = message ?: (char *) "";
        if (r == 0) {
                claims_json = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
                if (!claims_json)
                        return (void) rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
                resp.claims_json = claims_json;
                resp.subject = (char *) (json_string_value(json_object_get(claims, "sub")) ?: "");
                resp.tenant_id = (char *) (json_string_value(json_object_get(claims, "tenant_id")) ?: "");
                resp.jti = (char *) (json_string_value(json_object_get(claims, "jti")) ?: "");
                if (token_claim_time(claims, "exp", &e) >= 0) {
                        exp.seconds = (int64_t) e;
                        resp.expires_at = &exp;
                }
        }
        rpc_call_reply(c, &resp.base);
}

/* ---- ExchangeToken --------------------------------------------------------- */

static void handle_exchange_token(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__ExchangeTokenRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__ExchangeTokenResponse resp = HOSTMESH__IDENTITY__V1__EXCHANGE_TOKEN_RESPONSE__INIT;
        Google__Protobuf__Timestamp exp = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        _cleanup_(exchange_result_done) ExchangeResult res = {};
        _cleanup_free_ const char **aud = NULL;
        _cleanup_free_ char *err = NULL;
        uint64_t d;
        bool ok;
        int r;

        /* RFC 8693 §2.1: subject_token and its type are REQUIRED; we default
         * the type to JWT since that is all we accept. */
        if (isempty(req->subject_token))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "subject_token is required.");
        if (!isempty(req->subject_token_type) && !streq(req->subject_token_type, JWT_TYPE) &&
            !streq(req->subject_token_type, ID_TOKEN_TYPE) && !streq(req->subject_token_type, ACCESS_TOKEN_TYPE))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                            "subject_token_type %s is not supported; use " JWT_TYPE ".",
                                            req->subject_token_type);
        if (!isempty(req->requested_token_type) && !streq(req->requested_token_type, JWT_TYPE))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                            "requested_token_type %s is not supported; only " JWT_TYPE " is issued.",
                                            req->requested_token_type);
        if (!strings_ok(req->audience, req->n_audience))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                            "audience must hold 1-%u non-empty names: who is the new token for?",
                                            TOKEN_AUDIENCES_MAX);
        d = duration_usec(req->duration, &ok);
        if (!ok)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "duration is negative or out of range.");
        aud = strv_from(req->audience, req->n_audience);
        if (!aud)
                return (void) rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");

        r = manager_exchange(userdata, req->subject_token, aud, d, &res, &err);
        if (r == -EPERM)
                return (void) rpc_call_fail(c, RPC_PERMISSION_DENIED, "Token exchange refused: %s", err ?: "denied");
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "Token exchange failed: %s", err ?: strerror(-r));
        exp.seconds = (int64_t) res.issued.expires_at;
        resp.access_token = res.issued.token;
        resp.issued_token_type = (char *) JWT_TYPE;
        resp.token_type = (char *) "N_A";
        resp.expires_in = (int64_t) (res.issued.expires_at - manager_now());
        resp.jti = res.issued.jti;
        resp.expires_at = &exp;
        resp.subject = res.subject;
        resp.tenant_id = res.tenant_id ?: (char *) "";
        resp.trust_relationship_id = (char *) (res.relationship_id ?: "");
        rpc_call_reply(c, &resp.base);
}

/* ---- revocation, keys ------------------------------------------------------ */

static void handle_revoke_token(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__RevokeTokenRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__RevokeTokenResponse resp = HOSTMESH__IDENTITY__V1__REVOKE_TOKEN_RESPONSE__INIT;
        Google__Protobuf__Timestamp until = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        uint64_t u;
        int r;

        if (!require_admin(userdata, c))
                return;
        if (isempty(req->jti) || strlen(req->jti) > REVOCATION_ID_MAX)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "jti is required (at most %u characters).",
                                            REVOCATION_ID_MAX);
        r = manager_revoke_jti(userdata, req->jti, &u);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "Failed to revoke jti %s%s.", req->jti,
                                                  r == -ENOSPC ? ": the revocation list is full (raise max_revocations)" : "");
        log_info("Revoked token %s.", req->jti);
        until.seconds = (int64_t) u;
        resp.kept_until = &until;
        rpc_call_reply(c, &resp.base);
}

static void handle_revoke_subject(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__RevokeSubjectRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__RevokeSubjectResponse resp = HOSTMESH__IDENTITY__V1__REVOKE_SUBJECT_RESPONSE__INIT;
        Google__Protobuf__Timestamp until = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        uint64_t u;
        int r;

        if (!require_admin(userdata, c))
                return;
        if (isempty(req->subject) || strlen(req->subject) > REVOCATION_ID_MAX)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "subject is required (at most %u characters).",
                                            REVOCATION_ID_MAX);
        r = manager_revoke_subject(userdata, req->subject, &u);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "Failed to revoke subject %s%s.", req->subject,
                                                  r == -ENOSPC ? ": the revocation list is full (raise max_revocations)" : "");
        log_info("Revoked every token of %s issued until now.", req->subject);
        until.seconds = (int64_t) u;
        resp.kept_until = &until;
        rpc_call_reply(c, &resp.base);
}

static void handle_rotate_keys(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Identity__V1__RotateKeysResponse resp = HOSTMESH__IDENTITY__V1__ROTATE_KEYS_RESPONSE__INIT;
        Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        _cleanup_(json_decrefp) json_t *status = NULL;
        _cleanup_free_ char *status_text = NULL;
        Manager *m = userdata;
        const char *next = NULL;
        const JwtKey *k;
        uint64_t f = 0;
        int r;
        (void) msg;

        if (!require_admin(m, c))
                return;
        r = manager_rotate(m, &next, &f);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "Failed to rotate keys: %s.", strerror(-r));
        log_info("Key rotation: %s signs from %" PRIu64 ".", next, f);
        r = keystore_status_json(m->keys, manager_now(), &status);
        if (r < 0 || !(status_text = json_dumps(status, JSON_COMPACT)))
                return (void) rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
        k = keystore_signing_key(m->keys, manager_now());
        resp.signing_kid = (char *) (k ? jwt_key_kid(k) : "");
        resp.next_kid = (char *) next;
        from.seconds = (int64_t) f;
        resp.next_signs_from = &from;
        resp.keys_json = status_text;
        rpc_call_reply(c, &resp.base);
}

static void handle_get_jwks(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Identity__V1__GetJwksResponse resp = HOSTMESH__IDENTITY__V1__GET_JWKS_RESPONSE__INIT;
        Manager *m = userdata;
        (void) msg;

        resp.jwks_json = m->jwks_json;
        resp.etag = m->jwks_etag;
        resp.max_age_seconds = (int64_t) (m->config.jwks_max_age / USEC_PER_SEC);
        rpc_call_reply(c, &resp.base);
}

static void handle_get_openid_configuration(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Identity__V1__GetOpenIdConfigurationResponse resp =
                HOSTMESH__IDENTITY__V1__GET_OPEN_ID_CONFIGURATION_RESPONSE__INIT;
        Manager *m = userdata;
        (void) msg;

        resp.document_json = m->discovery_json;
        resp.issuer = m->config.issuer;
        resp.jwks_uri = m->jwks_uri;
        resp.jwks_path = m->config.jwks_path;
        rpc_call_reply(c, &resp.base);
}

/* ---- trust relationships --------------------------------------------------- */

static void relationship_to_proto(const TrustRelationship *t, Hostmesh__Identity__V1__TrustRelationship *p,
                                  Google__Protobuf__Duration *d, Google__Protobuf__Timestamp *ts) {
        hostmesh__identity__v1__trust_relationship__init(p);
        p->id = t->id;
        p->issuer = t->issuer;
        p->jwks_json = t->jwks_json ?: (char *) "";
        p->jwks_file = t->jwks_file ?: (char *) "";
        p->subject_pattern = t->subject_pattern;
        p->audience = t->audience;
        p->tenant_id = t->tenant_id;
        *d = (Google__Protobuf__Duration) GOOGLE__PROTOBUF__DURATION__INIT;
        d->seconds = (int64_t) t->max_duration;
        p->max_duration = d;
        *ts = (Google__Protobuf__Timestamp) GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        ts->seconds = (int64_t) t->created;
        p->created = ts;
}

static void handle_add_trust_relationship(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__AddTrustRelationshipRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__AddTrustRelationshipResponse resp = HOSTMESH__IDENTITY__V1__ADD_TRUST_RELATIONSHIP_RESPONSE__INIT;
        Hostmesh__Identity__V1__TrustRelationship out;
        Google__Protobuf__Duration d;
        Google__Protobuf__Timestamp ts;
        const Hostmesh__Identity__V1__TrustRelationship *in = req->relationship;
        _cleanup_free_ char *err = NULL;
        Manager *m = userdata;
        const char *id = NULL;
        uint64_t md;
        bool ok;
        int r;

        if (!require_admin(m, c))
                return;
        if (!in)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "relationship is required.");
        md = duration_usec(in->max_duration, &ok);
        if (!ok || md < USEC_PER_SEC)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "max_duration must be at least 1s.");
        r = truststore_add(m->trust,
                           &(TrustRelationship){ .id = isempty(in->id) ? NULL : in->id, .issuer = in->issuer,
                                                 .jwks_json = isempty(in->jwks_json) ? NULL : in->jwks_json,
                                                 .jwks_file = isempty(in->jwks_file) ? NULL : in->jwks_file,
                                                 .subject_pattern = in->subject_pattern, .audience = in->audience,
                                                 .tenant_id = in->tenant_id, .max_duration = md / USEC_PER_SEC },
                           manager_now(), &id, &err);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "%s", err ?: strerror(-r));
        log_info("Trust relationship %s added for issuer %s → tenant %s.", id, in->issuer, in->tenant_id);
        for (size_t i = 0; i < truststore_size(m->trust); i++)
                if (streq(truststore_get(m->trust, i)->id, id))
                        relationship_to_proto(truststore_get(m->trust, i), &out, &d, &ts);
        resp.relationship = &out;
        rpc_call_reply(c, &resp.base);
}

static void handle_list_trust_relationships(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Identity__V1__ListTrustRelationshipsResponse resp =
                HOSTMESH__IDENTITY__V1__LIST_TRUST_RELATIONSHIPS_RESPONSE__INIT;
        Manager *m = userdata;
        size_t n = truststore_size(m->trust);
        _cleanup_free_ Hostmesh__Identity__V1__TrustRelationship *items = calloc(n ?: 1, sizeof(*items));
        _cleanup_free_ Hostmesh__Identity__V1__TrustRelationship **ptrs = calloc(n ?: 1, sizeof(*ptrs));
        _cleanup_free_ Google__Protobuf__Duration *ds = calloc(n ?: 1, sizeof(*ds));
        _cleanup_free_ Google__Protobuf__Timestamp *ts = calloc(n ?: 1, sizeof(*ts));
        (void) msg;

        if (!require_admin(m, c))
                return;
        if (!items || !ptrs || !ds || !ts)
                return (void) rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
        for (size_t i = 0; i < n; i++) {
                relationship_to_proto(truststore_get(m->trust, i), &items[i], &ds[i], &ts[i]);
                ptrs[i] = &items[i];
        }
        resp.n_relationships = n;
        resp.relationships = ptrs;
        rpc_call_reply(c, &resp.base);
}

static void handle_remove_trust_relationship(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Identity__V1__RemoveTrustRelationshipRequest *req = (const void *) msg;
        Hostmesh__Identity__V1__RemoveTrustRelationshipResponse resp =
                HOSTMESH__IDENTITY__V1__REMOVE_TRUST_RELATIONSHIP_RESPONSE__INIT;
        Manager *m = userdata;
        int r;

        if (!require_admin(m, c))
                return;
        if (isempty(req->id))
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "id is required.");
        r = truststore_remove(m->trust, req->id);
        if (r == -ENOENT)
                return (void) rpc_call_fail(c, RPC_NOT_FOUND, "No trust relationship \"%s\"; see trust-relationships list.",
                                            req->id);
        if (r < 0)
                return (void) rpc_call_fail_errno(c, r, "Failed to remove trust relationship %s.", req->id);
        log_info("Trust relationship %s removed.", req->id);
        rpc_call_reply(c, &resp.base);
}

#define M(name, snake, handler)                                                                           \
        { "/hostmesh.identity.v1.Identity/" name, RPC_UNARY,                                             \
          &hostmesh__identity__v1__##snake##_request__descriptor,                                        \
          &hostmesh__identity__v1__##snake##_response__descriptor, handler }

static const RpcMethod methods[] = {
        M("IssueInstanceToken", issue_instance_token, handle_issue_instance_token),
        M("IssueIdToken", issue_id_token, handle_issue_id_token),
        M("ValidateToken", validate_token, handle_validate_token),
        M("ExchangeToken", exchange_token, handle_exchange_token),
        M("RevokeToken", revoke_token, handle_revoke_token),
        M("RevokeSubject", revoke_subject, handle_revoke_subject),
        M("RotateKeys", rotate_keys, handle_rotate_keys),
        M("GetJwks", get_jwks, handle_get_jwks),
        M("GetOpenIdConfiguration", get_open_id_configuration, handle_get_openid_configuration),
        M("AddTrustRelationship", add_trust_relationship, handle_add_trust_relationship),
        M("ListTrustRelationships", list_trust_relationships, handle_list_trust_relationships),
        M("RemoveTrustRelationship", remove_trust_relationship, handle_remove_trust_relationship),
        { "/namespace.cloud.iam.v1beta.TokenService/IssueIdToken", RPC_UNARY,
          &namespace__cloud__iam__v1beta__issue_id_token_request__descriptor,
          &namespace__cloud__iam__v1beta__issue_id_token_response__descriptor, handle_public_issue_id_token },
};

int identity_grpc_register(Manager *m) {
        return rpc_server_add_methods(m->server, methods, ELEMENTSOF(methods), m);
}
