/* SPDX-License-Identifier: MIT */
#include <netinet/in.h>
#include <sys/socket.h>

#include "gateway-http.h"
#include "gateway-manager.h"
#include "gateway-metrics.h"
#include "http-server.h"
#include "log.h"
#include "parse-util.h"

/* One scrape in flight: the exchange goes away if the scraper leaves first,
 * the collection always calls back (it has its own 2 s bound). */
typedef struct Scrape {
        HttpExchange *exchange;
} Scrape;

static void on_scrape_abort(HttpExchange *x, void *userdata) {
        Scrape *s = userdata;
        (void) x;
        s->exchange = NULL;
}

static void on_collected(const char *text, json_t *errors, void *userdata) {
        Scrape *s = userdata;
        (void) errors;
        if (s->exchange)
                (void) http_exchange_respond(s->exchange, 200, "text/plain; version=0.0.4", NULL, text, strlen(text));
        free(s);
}

static void respond_text(HttpExchange *x, int status, const char *headers, const char *text) {
        (void) http_exchange_respond(x, status, "text/plain; charset=utf-8", headers, text, strlen(text));
}

static void on_metrics_request(HttpExchange *x, const HttpRequest *req, void *userdata) {
        Manager *m = userdata;
        size_t path_len = strcspn(req->target, "?");
        Scrape *s;

        if (path_len != 8 || strncmp(req->target, "/metrics", 8) != 0)
                return respond_text(x, 404, NULL, "only GET /metrics is served here\n");
        if (!streq(req->method, "GET") && !streq(req->method, "HEAD"))
                return respond_text(x, 405, "Allow: GET, HEAD\r\n", "only GET /metrics is served here\n");
        s = calloc(1, sizeof(*s));
        if (!s)
                return respond_text(x, 503, NULL, "out of memory\n");
        s->exchange = x;
        http_exchange_on_abort(x, on_scrape_abort, s);
        if (gateway_metrics_collect(m, NULL, on_collected, s) < 0) {
                free(s);
                return respond_text(x, 500, NULL, "collection failed\n");
        }
}

int gateway_http_start(Manager *m) {
        HttpServerOptions opts = {
                .limits = { .head_max = 8192, .body_max = 1 },
                .request_timeout_usec = 5 * USEC_PER_SEC,
                .max_connections = 64,
        };
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
        r = http_server_new(m->event, fd, &opts, on_metrics_request, m, &m->metrics_http);
        if (r < 0) {
                close(fd);
                return log_error_errno(r, "Failed to serve metrics: %m");
        }
        return 0;
}

void gateway_http_stop(Manager *m) {
        m->metrics_http = http_server_free(m->metrics_http);
}
