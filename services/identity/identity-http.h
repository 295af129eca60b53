/* SPDX-License-Identifier: MIT */
#pragma once

/* The federation listener: a small HTTP/1.1 server (plain TCP or TLS) on
 * the daemon's sd-event loop serving a fixed set of documents (the OpenID
 * discovery document and the JWKS) with Cache-Control max-age and a strong
 * ETag. GET and HEAD only; anything else is 404 or 405. Requests are
 * bounded in size (8 KiB of headers, no body) and in time (a client must
 * send its whole request within the timeout); one request per connection. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define HTTP_REQUEST_MAX 8192U
#define HTTP_CONNECTIONS_MAX 256U

typedef struct HttpServer HttpServer;

/* `fd` is a listening TCP socket (from systemd or bound by the caller);
 * the server owns it. cert/key NULL → plain HTTP. */
int http_server_new(sd_event *event, int fd, const char *tls_cert, const char *tls_key, uint64_t timeout_usec,
                    HttpServer **ret);
HttpServer *http_server_free(HttpServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);
/* Serves `body` at `path` (replacing what was there) with max-age seconds. */
int http_server_set_document(HttpServer *s, const char *path, const char *content_type, const char *body,
                             unsigned max_age);
unsigned http_server_connections(const HttpServer *s);

/* ---- pure parts (unit tests, fuzzer) -------------------------------------- */

typedef struct HttpRequest {
        char method[8];
        char path[1024];
        char if_none_match[256];   /* "" when absent */
} HttpRequest;

/* Parses a request head. 0 when complete (*ret_consumed bytes), -EAGAIN when
 * more is needed, -EMSGSIZE beyond HTTP_REQUEST_MAX, -EBADMSG when not
 * HTTP/1.x, -EOPNOTSUPP for a request with a body. */
int http_request_parse(const char *buf, size_t len, HttpRequest *ret, size_t *ret_consumed);
/* The full response for a request (status line, headers, body). */
int http_server_respond(HttpServer *s, const HttpRequest *req, char **ret, size_t *ret_len);
/* A response for a request that could not be parsed. */
int http_error_response(int status, char **ret, size_t *ret_len);
