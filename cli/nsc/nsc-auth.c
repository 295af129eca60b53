/* SPDX-License-Identifier: MIT */
/* nsc auth: workload identity tokens (identityd): issue, validate,
 * exchange, revoke; signing keys; OIDC federation documents; trust
 * relationships with external issuers. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "hostmesh/identity/v1/identity.pb-c.h"
#include "namespace/cloud/iam/v1beta/token.pb-c.h"
#include "nsc.h"
#include "parse-util.h"

#define ID_METHOD(m) "/hostmesh.identity.v1.Identity/" m
#define TOKEN_MAX_STDIN (64U * 1024U)

static int verb_issue(Nsc *n, int argc, char **argv);
static int verb_validate(Nsc *n, int argc, char **argv);
static int verb_exchange(Nsc *n, int argc, char **argv);
static int verb_jwks(Nsc *n, int argc, char **argv);
static int verb_oidc_config(Nsc *n, int argc, char **argv);
static int verb_rotate(Nsc *n, int argc, char **argv);
static int verb_revoke(Nsc *n, int argc, char **argv);
static int verb_trust_add(Nsc *n, int argc, char **argv);
static int verb_trust_list(Nsc *n, int argc, char **argv);
static int verb_trust_remove(Nsc *n, int argc, char **argv);
static int verb_export_oidc(Nsc *n, int argc, char **argv);

NSC_COMMAND(auth_issue, .name = "auth issue-id-token", .usage = "--audience AUD [--audience AUD2...] [--duration 10m]",
            .summary = "Issue an OIDC ID token for your own identity", .run = verb_issue);
NSC_COMMAND(auth_validate, .name = "auth validate", .usage = "--token TOKEN|- --audience AUD",
            .summary = "Validate a token: its claims, or why it is refused", .run = verb_validate);
NSC_COMMAND(auth_exchange, .name = "auth exchange-token", .usage = "--token TOKEN|- --audience AUD [--duration D]",
            .summary = "Exchange a hostmesh or trusted external token for a new hostmesh token (RFC 8693)",
            .run = verb_exchange);
NSC_COMMAND(auth_jwks, .name = "auth jwks", .usage = "", .summary = "Print the published signing keys (JWKS)",
            .run = verb_jwks);
NSC_COMMAND(auth_oidc_config, .name = "auth oidc-config", .usage = "",
            .summary = "Print the OpenID Connect discovery document", .run = verb_oidc_config);
NSC_COMMAND(auth_rotate, .name = "auth rotate-keys", .usage = "",
            .summary = "Publish a new signing key now; it signs after one JWKS max-age", .run = verb_rotate);
NSC_COMMAND(auth_revoke, .name = "auth revoke", .usage = "--jti JTI | --subject SUBJECT",
            .summary = "Revoke one token, or every token of a subject issued so far", .run = verb_revoke);
NSC_COMMAND(auth_trust_add, .name = "auth trust-relationships add",
            .usage = "--issuer URL (--jwks-file PATH | --jwks-json JSON) --subject GLOB --audience AUD --tenant TENANT "
                     "[--max-duration 1h] [--id ID]",
            .summary = "Trust an external issuer's tokens for exchange into a tenant", .run = verb_trust_add);
NSC_COMMAND(auth_trust_list, .name = "auth trust-relationships list", .usage = "",
            .summary = "List trust relationships with external issuers", .run = verb_trust_list);
NSC_COMMAND(auth_trust_remove, .name = "auth trust-relationships remove", .usage = "ID",
            .summary = "Remove a trust relationship", .run = verb_trust_remove);
NSC_COMMAND(auth_export_oidc, .name = "auth export-oidc", .usage = "DIR",
            .summary = "Write the discovery document and JWKS as static files below DIR", .run = verb_export_oidc);

/* ---- arguments ------------------------------------------------------------ */

#define MAX_MULTI 16

typedef struct Opt {
        const char *name;        /* "audience" */
        bool multi;
        const char *values[MAX_MULTI];
        size_t n;
} Opt;

typedef struct Args {
        Opt *opts;
        size_t n_opts;
        const char *pos[2];
        int n_pos;
} Args;

static int parse_args(Nsc *n, const NscCommand *cmd, int argc, char **argv, Opt *opts, size_t n_opts, int max_pos,
                      Args *a) {
        *a = (Args){ .opts = opts, .n_opts = n_opts };
        for (int i = 1; i < argc; i++) {
                const char *s = argv[i], *v = NULL;
                Opt *o = NULL;

                if (strncmp(s, "--", 2) == 0 && s[2]) {
                        const char *eq = strchr(s, '=');
                        size_t len = eq ? (size_t) (eq - s - 2) : strlen(s + 2);
                        for (size_t j = 0; j < n_opts; j++)
                                if (strlen(opts[j].name) == len && strncmp(opts[j].name, s + 2, len) == 0)
                                        o = &opts[j];
                        if (!o)
                                return nsc_usage(n, cmd, "unknown option '%s'.", s);
                        if (eq)
                                v = eq + 1;
                        else if (i + 1 < argc)
                                v = argv[++i];
                        else
                                return nsc_usage(n, cmd, "option '%s' needs a value.", s);
                        if (o->n >= (o->multi ? MAX_MULTI : 1))
                                return nsc_usage(n, cmd, "option '--%s' given too often.", o->name);
                        o->values[o->n++] = v;
                        continue;
                }
                if (s[0] == '-' && s[1])
                        return nsc_usage(n, cmd, "unknown option '%s'.", s);
                if (a->n_pos >= max_pos)
                        return nsc_usage(n, cmd, "unexpected argument '%s'.", s);
                a->pos[a->n_pos++] = s;
        }
        return 0;
}

static const char *opt(Args *a, const char *name) {
        for (size_t i = 0; i < a->n_opts; i++)
                if (streq(a->opts[i].name, name))
                        return a->opts[i].n > 0 ? a->opts[i].values[0] : NULL;
        return NULL;
}

static int parse_duration_opt(Nsc *n, const NscCommand *cmd, const char *s, Google__Protobuf__Duration *d,
                              Google__Protobuf__Duration **ret) {
        uint64_t usec;

        *ret = NULL;
        if (!s)
                return 0;
        if (parse_usec(s, &usec) < 0 || usec == 0)
                return nsc_usage(n, cmd, "invalid duration '%s'; use e.g. 10m, 1h, 90s.", s);
        *d = (Google__Protobuf__Duration) GOOGLE__PROTOBUF__DURATION__INIT;
        d->seconds = (int64_t) (usec / USEC_PER_SEC);
        d->nanos = (int32_t) (usec % USEC_PER_SEC) * 1000;
        *ret = d;
        return 0;
}

/* "--token -" reads the token from stdin, keeping it out of argv (and ps). */
static int read_token(Nsc *n, const char *arg, char **ret) {
        char *buf;
        size_t len;

        if (!streq(arg, "-")) {
                *ret = strdup(arg);
                return *ret ? 0 : nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
        }
        buf = malloc(TOKEN_MAX_STDIN + 1);
        if (!buf)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
        len = fread(buf, 1, TOKEN_MAX_STDIN, stdin);
        buf[len] = 0;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
                buf[--len] = 0;
        if (len == 0) {
                free(buf);
                return nsc_fail(n, NSC_EXIT_USAGE, "INVALID_ARGUMENT", "No token on standard input.");
        }
        *ret = buf;
        return 0;
}

static json_t *json_or_string(const char *text) {
        json_t *v = json_loads(text ?: "", 0, NULL);
        return v ?: json_string(text ?: "");
}

static void print_time_json(json_t *o, const char *key, const Google__Protobuf__Timestamp *t) {
        char *s;
        if (!t)
                return;
        s = nsc_format_time(t->seconds, t->nanos);
        if (s)
                json_object_set_new(o, key, json_string(s));
        free(s);
}

/* ---- verbs ---------------------------------------------------------------- */

static int verb_issue(Nsc *n, int argc, char **argv) {
        Opt opts[] = { { "audience", .multi = true }, { "duration" } };
        Google__Protobuf__Duration dur, *d = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_issue, argc, argv, opts, ELEMENTSOF(opts), 0, &a);
        if (r != 0)
                return r;
        if (opts[0].n == 0)
                return nsc_usage(n, &nsc_command_auth_issue, "--audience is required: who is the token for?");
        r = parse_duration_opt(n, &nsc_command_auth_issue, opt(&a, "duration"), &dur, &d);
        if (r != 0)
                return r;

        if (!d && opts[0].n == 1) {
                /* The public API, as any Namespace client would call it. */
                Namespace__Cloud__Iam__V1beta__IssueIdTokenRequest req = NAMESPACE__CLOUD__IAM__V1BETA__ISSUE_ID_TOKEN_REQUEST__INIT;
                Namespace__Cloud__Iam__V1beta__IssueIdTokenResponse *resp = NULL;

                req.audience = (char *) opts[0].values[0];
                r = nsc_call(n, "/namespace.cloud.iam.v1beta.TokenService/IssueIdToken", &req.base,
                             &namespace__cloud__iam__v1beta__issue_id_token_response__descriptor, (ProtobufCMessage **) &resp);
                if (r != 0)
                        return r;
                if (n->json)
                        nsc_print_json(json_pack("{s:s}", "id_token", resp->id_token));
                else
                        printf("%s\n", resp->id_token);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return NSC_EXIT_OK;
        }

        Hostmesh__Identity__V1__IssueIdTokenRequest req = HOSTMESH__IDENTITY__V1__ISSUE_ID_TOKEN_REQUEST__INIT;
        Hostmesh__Identity__V1__IssueIdTokenResponse *resp = NULL;
        req.n_audience = opts[0].n;
        req.audience = (char **) opts[0].values;
        req.duration = d;
        r = nsc_call(n, ID_METHOD("IssueIdToken"), &req.base, &hostmesh__identity__v1__issue_id_token_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *o = json_pack("{s:s, s:s, s:s}", "id_token", resp->id_token, "jti", resp->jti, "subject",
                                      resp->subject);
                print_time_json(o, "expires_at", resp->expires_at);
                nsc_print_json(o);
        } else
                printf("%s\n", resp->id_token);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_validate(Nsc *n, int argc, char **argv) {
        Opt opts[] = { { "token" }, { "audience" } };
        Hostmesh__Identity__V1__ValidateTokenRequest req = HOSTMESH__IDENTITY__V1__VALIDATE_TOKEN_REQUEST__INIT;
        Hostmesh__Identity__V1__ValidateTokenResponse *resp = NULL;
        _cleanup_free_ char *token = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_validate, argc, argv, opts, ELEMENTSOF(opts), 0, &a);
        if (r != 0)
                return r;
        if (!opt(&a, "token") || isempty(opt(&a, "audience")))
                return nsc_usage(n, &nsc_command_auth_validate,
                                 "--token and --audience are required (an empty audience matches nothing).");
        r = read_token(n, opt(&a, "token"), &token);
        if (r != 0)
                return r;
        req.token = token;
        req.audience = (char *) opt(&a, "audience");
        r = nsc_call(n, ID_METHOD("ValidateToken"), &req.base, &hostmesh__identity__v1__validate_token_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *o = json_pack("{s:b, s:s}", "valid", resp->valid, "reason", resp->reason);
                if (resp->valid) {
                        json_object_set_new(o, "claims", json_or_string(resp->claims_json));
                        print_time_json(o, "expires_at", resp->expires_at);
                } else
                        json_object_set_new(o, "message", json_string(resp->message));
                nsc_print_json(o);
        } else if (resp->valid) {
                json_t *claims = json_or_string(resp->claims_json);
                char *s = json_dumps(claims, JSON_INDENT(2) | JSON_SORT_KEYS);
                printf("%s\n", s ?: "");
                free(s);
                json_decref(claims);
        } else
                fprintf(stderr, "Token refused (%s): %s\n", resp->reason, resp->message);
        r = resp->valid ? NSC_EXIT_OK : NSC_EXIT_DENIED;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

static int verb_exchange(Nsc *n, int argc, char **argv) {
        Opt opts[] = { { "token" }, { "audience", .multi = true }, { "duration" } };
        Hostmesh__Identity__V1__ExchangeTokenRequest req = HOSTMESH__IDENTITY__V1__EXCHANGE_TOKEN_REQUEST__INIT;
        Hostmesh__Identity__V1__ExchangeTokenResponse *resp = NULL;
        Google__Protobuf__Duration dur;
        _cleanup_free_ char *token = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_exchange, argc, argv, opts, ELEMENTSOF(opts), 0, &a);
        if (r != 0)
                return r;
        if (!opt(&a, "token") || opts[1].n == 0)
                return nsc_usage(n, &nsc_command_auth_exchange, "--token and --audience are required.");
        r = parse_duration_opt(n, &nsc_command_auth_exchange, opt(&a, "duration"), &dur, &req.duration);
        if (r != 0)
                return r;
        r = read_token(n, opt(&a, "token"), &token);
        if (r != 0)
                return r;
        req.subject_token = token;
        req.subject_token_type = (char *) "urn:ietf:params:oauth:token-type:jwt";
        req.n_audience = opts[1].n;
        req.audience = (char **) opts[1].values;
        r = nsc_call(n, ID_METHOD("ExchangeToken"), &req.base, &hostmesh__identity__v1__exchange_token_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                /* The RFC 8693 §2.2.1 response members, plus what we know. */
                json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "access_token", resp->access_token,
                                      "issued_token_type", resp->issued_token_type, "token_type", resp->token_type,
                                      "expires_in", (json_int_t) resp->expires_in, "jti", resp->jti, "subject",
                                      resp->subject, "tenant_id", resp->tenant_id);
                if (!isempty(resp->trust_relationship_id))
                        json_object_set_new(o, "trust_relationship_id", json_string(resp->trust_relationship_id));
                print_time_json(o, "expires_at", resp->expires_at);
                nsc_print_json(o);
        } else
                printf("%s\n", resp->access_token);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_jwks(Nsc *n, int argc, char **argv) {
        Hostmesh__Identity__V1__GetJwksRequest req = HOSTMESH__IDENTITY__V1__GET_JWKS_REQUEST__INIT;
        Hostmesh__Identity__V1__GetJwksResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_jwks, argc, argv, NULL, 0, 0, &a);
        if (r != 0)
                return r;
        r = nsc_call(n, ID_METHOD("GetJwks"), &req.base, &hostmesh__identity__v1__get_jwks_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_or_string(resp->jwks_json));
        else {
                json_t *j = json_or_string(resp->jwks_json), *k;
                size_t i;
                printf("%-45s %-6s %s\n", "KID", "ALG", "TYPE");
                json_array_foreach(json_object_get(j, "keys"), i, k)
                        printf("%-45s %-6s %s\n", json_string_value(json_object_get(k, "kid")),
                               json_string_value(json_object_get(k, "alg")), json_string_value(json_object_get(k, "kty")));
                printf("\nETag %s, max-age %llds\n", resp->etag, (long long) resp->max_age_seconds);
                json_decref(j);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int get_oidc(Nsc *n, Hostmesh__Identity__V1__GetOpenIdConfigurationResponse **ret) {
        Hostmesh__Identity__V1__GetOpenIdConfigurationRequest req = HOSTMESH__IDENTITY__V1__GET_OPEN_ID_CONFIGURATION_REQUEST__INIT;
        return nsc_call(n, ID_METHOD("GetOpenIdConfiguration"), &req.base,
                        &hostmesh__identity__v1__get_open_id_configuration_response__descriptor, (ProtobufCMessage **) ret);
}

static int verb_oidc_config(Nsc *n, int argc, char **argv) {
        Hostmesh__Identity__V1__GetOpenIdConfigurationResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_oidc_config, argc, argv, NULL, 0, 0, &a);
        if (r != 0)
                return r;
        r = get_oidc(n, &resp);
        if (r != 0)
                return r;
        nsc_print_json(json_or_string(resp->document_json));
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_rotate(Nsc *n, int argc, char **argv) {
        Hostmesh__Identity__V1__RotateKeysRequest req = HOSTMESH__IDENTITY__V1__ROTATE_KEYS_REQUEST__INIT;
        Hostmesh__Identity__V1__RotateKeysResponse *resp = NULL;
        _cleanup_free_ char *from = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_rotate, argc, argv, NULL, 0, 0, &a);
        if (r != 0)
                return r;
        r = nsc_call(n, ID_METHOD("RotateKeys"), &req.base, &hostmesh__identity__v1__rotate_keys_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        from = resp->next_signs_from ? nsc_format_time(resp->next_signs_from->seconds, 0) : NULL;
        if (n->json)
                nsc_print_json(json_pack("{s:s, s:s, s:s, s:o}", "signing_kid", resp->signing_kid, "next_kid",
                                         resp->next_kid, "next_signs_from", from ?: "", "keys",
                                         json_or_string(resp->keys_json)));
        else
                printf("Key %s is published and signs from %s; %s signs until then.\n", resp->next_kid, from ?: "?",
                       resp->signing_kid);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_revoke(Nsc *n, int argc, char **argv) {
        Opt opts[] = { { "jti" }, { "subject" } };
        Google__Protobuf__Timestamp *until = NULL;
        ProtobufCMessage *resp = NULL;
        _cleanup_free_ char *u = NULL;
        const char *what;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_revoke, argc, argv, opts, ELEMENTSOF(opts), 0, &a);
        if (r != 0)
                return r;
        if (!!opt(&a, "jti") == !!opt(&a, "subject"))
                return nsc_usage(n, &nsc_command_auth_revoke, "give exactly one of --jti or --subject.");
        if (opt(&a, "jti")) {
                Hostmesh__Identity__V1__RevokeTokenRequest req = HOSTMESH__IDENTITY__V1__REVOKE_TOKEN_REQUEST__INIT;
                req.jti = (char *) opt(&a, "jti");
                what = opt(&a, "jti");
                r = nsc_call(n, ID_METHOD("RevokeToken"), &req.base,
                             &hostmesh__identity__v1__revoke_token_response__descriptor, &resp);
                if (r != 0)
                        return r;
                until = ((Hostmesh__Identity__V1__RevokeTokenResponse *) resp)->kept_until;
        } else {
                Hostmesh__Identity__V1__RevokeSubjectRequest req = HOSTMESH__IDENTITY__V1__REVOKE_SUBJECT_REQUEST__INIT;
                req.subject = (char *) opt(&a, "subject");
                what = opt(&a, "subject");
                r = nsc_call(n, ID_METHOD("RevokeSubject"), &req.base,
                             &hostmesh__identity__v1__revoke_subject_response__descriptor, &resp);
                if (r != 0)
                        return r;
                until = ((Hostmesh__Identity__V1__RevokeSubjectResponse *) resp)->kept_until;
        }
        u = until ? nsc_format_time(until->seconds, 0) : NULL;
        if (n->json) {
                json_t *o = json_object();
                json_object_set_new(o, opt(&a, "jti") ? "jti" : "subject", json_string(what));
                json_object_set_new(o, "kept_until", json_string(u ?: ""));
                nsc_print_json(o);
        } else
                printf("Revoked %s %s (remembered until %s).\n", opt(&a, "jti") ? "token" : "subject", what, u ?: "?");
        protobuf_c_message_free_unpacked(resp, NULL);
        return NSC_EXIT_OK;
}

static json_t *relationship_json(const Hostmesh__Identity__V1__TrustRelationship *t) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "id", t->id, "issuer", t->issuer, "subject_pattern",
                              t->subject_pattern, "audience", t->audience, "tenant_id", t->tenant_id, "max_duration_seconds",
                              (json_int_t) (t->max_duration ? t->max_duration->seconds : 0));
        if (!isempty(t->jwks_file))
                json_object_set_new(o, "jwks_file", json_string(t->jwks_file));
        if (!isempty(t->jwks_json))
                json_object_set_new(o, "jwks", json_or_string(t->jwks_json));
        print_time_json(o, "created", t->created);
        return o;
}

static int verb_trust_add(Nsc *n, int argc, char **argv) {
        Opt opts[] = { { "issuer" }, { "jwks-file" }, { "jwks-json" }, { "subject" }, { "audience" }, { "tenant" },
                       { "max-duration" }, { "id" } };
        Hostmesh__Identity__V1__AddTrustRelationshipRequest req = HOSTMESH__IDENTITY__V1__ADD_TRUST_RELATIONSHIP_REQUEST__INIT;
        Hostmesh__Identity__V1__AddTrustRelationshipResponse *resp = NULL;
        Hostmesh__Identity__V1__TrustRelationship t = HOSTMESH__IDENTITY__V1__TRUST_RELATIONSHIP__INIT;
        Google__Protobuf__Duration dur;
        _cleanup_free_ char *abs_file = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_trust_add, argc, argv, opts, ELEMENTSOF(opts), 0, &a);
        if (r != 0)
                return r;
        if (!opt(&a, "issuer") || !opt(&a, "subject") || !opt(&a, "audience") || !opt(&a, "tenant"))
                return nsc_usage(n, &nsc_command_auth_trust_add, "--issuer, --subject, --audience and --tenant are required.");
        if (!!opt(&a, "jwks-file") == !!opt(&a, "jwks-json"))
                return nsc_usage(n, &nsc_command_auth_trust_add, "give exactly one of --jwks-file or --jwks-json.");
        r = parse_duration_opt(n, &nsc_command_auth_trust_add, opt(&a, "max-duration") ?: "1h", &dur, &t.max_duration);
        if (r != 0)
                return r;
        if (opt(&a, "jwks-file")) {
                /* identityd reads the file itself, so it needs an absolute path. */
                abs_file = realpath(opt(&a, "jwks-file"), NULL);
                if (!abs_file)
                        return nsc_fail(n, NSC_EXIT_USAGE, "INVALID_ARGUMENT", "Cannot resolve --jwks-file %s: %m.",
                                        opt(&a, "jwks-file"));
                t.jwks_file = abs_file;
        } else
                t.jwks_json = (char *) opt(&a, "jwks-json");
        t.issuer = (char *) opt(&a, "issuer");
        t.subject_pattern = (char *) opt(&a, "subject");
        t.audience = (char *) opt(&a, "audience");
        t.tenant_id = (char *) opt(&a, "tenant");
        t.id = (char *) (opt(&a, "id") ?: "");
        req.relationship = &t;
        r = nsc_call(n, ID_METHOD("AddTrustRelationship"), &req.base,
                     &hostmesh__identity__v1__add_trust_relationship_response__descriptor, (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(relationship_json(resp->relationship));
        else
                printf("Trust relationship %s: tokens of %s with subject %s for %s exchange into tenant %s.\n",
                       resp->relationship->id, resp->relationship->issuer, resp->relationship->subject_pattern,
                       resp->relationship->audience, resp->relationship->tenant_id);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_trust_list(Nsc *n, int argc, char **argv) {
        Hostmesh__Identity__V1__ListTrustRelationshipsRequest req = HOSTMESH__IDENTITY__V1__LIST_TRUST_RELATIONSHIPS_REQUEST__INIT;
        Hostmesh__Identity__V1__ListTrustRelationshipsResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_trust_list, argc, argv, NULL, 0, 0, &a);
        if (r != 0)
                return r;
        r = nsc_call(n, ID_METHOD("ListTrustRelationships"), &req.base,
                     &hostmesh__identity__v1__list_trust_relationships_response__descriptor, (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *arr = json_array();
                for (size_t i = 0; i < resp->n_relationships; i++)
                        json_array_append_new(arr, relationship_json(resp->relationships[i]));
                nsc_print_json(json_pack("{s:o}", "trust_relationships", arr));
        } else {
                printf("%-18s %-40s %-24s %-16s %s\n", "ID", "ISSUER", "SUBJECT", "TENANT", "AUDIENCE");
                for (size_t i = 0; i < resp->n_relationships; i++) {
                        const Hostmesh__Identity__V1__TrustRelationship *t = resp->relationships[i];
                        printf("%-18s %-40s %-24s %-16s %s\n", t->id, t->issuer, t->subject_pattern, t->tenant_id,
                               t->audience);
                }
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_trust_remove(Nsc *n, int argc, char **argv) {
        Hostmesh__Identity__V1__RemoveTrustRelationshipRequest req = HOSTMESH__IDENTITY__V1__REMOVE_TRUST_RELATIONSHIP_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_trust_remove, argc, argv, NULL, 0, 1, &a);
        if (r != 0)
                return r;
        if (a.n_pos != 1)
                return nsc_usage(n, &nsc_command_auth_trust_remove, "the ID to remove is required.");
        req.id = (char *) a.pos[0];
        r = nsc_call(n, ID_METHOD("RemoveTrustRelationship"), &req.base,
                     &hostmesh__identity__v1__remove_trust_relationship_response__descriptor, &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:s}", "removed", req.id));
        else
                printf("Removed trust relationship %s.\n", req.id);
        protobuf_c_message_free_unpacked(resp, NULL);
        return NSC_EXIT_OK;
}

static int write_doc(Nsc *n, const char *dir, const char *rel, const char *text, char **ret_path) {
        _cleanup_free_ char *path = NULL, *parent = NULL;
        char *slash;
        int r;

        if (strstr(rel, "/../") || strstr(rel, "/./") || strstr(rel, "//"))
                return nsc_fail(n, NSC_EXIT_FAILURE, "INVALID_ARGUMENT", "Refusing to write to path %s.", rel);
        path = path_join(dir, rel);
        if (!path)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
        parent = strdup(path);
        if (!parent)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
        slash = strrchr(parent, '/');
        if (slash && slash != parent) {
                *slash = 0;
                r = mkdir_p(parent, 0755);
                if (r < 0)
                        return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Cannot create %s: %s.", parent, strerror(-r));
        }
        r = write_file_atomic(path, text, strlen(text), 0644);
        if (r < 0)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Cannot write %s: %s.", path, strerror(-r));
        *ret_path = TAKE_PTR(path);
        return 0;
}

static int verb_export_oidc(Nsc *n, int argc, char **argv) {
        Hostmesh__Identity__V1__GetOpenIdConfigurationResponse *oidc = NULL;
        Hostmesh__Identity__V1__GetJwksRequest jreq = HOSTMESH__IDENTITY__V1__GET_JWKS_REQUEST__INIT;
        Hostmesh__Identity__V1__GetJwksResponse *jwks = NULL;
        _cleanup_free_ char *disc_rel = NULL, *jwks_rel = NULL, *p1 = NULL, *p2 = NULL;
        const char *issuer_path;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_auth_export_oidc, argc, argv, NULL, 0, 1, &a);
        if (r != 0)
                return r;
        if (a.n_pos != 1)
                return nsc_usage(n, &nsc_command_auth_export_oidc, "the output DIR is required.");
        r = get_oidc(n, &oidc);
        if (r != 0)
                return r;
        r = nsc_call(n, ID_METHOD("GetJwks"), &jreq.base, &hostmesh__identity__v1__get_jwks_response__descriptor,
                     (ProtobufCMessage **) &jwks);
        if (r != 0)
                goto finish;
        /* DIR is the web root of the issuer's host: an issuer with a path
         * (https://host/tenant) gets its documents below that path. */
        issuer_path = strncmp(oidc->issuer, "https://", 8) == 0 ? strchr(oidc->issuer + 8, '/') : NULL;
        if (asprintf(&disc_rel, "%s/.well-known/openid-configuration", issuer_path ?: "") < 0 ||
            asprintf(&jwks_rel, "%s%s", issuer_path ?: "", oidc->jwks_path) < 0) {
                r = nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
                goto finish;
        }
        r = write_doc(n, a.pos[0], disc_rel, oidc->document_json, &p1);
        if (r != 0)
                goto finish;
        r = write_doc(n, a.pos[0], jwks_rel, jwks->jwks_json, &p2);
        if (r != 0)
                goto finish;
        if (n->json)
                nsc_print_json(json_pack("{s:s, s:s, s:s, s:I}", "openid_configuration", p1, "jwks", p2, "issuer",
                                         oidc->issuer, "max_age_seconds", (json_int_t) jwks->max_age_seconds));
        else
                printf("Wrote %s and %s.\nServe them at %s with Cache-Control max-age=%lld or less.\n", p1, p2,
                       oidc->issuer, (long long) jwks->max_age_seconds);
        r = NSC_EXIT_OK;
finish:
        if (oidc)
                protobuf_c_message_free_unpacked(&oidc->base, NULL);
        if (jwks)
                protobuf_c_message_free_unpacked(&jwks->base, NULL);
        return r;
}
