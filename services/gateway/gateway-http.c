/* SPDX-License-Identifier: MIT */
#include <netinet/in.h>
#include <sys/un.h>
#include <sys/socket.h>

#include "gateway-connect.h"
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

/* ---- the gRPC + Connect listeners ------------------------------------------ */

/* HTTP/2 on the TCP listener: a bearer-token caller, no peer credentials. */
static int on_tcp_h2(int fd, int peer_fd, void *userdata) {
        Manager *m = userdata;
        (void) peer_fd;
        return rpc_server_add_connection(m->server, fd, NULL);
}

/* HTTP/2 on the unix socket: gRPC as before, with the caller's credentials. */
static int on_local_h2(int fd, int peer_fd, void *userdata) {
        Manager *m = userdata;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        RpcPeer peer = {};

        if (getsockopt(peer_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
                peer = (RpcPeer){ .known = true, .pid = cred.pid, .uid = cred.uid, .gid = cred.gid };
        return rpc_server_add_connection(m->server, fd, &peer);
}

/* The first request of an HTTP/2 connection: gRPC goes to gRPC core with
 * the whole connection, anything else (Connect) is served by lib/http. */
static bool claim_grpc(const HttpRequest *first, void *userdata) {
        const char *ctype = http_request_header(first, "Content-Type");
        (void) userdata;
        return ctype && gateway_connect_is_grpc(ctype);
}

static bool on_local_connection(int fd, const RpcPeer *peer, void *userdata) {
        Manager *m = userdata;
        (void) peer;
        (void) http_server_adopt(m->local_http, fd);
        return true;
}

static bool gateway_busy(void *userdata) {
        Manager *m = userdata;
        /* A TCP port we bound ourselves would go with us: only a port held by
         * systemd (hostmesh-gateway-tcp.socket) lets the gateway exit on idle. */
        if (m->tcp_http && !m->tcp_from_systemd)
                return true;
        return gateway_connect_calls() > 0 || (m->tcp_http && http_server_connections(m->tcp_http) > 0) ||
               (m->local_http && http_server_connections(m->local_http) > 0);
}

static int listen_tcp(const char *address, int *ret) {
        struct sockaddr_storage sa;
        unsigned salen;
        int fd, r, one = 1;

        r = parse_sockaddr(address, 443, &sa, &salen);
        if (r < 0)
                return r;
        fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &sa, salen) < 0 || listen(fd, 256) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret = fd;
        return 0;
}

static bool fd_is_loopback(int fd) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return false;
        if (sa.ss_family == AF_INET)
                return (ntohl(((struct sockaddr_in *) &sa)->sin_addr.s_addr) >> 24) == 127;
        if (sa.ss_family == AF_INET6)
                return IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *) &sa)->sin6_addr);
        return false;
}

static int local_port(int fd) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return -errno;
        return ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &sa)->sin6_port
                                              : ((struct sockaddr_in *) &sa)->sin_port);
}

int gateway_listeners_start(Manager *m) {
        HttpServerOptions local = {
                .limits = { .body_max = 4U << 20 },
                .h2 = on_local_h2,
                .h2_serve = true,
                .h2_claim = claim_grpc,
                .h2_userdata = m,
        };
        int fd, r;

        r = http_server_new(m->event, -EBADF, &local, gateway_connect_handle_local, m, &m->local_http);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the Connect server: %m");
        rpc_server_set_connection_hook(m->server, on_local_connection, m);
        rpc_server_set_busy_check(m->server, gateway_busy, m);

        fd = rpc_server_take_fd(m->server, "tcp");
        m->tcp_from_systemd = fd >= 0;
        if (fd >= 0 && isempty(m->config.tls_cert) && !(m->config.tcp_insecure && fd_is_loopback(fd))) {
                /* Bearer tokens cross the network in TLS only (see tcp_listen_check()). */
                log_error("The TCP socket from systemd (hostmesh-gateway-tcp.socket) is not served: set [gateway] "
                          "tls_cert and tls_key, or tcp_insecure = yes on a loopback address.");
                close(fd);
                return 0;
        }
        if (fd < 0) {
                if (isempty(m->config.tcp_listen))
                        return 0;
                r = listen_tcp(m->config.tcp_listen, &fd);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on %s: %m", m->config.tcp_listen);
        }
        HttpServerOptions tcp = {
                .limits = { .body_max = 4U << 20 },
                .tls_cert = m->config.tls_cert,
                .tls_key = m->config.tls_key,
                .h2 = on_tcp_h2,
                .h2_serve = true,
                .h2_claim = claim_grpc,
                .h2_userdata = m,
        };
        r = http_server_new(m->event, fd, &tcp, gateway_connect_handle_tcp, m, &m->tcp_http);
        if (r < 0) {
                close(fd);
                return log_error_errno(r, "Failed to serve on %s%s: %m", m->config.tcp_listen,
                                       r == -ENOKEY ? " (check tls_cert and tls_key)" : "");
        }
        log_info("Listening for bearer-token callers (gRPC and Connect) on %s (port %d, %s%s).",
                 isempty(m->config.tcp_listen) ? "a socket from systemd" : m->config.tcp_listen, local_port(fd),
                 isempty(m->config.tls_cert) ? "plaintext, loopback only" : "TLS",
                 m->tcp_from_systemd ? ", activated by systemd" : "");
        return 0;
}

void gateway_listeners_stop(Manager *m) {
        if (m->server)
                rpc_server_set_connection_hook(m->server, NULL, NULL);
        m->tcp_http = http_server_free(m->tcp_http);
        m->local_http = http_server_free(m->local_http);
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
