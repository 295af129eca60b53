/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "dns-upstream.h"
#include "macro.h"
#include "parse-util.h"

#define TRANSACTION_BUCKETS 1024
#define TRANSACTIONS_MAX 8192
#define UPSTREAMS_MAX 16
#define FAILURES_BEFORE_DOWN 3
#define DOWN_BACKOFF_USEC (5 * USEC_PER_SEC)
#define DOWN_BACKOFF_MAX_USEC (60 * USEC_PER_SEC)
#define QUERY_MAX (DNS_HEADER_SIZE + DNS_NAME_MAX + 4 + DNS_OPT_RR_SIZE)

const double dns_latency_bucket_ms[DNS_LATENCY_BUCKETS] = { 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 1e300 };

typedef struct Upstream {
        struct sockaddr_storage addr;
        socklen_t addr_len;
        char label[64];
        unsigned consecutive_failures;
        uint64_t down_until;
        uint64_t backoff;
        uint64_t queries, failures, timeouts;
        double srtt_ms;
} Upstream;

struct DnsTransaction {
        DnsResolver *resolver;
        DnsTransaction *bucket_next;
        uint64_t hash;
        uint8_t key[DNS_NAME_MAX + 5];
        size_t key_len;
        uint8_t query[QUERY_MAX];
        size_t query_len;
        size_t question_end;
        uint16_t id;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        unsigned upstream;
        unsigned attempts;
        uint32_t tried;          /* bit per upstream tried in this round */
        bool tcp;
        /* TCP: 2-byte length + query out, then 2-byte length + reply in. */
        size_t tcp_sent;
        uint8_t *tcp_buf;
        size_t tcp_have;
        size_t tcp_want;
        uint64_t attempt_started;
        DnsWaiter *waiters;
        unsigned n_waiters;
};

struct DnsResolver {
        sd_event *event;
        Upstream upstreams[UPSTREAMS_MAX];
        size_t n_upstreams;
        DnsTransaction *buckets[TRANSACTION_BUCKETS];
        size_t n_transactions;
        uint64_t timeout_usec;
        unsigned max_waiters;
        DnsReplyHook hook;
        void *hook_userdata;
        void (*observe)(double seconds, void *userdata);
        void *observe_userdata;
        uint8_t random[256];
        size_t random_left;
        uint8_t rbuf[DNS_PACKET_MAX];
        DnsResolverStats stats;
};

static uint16_t random_u16(DnsResolver *r) {
        uint16_t v;

        if (r->random_left < 2) {
                /* getrandom() never blocks once the pool is initialised; read a
                 * batch so that the hot path is not one syscall per query. */
                if (getrandom(r->random, sizeof(r->random), 0) != (ssize_t) sizeof(r->random))
                        abort(); /* no unpredictable IDs means no safe resolver */
                r->random_left = sizeof(r->random);
        }
        r->random_left -= 2;
        memcpy(&v, r->random + r->random_left, 2);
        return v;
}

static uint64_t now_usec(DnsResolver *r) {
        uint64_t t;
        if (sd_event_now(r->event, CLOCK_MONOTONIC, &t) < 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                t = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
        }
        return t;
}

int dns_resolver_new(sd_event *event, DnsResolver **ret) {
        DnsResolver *r = calloc(1, sizeof(*r));

        if (!r)
                return -ENOMEM;
        r->event = sd_event_ref(event);
        r->timeout_usec = 2 * USEC_PER_SEC;
        r->max_waiters = 256;
        *ret = r;
        return 0;
}

static void transaction_free(DnsTransaction *t);

DnsResolver *dns_resolver_free(DnsResolver *r) {
        if (!r)
                return NULL;
        for (size_t b = 0; b < TRANSACTION_BUCKETS; b++)
                while (r->buckets[b]) {
                        DnsTransaction *t = r->buckets[b];
                        r->buckets[b] = t->bucket_next;
                        while (t->waiters)
                                dns_waiter_cancel(t->waiters);
                        transaction_free(t);
                }
        sd_event_unref(r->event);
        free(r);
        return NULL;
}

void dns_resolver_set_reply_hook(DnsResolver *r, DnsReplyHook hook, void *userdata) {
        r->hook = hook;
        r->hook_userdata = userdata;
}

void dns_resolver_set_latency_observer(DnsResolver *r, void (*observe)(double seconds, void *userdata), void *userdata) {
        r->observe = observe;
        r->observe_userdata = userdata;
}

void dns_resolver_set_timeout(DnsResolver *r, uint64_t usec) {
        r->timeout_usec = usec > 0 ? usec : 2 * USEC_PER_SEC;
}

void dns_resolver_set_max_waiters(DnsResolver *r, unsigned n) {
        r->max_waiters = n > 0 ? n : 1;
}

static void format_sockaddr(const struct sockaddr_storage *ss, char *buf, size_t size) {
        char a[INET6_ADDRSTRLEN] = "?";

        if (ss->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) ss;
                inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
                snprintf(buf, size, "%s:%u", a, ntohs(in->sin_port));
        } else {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;
                inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
                snprintf(buf, size, "[%s]:%u", a, ntohs(in6->sin6_port));
        }
}

int dns_resolver_add_upstream(DnsResolver *r, const char *spec) {
        Upstream *u;
        unsigned len;
        int k;

        if (r->n_upstreams >= UPSTREAMS_MAX)
                return -E2BIG;
        u = &r->upstreams[r->n_upstreams];
        *u = (Upstream){};
        k = parse_sockaddr(spec, 53, &u->addr, &len);
        if (k < 0)
                return k;
        if (u->addr.ss_family != AF_INET && u->addr.ss_family != AF_INET6)
                return -EAFNOSUPPORT;
        u->addr_len = len;
        format_sockaddr(&u->addr, u->label, sizeof(u->label));
        r->n_upstreams++;
        return 0;
}

int dns_resolver_add_resolv_conf(DnsResolver *r, const char *path) {
        _cleanup_fclose_ FILE *f = NULL;
        char line[512];
        int n = 0;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                char addr[256];
                if (sscanf(line, " nameserver %255s", addr) != 1)
                        continue;
                /* A bare IPv6 address has colons: bracket it for parse_sockaddr. */
                if (strchr(addr, ':')) {
                        char b[260];
                        snprintf(b, sizeof(b), "[%s]", addr);
                        if (dns_resolver_add_upstream(r, b) >= 0)
                                n++;
                } else if (dns_resolver_add_upstream(r, addr) >= 0)
                        n++;
        }
        return n;
}

size_t dns_resolver_n_upstreams(const DnsResolver *r) {
        return r->n_upstreams;
}

/* ---- transactions -------------------------------------------------------- */

static void transaction_close_attempt(DnsTransaction *t) {
        t->io = sd_event_source_disable_unref(t->io);
        t->timer = sd_event_source_disable_unref(t->timer);
        t->fd = safe_close(t->fd);
        free(t->tcp_buf);
        t->tcp_buf = NULL;
        t->tcp_have = t->tcp_want = t->tcp_sent = 0;
}

static void transaction_free(DnsTransaction *t) {
        if (!t)
                return;
        transaction_close_attempt(t);
        free(t);
}

static void transaction_unlink(DnsTransaction *t) {
        DnsResolver *r = t->resolver;
        DnsTransaction **p = &r->buckets[t->hash % TRANSACTION_BUCKETS];

        for (; *p; p = &(*p)->bucket_next)
                if (*p == t) {
                        *p = t->bucket_next;
                        r->n_transactions--;
                        return;
                }
}

static void transaction_finish(DnsTransaction *t, int error, const uint8_t *reply, size_t len, const DnsMessage *m) {
        DnsResolver *r = t->resolver;

        transaction_unlink(t);
        if (r->hook)
                r->hook(t->key, t->key_len, t->hash, error, reply, len, m, r->hook_userdata);
        while (t->waiters) {
                DnsWaiter *w = t->waiters;
                dns_waiter_cancel(w);
                w->callback(w, error, reply, len, m);
        }
        transaction_free(t);
}

static void upstream_failed(DnsResolver *r, Upstream *u) {
        u->failures++;
        if (++u->consecutive_failures >= FAILURES_BEFORE_DOWN) {
                u->backoff = u->backoff ? MIN(u->backoff * 2, DOWN_BACKOFF_MAX_USEC) : DOWN_BACKOFF_USEC;
                u->down_until = now_usec(r) + u->backoff;
        }
}

static void upstream_succeeded(DnsResolver *r, Upstream *u, double ms) {
        u->consecutive_failures = 0;
        u->down_until = 0;
        u->backoff = 0;
        u->srtt_ms = u->srtt_ms == 0 ? ms : 0.875 * u->srtt_ms + 0.125 * ms;
        for (size_t i = 0; i < DNS_LATENCY_BUCKETS; i++)
                if (ms <= dns_latency_bucket_ms[i]) {
                        r->stats.latency_buckets[i]++;
                        break;
                }
        r->stats.latency_sum_ms += ms;
        if (r->observe)
                r->observe(ms / 1000.0, r->observe_userdata);
}

static int transaction_start_attempt(DnsTransaction *t);

/* The current attempt failed: try the next upstream, or give up. */
static void transaction_retry(DnsTransaction *t, int error) {
        DnsResolver *r = t->resolver;
        unsigned max_attempts = (unsigned) MAX(r->n_upstreams, 2);

        transaction_close_attempt(t);
        upstream_failed(r, &r->upstreams[t->upstream]);
        while (t->attempts < max_attempts) {
                if (transaction_start_attempt(t) >= 0)
                        return;
                upstream_failed(r, &r->upstreams[t->upstream]);
        }
        transaction_finish(t, error, NULL, 0, NULL);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        DnsTransaction *t = userdata;
        (void) s;
        (void) usec;
        t->resolver->upstreams[t->upstream].timeouts++;
        transaction_retry(t, -ETIMEDOUT);
        return 0;
}

/* Checks a reply against the query we sent; returns 0 to accept,
 * -EAGAIN to ignore it (and keep waiting), -EBADMSG for a broken reply. */
static int reply_matches(DnsTransaction *t, const uint8_t *p, size_t n) {
        if (n < DNS_HEADER_SIZE || dns_get_u16(p) != t->id || !(dns_get_u16(p + 2) & DNS_FLAG_QR))
                return -EAGAIN;
        /* The exact question, byte for byte: we sent it lower-cased and
         * uncompressed, and an honest server copies it back as is. */
        if (dns_get_u16(p + 4) != 1 || n < t->question_end ||
            memcmp(p + DNS_HEADER_SIZE, t->query + DNS_HEADER_SIZE, t->question_end - DNS_HEADER_SIZE) != 0)
                return -EAGAIN;
        return 0;
}

static int transaction_start_tcp(DnsTransaction *t);

static void transaction_handle_reply(DnsTransaction *t, const uint8_t *p, size_t n) {
        DnsResolver *r = t->resolver;
        Upstream *u = &r->upstreams[t->upstream];
        DnsMessage m;
        int rcode, k;

        k = dns_message_parse(p, n, &m);
        if (k < 0) {
                transaction_retry(t, k);
                return;
        }
        if ((m.flags & DNS_FLAG_TC) && !t->tcp) {
                dns_message_done(&m);
                r->stats.tcp_fallbacks++;
                transaction_close_attempt(t);
                if (transaction_start_tcp(t) < 0)
                        transaction_retry(t, -ECONNREFUSED);
                return;
        }
        /* Any well-formed reply shows the upstream is alive. */
        upstream_succeeded(r, u, (double) (now_usec(r) - t->attempt_started) / 1000.0);
        rcode = m.flags & DNS_FLAG_RCODE_MASK;
        if (rcode == DNS_RCODE_SERVFAIL || rcode == DNS_RCODE_REFUSED || rcode == DNS_RCODE_NOTIMP ||
            rcode == DNS_RCODE_FORMERR) {
                /* This upstream cannot help with this name; another one might.
                 * The last answer is passed on when none can. It does not count
                 * against the upstream's health: a broken domain is not a broken
                 * server. */
                if (t->attempts < r->n_upstreams) {
                        dns_message_done(&m);
                        transaction_close_attempt(t);
                        while (t->attempts < r->n_upstreams)
                                if (transaction_start_attempt(t) >= 0)
                                        return;
                        transaction_finish(t, -ECONNREFUSED, NULL, 0, NULL);
                        return;
                }
        }
        transaction_finish(t, 0, p, n, &m);
        dns_message_done(&m);
}

static int on_udp_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DnsTransaction *t = userdata;
        DnsResolver *r = t->resolver;
        Upstream *u = &r->upstreams[t->upstream];
        (void) s;
        (void) revents;

        for (;;) {
                struct sockaddr_storage from;
                socklen_t from_len = sizeof(from);
                ssize_t n;

                n = recvfrom(fd, r->rbuf, sizeof(r->rbuf), MSG_DONTWAIT, (struct sockaddr *) &from, &from_len);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        /* ICMP port unreachable and friends, reported on the
                         * connected socket: this upstream is not answering. */
                        transaction_retry(t, -errno);
                        return 0;
                }
                /* The socket is connected, so the kernel filters by address and
                 * port already; check again in case a filter ever changes. */
                if (from_len != u->addr_len || memcmp(&from, &u->addr, u->addr_len) != 0 ||
                    reply_matches(t, r->rbuf, (size_t) n) < 0) {
                        r->stats.mismatched_replies++;
                        continue;
                }
                transaction_handle_reply(t, r->rbuf, (size_t) n);
                return 0;
        }
}

static int bind_random_port(DnsResolver *r, int fd, int family) {
        /* Our own pick from 1024-65535 rather than the kernel's ephemeral
         * range, which is smaller and sequential on some systems. */
        for (int i = 0; i < 8; i++) {
                uint16_t port = (uint16_t) (1024 + random_u16(r) % (65536 - 1024));
                int k;
                if (family == AF_INET) {
                        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
                        k = bind(fd, (struct sockaddr *) &a, sizeof(a));
                } else {
                        struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
                        k = bind(fd, (struct sockaddr *) &a, sizeof(a));
                }
                if (k == 0)
                        return 0;
                if (errno != EADDRINUSE)
                        return -errno;
        }
        return 0; /* leave it to the kernel on connect() */
}

static unsigned pick_upstream(DnsTransaction *t) {
        DnsResolver *r = t->resolver;
        uint64_t now = now_usec(r);
        unsigned best = UINT32_MAX;

        if (t->tried == (1u << r->n_upstreams) - 1)
                t->tried = 0;
        /* Configured order among the healthy ones; when all are down, the one
         * whose back-off ends first gets the probe. */
        for (unsigned i = 0; i < r->n_upstreams; i++) {
                if (t->tried & (1u << i))
                        continue;
                if (r->upstreams[i].down_until <= now)
                        return i;
                if (best == UINT32_MAX || r->upstreams[i].down_until < r->upstreams[best].down_until)
                        best = i;
        }
        return best;
}

static int arm_timer(DnsTransaction *t) {
        DnsResolver *r = t->resolver;
        return sd_event_add_time_relative(r->event, &t->timer, CLOCK_MONOTONIC, r->timeout_usec, 1000, on_timeout, t);
}

static int transaction_start_attempt(DnsTransaction *t) {
        DnsResolver *r = t->resolver;
        Upstream *u;
        int k;

        t->attempts++;
        t->tcp = false;
        t->upstream = pick_upstream(t);
        t->tried |= 1u << t->upstream;
        u = &r->upstreams[t->upstream];
        u->queries++;
        t->id = random_u16(r);
        dns_put_u16(t->query, t->id);
        t->attempt_started = now_usec(r);

        t->fd = socket(u->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->fd < 0)
                return -errno;
        k = bind_random_port(r, t->fd, u->addr.ss_family);
        if (k < 0)
                goto fail;
        if (connect(t->fd, (struct sockaddr *) &u->addr, u->addr_len) < 0 ||
            send(t->fd, t->query, t->query_len, 0) < 0) {
                k = -errno;
                goto fail;
        }
        k = sd_event_add_io(r->event, &t->io, t->fd, EPOLLIN, on_udp_io, t);
        if (k < 0)
                goto fail;
        k = arm_timer(t);
        if (k < 0)
                goto fail;
        return 0;
fail:
        transaction_close_attempt(t);
        return k;
}

static int on_tcp_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DnsTransaction *t = userdata;
        uint8_t lenbuf[2];
        ssize_t n;
        (void) revents;

        if (t->tcp_sent < t->query_len + 2) {
                int err = 0;
                socklen_t el = sizeof(err);
                struct iovec iov[2];

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
                        transaction_retry(t, -(err ?: ECONNREFUSED));
                        return 0;
                }
                /* RFC 1035 §4.2.2: two-byte length, then the message. */
                dns_put_u16(lenbuf, (uint16_t) t->query_len);
                iov[0] = (struct iovec){ lenbuf + MIN(t->tcp_sent, 2), 2 - MIN(t->tcp_sent, 2) };
                iov[1] = (struct iovec){ t->query + (t->tcp_sent > 2 ? t->tcp_sent - 2 : 0),
                                         t->query_len - (t->tcp_sent > 2 ? t->tcp_sent - 2 : 0) };
                n = writev(fd, iov, 2);
                if (n < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                transaction_retry(t, -errno);
                        return 0;
                }
                t->tcp_sent += (size_t) n;
                if (t->tcp_sent == t->query_len + 2)
                        (void) sd_event_source_set_io_events(s, EPOLLIN);
                return 0;
        }

        for (;;) {
                size_t want = t->tcp_want ? t->tcp_want + 2 : 2;
                n = read(fd, t->tcp_buf + t->tcp_have, want - t->tcp_have);
                if (n < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                transaction_retry(t, -errno);
                        return 0;
                }
                if (n == 0) {
                        transaction_retry(t, -ECONNRESET);
                        return 0;
                }
                t->tcp_have += (size_t) n;
                if (t->tcp_want == 0 && t->tcp_have == 2) {
                        t->tcp_want = dns_get_u16(t->tcp_buf);
                        if (t->tcp_want < DNS_HEADER_SIZE) {
                                transaction_retry(t, -EBADMSG);
                                return 0;
                        }
                        continue;
                }
                if (t->tcp_want && t->tcp_have == t->tcp_want + 2) {
                        const uint8_t *p = t->tcp_buf + 2;
                        if (reply_matches(t, p, t->tcp_want) < 0) {
                                /* Nothing else may come on this connection. */
                                t->resolver->stats.mismatched_replies++;
                                transaction_retry(t, -EBADMSG);
                                return 0;
                        }
                        /* The buffer is freed when the attempt closes: copy first. */
                        memcpy(t->resolver->rbuf, p, t->tcp_want);
                        transaction_handle_reply(t, t->resolver->rbuf, t->tcp_want);
                        return 0;
                }
        }
}

static int transaction_start_tcp(DnsTransaction *t) {
        DnsResolver *r = t->resolver;
        Upstream *u = &r->upstreams[t->upstream];
        int k;

        t->tcp = true;
        t->id = random_u16(r);
        dns_put_u16(t->query, t->id);
        t->tcp_buf = malloc(2 + DNS_PACKET_MAX);
        if (!t->tcp_buf)
                return -ENOMEM;
        t->fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->fd < 0)
                return -errno;
        if (connect(t->fd, (struct sockaddr *) &u->addr, u->addr_len) < 0 && errno != EINPROGRESS)
                return -errno;
        k = sd_event_add_io(r->event, &t->io, t->fd, EPOLLOUT, on_tcp_io, t);
        if (k < 0)
                return k;
        return arm_timer(t);
}

static DnsTransaction *transaction_find(DnsResolver *r, const uint8_t *key, size_t key_len, uint64_t hash) {
        for (DnsTransaction *t = r->buckets[hash % TRANSACTION_BUCKETS]; t; t = t->bucket_next)
                if (t->hash == hash && t->key_len == key_len && memcmp(t->key, key, key_len) == 0)
                        return t;
        return NULL;
}

static void waiter_attach(DnsTransaction *t, DnsWaiter *w) {
        w->transaction = t;
        w->prev = NULL;
        w->next = t->waiters;
        if (t->waiters)
                t->waiters->prev = w;
        t->waiters = w;
        t->n_waiters++;
}

void dns_waiter_cancel(DnsWaiter *w) {
        DnsTransaction *t = w->transaction;

        if (!t)
                return;
        if (w->prev)
                w->prev->next = w->next;
        else
                t->waiters = w->next;
        if (w->next)
                w->next->prev = w->prev;
        w->next = w->prev = NULL;
        w->transaction = NULL;
        t->n_waiters--;
}

int dns_resolver_resolve(DnsResolver *r, const uint8_t *key, size_t key_len, uint64_t hash, const uint8_t *qname,
                         size_t qname_len, uint16_t qtype, uint16_t qclass, bool do_bit, bool cd, DnsWaiter *w) {
        DnsTransaction *t;
        DnsWriter wr;
        int k;

        if (r->n_upstreams == 0)
                return -ENETUNREACH;
        if (key_len > sizeof(t->key))
                return -EINVAL;
        t = transaction_find(r, key, key_len, hash);
        if (t) {
                if (!w)
                        return 1;
                if (t->n_waiters >= r->max_waiters) {
                        r->stats.coalesce_refused++;
                        return -EBUSY;
                }
                waiter_attach(t, w);
                r->stats.coalesced++;
                return 1;
        }
        if (r->n_transactions >= TRANSACTIONS_MAX)
                return -EBUSY;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->resolver = r;
        t->fd = -EBADF;
        t->hash = hash;
        memcpy(t->key, key, key_len);
        t->key_len = key_len;
        dns_writer_init(&wr, t->query, sizeof(t->query));
        dns_write_header(&wr, 0, DNS_FLAG_RD | (cd ? DNS_FLAG_CD : 0), 1, 0, 0, 1);
        dns_write_question(&wr, qname, qname_len, qtype, qclass);
        t->question_end = wr.len;
        dns_write_opt(&wr, DNS_EDNS_BUFFER, do_bit);
        t->query_len = wr.len;

        for (;;) {
                k = transaction_start_attempt(t);
                if (k >= 0)
                        break;
                upstream_failed(r, &r->upstreams[t->upstream]);
                if (t->attempts >= MAX(r->n_upstreams, 2)) {
                        transaction_free(t);
                        return k;
                }
        }
        t->bucket_next = r->buckets[hash % TRANSACTION_BUCKETS];
        r->buckets[hash % TRANSACTION_BUCKETS] = t;
        r->n_transactions++;
        r->stats.transactions++;
        if (w)
                waiter_attach(t, w);
        return 0;
}

void dns_resolver_get_stats(const DnsResolver *r, DnsResolverStats *ret) {
        *ret = r->stats;
        ret->in_flight = r->n_transactions;
}

size_t dns_resolver_get_upstream_stats(const DnsResolver *r, DnsUpstreamStats *ret, size_t n) {
        uint64_t now = 0;

        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
        for (size_t i = 0; i < r->n_upstreams && i < n; i++) {
                const Upstream *u = &r->upstreams[i];
                ret[i] = (DnsUpstreamStats){
                        .healthy = u->down_until <= now && u->consecutive_failures < FAILURES_BEFORE_DOWN,
                        .queries = u->queries,
                        .failures = u->failures,
                        .timeouts = u->timeouts,
                        .srtt_ms = u->srtt_ms,
                };
                snprintf(ret[i].address, sizeof(ret[i].address), "%s", u->label);
        }
        return r->n_upstreams;
}
