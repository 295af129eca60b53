/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>

#include "identity-validate.h"

static const char *const refusal_names[_TOKEN_REFUSAL_MAX] = {
        [TOKEN_VALID] = "valid",
        [TOKEN_MALFORMED] = "malformed",
        [TOKEN_BAD_SIGNATURE] = "bad_signature",
        [TOKEN_UNKNOWN_KID] = "unknown_kid",
        [TOKEN_ALG_NOT_ALLOWED] = "alg_not_allowed",
        [TOKEN_EXPIRED] = "expired",
        [TOKEN_NOT_YET_VALID] = "not_yet_valid",
        [TOKEN_WRONG_ISSUER] = "wrong_issuer",
        [TOKEN_AUDIENCE_MISMATCH] = "audience_mismatch",
        [TOKEN_REVOKED] = "revoked",
        [TOKEN_TOO_LARGE] = "too_large",
};

const char *token_refusal_to_string(TokenRefusal r) {
        return r >= 0 && r < _TOKEN_REFUSAL_MAX ? refusal_names[r] : NULL;
}

int token_refusal_to_errno(TokenRefusal r) {
        switch (r) {
        case TOKEN_VALID:
                return 0;
        case TOKEN_MALFORMED:
                return -EBADMSG;
        case TOKEN_UNKNOWN_KID:
                return -ENOKEY;
        case TOKEN_EXPIRED:
                return -EKEYEXPIRED;
        case TOKEN_REVOKED:
                return -EKEYREVOKED;
        case TOKEN_TOO_LARGE:
                return -EMSGSIZE;
        default:
                return -EKEYREJECTED;
        }
}

bool token_audience_contains(json_t *aud, const char *audience) {
        size_t i;
        json_t *v;

        if (isempty(audience))
                return false;
        if (json_is_string(aud))
                return streq(json_string_value(aud), audience);
        json_array_foreach(aud, i, v)
                if (json_is_string(v) && streq(json_string_value(v), audience))
                        return true;
        return false;
}

int token_claim_time(json_t *claims, const char *name, uint64_t *ret) {
        json_t *v = json_object_get(claims, name);
        double d;

        if (!v)
                return -ENOENT;
        if (json_is_integer(v)) {
                if (json_integer_value(v) < 0)
                        return -EBADMSG;
                *ret = (uint64_t) json_integer_value(v);
                return 0;
        }
        if (!json_is_real(v))
                return -EBADMSG;
        d = json_real_value(v);
        if (!isfinite(d) || d < 0 || d > 1e15)
                return -EBADMSG;
        *ret = (uint64_t) d;
        return 0;
}

static int refuse(TokenRefusal reason, TokenRefusal *ret_refusal, char **ret_message, const char *format, ...)
        _printf_(4, 5);
static int refuse(TokenRefusal reason, TokenRefusal *ret_refusal, char **ret_message, const char *format, ...) {
        va_list ap;
        char *m = NULL;

        va_start(ap, format);
        if (vasprintf(&m, format, ap) < 0)
                m = NULL;
        va_end(ap);
        if (!m)
                return -ENOMEM;
        if (ret_message)
                *ret_message = m;
        else
                free(m);
        if (ret_refusal)
                *ret_refusal = reason;
        return token_refusal_to_errno(reason);
}

/* Claims we print in messages come from the token: keep them short and
 * printable so that logs and errors stay readable. */
static const char *shown(const char *s, char buf[static 72]) {
        size_t i;

        if (!s)
                return "(none)";
        for (i = 0; s[i] && i < 64; i++)
                buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        if (s[i])
                memcpy(buf + i, "...", 4);
        else
                buf[i] = 0;
        return buf;
}

int token_validate(const char *token, const JwtKeySet *keys, const Revocations *revocations,
                   const TokenPolicy *policy, json_t **ret_claims, TokenRefusal *ret_refusal,
                   char **ret_message) {
        _cleanup_(jwt_parsed_done) JwtParsed p = {};
        size_t max_size = policy->max_size ?: JWT_MAX_SIZE_DEFAULT;
        const JwtKey *key;
        const char *iss, *sub, *jti;
        uint64_t exp, nbf, iat;
        JwtAlg alg;
        char b1[72], b2[72];
        json_t *aud;
        int r;

        if (isempty(policy->audience))
                return refuse(TOKEN_AUDIENCE_MISMATCH, ret_refusal, ret_message,
                              "No expected audience given; an empty audience matches nothing.");
        if (isempty(policy->issuer))
                return refuse(TOKEN_WRONG_ISSUER, ret_refusal, ret_message, "No expected issuer configured.");
        if (!token || !*token)
                return refuse(TOKEN_MALFORMED, ret_refusal, ret_message, "The token is empty.");

        r = jwt_parse(token, max_size, &p);
        if (r == -ENOMEM)
                return r;
        if (r == -EMSGSIZE)
                return refuse(TOKEN_TOO_LARGE, ret_refusal, ret_message,
                              "The token is longer than %zu bytes.", max_size);
        if (r < 0)
                return refuse(TOKEN_MALFORMED, ret_refusal, ret_message,
                              "The token is not a compact JWS: three base64url parts, JSON objects in the "
                              "first two, a string \"alg\" in the header, no \"crit\".");

        /* RFC 8725 §3.1: never let the token choose a weaker algorithm. */
        alg = jwt_alg_from_string(p.alg);
        if (alg < 0)
                return refuse(TOKEN_ALG_NOT_ALLOWED, ret_refusal, ret_message,
                              "Algorithm \"%s\" is not allowed; only ES256 and RS256 are accepted.",
                              shown(p.alg, b1));

        if (p.kid)
                key = jwt_keyset_find(keys, p.kid);
        else if (policy->allow_missing_kid && jwt_keyset_size(keys) == 1)
                key = jwt_keyset_get(keys, 0);
        else
                return refuse(TOKEN_UNKNOWN_KID, ret_refusal, ret_message,
                              "The token header names no key (\"kid\" is missing).");
        if (!key)
                return refuse(TOKEN_UNKNOWN_KID, ret_refusal, ret_message,
                              "No published key has kid \"%s\".", shown(p.kid, b1));
        if (jwt_key_alg(key) != alg)
                return refuse(TOKEN_ALG_NOT_ALLOWED, ret_refusal, ret_message,
                              "The token says %s but key \"%s\" is an %s key.", p.alg, shown(jwt_key_kid(key), b1),
                              jwt_alg_to_string(jwt_key_alg(key)));

        r = jwt_verify_signature(key, token, p.signing_input_len, p.signature, p.signature_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return refuse(TOKEN_BAD_SIGNATURE, ret_refusal, ret_message,
                              "The signature does not verify with key \"%s\".", shown(jwt_key_kid(key), b1));

        /* Only now, with the signature checked, do the claims mean anything. */
        iss = json_string_value(json_object_get(p.payload, "iss"));
        if (!iss || !streq(iss, policy->issuer))
                return refuse(TOKEN_WRONG_ISSUER, ret_refusal, ret_message, "Issuer \"%s\" is not \"%s\".",
                              shown(iss, b1), shown(policy->issuer, b2));

        aud = json_object_get(p.payload, "aud");
        if (!token_audience_contains(aud, policy->audience))
                return refuse(TOKEN_AUDIENCE_MISMATCH, ret_refusal, ret_message,
                              "The token is not for audience \"%s\".", shown(policy->audience, b1));

        r = token_claim_time(p.payload, "exp", &exp);
        if (r < 0)
                return refuse(TOKEN_MALFORMED, ret_refusal, ret_message,
                              r == -ENOENT ? "The token has no \"exp\" claim; tokens without expiry are refused."
                                           : "The \"exp\" claim is not a NumericDate.");
        if (exp + policy->leeway <= policy->now)
                return refuse(TOKEN_EXPIRED, ret_refusal, ret_message,
                              "The token expired %" PRIu64 " s ago (leeway %" PRIu64 " s).", policy->now - exp,
                              policy->leeway);

        r = token_claim_time(p.payload, "nbf", &nbf);
        if (r == -EBADMSG)
                return refuse(TOKEN_MALFORMED, ret_refusal, ret_message, "The \"nbf\" claim is not a NumericDate.");
        if (r >= 0 && nbf > policy->now + policy->leeway)
                return refuse(TOKEN_NOT_YET_VALID, ret_refusal, ret_message,
                              "The token is not valid for another %" PRIu64 " s (nbf; leeway %" PRIu64 " s).",
                              nbf - policy->now, policy->leeway);

        r = token_claim_time(p.payload, "iat", &iat);
        if (r == -EBADMSG)
                return refuse(TOKEN_MALFORMED, ret_refusal, ret_message, "The \"iat\" claim is not a NumericDate.");
        if (r == -ENOENT)
                iat = 0;
        else if (iat > policy->now + policy->leeway)
                return refuse(TOKEN_NOT_YET_VALID, ret_refusal, ret_message,
                              "The token claims to be issued %" PRIu64 " s in the future (iat).", iat - policy->now);

        sub = json_string_value(json_object_get(p.payload, "sub"));
        jti = json_string_value(json_object_get(p.payload, "jti"));
        if (revocations_check(revocations, jti, sub, iat))
                return refuse(TOKEN_REVOKED, ret_refusal, ret_message,
                              "The token (jti \"%s\", subject \"%s\") has been revoked.", shown(jti, b1),
                              shown(sub, b2));

        if (ret_claims)
                *ret_claims = json_incref(p.payload);
        if (ret_refusal)
                *ret_refusal = TOKEN_VALID;
        return 0;
}
