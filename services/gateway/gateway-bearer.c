/* SPDX-License-Identifier: MIT */
#include <time.h>

#include "gateway-bearer.h"
#include "gateway-manager.h"
#include "hostmesh/identity/v1/identity.pb-c.h"
#include "identity-jwt.h"
#include "identity-validate.h"
#include "log.h"

#define BEARER_REFRESH_MIN_USEC (10 * USEC_PER_SEC)
#define BEARER_PENDING_MAX 1024
#define REVOCATION_SLOTS 4096U
#define REVOCATION_JTI_MAX 64U
#define REVOCATION_CHECK_TIMEOUT_USEC (5 * USEC_PER_SEC)

/* identityd's last answer about one token, in a direct-mapped cache: a
 * collision only costs another question. */
typedef struct RevocationSlot {
        char jti[REVOCATION_JTI_MAX + 1];
        uint64_t checked_usec;
        bool revoked;
} RevocationSlot;

/* A call whose token verified, waiting for identityd's revocation answer. */
typedef struct Check {
        GatewayBearer *bearer;    /* NULL once the bearer is gone */
        GatewayBearerDone done;
        void (*release)(void *userdata);
        void *userdata;
        json_t *claims;
        struct Check *prev, *next;
} Check;

typedef struct Pending {
        char *authorization;
        GatewayBearerDone done;
        void (*release)(void *userdata);
        void *userdata;
        struct Pending *next;
} Pending;

struct GatewayBearer {
        Manager *manager;
        JwtKeySet *keys;
        char *issuer;
        uint64_t last_fetch_usec;
        bool fetching;
        Pending *pending;
        unsigned n_pending;
        RevocationSlot *revocations;
        Check *checks;
        unsigned n_checks;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

int gateway_bearer_new(Manager *m, GatewayBearer **ret) {
        GatewayBearer *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->revocations = calloc(REVOCATION_SLOTS, sizeof(RevocationSlot));
        if (!b->revocations) {
                free(b);
                return -ENOMEM;
        }
        b->manager = m;
        *ret = b;
        return 0;
}

GatewayBearer *gateway_bearer_free(GatewayBearer *b) {
        if (!b)
                return NULL;
        while (b->pending) {
                Pending *p = b->pending;
                b->pending = p->next;
                if (p->release)
                        p->release(p->userdata);
                free(p->authorization);
                free(p);
        }
        /* Answers still on their way find their check detached. */
        for (Check *c = b->checks; c; c = c->next) {
                c->bearer = NULL;
                if (c->release)
                        c->release(c->userdata);
                c->release = NULL;
                c->done = NULL;
                json_decref(c->claims);
                c->claims = NULL;
        }
        free(b->revocations);
        jwt_keyset_free(b->keys);
        free(b->issuer);
        free(b);
        return NULL;
}

/* Extracts the token from "Bearer <token>" (scheme case-insensitive, RFC 6750 §2.1). */
static const char *bearer_token(const char *h) {
        if (!h || strncasecmp(h, "Bearer ", 7) != 0)
                return NULL;
        h += 7;
        while (*h == ' ')
                h++;
        return *h ? h : NULL;
}

/* ---- revocation ---------------------------------------------------------- */

static RevocationSlot *revocation_slot(GatewayBearer *b, const char *jti) {
        uint32_t h = 2166136261U; /* FNV-1a */

        if (!jti || strlen(jti) > REVOCATION_JTI_MAX)
                return NULL;
        for (const char *p = jti; *p; p++)
                h = (h ^ (uint8_t) *p) * 16777619U;
        return &b->revocations[h % REVOCATION_SLOTS];
}

static void check_free(Check *c) {
        if (c->bearer) {
                if (c->prev)
                        c->prev->next = c->next;
                else
                        c->bearer->checks = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                c->bearer->n_checks--;
        }
        json_decref(c->claims);
        free(c);
}

static void on_revocation_answer(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        Check *c = userdata;
        GatewayBearer *b = c->bearer;
        const Hostmesh__Identity__V1__ValidateTokenResponse *resp = (const void *) response;
        const char *jti = json_string_value(json_object_get(c->claims, "jti"));
        RevocationSlot *slot;
        char buf[512];

        if (!b) {
                check_free(c);
                return;
        }
        if (r < 0) {
                snprintf(buf, sizeof(buf), "Cannot check whether the bearer token was revoked: identityd did not "
                         "answer (%s); retry.", status && status->message ? status->message : strerror(-r));
                c->done(b->manager, -ECONNREFUSED, buf, NULL, c->userdata);
        } else if (resp->valid) {
                slot = revocation_slot(b, jti);
                if (slot) {
                        snprintf(slot->jti, sizeof(slot->jti), "%s", jti);
                        slot->checked_usec = now_usec();
                        slot->revoked = false;
                }
                c->done(b->manager, 0, NULL, c->claims, c->userdata);
        } else {
                /* Revoked stays revoked; any other refusal (identityd is
                 * the authority on its own tokens) is not remembered. */
                slot = streq_ptr(resp->reason, "revoked") ? revocation_slot(b, jti) : NULL;
                if (slot) {
                        snprintf(slot->jti, sizeof(slot->jti), "%s", jti);
                        slot->revoked = true;
                }
                snprintf(buf, sizeof(buf), "Bearer token refused (%s): %s", resp->reason,
                         isempty(resp->message) ? "identityd refused it" : resp->message);
                c->done(b->manager, -EKEYREVOKED, buf, NULL, c->userdata);
        }
        check_free(c);
}

/* The token verified: asks identityd whether it was revoked, unless it
 * answered for this jti less than revocation_cache ago. */
static void check_revocation(GatewayBearer *b, const char *token, json_t *claims, GatewayBearerDone done,
                             void (*release)(void *userdata), void *userdata) {
        Hostmesh__Identity__V1__ValidateTokenRequest req = HOSTMESH__IDENTITY__V1__VALIDATE_TOKEN_REQUEST__INIT;
        const char *jti = json_string_value(json_object_get(claims, "jti"));
        RevocationSlot *slot = revocation_slot(b, jti);
        Backend *backend = manager_find_backend(b->manager, "identity");
        RpcClient *client = backend ? backend_client(b->manager, backend) : NULL;
        Check *c;
        int r;

        if (slot && streq(slot->jti, jti)) {
                if (slot->revoked) {
                        done(b->manager, -EKEYREVOKED, "Bearer token refused (revoked): the token was revoked.", NULL,
                             userdata);
                        return;
                }
                if (now_usec() - slot->checked_usec < b->manager->config.revocation_cache_usec) {
                        done(b->manager, 0, NULL, claims, userdata);
                        return;
                }
        }
        if (b->n_checks >= BEARER_PENDING_MAX) {
                done(b->manager, -EBUSY, "Too many calls waiting for identityd's revocation check; retry.", NULL, userdata);
                return;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                done(b->manager, -ENOMEM, "Out of memory.", NULL, userdata);
                return;
        }
        *c = (Check){ .bearer = b, .done = done, .release = release, .userdata = userdata,
                      .claims = json_incref(claims), .next = b->checks };
        if (b->checks)
                b->checks->prev = c;
        b->checks = c;
        b->n_checks++;

        req.token = (char *) token;
        req.audience = b->manager->config.bearer_audience;
        r = client ? rpc_client_call_async(client, "/hostmesh.identity.v1.Identity/ValidateToken", NULL, &req.base,
                                           &hostmesh__identity__v1__validate_token_response__descriptor,
                                           REVOCATION_CHECK_TIMEOUT_USEC, on_revocation_answer, c)
                   : -ECONNREFUSED;
        if (r < 0) {
                done(b->manager, -ECONNREFUSED, "Cannot check whether the bearer token was revoked: identityd is not "
                     "reachable; retry.", NULL, userdata);
                check_free(c);
        }
}

/* ---- verification ---------------------------------------------------------- */

static void verify_and_finish(GatewayBearer *b, const char *authorization, GatewayBearerDone done,
                              void (*release)(void *userdata), void *userdata) {
        _cleanup_free_ char *message = NULL;
        const char *token = bearer_token(authorization);
        json_t *claims = NULL;
        TokenRefusal refusal;
        TokenPolicy policy = {
                .issuer = b->issuer,
                .audience = b->manager->config.bearer_audience,
                .now = (uint64_t) time(NULL),
                .leeway = 60,
        };
        int r;

        if (!token) {
                done(b->manager, -EKEYREJECTED, "Missing 'authorization: Bearer <token>' metadata.", NULL, userdata);
                return;
        }
        if (!b->keys || !b->issuer) {
                done(b->manager, -ECONNREFUSED, "Cannot verify tokens: identityd's keys are not available.", NULL, userdata);
                return;
        }
        r = token_validate(token, b->keys, NULL, &policy, &claims, &refusal, &message);
        if (r < 0) {
                char buf[512];
                snprintf(buf, sizeof(buf), "Bearer token refused (%s): %s", token_refusal_to_string(refusal),
                         message ? message : "invalid");
                done(b->manager, r, buf, NULL, userdata);
                return;
        }
        check_revocation(b, token, claims, done, release, userdata);
        json_decref(claims);
}

static void finish_pending(GatewayBearer *b) {
        Pending *list = b->pending;

        b->pending = NULL;
        b->n_pending = 0;
        while (list) {
                Pending *p = list;
                list = p->next;
                verify_and_finish(b, p->authorization, p->done, p->release, p->userdata);
                free(p->authorization);
                free(p);
        }
}

static void on_openid(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        GatewayBearer *b = userdata;

        if (r < 0)
                log_warning("Failed to fetch the issuer from identityd: %s", status->message ? status->message : "");
        else {
                const Hostmesh__Identity__V1__GetOpenIdConfigurationResponse *resp = (const void *) response;
                char *issuer = strdup(resp->issuer);
                if (issuer) {
                        free(b->issuer);
                        b->issuer = issuer;
                }
        }
        b->fetching = false;
        finish_pending(b);
}

static void on_jwks(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        GatewayBearer *b = userdata;
        Hostmesh__Identity__V1__GetOpenIdConfigurationRequest req =
                HOSTMESH__IDENTITY__V1__GET_OPEN_ID_CONFIGURATION_REQUEST__INIT;
        Backend *backend;

        if (r < 0)
                log_warning("Failed to fetch the JWKS from identityd: %s", status->message ? status->message : "");
        else {
                const Hostmesh__Identity__V1__GetJwksResponse *resp = (const void *) response;
                JwtKeySet *ks = NULL;
                r = jwt_keyset_parse(resp->jwks_json, strlen(resp->jwks_json), &ks);
                if (r < 0)
                        log_warning_errno(r, "identityd's JWKS does not parse, keeping the old one: %m");
                else {
                        jwt_keyset_free(b->keys);
                        b->keys = ks;
                }
        }
        backend = manager_find_backend(b->manager, "identity");
        if (b->issuer || !backend ||
            rpc_client_call_async(backend_client(b->manager, backend),
                                  "/hostmesh.identity.v1.Identity/GetOpenIdConfiguration", NULL, &req.base,
                                  &hostmesh__identity__v1__get_open_id_configuration_response__descriptor,
                                  5 * USEC_PER_SEC, on_openid, b) < 0) {
                b->fetching = false;
                finish_pending(b);
        }
}

static int fetch_keys(GatewayBearer *b) {
        Hostmesh__Identity__V1__GetJwksRequest req = HOSTMESH__IDENTITY__V1__GET_JWKS_REQUEST__INIT;
        Backend *backend = manager_find_backend(b->manager, "identity");
        RpcClient *client = backend ? backend_client(b->manager, backend) : NULL;
        int r;

        if (!client)
                return -ECONNREFUSED;
        r = rpc_client_call_async(client, "/hostmesh.identity.v1.Identity/GetJwks", NULL, &req.base,
                                  &hostmesh__identity__v1__get_jwks_response__descriptor, 5 * USEC_PER_SEC, on_jwks, b);
        if (r < 0)
                return r;
        b->fetching = true;
        b->last_fetch_usec = now_usec();
        return 0;
}

/* The kid of an unverified token, only to decide whether to refresh keys. */
static bool token_kid_known(GatewayBearer *b, const char *token) {
        _cleanup_free_ uint8_t *header = NULL;
        const char *dot = strchr(token, '.');
        size_t len;
        json_t *h, *kid;
        bool known = false;

        if (!b->keys || !dot || base64url_decode(token, (size_t) (dot - token), &header, &len) < 0)
                return false;
        h = json_loadb((const char *) header, len, JSON_REJECT_DUPLICATES, NULL);
        kid = json_object_get(h, "kid");
        if (json_is_string(kid))
                known = jwt_keyset_find(b->keys, json_string_value(kid)) != NULL;
        json_decref(h);
        return known;
}

void gateway_bearer_authenticate(GatewayBearer *b, const char *authorization, GatewayBearerDone done,
                                  void (*release)(void *userdata), void *userdata) {
        const char *token = bearer_token(authorization);
        bool refresh_allowed = now_usec() - b->last_fetch_usec >= BEARER_REFRESH_MIN_USEC || !b->keys;

        if (token && (b->fetching || (!token_kid_known(b, token) && refresh_allowed))) {
                Pending *p;

                if (b->n_pending >= BEARER_PENDING_MAX) {
                        done(b->manager, -EBUSY, "Too many calls waiting for identity keys; retry.", NULL, userdata);
                        return;
                }
                if (!b->fetching && fetch_keys(b) < 0) {
                        verify_and_finish(b, authorization, done, release, userdata);
                        return;
                }
                p = calloc(1, sizeof(*p));
                if (p && !(p->authorization = strdup(authorization))) {
                        free(p);
                        p = NULL;
                }
                if (!p) {
                        done(b->manager, -ENOMEM, "Out of memory.", NULL, userdata);
                        return;
                }
                p->done = done;
                p->release = release;
                p->userdata = userdata;
                p->next = b->pending;
                b->pending = p;
                b->n_pending++;
                return;
        }
        verify_and_finish(b, authorization, done, release, userdata);
}
