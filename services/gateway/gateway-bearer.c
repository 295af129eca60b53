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

typedef struct Pending {
        RpcCall *call;
        GatewayBearerDone done;
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
                rpc_call_unref(p->call);
                free(p);
        }
        jwt_keyset_free(b->keys);
        free(b->issuer);
        free(b);
        return NULL;
}

/* Extracts the token from "Bearer <token>" (scheme case-insensitive, RFC 6750 §2.1). */
static const char *bearer_token(RpcCall *call) {
        const char *h = rpc_call_metadata(call, "authorization");
        if (!h || strncasecmp(h, "Bearer ", 7) != 0)
                return NULL;
        h += 7;
        while (*h == ' ')
                h++;
        return *h ? h : NULL;
}

static void verify_and_finish(GatewayBearer *b, RpcCall *call, GatewayBearerDone done, void *userdata) {
        _cleanup_free_ char *message = NULL;
        const char *token = bearer_token(call);
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
                done(call, -EKEYREJECTED, "Missing 'authorization: Bearer <token>' metadata.", NULL, userdata);
                return;
        }
        if (!b->keys || !b->issuer) {
                done(call, -ECONNREFUSED, "Cannot verify tokens: identityd's keys are not available.", NULL, userdata);
                return;
        }
        r = token_validate(token, b->keys, NULL, &policy, &claims, &refusal, &message);
        if (r < 0) {
                char buf[512];
                snprintf(buf, sizeof(buf), "Bearer token refused (%s): %s", token_refusal_to_string(refusal),
                         message ? message : "invalid");
                done(call, r, buf, NULL, userdata);
                return;
        }
        done(call, 0, NULL, claims, userdata);
        json_decref(claims);
}

static void finish_pending(GatewayBearer *b) {
        Pending *list = b->pending;

        b->pending = NULL;
        b->n_pending = 0;
        while (list) {
                Pending *p = list;
                list = p->next;
                verify_and_finish(b, p->call, p->done, p->userdata);
                rpc_call_unref(p->call);
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

void gateway_bearer_authenticate(GatewayBearer *b, RpcCall *call, GatewayBearerDone done, void *userdata) {
        const char *token = bearer_token(call);
        bool refresh_allowed = now_usec() - b->last_fetch_usec >= BEARER_REFRESH_MIN_USEC || !b->keys;

        if (token && (b->fetching || (!token_kid_known(b, token) && refresh_allowed))) {
                Pending *p;

                if (b->n_pending >= BEARER_PENDING_MAX) {
                        done(call, -EBUSY, "Too many calls waiting for identity keys; retry.", NULL, userdata);
                        return;
                }
                if (!b->fetching && fetch_keys(b) < 0) {
                        verify_and_finish(b, call, done, userdata);
                        return;
                }
                p = calloc(1, sizeof(*p));
                if (!p) {
                        done(call, -ENOMEM, "Out of memory.", NULL, userdata);
                        return;
                }
                *p = (Pending){ .call = rpc_call_ref(call), .done = done, .userdata = userdata, .next = b->pending };
                b->pending = p;
                b->n_pending++;
                return;
        }
        verify_and_finish(b, call, done, userdata);
}
