/* SPDX-License-Identifier: MIT */
#pragma once

/* The one HTTP/1.1 server of the project, on a daemon's sd-event loop.
 *
 *   HttpServer   accepts on a listening socket (or adopts connections
 *                accepted elsewhere), optionally with TLS; bounds the
 *                number of connections, the size of a request's head and
 *                body, and the time a client takes to send a request.
 *   HttpExchange one request and its response. The handler answers now or
 *                later, in one piece (Content-Length) or as a stream
 *                (chunked); connections are kept alive between requests
 *                (RFC 9112 §9.3) unless either side says otherwise.
 *
 * HTTP/2 (RFC 9113) is recognised by its preface on plain text and by ALPN
 * "h2" on TLS. A server may serve it itself (h2_serve: nghttp2 turns each
 * stream into an HttpExchange, so handlers need not know the version), hand
 * it to a hook as a file descriptor carrying the plain bytes (h2), or both:
 * with h2_claim, the first request of each HTTP/2 connection is looked at
 * (head only) and the connection goes to the hook when h2_claim says so —
 * that is how one port serves gRPC core and Connect over HTTP/2 side by side.
 * The server's SETTINGS frame is sent before that first request is awaited,
 * because gRPC clients wait for it before sending any. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define HTTP_HEAD_MAX_DEFAULT (16U * 1024U)
#define HTTP_BODY_MAX_DEFAULT (4U * 1024U * 1024U)
#define HTTP_HEADERS_MAX 64U
#define HTTP_CONNECTIONS_MAX_DEFAULT 256U

typedef struct HttpServer HttpServer;
typedef struct HttpExchange HttpExchange;

typedef struct HttpHeader {
        const char *name;          /* as sent; compare case-insensitively */
        const char *value;         /* leading and trailing blanks removed */
} HttpHeader;

typedef struct HttpRequest {
        char method[16];
        char *target;              /* "/path?query" as sent */
        int minor_version;         /* HTTP/1.0 or HTTP/1.1 */
        HttpHeader headers[HTTP_HEADERS_MAX];
        size_t n_headers;
        char *body;                /* NUL-terminated beyond body_len; chunked bodies decoded */
        size_t body_len;
        bool keep_alive;           /* what the client asked for */
        bool http2;                /* a stream of an HTTP/2 connection (minor_version is then 0) */
        char *storage;             /* owns target, header strings and body */
} HttpRequest;

typedef struct HttpLimits {
        size_t head_max;           /* request line + header fields; 0 → HTTP_HEAD_MAX_DEFAULT */
        size_t body_max;           /* decoded body; 0 → HTTP_BODY_MAX_DEFAULT */
} HttpLimits;

/* Parses one whole request (head and body) from the start of buf.
 *   0          complete: *ret filled (free with http_request_done()), *ret_consumed bytes used
 *   -EAGAIN    more bytes are needed
 *   -EMSGSIZE  the head is larger than head_max (answer 431)
 *   -EFBIG     the body is larger than body_max (answer 413)
 *   -EBADMSG   not a well-formed HTTP/1.0 or 1.1 request (answer 400)
 *   -EOPNOTSUPP a transfer coding other than chunked (answer 501)
 *   -ENOMEM */
int http_request_parse(const char *buf, size_t len, const HttpLimits *limits, HttpRequest *ret, size_t *ret_consumed);
void http_request_done(HttpRequest *req);
/* First value of a header (case-insensitive name), NULL when absent. */
const char *http_request_header(const HttpRequest *req, const char *name);
/* The reason phrase of a status code ("Not Found"). */
const char *http_status_text(int status);

/* Called once per complete request; the request is valid until the
 * exchange is answered. The handler must end the exchange with
 * http_exchange_respond() or http_exchange_stream_end(), now or later. */
typedef void (*HttpHandler)(HttpExchange *x, const HttpRequest *req, void *userdata);
/* Takes a connection speaking HTTP/2 (see above): owns `fd` (non-blocking,
 * close-on-exec) from then on. `peer_fd` is the accepted socket, for
 * credentials (equal to fd for plain text). Returns 0 or a negative errno. */
typedef int (*HttpH2Hook)(int fd, int peer_fd, void *userdata);

typedef struct HttpServerOptions {
        HttpLimits limits;
        uint64_t request_timeout_usec;   /* a client must send each request within this; 0 → 10 s */
        uint64_t idle_timeout_usec;      /* keep-alive connections idle longer are closed; 0 → 60 s */
        unsigned max_connections;        /* 0 → HTTP_CONNECTIONS_MAX_DEFAULT */
        const char *tls_cert;            /* PEM paths; both or neither */
        const char *tls_key;
        HttpH2Hook h2;                   /* NULL: HTTP/2 goes to the handler, or is refused */
        bool h2_serve;                   /* serve HTTP/2 streams to the handler */
        /* With h2 and h2_serve: true hands the connection whose first
         * request this is (head only, no body) to h2. */
        bool (*h2_claim)(const HttpRequest *first, void *userdata);
        void *h2_userdata;
} HttpServerOptions;

/* `fd` is a listening socket the server owns (-EBADF: none, connections
 * come through http_server_adopt()). Returns -ENOKEY for unusable TLS files. */
int http_server_new(sd_event *event, int fd, const HttpServerOptions *opts, HttpHandler handler, void *userdata,
                    HttpServer **ret);
HttpServer *http_server_free(HttpServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);
/* Serves a connection accepted by the caller (the server owns fd). */
int http_server_adopt(HttpServer *s, int fd);
unsigned http_server_connections(const HttpServer *s);

/* ---- exchange -------------------------------------------------------------- */

/* The socket the request came on (for peer credentials). */
int http_exchange_fd(HttpExchange *x);
/* Called once if the client goes away (or the server is freed) before the
 * exchange ends. The exchange is gone when cb returns: a handler that
 * answers later must set this and drop its pointer there. The stream verbs
 * return -ECONNRESET after running it when a write fails. */
void http_exchange_on_abort(HttpExchange *x, void (*cb)(HttpExchange *x, void *userdata), void *userdata);
/* A whole response. `headers` is NULL or extra "Name: value\r\n" lines. */
int http_exchange_respond(HttpExchange *x, int status, const char *content_type, const char *headers,
                          const void *body, size_t len);
/* A streamed response: the head, then chunks, then the end. Chunks beyond
 * what a slow reader has taken (4 MiB) give -ENOBUFS. */
int http_exchange_stream_begin(HttpExchange *x, int status, const char *content_type, const char *headers);
int http_exchange_stream_send(HttpExchange *x, const void *data, size_t len);
int http_exchange_stream_end(HttpExchange *x);
