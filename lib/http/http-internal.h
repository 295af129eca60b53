/* SPDX-License-Identifier: MIT */
#pragma once

/* What http-server.c (connections, HTTP/1.1) and http2-server.c (HTTP/2 on
 * nghttp2) share inside lib/http; not for other users. */

#include <openssl/ssl.h>
#include <sys/types.h>

#include "http-server.h"

#define OUT_MAX ((size_t) 4 << 20)
#define TUNNEL_BUF ((size_t) 64 << 10)

typedef struct HttpConn HttpConn;
typedef struct H2Stream H2Stream;
typedef struct nghttp2_session nghttp2_session;

typedef enum ConnState {
        CONN_HANDSHAKE,     /* TLS handshake, or sniffing the first bytes */
        CONN_READ,          /* reading a request */
        CONN_PENDING,       /* the handler has the request */
        CONN_STREAMING,     /* the handler is sending a chunked response */
        CONN_TUNNEL,        /* TLS h2: pumping plain bytes to and from the hook's fd */
        CONN_H2,            /* HTTP/2 served here (or its first request being looked at) */
} ConnState;

struct HttpExchange {
        HttpConn *conn;
        HttpRequest req;
        void (*on_abort)(HttpExchange *x, void *userdata);
        void *abort_userdata;
        bool head_only;
        H2Stream *h2;           /* NULL on HTTP/1.x */
};

struct HttpConn {
        HttpServer *server;
        HttpConn *prev, *next;
        int fd;
        SSL *ssl;
        sd_event_source *io, *timer;
        ConnState state;
        char *in;
        size_t in_len, in_cap;
        char *out;
        size_t out_len, out_sent, out_cap;
        bool close_after;       /* close once the output is sent */
        bool busy;              /* inside conn_process: frees are deferred */
        bool dead;              /* to be freed by whoever holds busy */
        unsigned served;
        HttpExchange x;
        /* TLS h2 tunnel */
        int tunnel_fd;
        sd_event_source *tunnel_io;
        char *up, *down;        /* client → hook, hook → client */
        size_t up_len, down_len;
        /* HTTP/2 served by nghttp2 */
        nghttp2_session *h2;
        H2Stream *streams;
        size_t h2_body_bytes;   /* request bodies held, all streams */
        bool h2_sniffing;       /* the first request decides who serves the connection */
        bool h2_claimed;        /* … and the hook claimed it */
        bool h2_decided;
        size_t h2_fed;          /* bytes given to nghttp2 while sniffing */
        char *h2_held;          /* frames nghttp2 produced while sniffing: sent only if we serve */
        size_t h2_held_len;
};

struct HttpServer {
        sd_event *event;
        int fd;
        sd_event_source *accept_source;
        SSL_CTX *ssl_ctx;
        HttpServerOptions opts;
        HttpHandler handler;
        void *userdata;
        HttpConn *conns;
        unsigned n_conns;
};

/* http-server.c */
void conn_free(HttpConn *c);
void conn_set_events(HttpConn *c, uint32_t events);
void conn_arm_timer(HttpConn *c, uint64_t usec);
ssize_t conn_read(HttpConn *c, void *buf, size_t len, bool *want_write);
int out_append(HttpConn *c, const void *data, size_t len);
bool conn_flush(HttpConn *c);
void conn_hand_over_h2(HttpConn *c);

/* http2-server.c */
int h2_start(HttpConn *c);
void h2_process(HttpConn *c);
void h2_peer_done_sending(HttpConn *c);
void h2_conn_done(HttpConn *c);
uint32_t h2_wanted_events(HttpConn *c);
int h2_respond(HttpExchange *x, int status, const char *content_type, const char *headers, const void *body,
               size_t len);
int h2_stream_begin(HttpExchange *x, int status, const char *content_type, const char *headers);
int h2_stream_send(HttpExchange *x, const void *data, size_t len);
int h2_stream_end(HttpExchange *x);
