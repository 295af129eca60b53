/* SPDX-License-Identifier: MIT */
/* A Connect call runs on the loop thread from end to end: the HTTP request
 * comes in, the caller is authenticated, the message is transcoded when it
 * is JSON, and one gRPC call goes to the backend whose completions
 * (rpc_batch) come back to the loop. The call lives until its HTTP answer is
 * out (or the client left) and its last batch has completed. */

#include <ctype.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <strings.h>
#include <sys/socket.h>

#include "parse-util.h"
#include "gateway-auth.h"
#include "gateway-bearer.h"
#include "gateway-connect.h"
#include "gateway-manager.h"
#include "grpc/health/v1/health.pb-c.h"
#include "hostmesh/disk/v1/disk.pb-c.h"
#include "hostmesh/dns/v1/dns.pb-c.h"
#include "hostmesh/dockerproxy/v1/dockerproxy.pb-c.h"
#include "hostmesh/identity/v1/identity.pb-c.h"
#include "hostmesh/vmm/v1/vmm.pb-c.h"
#include "log.h"
#include "namespace/cloud/compute/v1beta/compute.pb-c.h"
#include "namespace/cloud/iam/v1beta/token.pb-c.h"
#include "proto-json.h"
#include "rpc-raw.h"

#define CONNECT_TIMEOUT_DIGITS_MAX 10  /* Connect spec: at most 10 digits */
#define CONNECT_METADATA_MAX 32

/* ---- codes --------------------------------------------------------------------- */

static const struct {
        const char *name;
        int http;
} connect_codes[] = {
        /* Connect spec, "Error Codes": the name and the HTTP status of each gRPC code. */
        [RPC_OK] = { "ok", 200 },
        [RPC_CANCELLED] = { "canceled", 499 },
        [RPC_UNKNOWN] = { "unknown", 500 },
        [RPC_INVALID_ARGUMENT] = { "invalid_argument", 400 },
        [RPC_DEADLINE_EXCEEDED] = { "deadline_exceeded", 504 },
        [RPC_NOT_FOUND] = { "not_found", 404 },
        [RPC_ALREADY_EXISTS] = { "already_exists", 409 },
        [RPC_PERMISSION_DENIED] = { "permission_denied", 403 },
        [RPC_RESOURCE_EXHAUSTED] = { "resource_exhausted", 429 },
        [RPC_FAILED_PRECONDITION] = { "failed_precondition", 400 },
        [RPC_ABORTED] = { "aborted", 409 },
        [RPC_OUT_OF_RANGE] = { "out_of_range", 400 },
        [RPC_UNIMPLEMENTED] = { "unimplemented", 501 },
        [RPC_INTERNAL] = { "internal", 500 },
        [RPC_UNAVAILABLE] = { "unavailable", 503 },
        [RPC_DATA_LOSS] = { "data_loss", 500 },
        [RPC_UNAUTHENTICATED] = { "unauthenticated", 401 },
};

const char *connect_code_name(RpcCode code) {
        if ((unsigned) code >= ELEMENTSOF(connect_codes))
                return "unknown";
        return connect_codes[code].name;
}

int connect_code_http_status(RpcCode code) {
        if ((unsigned) code >= ELEMENTSOF(connect_codes))
                return 500;
        return connect_codes[code].http;
}

char *connect_error_json(RpcCode code, const char *message) {
        json_t *j = json_pack("{s:s}", "code", connect_code_name(code));
        char *s;
        if (!j)
                return NULL;
        if (!isempty(message))
                (void) json_object_set_new(j, "message", json_string(message) ?: json_string("(not UTF-8)"));
        s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(j);
        return s;
}

/* ---- methods ------------------------------------------------------------------- */

static const ProtobufCServiceDescriptor *const services[] = {
        &namespace__cloud__compute__v1beta__compute_service__descriptor,
        &namespace__cloud__compute__v1beta__command_service__descriptor,
        &namespace__cloud__compute__v1beta__observability_service__descriptor,
        &namespace__cloud__iam__v1beta__token_service__descriptor,
        &hostmesh__vmm__v1__vmm__descriptor,
        &hostmesh__disk__v1__disk__descriptor,
        &hostmesh__dns__v1__dns__descriptor,
        &hostmesh__dockerproxy__v1__docker_proxy__descriptor,
        &hostmesh__identity__v1__identity__descriptor,
        &grpc__health__v1__health__descriptor,
};

const ProtobufCMethodDescriptor *connect_method_find(const char *method) {
        const char *slash;
        size_t service_len;

        if (method[0] != '/')
                return NULL;
        slash = strchr(method + 1, '/');
        if (!slash)
                return NULL;
        service_len = (size_t) (slash - method - 1);
        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                const ProtobufCServiceDescriptor *s = services[i];
                if (strlen(s->name) != service_len || strncmp(s->name, method + 1, service_len) != 0)
                        continue;
                for (unsigned k = 0; k < s->n_methods; k++)
                        if (streq(s->methods[k].name, slash + 1))
                                return &s->methods[k];
        }
        return NULL;
}

/* ---- request parsing ------------------------------------------------------------ */

_printf_(3, 4) static int refuse(int status, char **ret_message, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(ret_message, fmt, ap) < 0)
                *ret_message = NULL;
        va_end(ap);
        return status;
}

const char *const connect_idempotent_methods[] = {
        "/namespace.cloud.compute.v1beta.ComputeService/DescribeInstance",
        "/namespace.cloud.compute.v1beta.ComputeService/ListInstances",
        "/namespace.cloud.compute.v1beta.ComputeService/GetInstanceMetrics",
        "/namespace.cloud.compute.v1beta.ObservabilityService/FetchInstanceLogs",
        NULL,
};

bool connect_method_is_idempotent(const char *method) {
        for (size_t i = 0; connect_idempotent_methods[i]; i++)
                if (streq(connect_idempotent_methods[i], method))
                        return true;
        return false;
}

void connect_request_done(ConnectRequest *r) {
        if (!r)
                return;
        free(r->storage);
        r->storage = NULL;
        r->message = NULL;
        r->message_len = 0;
}

/* Percent-decoding of one query value (RFC 3986 §2.1; '+' is a space, as
 * in form encoding). Returns the length, or -EBADMSG. */
static ssize_t query_unescape(const char *s, size_t len, uint8_t *out) {
        size_t n = 0;
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '%') {
                        int hi, lo;
                        if (i + 2 >= len)
                                return -EBADMSG;
                        hi = unhexchar(s[i + 1]);
                        lo = unhexchar(s[i + 2]);
                        if (hi < 0 || lo < 0)
                                return -EBADMSG;
                        out[n++] = (uint8_t) (hi << 4 | lo);
                        i += 2;
                } else
                        out[n++] = s[i] == '+' ? ' ' : (uint8_t) s[i];
        }
        return (ssize_t) n;
}

/* The GET form (Connect spec, "Unary-Get-Request"). */
static int parse_get_query(const char *query, ConnectRequest *r, RpcCode *ret_code, char **ret_message) {
        const char *encoding = NULL, *message = NULL, *connect = NULL, *base64 = NULL, *compression = NULL;
        size_t encoding_len = 0, message_len = 0, connect_len = 0, base64_len = 0, compression_len = 0;
        ssize_t n;

        for (const char *p = query; *p;) {
                size_t len = strcspn(p, "&");
                const char *eq = memchr(p, '=', len);
                size_t klen = eq ? (size_t) (eq - p) : len;
                const char *v = eq ? eq + 1 : p + len;
                size_t vlen = eq ? len - klen - 1 : 0;
                const char **slot = NULL;
                size_t *slot_len = NULL;

                if (klen == 8 && memcmp(p, "encoding", 8) == 0)
                        slot = &encoding, slot_len = &encoding_len;
                else if (klen == 7 && memcmp(p, "message", 7) == 0)
                        slot = &message, slot_len = &message_len;
                else if (klen == 7 && memcmp(p, "connect", 7) == 0)
                        slot = &connect, slot_len = &connect_len;
                else if (klen == 6 && memcmp(p, "base64", 6) == 0)
                        slot = &base64, slot_len = &base64_len;
                else if (klen == 11 && memcmp(p, "compression", 11) == 0)
                        slot = &compression, slot_len = &compression_len;
                if (slot) {
                        if (*slot)
                                return refuse(400, ret_message, "The query gives %.*s twice.", (int) klen, p);
                        *slot = v;
                        *slot_len = vlen;
                }
                p += len;
                if (*p == '&')
                        p++;
        }
        if (connect && !(connect_len == 2 && memcmp(connect, "v1", 2) == 0))
                return refuse(400, ret_message, "connect=%.*s is not supported: only connect=v1.",
                              (int) MIN(connect_len, (size_t) 16), connect);
        if (!encoding)
                return refuse(415, ret_message, "A GET call names its codec: encoding=json or encoding=proto.");
        if (encoding_len == 4 && memcmp(encoding, "json", 4) == 0)
                r->json = true;
        else if (!(encoding_len == 5 && memcmp(encoding, "proto", 5) == 0))
                return refuse(415, ret_message, "encoding=%.*s is not served: json or proto.",
                              (int) MIN(encoding_len, (size_t) 32), encoding);
        if (compression && !(compression_len == 8 && memcmp(compression, "identity", 8) == 0)) {
                *ret_code = RPC_UNIMPLEMENTED;
                return refuse(501, ret_message, "compression=%.*s is not supported; send the message uncompressed.",
                              (int) MIN(compression_len, (size_t) 32), compression);
        }
        if (base64 && !(base64_len == 1 && (base64[0] == '1' || base64[0] == '0')))
                return refuse(400, ret_message, "base64 is 1 or absent, not '%.*s'.", (int) MIN(base64_len, (size_t) 16),
                              base64);
        r->storage = malloc(message_len + 1);
        if (!r->storage) {
                *ret_code = RPC_RESOURCE_EXHAUSTED;
                return refuse(503, ret_message, "Out of memory.");
        }
        n = query_unescape(message ?: "", message_len, r->storage);
        if (n >= 0 && base64 && base64[0] == '1') {
                uint8_t *bin = NULL;
                size_t bin_len = 0;
                if (proto_base64_decode((const char *) r->storage, (size_t) n, &bin, &bin_len) < 0)
                        n = -EBADMSG;
                else {
                        free(r->storage);
                        r->storage = bin;  /* room for the NUL: decoding shrinks */
                        n = (ssize_t) bin_len;
                }
        }
        if (n < 0) {
                connect_request_done(r);
                return refuse(400, ret_message, "The message in the query is not %s.",
                              base64 && base64[0] == '1' ? "percent-encoded base64url" : "percent-encoded");
        }
        r->storage[n] = 0;
        r->message = r->storage;
        r->message_len = (size_t) n;
        r->get = true;
        return 0;
}


/* "application/json; charset=utf-8" → "application/json" */
static bool media_type_is(const char *value, const char *type) {
        size_t n = strlen(type);
        if (strncasecmp(value, type, n) != 0)
                return false;
        value += n;
        while (*value == ' ' || *value == '\t')
                value++;
        return *value == 0 || *value == ';';
}

bool gateway_connect_is_grpc(const char *content_type) {
        return strncasecmp(content_type, "application/grpc", 16) == 0 &&
               (content_type[16] == 0 || content_type[16] == '+' || content_type[16] == ';');
}

static int timeout_parse(const char *timeout, uint64_t *ret) {
        uint64_t ms = 0;
        size_t n;

        if (!timeout)
                return 0;
        n = strlen(timeout);
        if (n == 0 || n > CONNECT_TIMEOUT_DIGITS_MAX || strspn(timeout, "0123456789") != n)
                return -EINVAL;
        for (const char *p = timeout; *p; p++)
                ms = ms * 10 + (uint64_t) (*p - '0');
        *ret = ms == 0 ? 1 : ms * USEC_PER_MSEC;
        return 0;
}

int connect_request_parse(const HttpRequest *req, ConnectRequest *ret, RpcCode *ret_code, char **ret_message) {
        const char *ctype = http_request_header(req, "Content-Type");
        const char *version = http_request_header(req, "Connect-Protocol-Version");
        const char *timeout = http_request_header(req, "Connect-Timeout-Ms");
        const char *encoding;
        ConnectRequest r = {};
        const char *query = strchr(req->target, '?');
        size_t len = query ? (size_t) (query - req->target) : strlen(req->target);
        bool get = streq(req->method, "GET");

        *ret_message = NULL;
        *ret_code = RPC_INVALID_ARGUMENT;
        if (!streq(req->method, "POST") && !get) {
                *ret_code = RPC_UNIMPLEMENTED;
                return refuse(405, ret_message, "Connect calls are POST requests (or GET for idempotent ones), not %s.",
                              req->method);
        }
        /* The path is /<package>.<Service>/<Method>, nothing else (a query only on GET). */
        if (len < 4 || len >= sizeof(r.method) || req->target[0] != '/' || (query && !get) ||
            !memchr(req->target + 1, '/', len - 1) ||
            memchr(strchr(req->target + 1, '/') + 1, '/', (size_t) (req->target + len - strchr(req->target + 1, '/') - 1))) {
                *ret_code = RPC_UNIMPLEMENTED;
                return refuse(404, ret_message, "No Connect method at %s: paths are /package.Service/Method.",
                              req->target);
        }
        for (const char *p = req->target + 1; p < req->target + len; p++)
                if (!isalnum((unsigned char) *p) && *p != '.' && *p != '_' && *p != '/') {
                        *ret_code = RPC_UNIMPLEMENTED;
                        return refuse(404, ret_message, "No Connect method at %.*s.", (int) len, req->target);
                }
        memcpy(r.method, req->target, len);
        r.method[len] = 0;

        if (get) {
                /* Connect spec: GET is for procedures marked side-effect free. */
                if (!connect_method_is_idempotent(r.method)) {
                        *ret_code = RPC_UNIMPLEMENTED;
                        return refuse(405, ret_message,
                                      "%s is not marked idempotent (NO_SIDE_EFFECTS): call it with POST.", r.method + 1);
                }
                int status = parse_get_query(query ? query + 1 : "", &r, ret_code, ret_message);
                if (status != 0)
                        return status;
                if (timeout_parse(http_request_header(req, "Connect-Timeout-Ms"), &r.timeout_usec) < 0) {
                        connect_request_done(&r);
                        return refuse(400, ret_message, "Connect-Timeout-Ms must be 1 to 10 digits.");
                }
                *ret = r;
                *ret_code = RPC_OK;
                return 0;
        }

        if (!ctype)
                return refuse(415, ret_message, "Missing Content-Type.");
        if (media_type_is(ctype, "application/json"))
                r.json = true;
        else if (media_type_is(ctype, "application/proto"))
                r.json = false;
        else if (media_type_is(ctype, "application/connect+json"))
                r.json = r.streaming = true;
        else if (media_type_is(ctype, "application/connect+proto"))
                r.streaming = true;
        else
                return refuse(415, ret_message,
                              "Content-Type %s is not served: application/json, application/proto, "
                              "application/connect+json or application/connect+proto.", ctype);

        if (version && !streq(version, "1"))
                return refuse(400, ret_message,
                              "Connect-Protocol-Version %s is not supported: only 1.", version);
        if (timeout_parse(timeout, &r.timeout_usec) < 0)
                return refuse(400, ret_message, "Connect-Timeout-Ms must be 1 to 10 digits, not '%s'.", timeout);
        /* No compression is offered; identity is always fine. */
        encoding = http_request_header(req, r.streaming ? "Connect-Content-Encoding" : "Content-Encoding");
        if (encoding && strcasecmp(encoding, "identity") != 0) {
                *ret_code = RPC_UNIMPLEMENTED;
                return refuse(r.streaming ? 200 : 501, ret_message,
                              "Compression %s is not supported; send the message uncompressed.", encoding);
        }

        if (r.streaming) {
                /* One envelope: flags (1 byte), length (4 bytes, big-endian), message. */
                const uint8_t *b = (const uint8_t *) req->body;
                uint32_t n;
                if (req->body_len < 5)
                        return refuse(200, ret_message,
                                      "A streaming request holds one enveloped message (5-byte prefix), got %zu bytes.",
                                      req->body_len);
                n = (uint32_t) b[1] << 24 | (uint32_t) b[2] << 16 | (uint32_t) b[3] << 8 | b[4];
                if (b[0] != 0)
                        return refuse(200, ret_message,
                                      "Envelope flags 0x%02x are not allowed on a request message.", b[0]);
                if ((size_t) n != req->body_len - 5)
                        return refuse(200, ret_message,
                                      "The envelope says %u bytes but %zu follow; server-streaming calls take exactly "
                                      "one request message.", n, req->body_len - 5);
                r.message = b + 5;
                r.message_len = n;
        } else {
                r.message = (const uint8_t *) req->body;
                r.message_len = req->body_len;
        }
        *ret = r;
        *ret_code = RPC_OK;
        return 0;
}

/* ---- calls --------------------------------------------------------------------- */

typedef struct ConnectCall {
        Manager *manager;
        HttpExchange *x;              /* NULL once answered or the client left */
        ConnectRequest creq;
        const ProtobufCMethodDescriptor *md;
        bool tcp;
        RpcPeer peer;
        char *authorization;

        uint8_t *request;             /* the message as sent to the backend */
        size_t request_len;
        grpc_metadata md_out[CONNECT_METADATA_MAX + 5];
        size_t n_md_out;

        grpc_call *call;
        unsigned n_waits;             /* batches and the bearer check in flight */
        grpc_byte_buffer *send_buffer, *recv_buffer;
        grpc_metadata_array initial_md, trailing_md;
        grpc_status_code status;
        grpc_slice details;
        bool status_received, messages_done;
        uint8_t *reply;               /* unary: the one message */
        size_t reply_len;
        bool have_reply;
        bool stream_started;
        RpcCode local_code;           /* a failure found here rather than by the backend */
        char *local_message;
} ConnectCall;

static unsigned n_calls;

unsigned gateway_connect_calls(void) {
        return n_calls;
}

static void call_maybe_free(ConnectCall *c) {
        if (c->x || c->n_waits > 0)
                return;
        if (c->call)
                grpc_call_unref(c->call);
        for (size_t i = 0; i < c->n_md_out; i++) {
                grpc_slice_unref(c->md_out[i].key);
                grpc_slice_unref(c->md_out[i].value);
        }
        if (c->send_buffer)
                grpc_byte_buffer_destroy(c->send_buffer);
        if (c->recv_buffer)
                grpc_byte_buffer_destroy(c->recv_buffer);
        grpc_metadata_array_destroy(&c->initial_md);
        grpc_metadata_array_destroy(&c->trailing_md);
        grpc_slice_unref(c->details);
        free(c->authorization);
        free(c->request);
        free(c->reply);
        free(c->local_message);
        free(c);
        n_calls--;
}

static void on_abort(HttpExchange *x, void *userdata) {
        ConnectCall *c = userdata;
        (void) x;
        c->x = NULL;
        if (c->call)
                grpc_call_cancel(c->call, NULL);
}

/* Ends the end-stream message (Connect spec, "Streaming-Response"). */
static void stream_finish(ConnectCall *c, RpcCode code, const char *message) {
        _cleanup_free_ char *err = NULL, *body = NULL;
        uint8_t prefix[5];
        size_t n;

        if (!c->stream_started) {
                if (http_exchange_stream_begin(c->x, 200,
                                               c->creq.json ? "application/connect+json" : "application/connect+proto",
                                               NULL) < 0)
                        return;
                c->stream_started = true;
        }
        if (code != RPC_OK) {
                err = connect_error_json(code, message);
                if (!err || asprintf(&body, "{\"error\":%s}", err) < 0)
                        body = NULL;
        } else
                body = strdup("{}");
        if (!body) {
                (void) http_exchange_stream_end(c->x);
                return;
        }
        n = strlen(body);
        prefix[0] = 0x02;  /* end-stream */
        prefix[1] = (uint8_t) (n >> 24);
        prefix[2] = (uint8_t) (n >> 16);
        prefix[3] = (uint8_t) (n >> 8);
        prefix[4] = (uint8_t) n;
        if (http_exchange_stream_send(c->x, prefix, 5) < 0 || http_exchange_stream_send(c->x, body, n) < 0)
                return;  /* the exchange went with the connection */
        (void) http_exchange_stream_end(c->x);
}

/* Answers the call with an error, in the form its request asked for. */
static void call_fail(ConnectCall *c, RpcCode code, const char *message) {
        HttpExchange *x = c->x;

        if (!x)
                return;
        if (c->creq.streaming)
                stream_finish(c, code, message);
        else {
                _cleanup_free_ char *body = connect_error_json(code, message);
                (void) http_exchange_respond(x, connect_code_http_status(code), "application/json", NULL, body ?: "",
                                             body ? strlen(body) : 0);
        }
        c->x = NULL;
}

static int byte_buffer_take(grpc_byte_buffer *b, uint8_t **ret, size_t *ret_len) {
        grpc_byte_buffer_reader reader;
        grpc_slice s;
        uint8_t *out;

        if (!grpc_byte_buffer_reader_init(&reader, b))
                return -EBADMSG;
        s = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        out = malloc(GRPC_SLICE_LENGTH(s) + 1);
        if (out)
                memcpy(out, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
        *ret_len = GRPC_SLICE_LENGTH(s);
        grpc_slice_unref(s);
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
}

/* A backend message in the codec of the call: JSON is transcoded. */
static int reply_encode(ConnectCall *c, uint8_t *data, size_t len, uint8_t **ret, size_t *ret_len) {
        char *json;
        int r;

        if (!c->creq.json) {
                *ret = data;
                *ret_len = len;
                return 0;
        }
        r = proto_binary_to_json(c->md->output, data, len, &json, ret_len);
        free(data);
        if (r < 0)
                return r;
        *ret = (uint8_t *) json;
        return 0;
}

static void call_complete(ConnectCall *c) {
        _cleanup_free_ char *details = NULL;
        RpcCode code;

        if (!c->status_received || !c->messages_done || !c->x)
                return;
        code = (RpcCode) c->status;
        details = strndup((const char *) GRPC_SLICE_START_PTR(c->details), GRPC_SLICE_LENGTH(c->details));
        if (c->local_code != RPC_OK) {
                code = c->local_code;
                free(details);
                details = strdup(c->local_message ?: "");
        }
        if (code != RPC_OK) {
                call_fail(c, code, details);
                return;
        }
        if (c->creq.streaming) {
                stream_finish(c, RPC_OK, NULL);
                c->x = NULL;
                return;
        }
        if (!c->have_reply) {
                call_fail(c, RPC_UNIMPLEMENTED, "The backend answered OK without a message: is this a streaming "
                          "method? Use application/connect+json or +proto.");
                return;
        }
        (void) http_exchange_respond(c->x, 200, c->creq.json ? "application/json" : "application/proto", NULL,
                                     c->reply, c->reply_len);
        c->x = NULL;
}

static void recv_next(ConnectCall *c);

static void on_message(void *userdata, bool ok) {
        ConnectCall *c = userdata;
        grpc_byte_buffer *b = TAKE_PTR(c->recv_buffer);
        uint8_t *data = NULL, *enc = NULL;
        size_t len = 0, enc_len = 0;
        int r;

        c->n_waits--;
        if (!ok || !b || !c->x) {
                if (b)
                        grpc_byte_buffer_destroy(b);
                c->messages_done = true;
                call_complete(c);
                return call_maybe_free(c);
        }
        r = byte_buffer_take(b, &data, &len);
        grpc_byte_buffer_destroy(b);
        if (r >= 0)
                r = reply_encode(c, data, len, &enc, &enc_len);
        if (r < 0) {
                c->local_code = RPC_INTERNAL;
                free(c->local_message);
                c->local_message = strdup("The gateway could not encode the backend's reply as JSON.");
                grpc_call_cancel(c->call, NULL);
                c->messages_done = true;
                call_complete(c);
                return call_maybe_free(c);
        }
        if (!c->creq.streaming) {
                if (c->have_reply) {
                        c->local_code = RPC_UNIMPLEMENTED;
                        free(c->local_message);
                        c->local_message = strdup("The backend sent a stream to a unary call: use "
                                                  "application/connect+json or +proto for this method.");
                        grpc_call_cancel(c->call, NULL);
                        free(enc);
                } else {
                        c->reply = enc;
                        c->reply_len = enc_len;
                        c->have_reply = true;
                }
        } else {
                uint8_t prefix[5] = { 0, (uint8_t) (enc_len >> 24), (uint8_t) (enc_len >> 16), (uint8_t) (enc_len >> 8),
                                      (uint8_t) enc_len };
                r = 0;
                if (!c->stream_started) {
                        r = http_exchange_stream_begin(c->x, 200, c->creq.json ? "application/connect+json"
                                                                               : "application/connect+proto", NULL);
                        c->stream_started = r >= 0;
                }
                if (r >= 0)
                        r = http_exchange_stream_send(c->x, prefix, 5);
                if (r >= 0)
                        r = http_exchange_stream_send(c->x, enc, enc_len);
                free(enc);
                if (r == -ENOBUFS) {
                        c->local_code = RPC_RESOURCE_EXHAUSTED;
                        free(c->local_message);
                        c->local_message = strdup("The reader fell too far behind the stream.");
                        grpc_call_cancel(c->call, NULL);
                } else if (r < 0 && c->call)
                        grpc_call_cancel(c->call, NULL);  /* the client left: on_abort ran */
        }
        recv_next(c);
        call_maybe_free(c);
}

static void recv_next(ConnectCall *c) {
        grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };

        op.data.recv_message.recv_message = &c->recv_buffer;
        c->n_waits++;
        if (rpc_batch(c->manager->rpc_loop, c->call, &op, 1, on_message, c) < 0) {
                c->n_waits--;
                c->messages_done = true;
                call_complete(c);
        }
}

static void on_status(void *userdata, bool ok) {
        ConnectCall *c = userdata;
        (void) ok;
        c->n_waits--;
        c->status_received = true;
        call_complete(c);
        call_maybe_free(c);
}

static void on_sent(void *userdata, bool ok) {
        ConnectCall *c = userdata;
        (void) ok;  /* a failed send shows in the status */
        c->n_waits--;
        call_maybe_free(c);
}

static void md_add(ConnectCall *c, const char *key, const char *value) {
        if (c->n_md_out >= ELEMENTSOF(c->md_out))
                return;
        c->md_out[c->n_md_out++] = (grpc_metadata){ .key = grpc_slice_from_copied_string(key),
                                                    .value = grpc_slice_from_copied_string(value) };
}

/* Request headers that travel as gRPC metadata: what the caller added, not
 * HTTP's own framing, Connect's, or what only the gateway may set. */
static void metadata_from_headers(ConnectCall *c, const HttpRequest *req) {
        static const char *const skip[] = { "host", "connection", "keep-alive", "content-type", "content-length",
                                            "transfer-encoding", "te", "trailer", "upgrade", "user-agent",
                                            "accept", "accept-encoding", "content-encoding", "proxy-authorization",
                                            "expect" };
        static const char *const skip_prefix[] = { "connect-", "x-hostmesh-", "grpc-" };
        size_t n = 0;

        for (size_t i = 0; i < req->n_headers && n < CONNECT_METADATA_MAX; i++) {
                char key[128];
                const char *name = req->headers[i].name, *value = req->headers[i].value;
                size_t len = strlen(name);
                bool ok = len < sizeof(key) && !(len > 4 && strcasecmp(name + len - 4, "-bin") == 0);

                for (size_t k = 0; ok && k < ELEMENTSOF(skip); k++)
                        ok = strcasecmp(name, skip[k]) != 0;
                for (size_t k = 0; ok && k < ELEMENTSOF(skip_prefix); k++)
                        ok = strncasecmp(name, skip_prefix[k], strlen(skip_prefix[k])) != 0;
                for (const char *p = value; ok && *p; p++)
                        ok = *p >= 0x20 && *p < 0x7f;
                if (!ok)
                        continue;
                for (size_t k = 0; k <= len; k++)
                        key[k] = (char) tolower((unsigned char) name[k]);
                md_add(c, key, value);
                n++;
        }
}

static void call_start(ConnectCall *c, const char *subject, const char *tenant) {
        Manager *m = c->manager;
        const char *method = c->creq.method;
        RpcClient *client;
        grpc_slice method_slice;
        gpr_timespec deadline;
        uint64_t timeout;
        grpc_op ops[4];
        Backend *b;
        int r;

        if (strncmp(method, "/hostmesh.gateway.v1.", 21) == 0)
                return call_fail(c, RPC_UNIMPLEMENTED, "The gateway's own methods are served over gRPC only.");
        if (subject && gateway_auth_bearer_method(m, method) < 0) {
                _cleanup_free_ char *msg = NULL;
                if (asprintf(&msg, "%s is not part of the public API (%s) nor in [gateway] bearer_allow: bearer-token "
                             "callers such as %s may not call it.", method, gateway_auth_public_api, subject) < 0)
                        msg = NULL;
                return call_fail(c, RPC_PERMISSION_DENIED, msg ?: "permission denied");
        }
        b = manager_route(m, method);
        if (!b || (c->creq.json && !c->md)) {
                _cleanup_free_ char *msg = NULL;
                if (asprintf(&msg, "%s is not implemented by hostmesh.", method + 1) < 0)
                        msg = NULL;
                return call_fail(c, RPC_UNIMPLEMENTED, msg ?: "unimplemented");
        }
        if (!c->creq.json && c->md) {
                /* Binary requests are checked here, so that a refusal names
                 * the field the way the JSON path does rather than by number
                 * (or as "not a valid message") from the backend. */
                _cleanup_free_ char *error = NULL;
                r = proto_binary_check(c->md->input, c->request, c->request_len, &error);
                if (r < 0) {
                        _cleanup_free_ char *msg = NULL;
                        if (asprintf(&msg, "Invalid %s: %s", c->md->input->name, error ?: strerror(-r)) < 0)
                                msg = NULL;
                        return call_fail(c, RPC_INVALID_ARGUMENT, msg ?: "invalid request");
                }
        }
        if (c->creq.json) {
                _cleanup_free_ char *error = NULL;
                uint8_t *bin = NULL;
                size_t bin_len = 0;
                r = proto_json_to_binary(c->md->input, (const char *) c->request, c->request_len, &bin, &bin_len,
                                         &error);
                if (r >= 0) {
                        free(c->request);
                        c->request = bin;
                        c->request_len = bin_len;
                }
                if (r < 0) {
                        _cleanup_free_ char *msg = NULL;
                        if (asprintf(&msg, "Invalid %s: %s", c->md->input->name, error ?: strerror(-r)) < 0)
                                msg = NULL;
                        return call_fail(c, r == -EINVAL ? RPC_INVALID_ARGUMENT : RPC_RESOURCE_EXHAUSTED,
                                         msg ?: "invalid request");
                }
        }

        if (c->peer.known) {
                char buf[32];
                snprintf(buf, sizeof(buf), "%u", (unsigned) c->peer.uid);
                md_add(c, "x-hostmesh-peer-uid", buf);
                snprintf(buf, sizeof(buf), "%u", (unsigned) c->peer.gid);
                md_add(c, "x-hostmesh-peer-gid", buf);
                snprintf(buf, sizeof(buf), "%u", (unsigned) c->peer.pid);
                md_add(c, "x-hostmesh-peer-pid", buf);
        }
        if (subject)
                md_add(c, "x-hostmesh-subject", subject);
        if (tenant)
                md_add(c, "x-hostmesh-tenant", tenant);

        client = backend_client(m, b);
        if (!client)
                return call_fail(c, RPC_INTERNAL, "The gateway cannot create a channel to the backend.");
        timeout = c->creq.timeout_usec ?: m->config.backend_timeout_usec;
        deadline = timeout > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                              gpr_time_from_micros((int64_t) MIN(timeout, (uint64_t) INT64_MAX),
                                                                   GPR_TIMESPAN))
                               : gpr_inf_future(GPR_CLOCK_MONOTONIC);
        method_slice = grpc_slice_from_copied_string(method);
        c->call = grpc_channel_create_call(rpc_client_channel(client), NULL, GRPC_PROPAGATE_DEFAULTS,
                                           rpc_loop_cq(m->rpc_loop), method_slice, NULL, deadline, NULL);
        grpc_slice_unref(method_slice);
        if (!c->call)
                return call_fail(c, RPC_INTERNAL, "The gateway failed to create the backend call.");
        {
                grpc_slice s = grpc_slice_from_copied_buffer((const char *) c->request, c->request_len);
                c->send_buffer = grpc_raw_byte_buffer_create(&s, 1);
                grpc_slice_unref(s);
        }

        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = c->n_md_out;
        ops[0].data.send_initial_metadata.metadata = c->md_out;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = c->send_buffer;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
        c->n_waits++;
        if (rpc_batch(m->rpc_loop, c->call, ops, 4, on_sent, c) < 0) {
                c->n_waits--;
                return call_fail(c, RPC_INTERNAL, "The gateway failed to start the backend call.");
        }
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[0].data.recv_status_on_client.status = &c->status;
        ops[0].data.recv_status_on_client.status_details = &c->details;
        ops[0].data.recv_status_on_client.trailing_metadata = &c->trailing_md;
        c->n_waits++;
        if (rpc_batch(m->rpc_loop, c->call, ops, 1, on_status, c) < 0) {
                c->n_waits--;
                grpc_call_cancel(c->call, NULL);
                c->status = GRPC_STATUS_INTERNAL;
                c->status_received = true;
        }
        recv_next(c);
}

static void on_bearer_release(void *userdata) {
        ConnectCall *c = userdata;
        c->n_waits--;
        call_maybe_free(c);
}

static void on_bearer_done(Manager *m, int r, const char *message, json_t *claims, void *userdata) {
        ConnectCall *c = userdata;
        json_t *sub, *tenant;

        (void) m;
        c->n_waits--;
        if (!c->x)
                return call_maybe_free(c);
        if (r < 0) {
                /* As on the gRPC path: refusals of the token are UNAUTHENTICATED. */
                RpcCode code = rpc_code_from_errno(r);
                if (code != RPC_UNAVAILABLE && code != RPC_FAILED_PRECONDITION && code != RPC_RESOURCE_EXHAUSTED)
                        code = RPC_UNAUTHENTICATED;
                call_fail(c, code, message);
                return call_maybe_free(c);
        }
        sub = json_object_get(claims, "sub");
        tenant = json_object_get(claims, "tenant_id");
        if (!json_is_string(sub) || !*json_string_value(sub)) {
                call_fail(c, RPC_UNAUTHENTICATED, "Bearer token has no subject.");
                return call_maybe_free(c);
        }
        call_start(c, json_string_value(sub), json_is_string(tenant) ? json_string_value(tenant) : NULL);
        call_maybe_free(c);
}

static void handle(HttpExchange *x, const HttpRequest *req, Manager *m, bool tcp) {
        _cleanup_free_ char *message = NULL;
        ConnectRequest creq;
        ConnectCall *c;
        RpcCode code;
        int status;

        /* A gRPC call on an HTTP/2 connection whose first request was Connect:
         * gRPC core never saw this connection, so it cannot serve it. Answer
         * in gRPC's own terms (a trailers-only response) so that the client
         * says why; a new connection whose first call is gRPC works. */
        if (req->http2 && http_request_header(req, "Content-Type") &&
            gateway_connect_is_grpc(http_request_header(req, "Content-Type"))) {
                (void) http_exchange_respond(x, 200, "application/grpc",
                                             "Grpc-Status: 14\r\nGrpc-Message: gRPC calls are served on HTTP/2 "
                                             "connections that begin with one; this connection carries Connect "
                                             "calls. Open a new connection for gRPC.\r\n", NULL, 0);
                return;
        }
        status = connect_request_parse(req, &creq, &code, &message);
        if (status > 0) {
                _cleanup_free_ char *body = connect_error_json(code, message);
                if (status == 200) {
                        /* A streaming request: the error goes in the end-stream message. */
                        ConnectCall tmp = { .x = x, .creq = { .json = true, .streaming = true } };
                        const char *ctype = http_request_header(req, "Content-Type");
                        tmp.creq.json = !ctype || !media_type_is(ctype, "application/connect+proto");
                        stream_finish(&tmp, code, message);
                        return;
                }
                (void) http_exchange_respond(x, status, "application/json",
                                             status == 405 ? "Allow: POST\r\n" : NULL, body ?: "", body ? strlen(body) : 0);
                return;
        }

        /* The gateway's own health answers without a token, as over gRPC: for
         * load balancers and for socket activation checks. */
        if (streq(creq.method, "/grpc.health.v1.Health/Check") && !http_request_header(req, "X-Hostmesh-Part") &&
            !creq.streaming) {
                connect_request_done(&creq);
                static const uint8_t serving_proto[] = { 0x08, 0x01 };  /* status (1) = SERVING (1) */
                static const char serving_json[] = "{\"status\":\"SERVING\"}";
                (void) http_exchange_respond(x, 200, creq.json ? "application/json" : "application/proto", NULL,
                                             creq.json ? (const void *) serving_json : serving_proto,
                                             creq.json ? strlen(serving_json) : sizeof(serving_proto));
                return;
        }

        c = calloc(1, sizeof(*c));
        if (!c) {
                connect_request_done(&creq);
                (void) http_exchange_respond(x, 503, "application/json", NULL, "", 0);
                return;
        }
        n_calls++;
        c->manager = m;
        c->x = x;
        c->creq = creq;
        c->creq.message = NULL;
        c->creq.storage = NULL;
        c->tcp = tcp;
        c->md = connect_method_find(creq.method);
        c->details = grpc_empty_slice();
        grpc_metadata_array_init(&c->initial_md);
        grpc_metadata_array_init(&c->trailing_md);
        c->request = malloc(creq.message_len + 1);
        if (!c->request) {
                connect_request_done(&creq);
                call_fail(c, RPC_RESOURCE_EXHAUSTED, "Out of memory.");
                return call_maybe_free(c);
        }
        memcpy(c->request, creq.message, creq.message_len);
        c->request[creq.message_len] = 0;
        c->request_len = creq.message_len;
        connect_request_done(&creq);
        metadata_from_headers(c, req);
        http_exchange_on_abort(x, on_abort, c);

        if (tcp) {
                c->n_waits++;
                gateway_bearer_authenticate(m->bearer, http_request_header(req, "Authorization"), on_bearer_done,
                                            on_bearer_release, c);
                return;
        }
        {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                if (getsockopt(http_exchange_fd(x), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
                        c->peer = (RpcPeer){ .known = true, .pid = cred.pid, .uid = cred.uid, .gid = cred.gid };
        }
        if (gateway_auth_check(m, &c->peer) < 0) {
                _cleanup_free_ char *msg = NULL;
                if (asprintf(&msg, "uid %u may not use hostmesh; add the user to the 'hostmesh' group or to "
                             "allow_users in gateway.conf.", (unsigned) c->peer.uid) < 0)
                        msg = NULL;
                call_fail(c, RPC_PERMISSION_DENIED, msg ?: "permission denied");
                return call_maybe_free(c);
        }
        call_start(c, NULL, NULL);
        call_maybe_free(c);
}

void gateway_connect_handle_tcp(HttpExchange *x, const HttpRequest *req, void *userdata) {
        handle(x, req, userdata, /* tcp= */ true);
}

void gateway_connect_handle_local(HttpExchange *x, const HttpRequest *req, void *userdata) {
        handle(x, req, userdata, /* tcp= */ false);
}
