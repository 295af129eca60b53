/* SPDX-License-Identifier: MIT */
/* HTTP/2 (RFC 9113) on lib/http's connections, with nghttp2 doing all the
 * framing, HPACK and flow control. Each request stream becomes an
 * HttpExchange, so a handler serves HTTP/1.1 and HTTP/2 with the same verbs.
 *
 * When the server also has an HTTP/2 hook and a claim function (the gateway:
 * gRPC core beside Connect), the connection is first "sniffed": our SETTINGS
 * go out at once (gRPC clients wait for them before sending a request), and
 * the client's bytes are fed to nghttp2 without consuming them — peeked on
 * plain text, kept in c->in on TLS — until the head of the first request is
 * known. If the claim function takes it, nghttp2's state is dropped without
 * sending anything more and the hook gets the socket (plain text: every byte
 * still unread) or a tunnel that replays the kept bytes (TLS). Otherwise the
 * peeked bytes are consumed and nghttp2 carries on serving the connection. */

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "http-internal.h"

#define H2_MAX_CONCURRENT_STREAMS 100U
#define H2_BODY_BYTES_MAX ((size_t) 16 << 20)  /* request bodies held at once, per connection */
#define H2_SNIFF_MAX TUNNEL_BUF                 /* how far the first request's head is looked for */
#define H2_OUT_HIGH ((size_t) 256 << 10)        /* frames queued for the socket before we stop reading */
#define H2_EXTRA_HEADERS_MAX 16U

struct H2Stream {
        HttpExchange x;               /* x.h2 points back here */
        H2Stream *prev, *next;
        int32_t id;
        char *arena;                  /* header strings: fixed size, pointers into it stay valid */
        size_t arena_len;
        size_t body_cap;
        int refused;                  /* an HTTP status answered here (413, 431), 0 otherwise */
        bool complete;                /* END_STREAM received */
        bool dispatched;              /* handed to the handler */
        bool answered;                /* the exchange has ended (or was never the handler's) */
        bool head_sent;               /* a streamed response has begun */
        bool eof;                     /* the response body is whole */
        bool deferred;                /* the data provider is waiting for more */
        char *out;                    /* response body not yet framed */
        size_t out_len, out_sent, out_cap;
};

static void stream_free(HttpConn *c, H2Stream *st) {
        if (st->prev)
                st->prev->next = st->next;
        else
                c->streams = st->next;
        if (st->next)
                st->next->prev = st->prev;
        c->h2_body_bytes -= MIN(c->h2_body_bytes, st->body_cap);
        if (c->h2)
                (void) nghttp2_session_set_stream_user_data(c->h2, st->id, NULL);
        free(st->arena);
        free(st->x.req.body);
        free(st->out);
        free(st);
}

/* The exchange of a stream that goes away before the handler ended it. */
static void stream_abort(HttpConn *c, H2Stream *st) {
        void (*cb)(HttpExchange *, void *) = st->x.on_abort;
        bool was_busy = c->busy;

        if (!st->dispatched || st->answered)
                return;
        st->answered = true;
        st->x.on_abort = NULL;
        if (cb) {
                c->busy = true;
                cb(&st->x, st->x.abort_userdata);
                c->busy = was_busy;
        }
}

static H2Stream *stream_get(HttpConn *c, int32_t id) {
        return nghttp2_session_get_stream_user_data(c->h2, id);
}

/* ---- sending -------------------------------------------------------------- */

/* Frames from nghttp2 to the socket; false when the connection is gone. */
static bool h2_send(HttpConn *c) {
        for (;;) {
                const uint8_t *data;
                ssize_t n;

                if (c->out_len - c->out_sent >= H2_OUT_HIGH)
                        break;
                n = nghttp2_session_mem_send(c->h2, &data);
                if (n < 0) {
                        conn_free(c);
                        return false;
                }
                if (n == 0)
                        break;
                if (out_append(c, data, (size_t) n) < 0) {
                        conn_free(c);
                        return false;
                }
        }
        if (!conn_flush(c))
                return false;
        if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) && c->out_sent == c->out_len) {
                conn_free(c);  /* GOAWAY exchanged, or a connection error sent */
                return false;
        }
        /* Idle (no stream open) connections close after idle_timeout. */
        if (c->streams)
                (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        else
                conn_arm_timer(c, c->server->opts.idle_timeout_usec);
        return true;
}

/* After a handler's verb: send now, unless h2_process is on the stack and
 * will send when the handlers it called return. */
static bool h2_kick(HttpConn *c) {
        if (c->busy)
                return true;
        return h2_send(c);
}

static ssize_t on_data_source_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                                   uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
        H2Stream *st = source->ptr;
        size_t n = st->out_len - st->out_sent;
        (void) session;
        (void) stream_id;
        (void) user_data;

        if (n == 0 && !st->eof) {
                st->deferred = true;
                return NGHTTP2_ERR_DEFERRED;
        }
        n = MIN(n, length);
        memcpy(buf, st->out + st->out_sent, n);
        st->out_sent += n;
        if (st->out_sent == st->out_len) {
                st->out_sent = st->out_len = 0;
                if (st->eof)
                        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        }
        return (ssize_t) n;
}

static int stream_out_append(H2Stream *st, const void *data, size_t len) {
        if (len == 0)
                return 0;
        if (st->out_len - st->out_sent + len > OUT_MAX)
                return -ENOBUFS;
        if (st->out_sent > 0) {
                memmove(st->out, st->out + st->out_sent, st->out_len - st->out_sent);
                st->out_len -= st->out_sent;
                st->out_sent = 0;
        }
        if (st->out_len + len > st->out_cap) {
                size_t cap = MAX(st->out_cap * 2, st->out_len + len);
                char *p = realloc(st->out, cap);
                if (!p)
                        return -ENOMEM;
                st->out = p;
                st->out_cap = cap;
        }
        memcpy(st->out + st->out_len, data, len);
        st->out_len += len;
        return 0;
}

static bool header_forbidden_in_h2(const char *name, size_t len) {
        /* RFC 9113 §8.2.2: connection-specific fields are not sent. */
        static const char *const names[] = { "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                             "upgrade", "content-length" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
                        return true;
        return false;
}

/* Submits the response head: `headers` holds "Name: value\r\n" lines as for
 * HTTP/1.1; names are lowercased (RFC 9113 §8.2). */
static int stream_submit_head(H2Stream *st, int status, const char *content_type, const char *headers,
                              bool with_body, const size_t *content_length) {
        HttpConn *c = st->x.conn;
        nghttp2_nv nv[3 + H2_EXTRA_HEADERS_MAX];
        char status_text[8], length_text[24];
        _cleanup_free_ char *copy = NULL;
        size_t n = 0;
        nghttp2_data_provider prd = { .source.ptr = st, .read_callback = on_data_source_read };

        if (status < 100 || status > 999)
                return -EINVAL;
        snprintf(status_text, sizeof(status_text), "%d", status);
        nv[n++] = (nghttp2_nv){ (uint8_t *) ":status", (uint8_t *) status_text, 7, strlen(status_text),
                                NGHTTP2_NV_FLAG_NONE };
        if (content_type)
                nv[n++] = (nghttp2_nv){ (uint8_t *) "content-type", (uint8_t *) content_type, 12,
                                        strlen(content_type), NGHTTP2_NV_FLAG_NONE };
        if (content_length) {
                snprintf(length_text, sizeof(length_text), "%zu", *content_length);
                nv[n++] = (nghttp2_nv){ (uint8_t *) "content-length", (uint8_t *) length_text, 14,
                                        strlen(length_text), NGHTTP2_NV_FLAG_NONE };
        }
        if (headers) {
                copy = strdup(headers);
                if (!copy)
                        return -ENOMEM;
                for (char *line = copy, *eol; *line; line = eol + 2) {
                        char *colon, *v;
                        eol = strstr(line, "\r\n");
                        if (!eol)
                                return -EINVAL;
                        *eol = 0;
                        colon = strchr(line, ':');
                        if (!colon || colon == line)
                                return -EINVAL;
                        for (char *p = line; p < colon; p++)
                                *p = (char) tolower((unsigned char) *p);
                        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
                                ;
                        if (header_forbidden_in_h2(line, (size_t) (colon - line)))
                                continue;
                        if (n >= ELEMENTSOF(nv))
                                return -E2BIG;
                        nv[n++] = (nghttp2_nv){ (uint8_t *) line, (uint8_t *) v, (size_t) (colon - line), strlen(v),
                                                NGHTTP2_NV_FLAG_NONE };
                }
        }
        /* nghttp2 copies the names and values. */
        if (nghttp2_submit_response(c->h2, st->id, nv, n, with_body ? &prd : NULL) != 0)
                return -EIO;
        return 0;
}

int h2_respond(HttpExchange *x, int status, const char *content_type, const char *headers, const void *body,
               size_t len) {
        H2Stream *st = x->h2;
        HttpConn *c = x->conn;
        bool with_body = len > 0 && !x->head_only;
        int r;

        if (st->answered)
                return -EINVAL;
        st->answered = true;
        st->eof = true;
        r = with_body ? stream_out_append(st, body, len) : 0;
        if (r >= 0)
                r = stream_submit_head(st, status, content_type, headers, with_body, &len);
        if (r < 0)
                (void) nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        /* The stream may be freed while sending: st is not touched again. */
        return h2_kick(c) ? r : -ECONNRESET;
}

int h2_stream_begin(HttpExchange *x, int status, const char *content_type, const char *headers) {
        H2Stream *st = x->h2;
        HttpConn *c = x->conn;
        int r;

        if (st->answered || st->head_sent)
                return -EINVAL;
        r = stream_submit_head(st, status, content_type, headers, /* with_body= */ true, NULL);
        if (r < 0)
                return r;
        st->head_sent = true;
        return h2_kick(c) ? 0 : -ECONNRESET;
}

int h2_stream_send(HttpExchange *x, const void *data, size_t len) {
        H2Stream *st = x->h2;
        HttpConn *c = x->conn;
        int r;

        if (st->answered || !st->head_sent)
                return -EINVAL;
        r = stream_out_append(st, data, len);
        if (r < 0)
                return r;
        if (st->deferred) {
                st->deferred = false;
                (void) nghttp2_session_resume_data(c->h2, st->id);
        }
        return h2_kick(c) ? 0 : -ECONNRESET;
}

int h2_stream_end(HttpExchange *x) {
        H2Stream *st = x->h2;
        HttpConn *c = x->conn;

        if (st->answered || !st->head_sent)
                return -EINVAL;
        st->answered = true;
        st->eof = true;
        if (st->deferred) {
                st->deferred = false;
                (void) nghttp2_session_resume_data(c->h2, st->id);
        }
        return h2_kick(c) ? 0 : -ECONNRESET;
}

/* An answer from lib/http itself, for requests the handler never sees. */
static void stream_refuse(HttpConn *c, H2Stream *st, int status) {
        char body[64];
        int n = snprintf(body, sizeof(body), "%s\n", http_status_text(status));
        size_t len = (size_t) n;

        st->refused = status;
        st->answered = true;
        st->eof = true;
        free(st->x.req.body);
        st->x.req.body = NULL;
        c->h2_body_bytes -= MIN(c->h2_body_bytes, st->body_cap);
        st->body_cap = 0;
        st->x.req.body_len = 0;
        if (stream_out_append(st, body, len) < 0 ||
            stream_submit_head(st, status, "text/plain; charset=utf-8", NULL, /* with_body= */ true, &len) < 0)
                (void) nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

/* ---- receiving ------------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
        HttpConn *c = user_data;
        H2Stream *st;

        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        st = calloc(1, sizeof(*st));
        if (!st)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        st->arena = malloc(c->server->opts.limits.head_max);
        if (!st->arena) {
                free(st);
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        st->id = frame->hd.stream_id;
        st->x = (HttpExchange){ .conn = c, .h2 = st, .req = { .http2 = true, .keep_alive = true, .target = NULL } };
        st->next = c->streams;
        if (c->streams)
                c->streams->prev = st;
        c->streams = st;
        return nghttp2_session_set_stream_user_data(session, st->id, st) == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static char *arena_add(H2Stream *st, size_t cap, const uint8_t *s, size_t len) {
        char *p;
        if (cap - st->arena_len < len + 1)
                return NULL;
        p = st->arena + st->arena_len;
        memcpy(p, s, len);
        p[len] = 0;
        st->arena_len += len + 1;
        return p;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
        HttpConn *c = user_data;
        size_t cap = c->server->opts.limits.head_max;
        HttpRequest *req;
        H2Stream *st;
        (void) session;
        (void) flags;

        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;  /* trailers are read past, as on HTTP/1.1 */
        st = stream_get(c, frame->hd.stream_id);
        if (!st || st->refused)
                return 0;
        req = &st->x.req;
        /* nghttp2 has checked the pseudo-headers and the field syntax (RFC 9113 §8.2, §8.3). */
        if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
                if (valuelen >= sizeof(req->method)) {
                        st->refused = 501;
                        return 0;
                }
                memcpy(req->method, value, valuelen);
                req->method[valuelen] = 0;
                return 0;
        }
        if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
                req->target = arena_add(st, cap, value, valuelen);
                if (!req->target)
                        st->refused = 431;
                return 0;
        }
        if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
                name = (const uint8_t *) "host";
                namelen = 4;
        } else if (namelen > 0 && name[0] == ':')
                return 0;  /* :scheme, :protocol */
        if (req->n_headers >= HTTP_HEADERS_MAX) {
                st->refused = 431;
                return 0;
        }
        req->headers[req->n_headers].name = arena_add(st, cap, name, namelen);
        req->headers[req->n_headers].value = arena_add(st, cap, value, valuelen);
        if (!req->headers[req->n_headers].name || !req->headers[req->n_headers].value) {
                st->refused = 431;
                return 0;
        }
        req->n_headers++;
        return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data) {
        HttpConn *c = user_data;
        size_t body_max = c->server->opts.limits.body_max;
        H2Stream *st = stream_get(c, stream_id);
        HttpRequest *req;
        (void) flags;

        if (!st || st->refused || st->answered)
                return 0;
        req = &st->x.req;
        if (len > body_max - req->body_len) {
                stream_refuse(c, st, 413);
                return 0;
        }
        if (req->body_len + len + 1 > st->body_cap) {
                size_t cap = MIN(MAX(st->body_cap * 2, req->body_len + len + 1), body_max + 1);
                char *p;
                if (c->h2_body_bytes + (cap - st->body_cap) > H2_BODY_BYTES_MAX) {
                        /* Many large uploads at once: this one may be retried later. */
                        st->answered = true;
                        st->refused = 503;
                        return nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id,
                                                         NGHTTP2_REFUSED_STREAM) == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
                }
                p = realloc(req->body, cap);
                if (!p)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                req->body = p;
                c->h2_body_bytes += cap - st->body_cap;
                st->body_cap = cap;
        }
        memcpy(req->body + req->body_len, data, len);
        req->body_len += len;
        req->body[req->body_len] = 0;
        return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
        HttpConn *c = user_data;
        HttpServer *s = c->server;
        H2Stream *st;
        (void) session;

        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
                return 0;
        st = stream_get(c, frame->hd.stream_id);
        if (!st)
                return 0;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
                if (!st->refused && !st->x.req.target)
                        st->refused = 400;
                if (c->h2_sniffing && !c->h2_decided) {
                        /* The first request decides who serves the connection. */
                        c->h2_decided = true;
                        c->h2_claimed = !st->refused && s->opts.h2_claim(&st->x.req, s->opts.h2_userdata);
                }
                if (st->refused && !st->answered && !c->h2_claimed)
                        stream_refuse(c, st, st->refused);
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
                st->complete = true;
        return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
        HttpConn *c = user_data;
        H2Stream *st = stream_get(c, stream_id);
        (void) session;
        (void) error_code;

        if (!st)
                return 0;
        stream_abort(c, st);
        stream_free(c, st);
        return 0;
}

/* Hands the complete requests to the handler. */
static void h2_dispatch(HttpConn *c) {
        HttpServer *s = c->server;

        for (H2Stream *st = c->streams; st && !c->dead; st = st->next) {
                if (!st->complete || st->dispatched || st->answered)
                        continue;
                st->dispatched = true;
                if (!st->x.req.body) {
                        st->x.req.body = strdup("");
                        if (!st->x.req.body) {
                                st->answered = true;
                                (void) nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id,
                                                                 NGHTTP2_INTERNAL_ERROR);
                                continue;
                        }
                }
                st->x.head_only = streq(st->x.req.method, "HEAD");
                s->handler(&st->x, &st->x.req, s->userdata);
        }
}

/* ---- the connection --------------------------------------------------------- */

int h2_start(HttpConn *c) {
        HttpServer *s = c->server;
        nghttp2_session_callbacks *cbs = NULL;
        nghttp2_option *opt = NULL;
        nghttp2_settings_entry settings[] = {
                { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_CONCURRENT_STREAMS },
        };
        const uint8_t *data;
        ssize_t n;
        int r;

        if (nghttp2_session_callbacks_new(&cbs) != 0)
                return -ENOMEM;
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
        if (nghttp2_option_new(&opt) != 0) {
                nghttp2_session_callbacks_del(cbs);
                return -ENOMEM;
        }
        /* A peer that floods PINGs or SETTINGS without reading our ACKs loses
         * its connection once 1000 are queued; streams beyond the 100 we
         * announce are refused by nghttp2 itself. */
        nghttp2_option_set_max_outbound_ack(opt, 1000);
        r = nghttp2_session_server_new2(&c->h2, cbs, c, opt);
        nghttp2_option_del(opt);
        nghttp2_session_callbacks_del(cbs);
        if (r != 0)
                return -ENOMEM;
        if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings, ELEMENTSOF(settings)) != 0)
                return -ENOMEM;

        c->h2_sniffing = s->opts.h2 && s->opts.h2_claim;
        c->h2_decided = !c->h2_sniffing;
        /* RFC 9113 §3.4: the server preface is a SETTINGS frame; it is the only
         * thing sent while sniffing, so a connection handed to the hook has
         * seen nothing else from us. */
        n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0 || out_append(c, data, (size_t) n) < 0)
                return -ENOMEM;
        conn_arm_timer(c, s->opts.idle_timeout_usec);
        return 0;
}

static bool h2_hold(HttpConn *c) {
        for (;;) {
                const uint8_t *data;
                ssize_t n = nghttp2_session_mem_send(c->h2, &data);
                char *p;
                if (n < 0)
                        return false;
                if (n == 0)
                        return true;
                if (c->h2_held_len + (size_t) n > H2_OUT_HIGH)
                        return false;  /* only control frames come here: a flood */
                p = realloc(c->h2_held, c->h2_held_len + (size_t) n);
                if (!p)
                        return false;
                memcpy(p + c->h2_held_len, data, (size_t) n);
                c->h2_held = p;
                c->h2_held_len += (size_t) n;
        }
}

/* While sniffing: feeds what arrived to nghttp2 without consuming it (plain
 * text) or keeping it for a replay (TLS). True once the connection is ours. */
static bool h2_sniff(HttpConn *c) {
        bool want_write = false;

        if (!c->in) {
                c->in = malloc(H2_SNIFF_MAX);
                if (!c->in) {
                        conn_free(c);
                        return false;
                }
                c->in_cap = H2_SNIFF_MAX;
                c->in_len = 0;
        }
        for (;;) {
                ssize_t n, r;
                size_t fresh_from = c->ssl ? c->in_len : c->h2_fed;

                if (!c->ssl) {
                        n = recv(c->fd, c->in, H2_SNIFF_MAX, MSG_PEEK);
                        if (n < 0)
                                n = errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
                        else if ((size_t) n <= c->h2_fed && n > 0)
                                n = -EAGAIN;  /* nothing new since the last look */
                } else {
                        n = c->in_len < H2_SNIFF_MAX ? conn_read(c, c->in + c->in_len, H2_SNIFF_MAX - c->in_len,
                                                                 &want_write)
                                                     : -EAGAIN;
                        if (n > 0)
                                n += (ssize_t) c->in_len;
                }
                if (n == -EAGAIN) {
                        if (c->h2_decided)
                                break;  /* the client stopped sending (see on_conn_io) */
                        if (!c->ssl || c->in_len < H2_SNIFF_MAX) {
                                /* Plain text: peeked bytes stay readable, so wait for
                                 * the next arrival edge rather than for readability. */
                                conn_set_events(c, h2_wanted_events(c) | (want_write ? EPOLLOUT : 0));
                                return false;
                        }
                } else if (n <= 0) {
                        conn_free(c);
                        return false;
                } else {
                        r = nghttp2_session_mem_recv(c->h2, (const uint8_t *) c->in + fresh_from,
                                                     (size_t) n - fresh_from);
                        if (r < 0) {
                                conn_free(c);
                                return false;
                        }
                        if (c->ssl)
                                c->in_len = (size_t) n;
                        else
                                c->h2_fed = (size_t) n;
                        /* What nghttp2 answers (a SETTINGS ACK; a GOAWAY for a
                         * broken connection) is held back: the hook's server
                         * must be the only one talking if it takes over. */
                        if (!h2_hold(c)) {
                                conn_free(c);
                                return false;
                        }
                }
                /* No request head in 64 KiB, or a connection error (a GOAWAY
                 * was produced): ours to answer. */
                if (!c->h2_decided && ((c->ssl ? c->in_len : c->h2_fed) >= H2_SNIFF_MAX ||
                                       !nghttp2_session_want_read(c->h2)))
                        c->h2_decided = true;
                if (c->h2_decided)
                        break;
        }

        if (c->h2_claimed) {
                /* Our SETTINGS must be out whole before the hook's server writes:
                 * 15 bytes on a fresh socket, so anything else is a broken peer. */
                if (c->out_sent < c->out_len) {
                        conn_free(c);
                        return false;
                }
                /* Drop nghttp2's state unsent: the hook's server answers from the start. */
                free(c->h2_held);
        c->h2_held = NULL;
                c->h2_held_len = 0;
                c->state = CONN_HANDSHAKE;
                h2_conn_done(c);
                c->h2_sniffing = false;
                if (!c->ssl)
                        c->in_len = 0;
                conn_hand_over_h2(c);
                return false;
        }
        if (!c->ssl && c->h2_fed > 0) {
                /* Take the bytes nghttp2 has seen off the socket. */
                ssize_t n = recv(c->fd, c->in, c->h2_fed, 0);
                if (n != (ssize_t) c->h2_fed) {
                        conn_free(c);
                        return false;
                }
        }
        c->h2_sniffing = false;
        c->in_len = 0;
        if (c->h2_held_len > 0 && out_append(c, c->h2_held, c->h2_held_len) < 0) {
                conn_free(c);
                return false;
        }
        free(c->h2_held);
        c->h2_held = NULL;
        c->h2_held_len = 0;
        conn_set_events(c, EPOLLIN);
        return true;
}

/* The peer shut down its side while we were waiting for its first request
 * (peeked bytes do not show the EOF): what it sent is all there is. */
void h2_peer_done_sending(HttpConn *c) {
        if (c->h2_sniffing)
                c->h2_decided = true;
}

void h2_process(HttpConn *c) {
        bool want_write = false;
        uint8_t buf[16384];

        if (c->h2_sniffing && !h2_sniff(c))
                return;

        c->busy = true;
        h2_dispatch(c);
        while (!c->dead && c->out_len - c->out_sent < H2_OUT_HIGH) {
                ssize_t n = conn_read(c, buf, sizeof(buf), &want_write);
                if (n == -EAGAIN)
                        break;
                if (n <= 0 || nghttp2_session_mem_recv(c->h2, buf, (size_t) n) < 0) {
                        conn_free(c);  /* deferred: busy */
                        break;
                }
                h2_dispatch(c);
        }
        c->busy = false;
        if (c->dead) {
                c->dead = false;
                conn_free(c);
                return;
        }
        if (!h2_send(c))
                return;
        if (want_write)
                conn_set_events(c, EPOLLOUT | EPOLLIN);
}

uint32_t h2_wanted_events(HttpConn *c) {
        size_t pending = c->out_len - c->out_sent;

        if (c->h2_sniffing)
                return c->ssl ? EPOLLIN : EPOLLIN | EPOLLRDHUP | EPOLLET;
        if (pending >= H2_OUT_HIGH)
                return EPOLLOUT;
        return pending > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN;
}

void h2_conn_done(HttpConn *c) {
        while (c->streams) {
                H2Stream *st = c->streams;
                stream_abort(c, st);
                stream_free(c, st);
        }
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
        free(c->h2_held);
        c->h2_held = NULL;
        c->h2_held_len = 0;
}
