/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "vmm-ports.h"

/* ---- the range of host ports -------------------------------------------- */

struct PortPool {
        uint16_t first, last;
        size_t n_free;
        uint8_t taken[8192]; /* one bit per port number */
};

int port_pool_new(uint16_t first, uint16_t last, PortPool **ret) {
        PortPool *p;

        if (first == 0 || first > last)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->first = first;
        p->last = last;
        p->n_free = (size_t) last - first + 1;
        *ret = p;
        return 0;
}

PortPool *port_pool_free(PortPool *p) {
        free(p);
        return NULL;
}

static bool taken(const PortPool *p, uint16_t port) {
        return p->taken[port / 8] & (1u << (port % 8));
}

int port_pool_allocate(PortPool *p, uint16_t *ret) {
        for (uint32_t port = p->first; port <= p->last; port++)
                if (!taken(p, (uint16_t) port)) {
                        p->taken[port / 8] |= (uint8_t) (1u << (port % 8));
                        p->n_free--;
                        *ret = (uint16_t) port;
                        return 0;
                }
        return -ENOSPC;
}

int port_pool_reserve(PortPool *p, uint16_t port) {
        if (port < p->first || port > p->last)
                return -ERANGE;
        if (taken(p, port))
                return -EEXIST;
        p->taken[port / 8] |= (uint8_t) (1u << (port % 8));
        p->n_free--;
        return 0;
}

void port_pool_release(PortPool *p, uint16_t port) {
        if (!p || port < p->first || port > p->last || !taken(p, port))
                return;
        p->taken[port / 8] &= (uint8_t) ~(1u << (port % 8));
        p->n_free++;
}

size_t port_pool_free_count(const PortPool *p) {
        return p->n_free;
}

/* ---- the forwarder ---------------------------------------------------- */

/* Bytes read from one side that wait to be written to the other. */
typedef struct Direction {
        uint8_t buf[PORT_FORWARD_BUFFER];
        size_t head, len;
        bool eof;       /* the side it is read from sent FIN */
        bool shut;      /* ... and the other side got it (shutdown(SHUT_WR)) */
} Direction;

typedef struct Connection {
        PortForward *forward;
        int fd[2];                 /* 0: the client, 1: the instance */
        sd_event_source *source[2];
        Direction dir[2];          /* dir[k]: read from fd[k], written to fd[1 - k] */
        bool connecting;           /* fd[1]'s connect() is in progress */
        struct Connection *prev, *next;
} Connection;

struct PortForward {
        sd_event *event;
        int listen_fd;
        sd_event_source *listen_source;
        struct sockaddr_in target;
        Connection *connections;
        size_t n_connections;
        uint64_t accepted, refused;
};

static void connection_free(Connection *c) {
        PortForward *f = c->forward;

        for (int k = 0; k < 2; k++) {
                c->source[k] = sd_event_source_disable_unref(c->source[k]);
                c->fd[k] = safe_close(c->fd[k]);
        }
        if (c->prev)
                c->prev->next = c->next;
        else
                f->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        f->n_connections--;
        free(c);
}

/* Which events each side waits for, from what the buffers hold. */
static int connection_update(Connection *c) {
        for (int k = 0; k < 2; k++) {
                uint32_t events = 0;
                int r;

                if (c->connecting) {
                        events = k == 1 ? EPOLLOUT : 0;
                } else {
                        if (!c->dir[k].eof && c->dir[k].len < sizeof(c->dir[k].buf))
                                events |= EPOLLIN;
                        if (c->dir[1 - k].len > 0)
                                events |= EPOLLOUT;
                }
                if (events == 0) {
                        r = sd_event_source_set_enabled(c->source[k], SD_EVENT_OFF);
                        if (r < 0)
                                return r;
                        continue;
                }
                r = sd_event_source_set_io_events(c->source[k], events);
                if (r < 0)
                        return r;
                r = sd_event_source_set_enabled(c->source[k], SD_EVENT_ON);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Reads what side k has into its direction's buffer. 0 on progress or
 * nothing to read, negative on an error that ends the connection. */
static int connection_read(Connection *c, int k) {
        Direction *d = &c->dir[k];
        ssize_t n;

        if (d->eof || d->len == sizeof(d->buf))
                return 0;
        if (d->head > 0) {
                memmove(d->buf, d->buf + d->head, d->len);
                d->head = 0;
        }
        n = read(c->fd[k], d->buf + d->len, sizeof(d->buf) - d->len);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (n == 0)
                d->eof = true;
        d->len += (size_t) n;
        return 0;
}

/* Writes what waits for side k. */
static int connection_write(Connection *c, int k) {
        Direction *d = &c->dir[1 - k];
        ssize_t n;

        if (d->len == 0)
                return 0;
        n = send(c->fd[k], d->buf + d->head, d->len, MSG_NOSIGNAL);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        d->head += (size_t) n;
        d->len -= (size_t) n;
        if (d->len == 0)
                d->head = 0;
        return 0;
}

static int on_connection_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Connection *c = userdata;
        int k = fd == c->fd[0] ? 0 : 1, r = 0;

        (void) s;
        if (c->connecting) {
                int error = 0;
                socklen_t len = sizeof(error);
                if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        /* Nothing listens there (yet): the client sees its
                         * connection closed at once. */
                        c->forward->refused++;
                        connection_free(c);
                        return 0;
                }
                c->connecting = false;
                return connection_update(c) < 0 ? (connection_free(c), 0) : 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                r = connection_read(c, k);
        if (r >= 0 && (revents & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
                r = connection_write(c, k);
        /* Both sides' writes may have become possible: try the other too. */
        if (r >= 0)
                r = connection_write(c, 1 - k);
        if (r < 0) {
                connection_free(c);
                return 0;
        }
        /* Half-close: once one side sent FIN and all it sent is written,
         * the other side gets FIN too and may go on sending. */
        for (int d = 0; d < 2; d++)
                if (c->dir[d].eof && c->dir[d].len == 0 && !c->dir[d].shut) {
                        (void) shutdown(c->fd[1 - d], SHUT_WR);
                        c->dir[d].shut = true;
                }
        if ((c->dir[0].shut && c->dir[1].shut) || connection_update(c) < 0)
                connection_free(c);
        return 0;
}

static int connection_start(PortForward *f, int client_fd) {
        _cleanup_close_ int cfd = client_fd, tfd = -EBADF;
        Connection *c;
        int r;

        tfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (tfd < 0)
                return -errno;
        bool connecting = false;
        if (connect(tfd, (const struct sockaddr *) &f->target, sizeof(f->target)) < 0) {
                if (errno != EINPROGRESS)
                        return -errno;
                connecting = true;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (Connection){ .forward = f, .fd = { TAKE_FD(cfd), TAKE_FD(tfd) }, .connecting = connecting,
                           .next = f->connections };
        if (f->connections)
                f->connections->prev = c;
        f->connections = c;
        f->n_connections++;
        for (int k = 0; k < 2; k++) {
                r = sd_event_add_io(f->event, &c->source[k], c->fd[k], EPOLLIN, on_connection_io, c);
                if (r < 0) {
                        connection_free(c);
                        return r;
                }
        }
        r = connection_update(c);
        if (r < 0) {
                connection_free(c);
                return r;
        }
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PortForward *f = userdata;

        (void) s;
        (void) revents;
        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                        return 0; /* EAGAIN, or an aborted connection: nothing to do */
                f->accepted++;
                if (f->n_connections >= PORT_FORWARD_CONNECTIONS_MAX) {
                        f->refused++;
                        safe_close(cfd);
                        continue;
                }
                if (connection_start(f, cfd) < 0)
                        f->refused++;
        }
}

int port_forward_new(sd_event *e, struct in_addr listen_addr, uint16_t listen_port, struct in_addr target,
                     uint16_t target_port, PortForward **ret) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = listen_addr, .sin_port = htons(listen_port) };
        _cleanup_close_ int fd = -EBADF;
        PortForward *f;
        int one = 1, r;

        if (listen_port == 0 || target_port == 0)
                return -EINVAL;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;
        if (bind(fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 64) < 0)
                return -errno;
        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        *f = (PortForward){
                .event = sd_event_ref(e),
                .listen_fd = TAKE_FD(fd),
                .target = { .sin_family = AF_INET, .sin_addr = target, .sin_port = htons(target_port) },
        };
        r = sd_event_add_io(e, &f->listen_source, f->listen_fd, EPOLLIN, on_accept, f);
        if (r < 0) {
                port_forward_free(f);
                return r;
        }
        *ret = f;
        return 0;
}

PortForward *port_forward_free(PortForward *f) {
        if (!f)
                return NULL;
        while (f->connections)
                connection_free(f->connections);
        f->listen_source = sd_event_source_disable_unref(f->listen_source);
        safe_close(f->listen_fd);
        sd_event_unref(f->event);
        free(f);
        return NULL;
}

size_t port_forward_connections(const PortForward *f) {
        return f->n_connections;
}

uint64_t port_forward_accepted(const PortForward *f) {
        return f->accepted;
}

uint64_t port_forward_refused(const PortForward *f) {
        return f->refused;
}
