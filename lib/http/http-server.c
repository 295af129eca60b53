/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "parse-util.h"
#include "http-internal.h"

static const char h2_preface_start[4] = { 'P', 'R', 'I', ' ' };

/* ---- request parsing (RFC 9112) ------------------------------------------ */

static bool token_char(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *find_head_end(const char *buf, size_t len) {
        const char *p = buf;
        while ((p = memchr(p, '\r', len - (size_t) (p - buf)))) {
                if ((size_t) (p - buf) + 4 <= len && memcmp(p, "\r\n\r\n", 4) == 0)
                        return p + 4;
                if ((size_t) (p - buf) + 4 > len)
                        return NULL;
                p++;
        }
        return NULL;
}

/* Whether a comma-separated header value lists `token` (case-insensitive). */
static bool list_has_token(const char *value, const char *token) {
        size_t tl = strlen(token);
        const char *p = value;

        while (*p) {
                const char *e;
                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                e = p;
                while (*e && *e != ',')
                        e++;
                const char *t = e;
                while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
                        t--;
                if ((size_t) (t - p) == tl && strncasecmp(p, token, tl) == 0)
                        return true;
                p = e;
        }
        return false;
}

static int parse_content_length(const char *v, uint64_t *ret) {
        uint64_t n = 0;
        if (!*v)
                return -EBADMSG;
        for (; *v; v++) {
                if (*v < '0' || *v > '9')
                        return -EBADMSG;
                if (n > (UINT64_MAX - 9) / 10)
                        return -EBADMSG;
                n = n * 10 + (uint64_t) (*v - '0');
        }
        *ret = n;
        return 0;
}

/* Decodes a chunked body starting at buf (RFC 9112 §7.1) into out (NULL:
 * only measure). Returns the encoded length, -EAGAIN, -EBADMSG or -EFBIG. */
static ssize_t chunked_decode(const char *buf, size_t len, size_t body_max, size_t line_max, char *out,
                              size_t *ret_decoded) {
        size_t pos = 0, total = 0;

        for (;;) {
                uint64_t size = 0;
                size_t digits = 0;
                const char *eol;

                /* chunk-size [ chunk-ext ] CRLF */
                while (pos < len && unhexchar(buf[pos]) >= 0) {
                        if (++digits > 15)
                                return -EBADMSG;
                        size = size * 16 + (uint64_t) unhexchar(buf[pos]);
                        pos++;
                }
                if (pos == len)
                        return -EAGAIN;
                if (digits == 0)
                        return -EBADMSG;
                eol = memmem(buf + pos, len - pos, "\r\n", 2);
                if (!eol)
                        return len - pos > line_max ? -EBADMSG : -EAGAIN;
                if ((size_t) (eol - buf) - pos > line_max)
                        return -EBADMSG;
                if (pos < (size_t) (eol - buf) && buf[pos] != ';' && buf[pos] != ' ' && buf[pos] != '\t')
                        return -EBADMSG;
                for (const char *q = buf + pos; q < eol; q++)
                        if ((unsigned char) *q < 0x20 && *q != '\t')
                                return -EBADMSG;
                pos = (size_t) (eol - buf) + 2;
                if (size == 0)
                        break;
                if (size > body_max - total)
                        return -EFBIG;
                if (len - pos < size + 2)
                        return -EAGAIN;
                if (buf[pos + size] != '\r' || buf[pos + size + 1] != '\n')
                        return -EBADMSG;
                if (out)
                        memcpy(out + total, buf + pos, size);
                total += size;
                pos += size + 2;
        }
        /* trailer-section CRLF: fields are read past and ignored. */
        for (size_t lines = 0;; lines++) {
                const char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
                if (!eol)
                        return len - pos > line_max ? -EBADMSG : -EAGAIN;
                if (lines > HTTP_HEADERS_MAX || (size_t) (eol - buf) - pos > line_max)
                        return -EBADMSG;
                if ((size_t) (eol - buf) == pos) {
                        pos += 2;
                        break;
                }
                pos = (size_t) (eol - buf) + 2;
        }
        *ret_decoded = total;
        return (ssize_t) pos;
}

int http_request_parse(const char *buf, size_t len, const HttpLimits *limits, HttpRequest *ret, size_t *ret_consumed) {
        size_t head_max = limits && limits->head_max ? limits->head_max : HTTP_HEAD_MAX_DEFAULT;
        size_t body_max = limits && limits->body_max ? limits->body_max : HTTP_BODY_MAX_DEFAULT;
        const char *end, *line_end, *sp1, *sp2, *p;
        _cleanup_free_ char *storage = NULL;
        HttpRequest req = {};
        size_t head_len, body_len = 0, consumed;
        uint64_t content_length = 0;
        bool have_length = false, chunked = false, have_host = false;
        const char *connection = NULL;
        char *s;

        end = find_head_end(buf, MIN(len, head_max));
        if (!end)
                return len >= head_max ? -EMSGSIZE : -EAGAIN;
        head_len = (size_t) (end - buf);

        /* request-line = method SP request-target SP HTTP-version CRLF (§3) */
        line_end = memmem(buf, head_len, "\r\n", 2);
        sp1 = memchr(buf, ' ', (size_t) (line_end - buf));
        if (!sp1 || sp1 == buf || (size_t) (sp1 - buf) >= sizeof(req.method))
                return -EBADMSG;
        sp2 = memchr(sp1 + 1, ' ', (size_t) (line_end - sp1 - 1));
        if (!sp2 || sp2 == sp1 + 1)
                return -EBADMSG;
        if (line_end - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
                return -EBADMSG;
        for (p = buf; p < sp1; p++)
                if (!token_char(*p))
                        return -EBADMSG;
        for (p = sp1 + 1; p < sp2; p++)
                if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
                        return -EBADMSG;
        memcpy(req.method, buf, (size_t) (sp1 - buf));
        req.minor_version = sp2[8] - '0';

        /* The head is copied once; strings are cut in place. */
        storage = malloc(head_len + 1);
        if (!storage)
                return -ENOMEM;
        memcpy(storage, buf, head_len);
        storage[head_len] = 0;
        s = storage;
        s[sp2 - buf] = 0;
        req.target = s + (sp1 - buf) + 1;

        /* field-line = field-name ":" OWS field-value OWS (§5); obs-fold is refused. */
        for (p = line_end + 2; p < end - 2; p = line_end + 2) {
                const char *colon, *v, *ve;
                char *name, *value;

                line_end = memmem(p, (size_t) (end - p), "\r\n", 2);
                colon = memchr(p, ':', (size_t) (line_end - p));
                if (!colon || colon == p)
                        return -EBADMSG;
                for (const char *q = p; q < colon; q++)
                        if (!token_char(*q))
                                return -EBADMSG;
                for (v = colon + 1; v < line_end && (*v == ' ' || *v == '\t'); v++)
                        ;
                for (ve = line_end; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
                        ;
                for (const char *q = v; q < ve; q++)
                        if (((unsigned char) *q < 0x20 && *q != '\t') || *q == 0x7f)
                                return -EBADMSG;
                if (req.n_headers >= HTTP_HEADERS_MAX)
                        return -EMSGSIZE;
                name = s + (p - buf);
                name[colon - p] = 0;
                value = s + (v - buf);
                value[ve - v] = 0;
                req.headers[req.n_headers++] = (HttpHeader){ .name = name, .value = value };

                if (strcasecmp(name, "Content-Length") == 0) {
                        uint64_t n;
                        /* Differing repeated lengths are a smuggling attempt (§6.3). */
                        if (parse_content_length(value, &n) < 0 || (have_length && n != content_length))
                                return -EBADMSG;
                        content_length = n;
                        have_length = true;
                } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
                        if (strcasecmp(value, "chunked") != 0 || chunked)
                                return list_has_token(value, "chunked") ? -EBADMSG : -EOPNOTSUPP;
                        chunked = true;
                } else if (strcasecmp(name, "Host") == 0) {
                        if (have_host)
                                return -EBADMSG;
                        have_host = true;
                } else if (strcasecmp(name, "Connection") == 0)
                        connection = value;
        }
        /* §3.2: a 1.1 request without Host is a 400; §6.1: chunked needs 1.1;
         * §6.3: both framings at once is refused rather than guessed. */
        if ((req.minor_version == 1 && !have_host) || (chunked && (req.minor_version == 0 || have_length)))
                return -EBADMSG;
        if (have_length && content_length > body_max)
                return -EFBIG;

        if (chunked) {
                ssize_t n = chunked_decode(end, len - head_len, body_max, head_max, NULL, &body_len);
                if (n < 0)
                        return (int) n;
                consumed = head_len + (size_t) n;
        } else {
                body_len = (size_t) content_length;
                if (len - head_len < body_len)
                        return -EAGAIN;
                consumed = head_len + body_len;
        }

        /* The body lives in its own allocation; header strings stay in storage. */
        req.body = malloc(body_len + 1);
        if (!req.body)
                return -ENOMEM;
        if (chunked) {
                size_t again;
                (void) chunked_decode(end, len - head_len, body_max, head_max, req.body, &again);
        } else
                memcpy(req.body, end, body_len);
        req.body[body_len] = 0;
        req.body_len = body_len;

        if (req.minor_version == 1)
                req.keep_alive = !(connection && list_has_token(connection, "close"));
        else
                req.keep_alive = connection && list_has_token(connection, "keep-alive");
        req.storage = TAKE_PTR(storage);
        *ret = req;
        if (ret_consumed)
                *ret_consumed = consumed;
        return 0;
}

void http_request_done(HttpRequest *req) {
        if (!req)
                return;
        free(req->storage);
        free(req->body);
        *req = (HttpRequest){};
}

const char *http_request_header(const HttpRequest *req, const char *name) {
        for (size_t i = 0; i < req->n_headers; i++)
                if (strcasecmp(req->headers[i].name, name) == 0)
                        return req->headers[i].value;
        return NULL;
}

const char *http_status_text(int status) {
        switch (status) {
        case 200: return "OK";
        case 204: return "No Content";
        case 304: return "Not Modified";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 412: return "Precondition Failed";
        case 413: return "Content Too Large";
        case 415: return "Unsupported Media Type";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 499: return "Client Closed Request";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
        }
}

/* ---- connections ------------------------------------------------------------ */

static void conn_process(HttpConn *c);

void conn_free(HttpConn *c) {
        HttpServer *s = c->server;

        if (c->busy) {
                c->dead = true;
                return;
        }
        if (c->state == CONN_PENDING || c->state == CONN_STREAMING) {
                /* The handler still holds the exchange: tell it, once. */
                void (*cb)(HttpExchange *, void *) = c->x.on_abort;
                c->x.on_abort = NULL;
                c->state = CONN_READ;
                if (cb) {
                        c->busy = true;
                        cb(&c->x, c->x.abort_userdata);
                        c->busy = false;
                }
        }
        if (c->h2)
                h2_conn_done(c);
        if (c->prev)
                c->prev->next = c->next;
        else
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_conns--;
        http_request_done(&c->x.req);
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        sd_event_source_disable_unref(c->tunnel_io);
        safe_close(c->tunnel_fd);
        if (c->ssl)
                SSL_free(c->ssl);
        safe_close(c->fd);
        free(c->in);
        free(c->out);
        free(c->up);
        free(c->down);
        free(c);
}

void conn_set_events(HttpConn *c, uint32_t events) {
        uint32_t now;
        /* Setting the same edge-triggered mask again would re-arm it and
         * report the same bytes once more (sd-event re-registers EPOLLET). */
        if (sd_event_source_get_io_events(c->io, &now) >= 0 && now == events)
                return;
        (void) sd_event_source_set_io_events(c->io, events);
}

void conn_arm_timer(HttpConn *c, uint64_t usec) {
        uint64_t now;
        if (sd_event_now(c->server->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        (void) sd_event_source_set_time(c->timer, now + usec);
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

/* Bytes read, 0 on EOF, -EAGAIN, or an error. */
ssize_t conn_read(HttpConn *c, void *buf, size_t len, bool *want_write) {
        *want_write = false;
        if (!c->ssl) {
                ssize_t n = recv(c->fd, buf, len, 0);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
                return n;
        }
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
        if (n > 0)
                return n;
        switch (SSL_get_error(c->ssl, n)) {
        case SSL_ERROR_WANT_WRITE:
                *want_write = true;
                __attribute__((fallthrough));
        case SSL_ERROR_WANT_READ:
                return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return 0;
        default:
                return -ECONNRESET;
        }
}

static ssize_t conn_write(HttpConn *c, const void *buf, size_t len) {
        if (!c->ssl) {
                ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
                return n;
        }
        ERR_clear_error();
        int n = SSL_write(c->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
        if (n > 0)
                return n;
        switch (SSL_get_error(c->ssl, n)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
                return -EAGAIN;
        default:
                return -ECONNRESET;
        }
}

int out_append(HttpConn *c, const void *data, size_t len) {
        if (c->out_sent > 0 && c->out_sent == c->out_len)
                c->out_sent = c->out_len = 0;
        if (c->out_len + len > c->out_cap) {
                size_t cap = MAX(c->out_cap * 2, c->out_len + len + 4096);
                char *p = realloc(c->out, cap);
                if (!p)
                        return -ENOMEM;
                c->out = p;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        return 0;
}

/* The events a connection waits for in its current state. */
static uint32_t conn_wanted_events(HttpConn *c) {
        if (c->state == CONN_H2)
                return h2_wanted_events(c);
        if (c->out_sent < c->out_len)
                return EPOLLOUT;
        if (c->state == CONN_PENDING || c->state == CONN_STREAMING)
                return EPOLLRDHUP;  /* only notice the client leaving */
        return EPOLLIN;
}

/* Writes what is queued; true when the connection is still usable. */
bool conn_flush(HttpConn *c) {
        while (c->out_sent < c->out_len) {
                ssize_t n = conn_write(c, c->out + c->out_sent, c->out_len - c->out_sent);
                if (n == -EAGAIN)
                        break;
                if (n <= 0) {
                        conn_free(c);
                        return false;
                }
                c->out_sent += (size_t) n;
        }
        if (c->out_sent == c->out_len) {
                c->out_sent = c->out_len = 0;
                if (c->close_after && c->state == CONN_READ) {
                        if (c->ssl)
                                (void) SSL_shutdown(c->ssl);
                        (void) shutdown(c->fd, SHUT_WR);
                        conn_free(c);
                        return false;
                }
        }
        conn_set_events(c, conn_wanted_events(c));
        return true;
}

static int append_head(HttpConn *c, int status, const char *content_type, const char *headers, const char *framing) {
        _cleanup_free_ char *head = NULL;
        char date[64];
        struct tm tm;
        time_t t = time(NULL);
        int n;

        /* RFC 9110 §6.6.1: an origin server with a clock sends Date. */
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        n = asprintf(&head, "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s%s%s%s%s\r\n", status, http_status_text(status), date,
                     content_type ? "Content-Type: " : "", content_type ?: "", content_type ? "\r\n" : "",
                     headers ?: "", framing, c->close_after ? "Connection: close\r\n" : "");
        if (n < 0)
                return -ENOMEM;
        return out_append(c, head, (size_t) n);
}

/* Ends the current exchange: the connection reads the next request. */
static void exchange_end(HttpConn *c) {
        http_request_done(&c->x.req);
        c->x = (HttpExchange){ .conn = c };
        c->state = CONN_READ;
        c->served++;
        conn_arm_timer(c, c->server->opts.idle_timeout_usec);
        if (!conn_flush(c))
                return;
        /* Answered later than the handler call: look at what was pipelined. */
        if (!c->busy && c->in_len > 0)
                conn_process(c);
}

static void conn_reply_error(HttpConn *c, int status) {
        char body[64];
        int n = snprintf(body, sizeof(body), "%s\n", http_status_text(status));
        char framing[64];

        c->close_after = true;
        snprintf(framing, sizeof(framing), "Content-Length: %d\r\n", n);
        c->state = CONN_READ;
        if (append_head(c, status, "text/plain; charset=utf-8", NULL, framing) < 0 ||
            out_append(c, body, (size_t) n) < 0) {
                conn_free(c);
                return;
        }
        (void) conn_flush(c);
}

/* ---- the TLS h2 tunnel ------------------------------------------------------ */

static void tunnel_pump(HttpConn *c) {
        bool progress = true, want_write = false;
        uint32_t ev_client = 0, ev_tunnel = 0;

        while (progress) {
                ssize_t n;
                progress = false;
                if (c->up_len < TUNNEL_BUF) {
                        n = conn_read(c, c->up + c->up_len, TUNNEL_BUF - c->up_len, &want_write);
                        if (n == 0 || (n < 0 && n != -EAGAIN))
                                return conn_free(c);
                        if (n > 0) {
                                c->up_len += (size_t) n;
                                progress = true;
                        }
                }
                if (c->up_len > 0) {
                        n = send(c->tunnel_fd, c->up, c->up_len, MSG_NOSIGNAL);
                        if (n < 0 && errno != EAGAIN && errno != EINTR)
                                return conn_free(c);
                        if (n > 0) {
                                memmove(c->up, c->up + n, c->up_len - (size_t) n);
                                c->up_len -= (size_t) n;
                                progress = true;
                        }
                }
                if (c->down_len < TUNNEL_BUF) {
                        n = recv(c->tunnel_fd, c->down + c->down_len, TUNNEL_BUF - c->down_len, 0);
                        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                                return conn_free(c);
                        if (n > 0) {
                                c->down_len += (size_t) n;
                                progress = true;
                        }
                }
                if (c->down_len > 0) {
                        n = conn_write(c, c->down, c->down_len);
                        if (n < 0 && n != -EAGAIN)
                                return conn_free(c);
                        if (n > 0) {
                                memmove(c->down, c->down + n, c->down_len - (size_t) n);
                                c->down_len -= (size_t) n;
                                progress = true;
                        }
                }
        }
        if (c->up_len < TUNNEL_BUF)
                ev_client |= EPOLLIN;
        if (c->down_len > 0 || want_write)
                ev_client |= EPOLLOUT;
        if (c->down_len < TUNNEL_BUF)
                ev_tunnel |= EPOLLIN;
        if (c->up_len > 0)
                ev_tunnel |= EPOLLOUT;
        conn_set_events(c, ev_client);
        (void) sd_event_source_set_io_events(c->tunnel_io, ev_tunnel);
}

static int on_tunnel_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        (void) es;
        (void) fd;
        (void) revents;
        tunnel_pump(userdata);
        return 0;
}

void conn_hand_over_h2(HttpConn *c) {
        HttpServer *s = c->server;
        int sp[2], r;

        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        if (!c->ssl) {
                /* Plain text: the hook gets the socket itself; what was
                 * looked at while sniffing was only peeked at. */
                int fd = TAKE_FD(c->fd);
                r = s->opts.h2(fd, fd, s->opts.h2_userdata);
                if (r < 0)
                        close(fd);
                conn_free(c);
                return;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0)
                return conn_free(c);
        c->tunnel_fd = sp[0];
        c->up = malloc(TUNNEL_BUF);
        c->down = malloc(TUNNEL_BUF);
        if (!c->up || !c->down || s->opts.h2(sp[1], c->fd, s->opts.h2_userdata) < 0) {
                close(sp[1]);
                return conn_free(c);
        }
        /* TLS: the bytes read while sniffing go first (they fit: the sniffer
         * reads at most TUNNEL_BUF). */
        if (c->in_len > 0) {
                memcpy(c->up, c->in, MIN(c->in_len, TUNNEL_BUF));
                c->up_len = MIN(c->in_len, TUNNEL_BUF);
                c->in_len = 0;
        }
        c->state = CONN_TUNNEL;
        if (sd_event_add_io(s->event, &c->tunnel_io, c->tunnel_fd, EPOLLIN, on_tunnel_io, c) < 0)
                return conn_free(c);
        tunnel_pump(c);
}

/* ---- reading requests --------------------------------------------------------- */

static size_t conn_in_max(HttpServer *s) {
        /* Head, body and the framing of a chunked body (bounded by the parser). */
        return s->opts.limits.head_max + s->opts.limits.body_max + s->opts.limits.body_max / 8 + 65536;
}

/* An HTTP/2 connection: the hook takes it whole, or nghttp2 serves it here
 * (after showing the first request to h2_claim, when there is one). */
static void conn_start_h2(HttpConn *c) {
        HttpServer *s = c->server;

        if (!s->opts.h2_serve)
                return conn_hand_over_h2(c);
        c->state = CONN_H2;
        if (h2_start(c) < 0)
                return conn_free(c);
        if (!conn_flush(c))
                return;  /* the SETTINGS frame could not be sent: gone */
        h2_process(c);
}

static bool conn_handshake(HttpConn *c) {
        HttpServer *s = c->server;

        if (c->ssl) {
                const unsigned char *alpn = NULL;
                unsigned alpn_len = 0;
                int n;

                ERR_clear_error();
                n = SSL_accept(c->ssl);
                if (n != 1) {
                        int e = SSL_get_error(c->ssl, n);
                        if (e == SSL_ERROR_WANT_READ)
                                conn_set_events(c, EPOLLIN);
                        else if (e == SSL_ERROR_WANT_WRITE)
                                conn_set_events(c, EPOLLOUT);
                        else
                                conn_free(c);
                        return false;
                }
                SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
                if ((s->opts.h2 || s->opts.h2_serve) && alpn_len == 2 && memcmp(alpn, "h2", 2) == 0) {
                        conn_start_h2(c);
                        return false;
                }
        } else if (s->opts.h2 || s->opts.h2_serve) {
                /* RFC 9113 §3.4: the preface begins with "PRI ", a method no
                 * HTTP/1.1 request uses; peek so that the hook gets every byte. */
                char peek[sizeof(h2_preface_start)];
                ssize_t n = recv(c->fd, peek, sizeof(peek), MSG_PEEK);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return false;
                if (n <= 0) {
                        conn_free(c);
                        return false;
                }
                if (memcmp(peek, h2_preface_start, (size_t) n) == 0) {
                        if ((size_t) n < sizeof(peek))
                                return false; /* wait for the rest of "PRI " */
                        conn_start_h2(c);
                        return false;
                }
        }
        c->state = CONN_READ;
        conn_set_events(c, EPOLLIN);
        return true;
}

static void conn_process(HttpConn *c) {
        HttpServer *s = c->server;

        if (c->state == CONN_HANDSHAKE && !conn_handshake(c))
                return;
        if (c->state == CONN_TUNNEL)
                return tunnel_pump(c);
        if (c->state == CONN_H2)
                return h2_process(c);

        c->busy = true;
        while (!c->dead && c->state == CONN_READ && c->out_sent == c->out_len) {
                HttpRequest req;
                size_t used;
                bool want_write;
                int r;

                r = c->in_len > 0 ? http_request_parse(c->in, c->in_len, &s->opts.limits, &req, &used) : -EAGAIN;
                if (r == 0) {
                        memmove(c->in, c->in + used, c->in_len - used);
                        c->in_len -= used;
                        c->x = (HttpExchange){ .conn = c, .req = req, .head_only = streq(req.method, "HEAD") };
                        c->close_after = c->close_after || !req.keep_alive;
                        c->state = CONN_PENDING;
                        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                        conn_set_events(c, EPOLLRDHUP);
                        s->handler(&c->x, &c->x.req, s->userdata);
                        continue;
                }
                if (r != -EAGAIN) {
                        conn_reply_error(c, r == -EMSGSIZE ? 431 : r == -EFBIG ? 413 : r == -EOPNOTSUPP ? 501 :
                                            r == -ENOMEM ? 503 : 400);
                        break;
                }
                if (c->in_len >= conn_in_max(s)) {
                        conn_reply_error(c, 413);
                        break;
                }
                if (c->in_cap - c->in_len < 16384) {
                        size_t cap = MIN(MAX(c->in_cap * 2, (size_t) 16384 + c->in_len), conn_in_max(s) + 1);
                        char *p = realloc(c->in, cap);
                        if (!p) {
                                conn_free(c);
                                break;
                        }
                        c->in = p;
                        c->in_cap = cap;
                }
                bool was_empty = c->in_len == 0;
                ssize_t n = conn_read(c, c->in + c->in_len, c->in_cap - c->in_len, &want_write);
                if (n == -EAGAIN) {
                        conn_set_events(c, want_write ? EPOLLOUT : EPOLLIN);
                        break;
                }
                if (n <= 0) {
                        conn_free(c);
                        break;
                }
                /* The request timeout runs from a request's first byte. */
                if (was_empty)
                        conn_arm_timer(c, s->opts.request_timeout_usec);
                c->in_len += (size_t) n;
        }
        c->busy = false;
        if (c->dead) {
                c->dead = false;
                conn_free(c);
        }
}

static int on_conn_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        HttpConn *c = userdata;
        (void) es;
        (void) fd;

        if (c->state == CONN_H2) {
                if (revents & (EPOLLRDHUP | EPOLLHUP))
                        h2_peer_done_sending(c);
                if ((revents & EPOLLOUT) && !conn_flush(c))
                        return 0;
                h2_process(c);
                return 0;
        }
        if (c->state == CONN_PENDING || c->state == CONN_STREAMING) {
                if (revents & EPOLLOUT) {
                        (void) conn_flush(c);
                        return 0;
                }
                if (revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                        conn_free(c);
                return 0;
        }
        if (c->out_sent < c->out_len) {
                if (!conn_flush(c))
                        return 0;
                if (c->out_sent < c->out_len)
                        return 0;
        }
        conn_process(c);
        return 0;
}

static int on_conn_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        HttpConn *c = userdata;
        (void) es;
        (void) usec;

        if (c->state == CONN_READ && c->in_len > 0 && c->out_len == 0)
                conn_reply_error(c, 408);  /* one short answer at most, never more time */
        else
                conn_free(c);
        return 0;
}

int http_server_adopt(HttpServer *s, int fd) {
        HttpConn *c;

        if (s->n_conns >= s->opts.max_connections) {
                close(fd);
                return -EBUSY;  /* shed load rather than queue */
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->server = s;
        c->fd = fd;
        c->tunnel_fd = -EBADF;
        c->x.conn = c;
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        s->n_conns++;
        if (s->ssl_ctx) {
                c->ssl = SSL_new(s->ssl_ctx);
                if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                        conn_free(c);
                        return -ENOMEM;
                }
                SSL_set_accept_state(c->ssl);
        }
        if (sd_event_add_io(s->event, &c->io, c->fd, EPOLLIN, on_conn_io, c) < 0 ||
            sd_event_add_time_relative(s->event, &c->timer, CLOCK_MONOTONIC, s->opts.request_timeout_usec, 0,
                                       on_conn_timeout, c) < 0) {
                conn_free(c);
                return -ENOMEM;
        }
        return 0;
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        HttpServer *s = userdata;
        (void) es;
        (void) revents;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                        return 0;  /* EAGAIN, or a transient error: try again on the next event */
                (void) http_server_adopt(s, cfd);
        }
}

/* ALPN (RFC 7301): "h2" when the server has an HTTP/2 hook, else http/1.1. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg) {
        HttpServer *s = arg;
        const unsigned char *h11 = NULL;
        (void) ssl;

        for (unsigned i = 0; i < inlen;) {
                unsigned l = in[i];
                if (i + 1 + l > inlen)
                        break;
                if ((s->opts.h2 || s->opts.h2_serve) && l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
                        *out = in + i + 1;
                        *outlen = 2;
                        return SSL_TLSEXT_ERR_OK;
                }
                if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0)
                        h11 = in + i + 1;
                i += 1 + l;
        }
        if (!h11)
                return SSL_TLSEXT_ERR_NOACK;
        *out = h11;
        *outlen = 8;
        return SSL_TLSEXT_ERR_OK;
}

int http_server_new(sd_event *event, int fd, const HttpServerOptions *opts, HttpHandler handler, void *userdata,
                    HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->fd = fd;
        s->event = sd_event_ref(event);
        s->handler = handler;
        s->userdata = userdata;
        s->opts = *opts;
        s->opts.tls_cert = s->opts.tls_key = NULL;
        if (!s->opts.limits.head_max)
                s->opts.limits.head_max = HTTP_HEAD_MAX_DEFAULT;
        if (!s->opts.limits.body_max)
                s->opts.limits.body_max = HTTP_BODY_MAX_DEFAULT;
        if (!s->opts.request_timeout_usec)
                s->opts.request_timeout_usec = 10 * USEC_PER_SEC;
        if (!s->opts.idle_timeout_usec)
                s->opts.idle_timeout_usec = 60 * USEC_PER_SEC;
        if (!s->opts.max_connections)
                s->opts.max_connections = HTTP_CONNECTIONS_MAX_DEFAULT;
        if (!isempty(opts->tls_cert) || !isempty(opts->tls_key)) {
                if (isempty(opts->tls_cert) || isempty(opts->tls_key))
                        return -EINVAL;
                s->ssl_ctx = SSL_CTX_new(TLS_server_method());
                if (!s->ssl_ctx)
                        return -ENOMEM;
                SSL_CTX_set_min_proto_version(s->ssl_ctx, TLS1_2_VERSION);
                SSL_CTX_set_mode(s->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
                if (SSL_CTX_use_certificate_chain_file(s->ssl_ctx, opts->tls_cert) != 1 ||
                    SSL_CTX_use_PrivateKey_file(s->ssl_ctx, opts->tls_key, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(s->ssl_ctx) != 1)
                        return -ENOKEY;
                SSL_CTX_set_alpn_select_cb(s->ssl_ctx, alpn_select, s);
        }
        if (fd >= 0) {
                int flags = fcntl(fd, F_GETFL);
                if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return -errno;
                r = sd_event_add_io(event, &s->accept_source, fd, EPOLLIN, on_accept, s);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;
        while (s->conns)
                conn_free(s->conns);
        sd_event_source_disable_unref(s->accept_source);
        safe_close(s->fd);
        SSL_CTX_free(s->ssl_ctx);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

unsigned http_server_connections(const HttpServer *s) {
        return s->n_conns;
}

/* ---- exchange ------------------------------------------------------------------ */

int http_exchange_fd(HttpExchange *x) {
        return x->conn->fd;
}

void http_exchange_on_abort(HttpExchange *x, void (*cb)(HttpExchange *x, void *userdata), void *userdata) {
        x->on_abort = cb;
        x->abort_userdata = userdata;
}

int http_exchange_respond(HttpExchange *x, int status, const char *content_type, const char *headers,
                          const void *body, size_t len) {
        HttpConn *c = x->conn;
        char framing[64];
        int r;

        if (x->h2)
                return h2_respond(x, status, content_type, headers, body, len);
        if (c->state != CONN_PENDING)
                return -EINVAL;
        snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
        r = append_head(c, status, content_type, headers, framing);
        if (r >= 0 && !x->head_only && len > 0)
                r = out_append(c, body, len);
        if (r < 0)
                c->close_after = true;
        exchange_end(c);
        return r;
}

int http_exchange_stream_begin(HttpExchange *x, int status, const char *content_type, const char *headers) {
        HttpConn *c = x->conn;
        int r;

        if (x->h2)
                return h2_stream_begin(x, status, content_type, headers);
        if (c->state != CONN_PENDING)
                return -EINVAL;
        r = append_head(c, status, content_type, headers, "Transfer-Encoding: chunked\r\n");
        if (r < 0)
                return r;
        c->state = CONN_STREAMING;
        return conn_flush(c) ? 0 : -ECONNRESET;
}

int http_exchange_stream_send(HttpExchange *x, const void *data, size_t len) {
        HttpConn *c = x->conn;
        char size[32];
        int n, r;

        if (x->h2)
                return h2_stream_send(x, data, len);
        if (c->state != CONN_STREAMING)
                return -EINVAL;
        if (len == 0)
                return 0;  /* an empty chunk would end the body */
        if (c->out_len - c->out_sent + len > OUT_MAX)
                return -ENOBUFS;
        n = snprintf(size, sizeof(size), "%zx\r\n", len);
        r = out_append(c, size, (size_t) n);
        if (r >= 0)
                r = out_append(c, data, len);
        if (r >= 0)
                r = out_append(c, "\r\n", 2);
        if (r < 0)
                return r;
        return conn_flush(c) ? 0 : -ECONNRESET;
}

int http_exchange_stream_end(HttpExchange *x) {
        HttpConn *c = x->conn;
        int r;

        if (x->h2)
                return h2_stream_end(x);
        if (c->state != CONN_STREAMING)
                return -EINVAL;
        r = out_append(c, "0\r\n\r\n", 5);
        if (r < 0)
                c->close_after = true;
        exchange_end(c);
        return r;
}
