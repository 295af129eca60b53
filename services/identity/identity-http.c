/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "identity-http.h"

typedef struct HttpDocument {
        char *path;
        char *content_type;
        char *body;
        size_t body_len;
        char etag[48];        /* "\"<base16 of 16 bytes of SHA-256>\"" */
        unsigned max_age;
} HttpDocument;

typedef struct HttpConn HttpConn;

struct HttpServer {
        sd_event *event;
        int fd;
        sd_event_source *accept_source;
        SSL_CTX *ssl_ctx;
        uint64_t timeout_usec;
        HttpDocument *docs;
        size_t n_docs;
        HttpConn *conns;     /* doubly linked */
        unsigned n_conns;
};

struct HttpConn {
        HttpServer *server;
        HttpConn *prev, *next;
        int fd;
        SSL *ssl;
        sd_event_source *io, *timer;
        char in[HTTP_REQUEST_MAX];
        size_t in_len;
        char *out;
        size_t out_len, out_sent;
        bool handshake_done;
};

/* ---- request parsing ------------------------------------------------------ */

static const char *find_crlfcrlf(const char *buf, size_t len) {
        for (size_t i = 3; i < len; i++)
                if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n')
                        return buf + i + 1;
        return NULL;
}

static bool token_char(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

int http_request_parse(const char *buf, size_t len, HttpRequest *ret, size_t *ret_consumed) {
        const char *end, *p, *line_end, *sp1, *sp2;
        HttpRequest req = {};

        end = find_crlfcrlf(buf, MIN(len, (size_t) HTTP_REQUEST_MAX));
        if (!end)
                return len >= HTTP_REQUEST_MAX ? -EMSGSIZE : -EAGAIN;

        /* Request line: method SP request-target SP HTTP-version CRLF (RFC 9112 §3). */
        line_end = memmem(buf, (size_t) (end - buf), "\r\n", 2);
        sp1 = memchr(buf, ' ', (size_t) (line_end - buf));
        if (!sp1 || sp1 == buf || (size_t) (sp1 - buf) >= sizeof(req.method))
                return -EBADMSG;
        sp2 = memchr(sp1 + 1, ' ', (size_t) (line_end - sp1 - 1));
        if (!sp2 || sp2 == sp1 + 1 || (size_t) (sp2 - sp1 - 1) >= sizeof(req.path))
                return -EBADMSG;
        if ((size_t) (line_end - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
            (sp2[8] != '0' && sp2[8] != '1'))
                return -EBADMSG;
        for (p = buf; p < sp1; p++)
                if (!token_char(*p))
                        return -EBADMSG;
        memcpy(req.method, buf, (size_t) (sp1 - buf));
        for (p = sp1 + 1; p < sp2; p++)
                if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
                        return -EBADMSG;
        memcpy(req.path, sp1 + 1, (size_t) (sp2 - sp1 - 1));

        /* Header fields: we only look at If-None-Match, and refuse bodies. */
        for (p = line_end + 2; p < end - 2; p = line_end + 2) {
                const char *colon, *v, *ve;
                size_t name_len;

                line_end = memmem(p, (size_t) (end - p), "\r\n", 2);
                colon = memchr(p, ':', (size_t) (line_end - p));
                if (!colon || colon == p)
                        return -EBADMSG;
                name_len = (size_t) (colon - p);
                for (const char *q = p; q < colon; q++)
                        if (!token_char(*q))
                                return -EBADMSG;  /* also refuses obs-fold and "Name :" */
                for (v = colon + 1; v < line_end && (*v == ' ' || *v == '\t'); v++)
                        ;
                for (ve = line_end; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
                        ;
                for (const char *q = v; q < ve; q++)
                        if ((unsigned char) *q < 0x20 && *q != '\t')
                                return -EBADMSG;
                if (name_len == 13 && strncasecmp(p, "If-None-Match", 13) == 0) {
                        if ((size_t) (ve - v) >= sizeof(req.if_none_match))
                                return -EBADMSG;
                        memcpy(req.if_none_match, v, (size_t) (ve - v));
                        req.if_none_match[ve - v] = 0;
                } else if ((name_len == 14 && strncasecmp(p, "Content-Length", 14) == 0 &&
                            !(ve - v == 1 && *v == '0')) ||
                           (name_len == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0))
                        return -EOPNOTSUPP;
        }
        *ret = req;
        if (ret_consumed)
                *ret_consumed = (size_t) (end - buf);
        return 0;
}

/* ---- responses ------------------------------------------------------------ */

static const char *status_text(int status) {
        switch (status) {
        case 200: return "OK";
        case 304: return "Not Modified";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 413: return "Content Too Large";
        case 431: return "Request Header Fields Too Large";
        case 503: return "Service Unavailable";
        default: return "Error";
        }
}

static void http_date(char buf[static 64]) {
        struct tm tm;
        time_t t = time(NULL);
        gmtime_r(&t, &tm);
        strftime(buf, 64, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

int http_error_response(int status, char **ret, size_t *ret_len) {
        char date[64];
        int n;

        http_date(date);
        n = asprintf(ret,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s\n",
                     status, status_text(status), date, strlen(status_text(status)) + 1,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "", status_text(status));
        if (n < 0)
                return -ENOMEM;
        *ret_len = (size_t) n;
        return 0;
}

/* RFC 9110 §13.1.2: If-None-Match is "*" or a list of entity tags, weak
 * ones compared weakly. */
static bool etag_matches(const char *header, const char *etag) {
        const char *p = header;
        size_t elen = strlen(etag);

        if (streq(header, "*"))
                return true;
        while (*p) {
                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                if (strncmp(p, "W/", 2) == 0)
                        p += 2;
                if (strncmp(p, etag, elen) == 0 && (p[elen] == 0 || p[elen] == ',' || p[elen] == ' ' || p[elen] == '\t'))
                        return true;
                while (*p && *p != ',')
                        p++;
        }
        return false;
}

int http_server_respond(HttpServer *s, const HttpRequest *req, char **ret, size_t *ret_len) {
        const HttpDocument *d = NULL;
        _cleanup_free_ char *head = NULL;
        char path[sizeof(req->path)], *q, date[64];
        bool head_only;
        char *out;
        int n;

        head_only = streq(req->method, "HEAD");
        if (!head_only && !streq(req->method, "GET"))
                return http_error_response(405, ret, ret_len);
        /* The query string does not select a different document. */
        memcpy(path, req->path, sizeof(path));
        q = strchr(path, '?');
        if (q)
                *q = 0;
        for (size_t i = 0; i < s->n_docs; i++)
                if (streq(s->docs[i].path, path))
                        d = &s->docs[i];
        if (!d)
                return http_error_response(404, ret, ret_len);

        http_date(date);
        if (req->if_none_match[0] && etag_matches(req->if_none_match, d->etag)) {
                n = asprintf(ret, "HTTP/1.1 304 Not Modified\r\nDate: %s\r\nETag: %s\r\nCache-Control: public, max-age=%u\r\nConnection: close\r\n\r\n",
                             date, d->etag, d->max_age);
                if (n < 0)
                        return -ENOMEM;
                *ret_len = (size_t) n;
                return 0;
        }
        n = asprintf(&head,
                     "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nETag: %s\r\n"
                     "Cache-Control: public, max-age=%u\r\nAccess-Control-Allow-Origin: *\r\n"
                     "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
                     date, d->content_type, d->body_len, d->etag, d->max_age);
        if (n < 0)
                return -ENOMEM;
        out = malloc((size_t) n + (head_only ? 0 : d->body_len) + 1);
        if (!out)
                return -ENOMEM;
        memcpy(out, head, (size_t) n);
        if (!head_only)
                memcpy(out + n, d->body, d->body_len);
        *ret_len = (size_t) n + (head_only ? 0 : d->body_len);
        out[*ret_len] = 0;
        *ret = out;
        return 0;
}

int http_server_set_document(HttpServer *s, const char *path, const char *content_type, const char *body,
                             unsigned max_age) {
        HttpDocument *d = NULL, *a;
        uint8_t digest[32];
        unsigned dlen;
        char *b, *ct;

        for (size_t i = 0; i < s->n_docs; i++)
                if (streq(s->docs[i].path, path))
                        d = &s->docs[i];
        if (!d) {
                a = realloc(s->docs, (s->n_docs + 1) * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                s->docs = a;
                d = &s->docs[s->n_docs];
                *d = (HttpDocument){ .path = strdup(path) };
                if (!d->path)
                        return -ENOMEM;
                s->n_docs++;
        }
        b = strdup(body);
        ct = strdup(content_type);
        if (!b || !ct) {
                free(b);
                free(ct);
                return -ENOMEM;
        }
        free(d->body);
        free(d->content_type);
        d->body = b;
        d->content_type = ct;
        d->body_len = strlen(b);
        d->max_age = max_age;
        /* A strong validator derived from the bytes served (RFC 9110 §8.8.3). */
        if (!EVP_Digest(b, d->body_len, digest, &dlen, EVP_sha256(), NULL))
                return -EIO;
        d->etag[0] = '"';
        for (size_t i = 0; i < 16; i++)
                snprintf(d->etag + 1 + 2 * i, 3, "%02x", digest[i]);
        memcpy(d->etag + 33, "\"", 2);
        return 0;
}

/* ---- connections ---------------------------------------------------------- */

static void conn_free(HttpConn *c) {
        HttpServer *s = c->server;

        if (c->prev)
                c->prev->next = c->next;
        else
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_conns--;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        if (c->ssl)
                SSL_free(c->ssl);
        safe_close(c->fd);
        free(c->out);
        free(c);
}

static int conn_set_events(HttpConn *c, uint32_t events) {
        return sd_event_source_set_io_events(c->io, events);
}

/* Returns bytes read, 0 on EOF, -EAGAIN (events adjusted), or an error. */
static ssize_t conn_read(HttpConn *c, void *buf, size_t len) {
        if (!c->ssl) {
                ssize_t n = recv(c->fd, buf, len, 0);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
                return n;
        }
        int n = SSL_read(c->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
        if (n > 0)
                return n;
        switch (SSL_get_error(c->ssl, n)) {
        case SSL_ERROR_WANT_READ:
                (void) conn_set_events(c, EPOLLIN);
                return -EAGAIN;
        case SSL_ERROR_WANT_WRITE:
                (void) conn_set_events(c, EPOLLOUT);
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
        int n = SSL_write(c->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
        if (n > 0)
                return n;
        switch (SSL_get_error(c->ssl, n)) {
        case SSL_ERROR_WANT_READ:
                (void) conn_set_events(c, EPOLLIN);
                return -EAGAIN;
        case SSL_ERROR_WANT_WRITE:
                (void) conn_set_events(c, EPOLLOUT);
                return -EAGAIN;
        default:
                return -ECONNRESET;
        }
}

static void conn_flush(HttpConn *c) {
        while (c->out_sent < c->out_len) {
                ssize_t n = conn_write(c, c->out + c->out_sent, c->out_len - c->out_sent);
                if (n == -EAGAIN) {
                        if (!c->ssl)
                                (void) conn_set_events(c, EPOLLOUT);
                        return;
                }
                if (n <= 0) {
                        conn_free(c);
                        return;
                }
                c->out_sent += (size_t) n;
        }
        if (c->ssl)
                (void) SSL_shutdown(c->ssl);
        (void) shutdown(c->fd, SHUT_WR);
        conn_free(c);
}

static void conn_reply_error(HttpConn *c, int status) {
        if (http_error_response(status, &c->out, &c->out_len) < 0) {
                conn_free(c);
                return;
        }
        conn_flush(c);
}

static void conn_process(HttpConn *c) {
        HttpRequest req;
        int r;

        if (c->out) {
                conn_flush(c);
                return;
        }
        if (c->ssl && !c->handshake_done) {
                int n = SSL_accept(c->ssl);
                if (n != 1) {
                        int e = SSL_get_error(c->ssl, n);
                        if (e == SSL_ERROR_WANT_READ)
                                (void) conn_set_events(c, EPOLLIN);
                        else if (e == SSL_ERROR_WANT_WRITE)
                                (void) conn_set_events(c, EPOLLOUT);
                        else
                                conn_free(c);
                        return;
                }
                c->handshake_done = true;
                (void) conn_set_events(c, EPOLLIN);
        }
        for (;;) {
                ssize_t n;

                if (c->in_len >= sizeof(c->in))
                        return conn_reply_error(c, 431);
                n = conn_read(c, c->in + c->in_len, sizeof(c->in) - c->in_len);
                if (n == -EAGAIN)
                        return;
                if (n <= 0)
                        return conn_free(c);
                c->in_len += (size_t) n;
                r = http_request_parse(c->in, c->in_len, &req, NULL);
                if (r == -EAGAIN)
                        continue;
                if (r == -EMSGSIZE)
                        return conn_reply_error(c, 431);
                if (r == -EOPNOTSUPP)
                        return conn_reply_error(c, 413);
                if (r < 0)
                        return conn_reply_error(c, 400);
                break;
        }
        r = http_server_respond(c->server, &req, &c->out, &c->out_len);
        if (r < 0)
                return conn_free(c);
        (void) conn_set_events(c, EPOLLOUT);
        conn_flush(c);
}

static int on_conn_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        HttpConn *c = userdata;
        (void) es;
        (void) fd;

        if ((revents & (EPOLLERR | EPOLLHUP)) && !(revents & EPOLLIN)) {
                conn_free(c);
                return 0;
        }
        conn_process(c);
        return 0;
}

static int on_conn_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        HttpConn *c = userdata;
        (void) es;
        (void) usec;

        /* A slow client gets one short answer at most, never more time. */
        if (!c->out && (!c->ssl || c->handshake_done)) {
                if (http_error_response(408, &c->out, &c->out_len) >= 0) {
                        c->out_sent = 0;
                        ssize_t n = conn_write(c, c->out, c->out_len);
                        (void) n;
                }
        }
        conn_free(c);
        return 0;
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        HttpServer *s = userdata;
        (void) es;
        (void) revents;

        for (;;) {
                _cleanup_close_ int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                HttpConn *c;
                uint64_t now;

                if (cfd < 0)
                        return 0;  /* EAGAIN, or a transient error: try again on the next event */
                if (s->n_conns >= HTTP_CONNECTIONS_MAX)
                        continue;  /* closed by cleanup: shed load rather than queue */
                c = calloc(1, sizeof(*c));
                if (!c)
                        continue;
                c->server = s;
                c->fd = TAKE_FD(cfd);
                c->next = s->conns;
                if (s->conns)
                        s->conns->prev = c;
                s->conns = c;
                s->n_conns++;
                if (s->ssl_ctx) {
                        c->ssl = SSL_new(s->ssl_ctx);
                        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                                conn_free(c);
                                continue;
                        }
                        SSL_set_accept_state(c->ssl);
                }
                if (sd_event_add_io(s->event, &c->io, c->fd, EPOLLIN, on_conn_io, c) < 0 ||
                    sd_event_now(s->event, CLOCK_MONOTONIC, &now) < 0 ||
                    sd_event_add_time(s->event, &c->timer, CLOCK_MONOTONIC, now + s->timeout_usec, 0,
                                      on_conn_timeout, c) < 0) {
                        conn_free(c);
                        continue;
                }
        }
}

int http_server_new(sd_event *event, int fd, const char *tls_cert, const char *tls_key, uint64_t timeout_usec,
                    HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r, flags;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->fd = fd;
        s->event = sd_event_ref(event);
        s->timeout_usec = timeout_usec ?: 10 * USEC_PER_SEC;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        if (tls_cert || tls_key) {
                if (!tls_cert || !tls_key)
                        return -EINVAL;
                s->ssl_ctx = SSL_CTX_new(TLS_server_method());
                if (!s->ssl_ctx)
                        return -ENOMEM;
                SSL_CTX_set_min_proto_version(s->ssl_ctx, TLS1_2_VERSION);
                if (SSL_CTX_use_certificate_chain_file(s->ssl_ctx, tls_cert) != 1)
                        return -ENOKEY;
                if (SSL_CTX_use_PrivateKey_file(s->ssl_ctx, tls_key, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(s->ssl_ctx) != 1)
                        return -ENOKEY;
        }
        r = sd_event_add_io(event, &s->accept_source, fd, EPOLLIN, on_accept, s);
        if (r < 0)
                return r;
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
        for (size_t i = 0; i < s->n_docs; i++) {
                free(s->docs[i].path);
                free(s->docs[i].content_type);
                free(s->docs[i].body);
        }
        free(s->docs);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

unsigned http_server_connections(const HttpServer *s) {
        return s->n_conns;
}
