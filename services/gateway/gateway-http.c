/* SPDX-License-Identifier: MIT */
#include <netinet/in.h>
#include <sys/socket.h>

#include "gateway-http.h"
#include "gateway-manager.h"
#include "gateway-metrics.h"
#include "log.h"
#include "parse-util.h"

#define HTTP_REQUEST_MAX 8192
#define HTTP_TIMEOUT_USEC (5 * USEC_PER_SEC)

typedef struct HttpConn {
        Manager *manager;
        int fd;
        sd_event_source *io, *timer;
        char buf[HTTP_REQUEST_MAX];
        size_t len;
        bool collecting;
} HttpConn;

static void conn_free(HttpConn *c) {
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        free(c);
}

static void conn_respond(HttpConn *c, const char *status, const char *ctype, const char *body) {
        char head[256];
        size_t blen = strlen(body);
        int hl = snprintf(head, sizeof(head),
                          "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                          status, ctype, blen);
        /* Small responses to a local scraper: a blocking write with a send
         * timeout is simpler than buffering, and bounded. */
        struct timeval tv = { .tv_sec = 2 };
        (void) setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (write(c->fd, head, (size_t) hl) == hl) {
                size_t off = 0;
                while (off < blen) {
                        ssize_t k = write(c->fd, body + off, blen - off);
                        if (k <= 0 && errno != EINTR && errno != EAGAIN)
                                break;
                        if (k > 0)
                                off += (size_t) k;
                }
        }
}

static void on_collected(const char *text, json_t *errors, void *userdata) {
        HttpConn *c = userdata;
        (void) errors;
        conn_respond(c, "200 OK", "text/plain; version=0.0.4", text);
        conn_free(c);
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpConn *c = userdata;
        ssize_t n;

        (void) s;
        (void) revents;
        n = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                conn_free(c);
                return 0;
        }
        c->len += (size_t) n;
        c->buf[c->len] = 0;
        if (!strstr(c->buf, "\r\n\r\n")) {
                if (c->len >= sizeof(c->buf) - 1) {
                        conn_respond(c, "431 Request Header Fields Too Large", "text/plain", "request too large\n");
                        conn_free(c);
                }
                return 0;
        }
        sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
        if (strncmp(c->buf, "GET /metrics ", 13) == 0 || strncmp(c->buf, "GET /metrics?", 13) == 0) {
                c->collecting = true;
                if (gateway_metrics_collect(c->manager, NULL, on_collected, c) < 0) {
                        conn_respond(c, "500 Internal Server Error", "text/plain", "collection failed\n");
                        conn_free(c);
                }
                return 0;
        }
        conn_respond(c, "404 Not Found", "text/plain", "only GET /metrics is served here\n");
        conn_free(c);
        return 0;
}

static int on_conn_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpConn *c = userdata;
        (void) s;
        (void) usec;
        if (c->collecting)
                return 0; /* the collection has its own 2 s bound */
        conn_free(c);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;

        (void) s;
        (void) revents;
        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                HttpConn *c;

                if (cfd < 0)
                        return 0;
                c = calloc(1, sizeof(*c));
                if (!c) {
                        close(cfd);
                        continue;
                }
                c->manager = m;
                c->fd = cfd;
                if (sd_event_add_io(m->event, &c->io, cfd, EPOLLIN, on_conn_io, c) < 0 ||
                    sd_event_add_time_relative(m->event, &c->timer, CLOCK_MONOTONIC, HTTP_TIMEOUT_USEC, 0,
                                               on_conn_timeout, c) < 0)
                        conn_free(c);
        }
}

int gateway_http_start(Manager *m) {
        struct sockaddr_storage sa;
        unsigned salen;
        int fd, r, one = 1;

        fd = rpc_server_take_fd(m->server, "metrics");
        if (fd < 0) {
                if (isempty(m->config.metrics_listen))
                        return 0;
                r = parse_sockaddr(m->config.metrics_listen, 9464, &sa, &salen);
                if (r < 0)
                        return log_error_errno(r, "Invalid metrics_listen '%s': %m", m->config.metrics_listen);
                fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return log_error_errno(errno, "Failed to create the metrics socket: %m");
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, (struct sockaddr *) &sa, salen) < 0 || listen(fd, 64) < 0) {
                        r = -errno;
                        close(fd);
                        return log_error_errno(r, "Failed to listen on %s for metrics: %m", m->config.metrics_listen);
                }
        }
        m->metrics_fd = fd;
        r = sd_event_add_io(m->event, &m->metrics_source, fd, EPOLLIN, on_accept, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the metrics socket: %m");
        return 0;
}

void gateway_http_stop(Manager *m) {
        m->metrics_source = sd_event_source_disable_unref(m->metrics_source);
        m->metrics_fd = safe_close(m->metrics_fd);
}
