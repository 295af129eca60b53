/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dockerproxy-http.h"
#include "dockerproxy-proxy.h"
#include "log.h"
#include "metrics.h"

#define BUF_SIZE          (256U * 1024U)
#define PROBE_MAX         (DOCKER_BODY_MAX + HTTP_HEAD_MAX)
#define LINGER_USEC       (2 * USEC_PER_SEC)
#define DEFAULT_MAX_CONNS 256U
#define DEFAULT_IDLE_USEC (5 * 60 * USEC_PER_SEC)
#define CAPTURE_MAX       (64U * 1024U) /* a create's answer: {"Id": ...} */

/* A linear buffer: bytes live in [start, end); compacted on demand. */
typedef struct Buf {
        char *data;
        size_t start, end, cap;
} Buf;

static size_t buf_len(const Buf *b) {
        return b->end - b->start;
}
static const char *buf_head(const Buf *b) {
        return b->data + b->start;
}
static size_t buf_space(Buf *b) {
        if (b->start > 0 && b->end == b->cap) {
                memmove(b->data, b->data + b->start, b->end - b->start);
                b->end -= b->start;
                b->start = 0;
        }
        return b->cap - b->end;
}
static void buf_consume(Buf *b, size_t n) {
        b->start += n;
        if (b->start == b->end)
                b->start = b->end = 0;
}
static int buf_ensure(Buf *b, size_t cap) {
        if (b->data)
                return 0;
        b->data = malloc(cap);
        if (!b->data)
                return -ENOMEM;
        b->cap = cap;
        return 0;
}
/* Appends; grows up to `max` (buffered bodies), -EMSGSIZE beyond. */
static int buf_append(Buf *b, const char *p, size_t n, size_t max) {
        if (n == 0)
                return 0;
        if (buf_space(b) < n) {
                size_t need = b->end + n, cap = MAX(b->cap * 2, (size_t) 4096);
                char *t;
                if (need > max)
                        return -EMSGSIZE;
                while (cap < need)
                        cap *= 2;
                cap = MIN(cap, max);
                t = realloc(b->data, cap);
                if (!t)
                        return -ENOMEM;
                b->data = t;
                b->cap = cap;
        }
        memcpy(b->data + b->end, p, n);
        b->end += n;
        return 0;
}
static void buf_done(Buf *b) {
        free(b->data);
        *b = (Buf){};
}

typedef enum ReqState {
        REQ_HEAD,         /* waiting for a request head */
        REQ_BODY_BUFFER,  /* collecting a body to judge */
        REQ_CHECK,        /* asking the engine who owns a container */
        REQ_BODY_STREAM,  /* forwarding the body */
        REQ_DONE,         /* request sent, waiting for the response to end */
        REQ_RAW,          /* hijacked: client bytes go upstream as they are */
        REQ_LINGER,       /* answered and closing: discard input until EOF */
} ReqState;

typedef enum RespState {
        RESP_IDLE,
        RESP_HEAD,
        RESP_BODY,
        RESP_RAW,
} RespState;

typedef struct Conn Conn;
typedef struct Probe Probe;

/* Hijacked streams move bulk data with splice() through a pipe, without
 * copying it through our buffers; `bytes` is what sits in the pipe. */
typedef struct Splice {
        int pipe[2];
        size_t bytes;
        bool broken;      /* splice() unsupported here: fall back to buffers */
} Splice;

struct Proxy {
        ProxyContext ctx;
        const DockerCaller *caller;
        char *socket_path;
        int fd;
        sd_event_source *source;
        Conn *conns;
        unsigned n_conns;
        uint64_t next_conn_id;
};

struct Probe {
        Conn *conn;
        int fd;
        sd_event_source *source;
        Buf out, in;
        char *path;         /* what we asked the engine */
};

struct Conn {
        Proxy *proxy;
        Conn *prev, *next;
        uint64_t id;
        int cfd, ufd;
        sd_event_source *csrc, *usrc, *timer;
        sd_event_source *idle_timer;  /* armed while waiting for a request head */
        uint64_t idle_since;
        Buf cin, cout, uin, uout;
        bool client_eof, upstream_eof, client_shut, upstream_shut;

        ReqState req_state;
        RespState resp_state;
        HttpMessage *req;
        DockerDecision dec;
        char *api_path;          /* without /vX.Y and query: audit and routing */
        char *api_version;       /* "1.41", or "" when the target had no /vX.Y */
        unsigned resp_status;
        Buf capture;             /* a create's answer, for the id to record */
        bool capturing;
        uint64_t body_left;
        HttpChunked chunk;
        Buf body;                /* buffered body for judging */
        bool req_keep_alive;
        bool resp_keep_alive;
        bool resp_done;

        HttpBody resp_body;
        uint64_t resp_left;
        HttpChunked rchunk;
        bool resp_seen_head;

        Probe *probe;
        size_t check_index;
        Splice down;             /* upstream → client */
        Splice up;               /* client → upstream */
        bool closing;            /* free once cout is flushed */

        int pfd;                 /* a pull answered through the host: init's pull socket */
        sd_event_source *psrc;
        Buf pin;
};

static void conn_free(Conn *c);
static void conn_pump(Conn *c);

static Probe *probe_free(Probe *p) {
        if (!p)
                return NULL;
        sd_event_source_disable_unref(p->source);
        safe_close(p->fd);
        buf_done(&p->out);
        buf_done(&p->in);
        free(p->path);
        free(p);
        return NULL;
}

/* ---- audit and metrics ------------------------------------------------ */

static void count(Proxy *p, const char *name, const char *help, const char *labels) {
        Metric *m;

        if (!p->ctx.metrics)
                return;
        m = metrics_counter(p->ctx.metrics, name, help, labels);
        if (m)
                metric_add(m, 1);
}

/* One line per decision. Only method, API path and rule: never headers
 * (X-Registry-Auth carries registry credentials) and never bodies. */
static void audit(Conn *c, bool allowed, unsigned status, const char *rule, const char *message) {
        Proxy *p = c->proxy;
        char labels[160], f_id[300], f_dec[64], f_rule[96];
        const char *method = c->req ? c->req->method : "-";

        snprintf(f_id, sizeof(f_id), "DOCKERPROXY_CONTAINER=%s", p->caller->id);
        snprintf(f_dec, sizeof(f_dec), "DOCKERPROXY_DECISION=%s", allowed ? "allowed" : "denied");
        snprintf(f_rule, sizeof(f_rule), "DOCKERPROXY_RULE=%s", rule ?: "-");
        if (allowed)
                log_struct(LOG_INFO, 0, FIELDS(f_id, f_dec, f_rule), "audit: container=%s %s %s allowed rule=%s",
                           p->caller->id, method, c->api_path ?: "-", rule ?: "-");
        else
                log_struct(LOG_NOTICE, 0, FIELDS(f_id, f_dec, f_rule),
                           "audit: container=%s %s %s denied status=%u rule=%s reason=%s", p->caller->id, method,
                           c->api_path ?: "-", status, rule ?: "-", message ?: "-");
        snprintf(labels, sizeof(labels), "decision=\"%s\",rule=\"%s\"", allowed ? "allowed" : "denied", rule ?: "-");
        count(p, "dockerproxy_requests_total", "Docker API requests by decision and rule", labels);
}

/* ---- event plumbing ------------------------------------------------------ */

static void set_events(sd_event_source *s, uint32_t events) {
        if (!s)
                return;
        /* A source with no events would still report EPOLLHUP forever. */
        if (events == 0)
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        else {
                (void) sd_event_source_set_io_events(s, events);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        }
}

static void conn_update_events(Conn *c) {
        uint32_t ce = 0, ue = 0;

        if (!c->client_eof && buf_space(&c->cin) > 0 && c->req_state != REQ_CHECK && c->up.bytes == 0)
                ce |= EPOLLIN;
        if (buf_len(&c->cout) > 0 || c->down.bytes > 0)
                ce |= EPOLLOUT;
        set_events(c->csrc, ce);

        if (c->ufd >= 0) {
                if (!c->upstream_eof && buf_space(&c->uin) > 0 && c->down.bytes == 0)
                        ue |= EPOLLIN;
                if (buf_len(&c->uout) > 0 || c->up.bytes > 0)
                        ue |= EPOLLOUT;
                set_events(c->usrc, ue);
        }
}

/* Reads what fits; returns 0, or -errno (EOF sets *eof). */
static int fill(int fd, Buf *b, bool *eof) {
        size_t space = buf_space(b);
        ssize_t n;

        if (space == 0 || *eof)
                return 0;
        n = read(fd, b->data + b->end, space);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (n == 0)
                *eof = true;
        b->end += (size_t) n;
        return 0;
}

static int flush(int fd, Buf *b) {
        while (buf_len(b) > 0) {
                ssize_t n = send(fd, buf_head(b), buf_len(b), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
                buf_consume(b, (size_t) n);
        }
        return 0;
}

/* Moves up to `max` bytes from one buffer to another. */
static size_t move(Buf *from, Buf *to, uint64_t max) {
        size_t n = (size_t) MIN((uint64_t) MIN(buf_len(from), buf_space(to)), max);

        if (n == 0)
                return 0;
        memcpy(to->data + to->end, buf_head(from), n);
        to->end += n;
        buf_consume(from, n);
        return n;
}


#define SPLICE_CHUNK (1U << 20)

static void splice_done(Splice *s) {
        safe_close(s->pipe[0]);
        safe_close(s->pipe[1]);
        s->pipe[0] = s->pipe[1] = -EBADF;
}

/* May this direction use splice() now? Only in raw mode, and only once the
 * bytes buffered in user space went out first (order is kept). */
static bool splice_usable(Conn *c, Splice *s, Buf *in, Buf *out) {
        if (c->req_state != REQ_RAW || c->resp_state != RESP_RAW || s->broken)
                return false;
        if (s->bytes > 0)
                return true;
        if (buf_len(in) > 0 || buf_len(out) > 0)
                return false;
        if (s->pipe[0] < 0) {
                if (pipe2(s->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
                        s->broken = true;
                        return false;
                }
                (void) fcntl(s->pipe[1], F_SETPIPE_SZ, SPLICE_CHUNK);
        }
        return true;
}

/* Pipe → destination. Returns 0 or -errno. */
static int splice_drain(Splice *s, int to) {
        while (s->bytes > 0) {
                ssize_t n = splice(s->pipe[0], NULL, to, NULL, s->bytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
                if (n == 0)
                        return -EPIPE;
                s->bytes -= (size_t) n;
        }
        return 0;
}

/* Source → pipe (only while the pipe is empty: that is the backpressure),
 * then on to the destination. */
static int splice_pump(Splice *s, int from, int to, bool *eof) {
        if (s->bytes == 0 && !*eof) {
                ssize_t n = splice(from, NULL, s->pipe[1], NULL, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (n < 0) {
                        if (errno == EINVAL || errno == ENOSYS) {
                                s->broken = true;
                                return 0;
                        }
                        if (errno != EAGAIN && errno != EINTR)
                                return -errno;
                } else if (n == 0)
                        *eof = true;
                else
                        s->bytes += (size_t) n;
        }
        return splice_drain(s, to);
}

/* ---- answering locally ---------------------------------------------------- */

static const char *reason_phrase(unsigned status) {
        switch (status) {
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 413: return "Payload Too Large";
        case 431: return "Request Header Fields Too Large";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        default: return "Error";
        }
}

/* Answers with the engine's error shape {"message": "..."} and closes the
 * connection after lingering for the client's unread bytes (closing a unix
 * socket with unread input would reset the peer before it reads this). */
static void conn_reply_error(Conn *c, unsigned status, const char *rule, const char *message) {
        _cleanup_free_ char *body = NULL, *head = NULL;
        json_t *j;
        int n;

        audit(c, false, status, rule, message);
        j = json_pack("{s:s}", "message", message ?: reason_phrase(status));
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!body) {
                conn_free(c);
                return;
        }
        n = asprintf(&head,
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s\n",
                     status, reason_phrase(status), strlen(body) + 1, body);
        if (n < 0 || buf_append(&c->cout, head, (size_t) n, SIZE_MAX) < 0) {
                conn_free(c);
                return;
        }
        c->req_state = REQ_LINGER;
        c->resp_state = RESP_IDLE;
        c->closing = true;
        c->ufd = safe_close(c->ufd);
        c->usrc = sd_event_source_disable_unref(c->usrc);
}

/* ---- upstream ------------------------------------------------------------- */

static int connect_unix(const char *path) {
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } sa = { .un.sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;

        if (strlen(path) >= sizeof(sa.un.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.un.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* A local connect completes at once; only then go non-blocking. */
        if (connect(fd, &sa.sa, sizeof(sa.un)) < 0)
                return -errno;
        if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int conn_connect_upstream(Conn *c) {
        int r;

        if (c->ufd >= 0)
                return 0;
        c->ufd = connect_unix(c->proxy->ctx.upstream);
        if (c->ufd < 0)
                return c->ufd;
        c->upstream_eof = c->upstream_shut = false;
        r = buf_ensure(&c->uin, BUF_SIZE);
        if (r >= 0)
                r = buf_ensure(&c->uout, BUF_SIZE);
        if (r >= 0)
                r = sd_event_add_io(c->proxy->ctx.event, &c->usrc, c->ufd, EPOLLIN, on_upstream_io, c);
        return r;
}

/* ---- ownership probes ------------------------------------------------------ */

static void conn_checks_next(Conn *c);

static int collect_probe_body(const char *d, size_t l, void *ud) {
        return buf_append(ud, d, l, PROBE_MAX);
}

static void probe_finish(Probe *p, int error) {
        Conn *c = p->conn;
        _cleanup_(http_message_freep) HttpMessage *resp = NULL;
        Buf body = {};
        int r = error;

        c->probe = NULL;
        if (r >= 0) {
                r = http_parse_response(buf_head(&p->in), buf_len(&p->in), "GET", &resp);
                if (r == 0)
                        r = -EBADMSG;
        }
        if (r > 0) {
                const char *b = buf_head(&p->in) + resp->head_len;
                size_t n = buf_len(&p->in) - resp->head_len;

                if (resp->body == HTTP_BODY_CHUNKED) {
                        HttpChunked ch = {};
                        size_t used;
                        r = http_chunked_feed(&ch, b, n, &used, collect_probe_body, &body);
                        if (r != 1)
                                r = -EBADMSG;
                } else {
                        if (resp->body == HTTP_BODY_LENGTH && resp->content_length < n)
                                n = (size_t) resp->content_length;
                        r = buf_append(&body, b, n, PROBE_MAX);
                        if (r >= 0)
                                r = 1;
                }
        }
        /* The judgement is the policy's; we only asked. */
        if (r > 0)
                r = docker_check_answer(c->proxy->caller, &c->dec, c->check_index, resp->status, buf_head(&body),
                                        buf_len(&body));
        buf_done(&body);
        if (r == -ENOMEM) {
                probe_free(p);
                conn_free(c);
                return;
        }
        if (r < 0) {
                log_warning_errno(r, "Check of %s with the engine failed: %m", p->path);
                conn_reply_error(c, 502, "engine", "The Docker engine could not be asked who owns what this request names.");
        } else if (c->dec.status)
                conn_reply_error(c, c->dec.status, c->dec.rule, c->dec.message);
        else {
                c->check_index++;
                conn_checks_next(c);
        }
        probe_free(p);
        conn_pump(c);
}

/* Is a whole response in? (We ask for Connection: close, but do not rely
 * on the engine closing.) */
static bool probe_response_complete(Probe *p) {
        _cleanup_(http_message_freep) HttpMessage *resp = NULL;
        size_t body;

        if (http_parse_response(buf_head(&p->in), buf_len(&p->in), "GET", &resp) <= 0)
                return false;
        body = buf_len(&p->in) - resp->head_len;
        switch (resp->body) {
        case HTTP_BODY_NONE:
                return true;
        case HTTP_BODY_LENGTH:
                return body >= resp->content_length;
        case HTTP_BODY_CHUNKED: {
                HttpChunked ch = {};
                size_t used;
                return http_chunked_feed(&ch, buf_head(&p->in) + resp->head_len, body, &used, NULL, NULL) != 0;
        }
        default:
                return false;
        }
}

static int on_probe_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Probe *p = userdata;
        bool eof = false;
        int r;

        (void) s;
        (void) revents;
        r = flush(fd, &p->out);
        if (r < 0)
                return probe_finish(p, r), 0;
        for (;;) {
                if (buf_space(&p->in) == 0) {
                        if (p->in.cap >= PROBE_MAX)
                                return probe_finish(p, -EMSGSIZE), 0;
                        char *t = realloc(p->in.data, MIN(p->in.cap * 2, (size_t) PROBE_MAX));
                        if (!t)
                                return probe_finish(p, -ENOMEM), 0;
                        p->in.data = t;
                        p->in.cap = MIN(p->in.cap * 2, (size_t) PROBE_MAX);
                }
                size_t before = buf_len(&p->in);
                r = fill(fd, &p->in, &eof);
                if (r < 0)
                        return probe_finish(p, r), 0;
                if (eof || probe_response_complete(p))
                        return probe_finish(p, 0), 0;
                if (buf_len(&p->in) == before)
                        break;
        }
        set_events(p->source, buf_len(&p->out) > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN);
        return 0;
}

static int probe_start(Conn *c, char *path) {
        _cleanup_free_ char *req = NULL, *owned_path = path;
        Probe *p;
        int r, n;

        n = asprintf(&req, "GET %s HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", path);
        if (n < 0)
                return -ENOMEM;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->conn = c;
        p->fd = connect_unix(c->proxy->ctx.upstream);
        p->path = TAKE_PTR(owned_path);
        if (p->fd < 0 || buf_append(&p->out, req, (size_t) n, SIZE_MAX) < 0 || buf_ensure(&p->in, 64 * 1024) < 0) {
                r = p->fd < 0 ? p->fd : -ENOMEM;
                probe_free(p);
                return r;
        }
        r = sd_event_add_io(c->proxy->ctx.event, &p->source, p->fd, EPOLLIN | EPOLLOUT, on_probe_io, p);
        if (r < 0) {
                probe_free(p);
                return r;
        }
        c->probe = p;
        return 0;
}

static void conn_forward_request(Conn *c);

/* ---- idle connections ------------------------------------------------------ */

static uint64_t now_usec(void);

static int on_idle_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Conn *c = userdata;

        (void) s;
        (void) usec;
        log_debug("Connection of container %s idle for too long, closing.", c->proxy->caller->id);
        conn_free(c);
        return 0;
}

/* Between requests a connection holds buffers and a slot of the socket's
 * max_connections for nothing: it gets idle_timeout to send a whole
 * request head (bytes that complete none do not extend it). Streams in
 * progress (logs -f, events, attach) are not idle. */
static void conn_arm_idle(Conn *c) {
        uint64_t t = c->proxy->ctx.idle_timeout_usec ?: DEFAULT_IDLE_USEC;
        int r;

        c->idle_since = now_usec();
        if (c->idle_timer) {
                r = sd_event_source_set_time_relative(c->idle_timer, t);
                if (r >= 0)
                        r = sd_event_source_set_enabled(c->idle_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(c->proxy->ctx.event, &c->idle_timer, CLOCK_MONOTONIC, t, 0,
                                               on_idle_timeout, c);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the idle timer of a connection, ignoring: %m");
}

static void conn_disarm_idle(Conn *c) {
        c->idle_since = 0;
        if (c->idle_timer)
                (void) sd_event_source_set_enabled(c->idle_timer, SD_EVENT_OFF);
}

static bool conn_is_idle(const Conn *c) {
        return c->idle_since > 0 && c->req_state == REQ_HEAD && c->resp_state == RESP_IDLE && !c->closing;
}

/* Runs the next ownership check, or forwards when all passed. */
static void conn_checks_next(Conn *c) {
        char *path = NULL;
        int r;

        c->req_state = REQ_CHECK;
        if (c->check_index >= c->dec.n_checks)
                return conn_forward_request(c);
        r = docker_check_path(&c->dec, c->check_index, &path);
        if (r >= 0)
                r = probe_start(c, TAKE_PTR(path));
        if (r < 0) {
                log_warning_errno(r, "Cannot reach the engine at %s for an ownership check: %m", c->proxy->ctx.upstream);
                conn_reply_error(c, 502, "engine", "The Docker engine is not reachable.");
        }
}

/* ---- request handling ------------------------------------------------------- */

static void conn_forward_request(Conn *c) {
        _cleanup_free_ char *head = NULL, *target = NULL, *len = NULL;
        size_t head_len;
        int r;

        r = conn_connect_upstream(c);
        if (r < 0) {
                log_warning_errno(r, "Cannot connect to the engine at %s: %m", c->proxy->ctx.upstream);
                return conn_reply_error(c, 502, "engine", "The Docker engine is not reachable.");
        }
        if (c->dec.path_id) {
                /* The engine acts on the id we checked, not on a name that
                 * could point elsewhere by the time it looks. */
                _cleanup_free_ char *path = NULL;
                const char *q = strchr(c->req->target, '?');
                if (docker_path_with_id(c->api_path, c->dec.path_id, &path) < 0 ||
                    asprintf(&target, "%s%s%s%s", isempty(c->api_version) ? "" : "/v", c->api_version ?: "", path,
                             q ?: "") < 0)
                        return conn_free(c);
                free(c->req->target);
                c->req->target = TAKE_PTR(target);
        }
        if (c->dec.new_query) {
                const char *q = strchr(c->req->target, '?');
                if (asprintf(&target, "%.*s?%s", (int) (q ? q - c->req->target : (ptrdiff_t) strlen(c->req->target)),
                             c->req->target, c->dec.new_query) < 0)
                        return conn_free(c);
                free(c->req->target);
                c->req->target = TAKE_PTR(target);
        }
        if (c->dec.new_body) {
                if (asprintf(&len, "%zu", c->dec.new_body_len) < 0 ||
                    http_message_set_header(c->req, "Transfer-Encoding", NULL) < 0 ||
                    http_message_set_header(c->req, "Content-Length", len) < 0)
                        return conn_free(c);
        }
        /* The engine gets our serialization of what we parsed, never the
         * client's bytes: one framing, the one we checked. */
        r = http_message_format_head(c->req, &head, &head_len);
        if (r < 0 || buf_append(&c->uout, head, head_len, SIZE_MAX) < 0)
                return conn_free(c);
        if (c->dec.new_body) {
                if (buf_append(&c->uout, c->dec.new_body, c->dec.new_body_len, SIZE_MAX) < 0)
                        return conn_free(c);
                c->req_state = REQ_DONE;
        } else if (c->req->body == HTTP_BODY_NONE)
                c->req_state = REQ_DONE;
        else {
                c->req_state = REQ_BODY_STREAM;
                c->body_left = c->req->content_length;
                c->chunk = (HttpChunked){};
        }
        audit(c, true, 0, c->dec.rule, NULL);
        c->resp_state = RESP_HEAD;
        c->resp_done = false;
}

static int body_collect(const char *data, size_t len, void *userdata) {
        return buf_append(userdata, data, len, DOCKER_BODY_MAX);
}

static void conn_judge_body(Conn *c) {
        const DockerCaller *caller = c->proxy->caller;
        int r;

        r = docker_decide_body(caller, c->req->method, c->api_path, buf_head(&c->body), buf_len(&c->body), &c->dec);
        buf_done(&c->body);
        if (r < 0)
                return conn_free(c);
        if (c->dec.status)
                return conn_reply_error(c, c->dec.status, c->dec.rule, c->dec.message);
        c->check_index = 0;
        conn_checks_next(c);
}

/* ---- pulls answered through the host --------------------------------------- */

#define PULL_ANSWER_MAX 2048

static void conn_pull_finish(Conn *c, unsigned status, const char *message) {
        _cleanup_free_ char *lines = NULL;

        c->psrc = sd_event_source_disable_unref(c->psrc);
        c->pfd = safe_close(c->pfd);
        if (status == 0)
                log_info("Container %s pulled %s through the host.", c->proxy->caller->id, c->dec.pull_ref);
        else
                log_notice("Container %s: pull of %s through the host failed (%u): %s", c->proxy->caller->id,
                           c->dec.pull_ref, status, message);
        if (docker_pull_result(c->dec.pull_ref, status, message, &lines) < 0 ||
            buf_append(&c->cout, lines, strlen(lines), SIZE_MAX) < 0)
                return conn_free(c);
        c->closing = true;
        conn_pump(c);
}

/* init answers one line, "<status> <message>", then closes. */
static int on_pull_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        bool eof = false;
        char *nl;
        int r;

        (void) s;
        (void) revents;
        r = fill(fd, &c->pin, &eof);
        nl = buf_len(&c->pin) > 0 ? memchr(buf_head(&c->pin), '\n', buf_len(&c->pin)) : NULL;
        if (!nl && r >= 0 && !eof && buf_space(&c->pin) > 0)
                return 0;
        if (!nl) {
                conn_pull_finish(c, 6, "the instance's init ended the pull without an answer");
                return 0;
        }
        *nl = 0;
        char *end = NULL;
        unsigned long status = strtoul(buf_head(&c->pin), &end, 10);
        if (end == buf_head(&c->pin) || status > 255 || (*end != ' ' && *end != 0)) {
                conn_pull_finish(c, 6, "the instance's init answered something else");
                return 0;
        }
        conn_pull_finish(c, (unsigned) status, *end ? end + 1 : "");
        return 0;
}

/* Answers the pull itself: asks hostmesh-init (which asks the host), and
 * streams the Engine API's progress lines to the client meanwhile. */
static void conn_pull_start(Conn *c) {
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        _cleanup_free_ char *request = NULL, *first = NULL;
        int r;

        if (!c->proxy->ctx.pull_socket)
                return conn_reply_error(c, 403, "image-pull", "Pulling images is not available here.");
        c->pfd = connect_unix(c->proxy->ctx.pull_socket);
        if (c->pfd < 0) {
                log_warning_errno(c->pfd, "Cannot reach the pull socket %s: %m", c->proxy->ctx.pull_socket);
                return conn_reply_error(c, 502, "image-pull-host",
                                        "The instance cannot pull through the host right now (its init does not answer).");
        }
        if (asprintf(&request, "%s\n", c->dec.pull_ref) < 0 || docker_pull_started(c->dec.pull_ref, &first) < 0)
                return conn_free(c);
        /* One short line into an empty socket buffer: it goes at once. */
        if (send(c->pfd, request, strlen(request), MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t) strlen(request))
                return conn_reply_error(c, 502, "image-pull-host", "The instance's init did not take the pull request.");
        r = buf_ensure(&c->pin, PULL_ANSWER_MAX);
        if (r >= 0)
                r = sd_event_add_io(c->proxy->ctx.event, &c->psrc, c->pfd, EPOLLIN, on_pull_io, c);
        if (r < 0 || buf_append(&c->cout, head, sizeof(head) - 1, SIZE_MAX) < 0 ||
            buf_append(&c->cout, first, strlen(first), SIZE_MAX) < 0)
                return conn_free(c);
        audit(c, true, 0, c->dec.rule, NULL);
        /* The request is answered here: whatever else the client sends is
         * dropped, and the connection ends with the stream. */
        c->req_state = REQ_LINGER;
        c->resp_state = RESP_IDLE;
        c->ufd = safe_close(c->ufd);
        c->usrc = sd_event_source_disable_unref(c->usrc);
}

/* Returns false while the head is incomplete (nothing happened), true
 * otherwise; may free the connection. */
static bool conn_handle_head(Conn *c) {
        _cleanup_free_ char *version = NULL, *query = NULL;
        const DockerCaller *caller = c->proxy->caller;
        int r;

        r = http_parse_request(buf_head(&c->cin), buf_len(&c->cin), UINT64_MAX, &c->req);
        if (r == 0) {
                if (buf_space(&c->cin) == 0 || c->client_eof) {
                        if (c->client_eof && buf_len(&c->cin) == 0)
                                return conn_free(c), true;
                        return conn_reply_error(c, c->client_eof ? 400 : 431, "http-framing",
                                                c->client_eof ? "Incomplete request." : "Request head too large."), true;
                }
                return false;
        }
        if (r < 0) {
                const char *why = r == -EOPNOTSUPP ? "Unsupported HTTP version or transfer coding."
                                  : r == -E2BIG    ? "Request head too large."
                                                   : "Malformed or ambiguous HTTP request (framing refused).";
                return conn_reply_error(c, r == -EOPNOTSUPP ? 501 : r == -E2BIG ? 431 : 400, "http-framing", why), true;
        }
        buf_consume(&c->cin, c->req->head_len);
        c->req_keep_alive = c->req->keep_alive;
        conn_disarm_idle(c);

        free(c->api_path);
        c->api_path = NULL;
        r = http_split_target(c->req->target, &c->api_path, &version, &query);
        if (r < 0)
                return conn_reply_error(c, 400, "http-framing", "Malformed request target."), true;
        free(c->api_version);
        c->api_version = TAKE_PTR(version);

        docker_decision_done(&c->dec);
        r = docker_decide_request(caller, c->req->method, c->api_path, query, &c->dec);
        if (r < 0)
                return conn_free(c), true;
        if (c->dec.status)
                return conn_reply_error(c, c->dec.status, c->dec.rule, c->dec.message), true;
        if (c->dec.pull_ref)
                return conn_pull_start(c), true;

        if (c->dec.needs_body) {
                if (c->req->body == HTTP_BODY_LENGTH && c->req->content_length > DOCKER_BODY_MAX)
                        return conn_reply_error(c, 413, "body-size", "Request body too large to be checked."), true;
                c->req_state = REQ_BODY_BUFFER;
                c->body_left = c->req->content_length;
                c->chunk = (HttpChunked){};
                buf_done(&c->body);
                /* RFC 9110 §10.1.1: we read this body ourselves, so we answer
                 * the expectation; the engine gets a plain request. */
                if (c->req->body != HTTP_BODY_NONE) {
                        const char *expect = http_message_header(c->req, "Expect");
                        if (expect && strcasecmp(expect, "100-continue") == 0 && c->req->version_minor >= 1) {
                                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                                if (buf_append(&c->cout, cont, sizeof(cont) - 1, SIZE_MAX) < 0)
                                        return conn_free(c), true;
                        }
                        if (http_message_set_header(c->req, "Expect", NULL) < 0)
                                return conn_free(c), true;
                }
                if (c->req->body == HTTP_BODY_NONE)
                        return conn_judge_body(c), true;
                return true;
        }
        c->check_index = 0;
        conn_checks_next(c);
        return true;
}

/* Client → upstream, by request state. Returns true on progress. */
static bool pump_request(Conn *c) {
        size_t n, used;
        int r;

        switch (c->req_state) {
        case REQ_HEAD:
                if (c->resp_state != RESP_IDLE || (buf_len(&c->cin) == 0 && !c->client_eof))
                        return false;
                if (buf_len(&c->cin) == 0 && c->client_eof) {
                        conn_free(c);
                        return false;
                }
                /* An incomplete head is no progress: wait for more bytes
                 * (looping here would spin the whole loop on one client). */
                return conn_handle_head(c);

        case REQ_BODY_BUFFER:
                if (buf_len(&c->cin) == 0) {
                        if (c->client_eof)
                                conn_reply_error(c, 400, "http-framing", "Request body ended early.");
                        return false;
                }
                if (c->req->body == HTTP_BODY_LENGTH) {
                        n = (size_t) MIN((uint64_t) buf_len(&c->cin), c->body_left);
                        if (buf_append(&c->body, buf_head(&c->cin), n, DOCKER_BODY_MAX) < 0) {
                                conn_reply_error(c, 413, "body-size", "Request body too large to be checked.");
                                return true;
                        }
                        buf_consume(&c->cin, n);
                        c->body_left -= n;
                        r = c->body_left == 0;
                } else {
                        r = http_chunked_feed(&c->chunk, buf_head(&c->cin), buf_len(&c->cin), &used, body_collect,
                                              &c->body);
                        if (r < 0) {
                                conn_reply_error(c, r == -EMSGSIZE ? 413 : 400, r == -EMSGSIZE ? "body-size" : "http-framing",
                                                 r == -EMSGSIZE ? "Request body too large to be checked."
                                                                : "Malformed chunked request body.");
                                return true;
                        }
                        buf_consume(&c->cin, used);
                }
                if (r == 1)
                        conn_judge_body(c);
                return true;

        case REQ_BODY_STREAM:
                if (buf_len(&c->cin) == 0 || buf_space(&c->uout) == 0) {
                        if (c->client_eof && buf_len(&c->cin) == 0) {
                                conn_free(c);
                                return false;
                        }
                        return false;
                }
                if (c->req->body == HTTP_BODY_LENGTH) {
                        c->body_left -= move(&c->cin, &c->uout, c->body_left);
                        if (c->body_left == 0)
                                c->req_state = REQ_DONE;
                        return true;
                }
                n = MIN(buf_len(&c->cin), buf_space(&c->uout));
                r = http_chunked_feed(&c->chunk, buf_head(&c->cin), n, &used, NULL, NULL);
                if (r < 0) {
                        /* Part of the body is upstream already: all we can do is cut both. */
                        audit(c, false, 400, "http-framing", "malformed chunked body while streaming");
                        conn_free(c);
                        return false;
                }
                move(&c->cin, &c->uout, used);
                if (r == 1)
                        c->req_state = REQ_DONE;
                return true;

        case REQ_DONE:
                /* HTTP clients do not half-close; EOF here means the client
                 * went away (e.g. ^C on `logs -f`): drop the upstream too. */
                if (c->client_eof && !c->closing) {
                        conn_free(c);
                        return false;
                }
                return false;

        case REQ_RAW:
                if (buf_len(&c->cin) > 0 && buf_space(&c->uout) > 0) {
                        move(&c->cin, &c->uout, UINT64_MAX);
                        return true;
                }
                if (c->client_eof && buf_len(&c->cin) == 0 && buf_len(&c->uout) == 0 && c->up.bytes == 0 &&
                    !c->upstream_shut && c->ufd >= 0) {
                        /* Half-close: the container's stdin ended. */
                        (void) shutdown(c->ufd, SHUT_WR);
                        c->upstream_shut = true;
                        return true;
                }
                return false;

        case REQ_LINGER:
                buf_consume(&c->cin, buf_len(&c->cin));
                return false;

        case REQ_CHECK:
                return false;
        }
        return false;
}

static int capture_collect(const char *data, size_t len, void *userdata) {
        return buf_append(userdata, data, len, CAPTURE_MAX);
}

static void conn_record(Conn *c, OwnedKind kind, const char *id, bool add) {
        const ProxyContext *ctx = &c->proxy->ctx;

        if (ctx->on_record)
                ctx->on_record(ctx->userdata, c->proxy->caller, kind, id, add);
}

/* A 2xx answer's head is in: what the request made or removed changes the
 * caller's records (the id a create names waits for the body). */
static void conn_records_at_head(Conn *c) {
        if (c->resp_status < 200 || c->resp_status >= 300)
                return;
        if (c->dec.forget_path != OWNED_NONE && c->dec.path_id)
                conn_record(c, c->dec.forget_path, c->dec.path_id, /* add= */ false);
        for (size_t i = 0; i < c->dec.n_records; i++)
                conn_record(c, c->dec.records[i].kind, c->dec.records[i].id, c->dec.records[i].add);
        c->capturing = c->dec.record_answer != OWNED_NONE;
        buf_done(&c->capture);
}

static void conn_records_at_end(Conn *c) {
        _cleanup_free_ char *id = NULL;
        Buf body = {};
        int r;

        if (!c->capturing)
                return;
        c->capturing = false;
        if (c->resp_body == HTTP_BODY_CHUNKED) {
                HttpChunked ch = {};
                size_t used;
                r = http_chunked_feed(&ch, buf_head(&c->capture), buf_len(&c->capture), &used, capture_collect, &body);
                r = r == 1 ? 0 : -EBADMSG;
        } else
                r = buf_append(&body, buf_head(&c->capture), buf_len(&c->capture), CAPTURE_MAX);
        if (r >= 0)
                r = docker_created_id(c->dec.record_answer, buf_head(&body), buf_len(&body), &id);
        if (r >= 0)
                conn_record(c, c->dec.record_answer, id, /* add= */ true);
        else
                log_warning_errno(r, "Cannot read the id in the engine's answer to %s %s, not recorded: %m",
                                  c->req ? c->req->method : "-", c->api_path ?: "-");
        buf_done(&body);
        buf_done(&c->capture);
}

/* Body bytes on their way to the client; a create's answer is kept too. */
static size_t move_body(Conn *c, size_t max) {
        size_t n = (size_t) MIN((uint64_t) MIN(buf_len(&c->uin), buf_space(&c->cout)), (uint64_t) max);

        if (c->capturing && buf_append(&c->capture, buf_head(&c->uin), n, CAPTURE_MAX) < 0) {
                log_warning("The engine's answer to %s is too large to read an id from, not recorded.", c->api_path ?: "-");
                c->capturing = false;
                buf_done(&c->capture);
        }
        return move(&c->uin, &c->cout, n);
}

static void conn_response_done(Conn *c) {
        conn_records_at_end(c);
        c->resp_state = RESP_IDLE;
        if (c->req_state != REQ_DONE || !c->req_keep_alive || !c->resp_keep_alive) {
                c->closing = true;
                c->req_state = REQ_LINGER;
                return;
        }
        /* Keep-alive: ready for the next request on both sides. */
        c->req_state = REQ_HEAD;
        c->req = http_message_free(c->req);
        conn_arm_idle(c);
}

/* Upstream → client, by response state. Returns true on progress. */
static bool pump_response(Conn *c) {
        _cleanup_(http_message_freep) HttpMessage *resp = NULL;
        size_t used, n;
        int r;

        switch (c->resp_state) {
        case RESP_IDLE:
                if (c->ufd >= 0 && buf_len(&c->uin) > 0) {
                        /* Bytes nobody asked for. */
                        conn_free(c);
                        return false;
                }
                if (c->ufd >= 0 && c->upstream_eof) {
                        /* The engine closed an idle keep-alive connection. */
                        c->usrc = sd_event_source_disable_unref(c->usrc);
                        c->ufd = safe_close(c->ufd);
                        c->uin.start = c->uin.end = 0;
                        c->uout.start = c->uout.end = 0;
                        return true;
                }
                return false;

        case RESP_HEAD:
                r = http_parse_response(buf_head(&c->uin), buf_len(&c->uin), c->req->method, &resp);
                if (r == 0) {
                        if (c->upstream_eof) {
                                conn_reply_error(c, 502, "engine", "The Docker engine closed the connection.");
                                return true;
                        }
                        return false;
                }
                if (r < 0) {
                        log_warning_errno(r, "Unparsable response from the engine: %m");
                        conn_reply_error(c, 502, "engine", "The Docker engine sent a malformed response.");
                        return true;
                }
                if (buf_space(&c->cout) < resp->head_len)
                        return false;
                move(&c->uin, &c->cout, resp->head_len);
                c->resp_keep_alive = resp->keep_alive;
                if (resp->status >= 100 && resp->status < 200 && resp->status != 101)
                        return true; /* 100 Continue: the real head follows */
                if (c->dec.hijack && (resp->status == 101 || (resp->status == 200 && resp->body == HTTP_BODY_UNTIL_CLOSE))) {
                        /* The engine hijacked the connection: raw both ways
                         * from here (API ≤ 1.41 may answer 200 instead of 101). */
                        c->resp_state = RESP_RAW;
                        c->req_state = REQ_RAW;
                        return true;
                }
                if (resp->status == 101) {
                        conn_free(c);
                        return false;
                }
                c->resp_body = resp->body;
                c->resp_left = resp->content_length;
                c->rchunk = (HttpChunked){};
                c->resp_status = resp->status;
                conn_records_at_head(c);
                if (resp->body == HTTP_BODY_NONE)
                        conn_response_done(c);
                else
                        c->resp_state = RESP_BODY;
                return true;

        case RESP_BODY:
                if (buf_len(&c->uin) == 0 || buf_space(&c->cout) == 0) {
                        if (buf_len(&c->uin) == 0 && c->upstream_eof) {
                                if (c->resp_body == HTTP_BODY_UNTIL_CLOSE) {
                                        conn_response_done(c);
                                        return true;
                                }
                                /* Truncated response: the client must see the cut. */
                                c->closing = true;
                                c->req_state = REQ_LINGER;
                                c->resp_state = RESP_IDLE;
                                return true;
                        }
                        return false;
                }
                if (c->resp_body == HTTP_BODY_LENGTH) {
                        c->resp_left -= move_body(c, (size_t) MIN(c->resp_left, (uint64_t) SIZE_MAX));
                        if (c->resp_left == 0)
                                conn_response_done(c);
                } else if (c->resp_body == HTTP_BODY_CHUNKED) {
                        n = MIN(buf_len(&c->uin), buf_space(&c->cout));
                        r = http_chunked_feed(&c->rchunk, buf_head(&c->uin), n, &used, NULL, NULL);
                        if (r < 0) {
                                log_warning("Malformed chunked response from the engine, closing.");
                                conn_free(c);
                                return false;
                        }
                        move_body(c, used);
                        if (r == 1)
                                conn_response_done(c);
                } else
                        move_body(c, SIZE_MAX);
                return true;

        case RESP_RAW:
                if (buf_len(&c->uin) > 0 && buf_space(&c->cout) > 0) {
                        move(&c->uin, &c->cout, UINT64_MAX);
                        return true;
                }
                if (c->upstream_eof && buf_len(&c->uin) == 0 && buf_len(&c->cout) == 0 && c->down.bytes == 0 &&
                    !c->client_shut) {
                        (void) shutdown(c->cfd, SHUT_WR);
                        c->client_shut = true;
                        return true;
                }
                return false;
        }
        return false;
}

static bool conn_alive(Proxy *p, uint64_t id) {
        for (Conn *x = p->conns; x; x = x->next)
                if (x->id == id)
                        return true;
        return false;
}

/* Moves bytes as far as the state machines allow, then sets the epoll masks.
 * May free the connection. */
static void conn_pump(Conn *c) {
        Proxy *p = c->proxy;
        uint64_t id = c->id;
        bool progress;

        do {
                size_t queued;

                progress = pump_request(c);
                if (!conn_alive(p, id))
                        return;
                progress = pump_response(c) || progress;
                if (!conn_alive(p, id))
                        return;

                /* Write at once what the pump queued: waiting for EPOLLOUT
                 * would cost a loop iteration per hop on every request. What
                 * went out makes room, so pump again: otherwise a full input
                 * buffer and an emptied output buffer would leave no event
                 * to wait for. */
                queued = buf_len(&c->cout) + buf_len(&c->uout);
                if (buf_len(&c->cout) > 0 && flush(c->cfd, &c->cout) < 0) {
                        conn_free(c);
                        return;
                }
                if (c->ufd >= 0 && buf_len(&c->uout) > 0 && flush(c->ufd, &c->uout) < 0) {
                        conn_free(c);
                        return;
                }
                if (buf_len(&c->cout) + buf_len(&c->uout) < queued)
                        progress = true;
        } while (progress);

        if (c->req_state == REQ_RAW && c->client_shut && c->upstream_shut && buf_len(&c->cout) == 0 &&
            buf_len(&c->uout) == 0) {
                conn_free(c);
                return;
        }
        if (c->req_state == REQ_RAW && c->client_eof && c->upstream_eof && buf_len(&c->cout) == 0 &&
            c->down.bytes == 0) {
                conn_free(c);
                return;
        }
        if (c->closing && buf_len(&c->cout) == 0) {
                if (!c->client_shut) {
                        (void) shutdown(c->cfd, SHUT_WR);
                        c->client_shut = true;
                }
                if (c->client_eof) {
                        conn_free(c);
                        return;
                }
        }
        conn_update_events(c);
}

static int on_linger_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        conn_free(userdata);
        return 0;
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        int r;

        (void) s;
        if (revents & EPOLLOUT) {
                r = flush(fd, &c->cout);
                if (r >= 0)
                        r = splice_drain(&c->down, fd);
                if (r < 0)
                        return conn_free(c), 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (splice_usable(c, &c->up, &c->cin, &c->uout))
                        r = splice_pump(&c->up, fd, c->ufd, &c->client_eof);
                else
                        r = fill(fd, &c->cin, &c->client_eof);
                if (r < 0)
                        return conn_free(c), 0;
        }
        if (c->closing && !c->timer)
                (void) sd_event_add_time_relative(c->proxy->ctx.event, &c->timer, CLOCK_MONOTONIC, LINGER_USEC, 0,
                                                  on_linger_timeout, c);
        conn_pump(c);
        return 0;
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        int r;

        (void) s;
        if (revents & EPOLLOUT) {
                r = flush(fd, &c->uout);
                if (r >= 0)
                        r = splice_drain(&c->up, fd);
                if (r < 0)
                        return conn_free(c), 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (splice_usable(c, &c->down, &c->uin, &c->cout))
                        r = splice_pump(&c->down, fd, c->cfd, &c->upstream_eof);
                else
                        r = fill(fd, &c->uin, &c->upstream_eof);
                if (r < 0)
                        return conn_free(c), 0;
        }
        conn_pump(c);
        /* Writes queued by the pump go out now rather than on the next wakeup. */
        return 0;
}

static void conn_free(Conn *c) {
        Proxy *p;

        if (!c)
                return;
        p = c->proxy;
        if (c->prev)
                c->prev->next = c->next;
        else
                p->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        p->n_conns--;
        probe_free(c->probe);
        sd_event_source_disable_unref(c->psrc);
        safe_close(c->pfd);
        buf_done(&c->pin);
        sd_event_source_disable_unref(c->csrc);
        sd_event_source_disable_unref(c->usrc);
        sd_event_source_disable_unref(c->timer);
        sd_event_source_disable_unref(c->idle_timer);
        safe_close(c->cfd);
        safe_close(c->ufd);
        splice_done(&c->down);
        splice_done(&c->up);
        buf_done(&c->cin);
        buf_done(&c->cout);
        buf_done(&c->uin);
        buf_done(&c->uout);
        buf_done(&c->body);
        http_message_free(c->req);
        docker_decision_done(&c->dec);
        free(c->api_path);
        free(c->api_version);
        buf_done(&c->capture);
        free(c);
        if (p->ctx.metrics) {
                Metric *g = metrics_gauge(p->ctx.metrics, "dockerproxy_connections", "Open client connections", NULL);
                if (g)
                        metric_set(g, (int64_t) p->n_conns);
        }
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Proxy *p = userdata;

        (void) s;
        (void) revents;
        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                Conn *c;
                int r;

                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(-errno, "accept() on %s failed, ignoring: %m", p->socket_path);
                        return 0;
                }
                if (p->n_conns >= p->ctx.max_connections) {
                        /* Idle connections cannot lock new clients out: the one
                         * idle longest makes room. */
                        Conn *oldest = NULL;
                        for (Conn *x = p->conns; x; x = x->next)
                                if (conn_is_idle(x) && (!oldest || x->idle_since < oldest->idle_since))
                                        oldest = x;
                        if (!oldest) {
                                log_warning("Container %s has %u busy connections open, refusing one more.", p->caller->id,
                                            p->n_conns);
                                safe_close(cfd);
                                continue;
                        }
                        log_debug("Container %s is at %u connections, closing the one idle longest.", p->caller->id,
                                  p->n_conns);
                        count(p, "dockerproxy_idle_evictions_total", "Idle connections closed to make room", NULL);
                        conn_free(oldest);
                }
                c = calloc(1, sizeof(*c));
                if (!c) {
                        safe_close(cfd);
                        continue;
                }
                c->proxy = p;
                c->id = ++p->next_conn_id;
                c->cfd = cfd;
                c->ufd = -EBADF;
                c->pfd = -EBADF;
                c->down.pipe[0] = c->down.pipe[1] = c->up.pipe[0] = c->up.pipe[1] = -EBADF;
                c->next = p->conns;
                if (p->conns)
                        p->conns->prev = c;
                p->conns = c;
                p->n_conns++;
                r = buf_ensure(&c->cin, BUF_SIZE);
                if (r >= 0)
                        r = buf_ensure(&c->cout, BUF_SIZE);
                if (r >= 0)
                        r = sd_event_add_io(p->ctx.event, &c->csrc, cfd, EPOLLIN, on_client_io, c);
                if (r < 0) {
                        conn_free(c);
                        continue;
                }
                conn_arm_idle(c);
                count(p, "dockerproxy_connections_total", "Accepted client connections", NULL);
        }
}

int proxy_new(const ProxyContext *ctx, const DockerCaller *caller, const char *socket_path, int listen_fd,
              Proxy **ret) {
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } sa = { .un.sun_family = AF_UNIX };
        _cleanup_close_ int fd = listen_fd;
        _cleanup_(proxy_freep) Proxy *p = NULL;
        int r;

        if (strlen(socket_path) >= sizeof(sa.un.sun_path))
                return -ENAMETOOLONG;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->ctx = *ctx;
        if (p->ctx.max_connections == 0)
                p->ctx.max_connections = DEFAULT_MAX_CONNS;
        p->caller = caller;
        p->fd = -EBADF;
        p->socket_path = strdup(socket_path);
        if (!p->socket_path)
                return -ENOMEM;

        if (fd >= 0) {
                p->fd = TAKE_FD(fd);
                if (fcntl(p->fd, F_SETFL, O_NONBLOCK) < 0)
                        return -errno;
        } else {
                p->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (p->fd < 0)
                        return -errno;
                strcpy(sa.un.sun_path, socket_path);
                (void) unlink(socket_path);
                if (bind(p->fd, &sa.sa, sizeof(sa.un)) < 0)
                        return -errno;
                /* The container's processes run as any user; the socket's
                 * location (bind-mounted into that one container) is the
                 * access control. */
                if (chmod(socket_path, 0666) < 0)
                        return -errno;
                if (listen(p->fd, SOMAXCONN) < 0)
                        return -errno;
        }
        r = sd_event_add_io(ctx->event, &p->source, p->fd, EPOLLIN, on_accept, p);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

Proxy *proxy_free(Proxy *p) {
        if (!p)
                return NULL;
        while (p->conns)
                conn_free(p->conns);
        sd_event_source_disable_unref(p->source);
        safe_close(p->fd);
        free(p->socket_path);
        free(p);
        return NULL;
}

void proxy_unlink(Proxy *p) {
        if (p)
                (void) unlink(p->socket_path);
}

int proxy_listen_fd(const Proxy *p) {
        return p->fd;
}

unsigned proxy_connections(const Proxy *p) {
        return p->n_conns;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

int proxy_engine_get(const char *upstream, const char *path, uint64_t timeout_usec, unsigned *ret_status,
                     char **ret_body, size_t *ret_len) {
        _cleanup_(http_message_freep) HttpMessage *resp = NULL;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *req = NULL;
        uint64_t deadline = now_usec() + timeout_usec;
        Buf in = {}, out = {}, body = {};
        bool eof = false;
        int r, n;

        n = asprintf(&req, "GET %s HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", path);
        if (n < 0)
                return -ENOMEM;
        fd = connect_unix(upstream);
        if (fd < 0)
                return fd;
        r = buf_append(&out, req, (size_t) n, SIZE_MAX);
        if (r < 0)
                goto finish;
        r = buf_ensure(&in, PROBE_MAX);
        if (r < 0)
                goto finish;
        while (!eof) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN | (buf_len(&out) > 0 ? POLLOUT : 0) };
                uint64_t now = now_usec();
                if (now >= deadline) {
                        r = -ETIMEDOUT;
                        goto finish;
                }
                if (poll(&pfd, 1, (int) ((deadline - now) / USEC_PER_MSEC) + 1) < 0) {
                        r = -errno;
                        goto finish;
                }
                r = flush(fd, &out);
                if (r >= 0)
                        r = fill(fd, &in, &eof);
                if (r < 0)
                        goto finish;
                if (buf_space(&in) == 0 && !eof) {
                        r = -EMSGSIZE;
                        goto finish;
                }
        }
        r = http_parse_response(buf_head(&in), buf_len(&in), "GET", &resp);
        if (r <= 0) {
                r = r == 0 ? -EBADMSG : r;
                goto finish;
        }
        if (resp->body == HTTP_BODY_CHUNKED) {
                HttpChunked ch = {};
                size_t used;
                r = http_chunked_feed(&ch, buf_head(&in) + resp->head_len, buf_len(&in) - resp->head_len, &used,
                                      collect_probe_body, &body);
                if (r != 1) {
                        r = r < 0 ? r : -EBADMSG;
                        goto finish;
                }
        } else {
                size_t l = buf_len(&in) - resp->head_len;
                if (resp->body == HTTP_BODY_LENGTH && resp->content_length < l)
                        l = (size_t) resp->content_length;
                r = buf_append(&body, buf_head(&in) + resp->head_len, l, PROBE_MAX);
                if (r < 0)
                        goto finish;
        }
        r = buf_append(&body, "", 1, PROBE_MAX + 1); /* NUL for convenience */
        if (r < 0)
                goto finish;
        *ret_status = resp->status;
        *ret_len = buf_len(&body) - 1;
        *ret_body = body.data;
        body = (Buf){};
        r = 0;
finish:
        buf_done(&in);
        buf_done(&out);
        buf_done(&body);
        return r;
}
