/* SPDX-License-Identifier: MIT */
#pragma once

/* The Connect protocol (connectrpc.com/docs/protocol) over HTTP/1.1 and
 * HTTP/2 on the gateway's listeners, beside gRPC on the same port: unary calls with
 * application/json or application/proto, server-streaming calls with
 * application/connect+json or +proto envelopes and the end-stream message,
 * connect-timeout-ms, Connect error bodies with the spec's HTTP statuses.
 * Callers authenticate as on the gRPC path: a bearer token on TCP, peer
 * credentials on the unix socket. Each call becomes a gRPC call to the
 * backend; JSON is transcoded with lib/proto-json, binary goes as is. */

#include <stdbool.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "http-server.h"
#include "rpc.h"

typedef struct Manager Manager;

/* The exchange handler of the gateway's HTTP servers; userdata is the
 * Manager. `tcp` servers authenticate with bearer tokens. */
void gateway_connect_handle_tcp(HttpExchange *x, const HttpRequest *req, void *userdata);
void gateway_connect_handle_local(HttpExchange *x, const HttpRequest *req, void *userdata);
/* Connect calls in flight (they keep the gateway from exiting on idle). */
unsigned gateway_connect_calls(void);

/* Whether a Content-Type is gRPC's (application/grpc, application/grpc+proto…):
 * the first such request takes its HTTP/2 connection to gRPC core. */
bool gateway_connect_is_grpc(const char *content_type);

/* ---- pure parts (unit tests, fuzzer) ------------------------------------------ */

typedef struct ConnectRequest {
        char method[256];             /* "/pkg.Service/Method" */
        bool json;                    /* codec: json or proto */
        bool streaming;               /* application/connect+…: enveloped */
        uint64_t timeout_usec;        /* 0: none */
        bool get;                     /* the GET form of an idempotent unary call */
        const uint8_t *message;       /* into the request body, or into storage (GET) */
        size_t message_len;
        uint8_t *storage;             /* the message decoded from a GET query */
} ConnectRequest;

/* Reads the Connect protocol parts of a request: POST, or GET (query
 * connect=v1&encoding=json|proto&message=…[&base64=1][&compression=identity])
 * for methods marked idempotent. On error returns the HTTP status to answer
 * (>= 400; 200 for a streaming request, whose error goes in the end-stream
 * message) with *ret_code and a message (free()). On success the request is
 * freed with connect_request_done(). */
int connect_request_parse(const HttpRequest *req, ConnectRequest *ret, RpcCode *ret_code, char **ret_message);
void connect_request_done(ConnectRequest *r);
/* Methods the proto marks idempotency_level = NO_SIDE_EFFECTS: the ones
 * Connect lets callers reach with GET (a unit test keeps this list and the
 * proto files in step). NULL-terminated. */
extern const char *const connect_idempotent_methods[];
bool connect_method_is_idempotent(const char *method);
/* The request and response types of a method this build knows; NULL when
 * unknown. */
const ProtobufCMethodDescriptor *connect_method_find(const char *method);
/* "not_found"; the HTTP status for a code (Connect spec, "Error Codes"). */
const char *connect_code_name(RpcCode code);
int connect_code_http_status(RpcCode code);
/* The JSON error body {"code": …, "message": …}. */
char *connect_error_json(RpcCode code, const char *message);
