/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to lib/http's HTTP/2 server through a real socket
 * and event loop: the sniffing of the first request (when a claim hook is
 * set), nghttp2's framing and HPACK, and our stream bookkeeping (header
 * arena, body limits, exchanges answered at once, streamed, or still pending
 * when the server goes away). The first input byte picks the set-up:
 *   bit 0  a claim hook takes connections whose first request is gRPC
 *   bit 1  the handler answers later (the exchange must then be aborted)
 *   bit 2  the handler streams its answer
 * The rest is what the client sends (the seeds begin with the preface).
 * Checks: every exchange handed to the handler ends exactly once, by an
 * answer or by its abort callback. */
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http-server.h"

#define PENDING_MAX 256

static HttpExchange *pending[PENDING_MAX];
static size_t n_pending, n_handled, n_ended;
static bool later, streamed;

static void on_abort(HttpExchange *x, void *userdata) {
        size_t i = (size_t) (uintptr_t) userdata;
        if (i >= PENDING_MAX || pending[i] != x)
                abort();  /* an abort for an exchange we do not hold */
        pending[i] = NULL;
        n_ended++;
}

static void answer(HttpExchange *x, const HttpRequest *req) {
        if (streamed) {
                if (http_exchange_stream_begin(x, 200, "application/connect+json", "X-A: b\r\n") < 0)
                        return;
                (void) http_exchange_stream_send(x, req->body, req->body_len);
                (void) http_exchange_stream_send(x, "tail", 4);
                (void) http_exchange_stream_end(x);
        } else
                (void) http_exchange_respond(x, req->body_len ? 200 : 404, "application/json", "Allow: POST\r\n",
                                             req->body, req->body_len);
}

static void handler(HttpExchange *x, const HttpRequest *req, void *userdata) {
        (void) userdata;
        n_handled++;
        if (!req->target || (req->body_len > 0 && !req->body))
                abort();
        for (size_t i = 0; i < req->n_headers; i++)
                if (!req->headers[i].name || !req->headers[i].value || !http_request_header(req, req->headers[i].name))
                        abort();
        if (later && n_pending < PENDING_MAX) {
                pending[n_pending] = x;
                http_exchange_on_abort(x, on_abort, (void *) (uintptr_t) n_pending);
                n_pending++;
                return;
        }
        n_ended++;
        answer(x, req);
}

static bool claim(const HttpRequest *first, void *userdata) {
        const char *ctype = http_request_header(first, "Content-Type");
        (void) userdata;
        return ctype && strncasecmp(ctype, "application/grpc", 16) == 0;
}

static int take(int fd, int peer_fd, void *userdata) {
        (void) peer_fd;
        (void) userdata;
        close(fd);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        HttpServerOptions opts = { .limits = { .head_max = 4096, .body_max = 8192 }, .h2_serve = true };
        sd_event *e = NULL;
        HttpServer *s = NULL;
        int sp[2];
        char sink[65536];

        if (size < 1 || size > 128 * 1024)
                return 0;
        if (data[0] & 1) {
                opts.h2 = take;
                opts.h2_claim = claim;
        }
        later = data[0] & 2;
        streamed = data[0] & 4;
        n_pending = n_handled = n_ended = 0;
        if (sd_event_new(&e) < 0 || http_server_new(e, -EBADF, &opts, handler, NULL, &s) < 0)
                abort();
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0)
                abort();
        if (http_server_adopt(s, sp[0]) < 0)
                abort();

        /* Write the client's bytes as the server takes them, reading what it says. */
        size_t off = 1;
        for (unsigned idle = 0; idle < 3;) {
                bool progress = false;
                if (off < size) {
                        ssize_t n = send(sp[1], data + off, size - off, MSG_NOSIGNAL);
                        if (n > 0) {
                                off += (size_t) n;
                                progress = true;
                        } else if (n < 0 && errno != EAGAIN)
                                off = size;
                        if (off == size)
                                (void) shutdown(sp[1], SHUT_WR);
                }
                while (recv(sp[1], sink, sizeof(sink), 0) > 0)
                        progress = true;
                if (sd_event_run(e, 0) > 0)
                        progress = true;
                idle = progress ? 0 : idle + 1;
        }
        /* Answer what is still pending (its connection may be gone already). */
        for (size_t i = 0; i < n_pending; i++)
                if (pending[i]) {
                        HttpExchange *x = pending[i];
                        pending[i] = NULL;
                        n_ended++;
                        (void) http_exchange_respond(x, 503, NULL, NULL, NULL, 0);
                        (void) sd_event_run(e, 0);
                }
        http_server_free(s);
        if (n_ended != n_handled)
                abort();  /* an exchange neither answered nor aborted */
        close(sp[1]);
        sd_event_unref(e);
        return 0;
}
