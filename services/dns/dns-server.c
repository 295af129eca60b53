/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "dns-server.h"
#include "macro.h"
#include "parse-util.h"

#define UDP_BATCH 32
#define UDP_RECV_SIZE 4096
#define LISTENERS_MAX 32
#define RATE_SLOTS 8192
#define TCP_BUFFER (2 + DNS_PACKET_MAX)

typedef enum Transport { TRANSPORT_UDP, TRANSPORT_TCP, TRANSPORT_INTERNAL } Transport;

typedef struct TcpConn TcpConn;
typedef struct Pending Pending;

typedef struct WriteChunk {
        struct WriteChunk *next;
        size_t len, done;
        uint8_t data[];
} WriteChunk;

struct TcpConn {
        DnsServer *server;
        unsigned n_ref;
        int fd;
        bool closed;
        sd_event_source *io;
        sd_event_source *idle;
        struct sockaddr_storage peer;
        socklen_t peer_len;
        uint8_t *rbuf;
        size_t rlen;
        WriteChunk *wq_head, *wq_tail;
        size_t wq_bytes;
        uint64_t last_active;       /* s->activity at the last complete query or answer */
        TcpConn *next, *prev;
};

typedef struct Listener {
        DnsServer *server;
        int fd;
        bool tcp;
        sd_event_source *io;
} Listener;

/* A client query waiting for upstreams. */
struct Pending {
        DnsWaiter waiter;
        DnsServer *server;
        Pending *next, *prev;
        Transport transport;
        int udp_fd;
        struct sockaddr_storage peer;
        socklen_t peer_len;
        TcpConn *conn;
        DnsLookupCallback done;
        void *userdata;
        DnsQuery q;
        uint8_t question[DNS_NAME_MAX + 4];   /* as the client sent it, for 0x20 case echo */
        uint8_t key[DNS_CACHE_KEY_MAX];
        size_t key_len;
        uint64_t hash;
        bool have_stale;
        sd_event_source *stale_timer;
};

typedef struct RateSlot {
        uint8_t addr[16];
        uint64_t last;
        uint32_t tokens_milli;  /* tokens × 1000 */
} RateSlot;

struct DnsServer {
        sd_event *event;
        DnsCache *cache;
        DnsResolver *resolver;
        DnsLocal *local;
        DnsServerOptions options;
        DnsNetwork *allow;
        Listener listeners[LISTENERS_MAX];
        size_t n_listeners;
        TcpConn *conns;
        unsigned n_conns;
        uint64_t activity;              /* orders TCP connections by their last activity */
        Pending *pending;
        unsigned n_pending;
        RateSlot *rate;
        DnsServerStats stats;

        /* UDP batch buffers, reused for every batch: nothing is allocated on
         * the hit path. */
        struct mmsghdr rmsg[UDP_BATCH], smsg[UDP_BATCH];
        struct iovec riov[UDP_BATCH], siov[UDP_BATCH];
        struct sockaddr_storage raddr[UDP_BATCH];
        uint8_t (*rbuf)[UDP_RECV_SIZE];
        uint8_t (*sbuf)[DNS_PACKET_MAX];
        uint8_t scratch[DNS_PACKET_MAX];
};

/* ---- networks ------------------------------------------------------------ */

int dns_network_parse(const char *s, DnsNetwork *ret) {
        char buf[128];
        const char *slash = strchr(s, '/');
        unsigned max;
        size_t n = slash ? (size_t) (slash - s) : strlen(s);

        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, s, n);
        buf[n] = 0;
        memset(ret, 0, sizeof(*ret));
        if (inet_pton(AF_INET, buf, ret->addr) == 1) {
                ret->family = AF_INET;
                max = 32;
        } else if (inet_pton(AF_INET6, buf, ret->addr) == 1) {
                ret->family = AF_INET6;
                max = 128;
        } else
                return -EINVAL;
        ret->prefix = max;
        if (slash) {
                uint32_t p;
                if (safe_atou32(slash + 1, &p) < 0 || p > max)
                        return -EINVAL;
                ret->prefix = p;
        }
        return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned prefix) {
        unsigned bytes = prefix / 8, bits = prefix % 8;
        if (memcmp(a, b, bytes) != 0)
                return false;
        return bits == 0 || ((a[bytes] ^ b[bytes]) & (uint8_t) (0xFF << (8 - bits))) == 0;
}

bool dns_network_contains(const DnsNetwork *n, const struct sockaddr *sa) {
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                return n->family == AF_INET && prefix_match(n->addr, (const uint8_t *) &in->sin_addr, n->prefix);
        }
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (n->family == AF_INET6)
                        return prefix_match(n->addr, in6->sin6_addr.s6_addr, n->prefix);
                /* IPv4-mapped clients on a dual-stack socket match IPv4 networks. */
                if (n->family == AF_INET && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
                        return prefix_match(n->addr, in6->sin6_addr.s6_addr + 12, n->prefix);
        }
        return false;
}

static bool client_allowed(DnsServer *s, const struct sockaddr *sa) {
        if (!sa)
                return true; /* our own lookups */
        for (size_t i = 0; i < s->options.n_allow; i++)
                if (dns_network_contains(&s->allow[i], sa))
                        return true;
        return false;
}

/* Token bucket per client address; colliding addresses share a slot's
 * reset, which can only make the limit more lenient. */
static bool rate_limited(DnsServer *s, const struct sockaddr *sa, uint64_t now) {
        uint8_t addr[16] = {};
        uint32_t h = 2166136261u;
        RateSlot *slot;
        uint64_t add;

        if (!s->options.rate_limit_qps || !sa)
                return false;
        if (sa->sa_family == AF_INET)
                memcpy(addr, &((const struct sockaddr_in *) sa)->sin_addr, 4);
        else
                memcpy(addr, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
        for (size_t i = 0; i < 16; i++)
                h = (h ^ addr[i]) * 16777619u;
        slot = &s->rate[h % RATE_SLOTS];
        if (memcmp(slot->addr, addr, 16) != 0 || slot->last == 0) {
                memcpy(slot->addr, addr, 16);
                slot->last = now;
                slot->tokens_milli = s->options.rate_limit_qps * 1000;
        }
        add = (now - slot->last) * s->options.rate_limit_qps / 1000; /* µs × qps / 1e6 × 1000 */
        if (add > 0) {
                uint64_t t = slot->tokens_milli + add;
                /* Burst: one second's worth. */
                slot->tokens_milli = (uint32_t) MIN(t, (uint64_t) s->options.rate_limit_qps * 1000);
                slot->last = now;
        }
        if (slot->tokens_milli < 1000)
                return true;
        slot->tokens_milli -= 1000;
        return false;
}

/* ---- replies ------------------------------------------------------------- */

static uint64_t now_usec(DnsServer *s) {
        uint64_t t = 0;
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &t);
        return t;
}

static size_t reply_limit(DnsServer *s, const DnsQuery *q, Transport t) {
        if (t != TRANSPORT_UDP)
                return DNS_PACKET_MAX;
        /* RFC 6891 §6.2.5: the smaller of the client's and our own payload size. */
        return q->edns ? MIN(q->udp_size, s->options.max_udp_size) : DNS_UDP_PAYLOAD_DEFAULT;
}

/* Turns a stored reply (no OPT, any ID) in out[0..len) into the answer to
 * this client: its ID, its RD/CD bits, its question spelling, OPT when it
 * used EDNS, truncated to what it can take. Returns the final length. */
static size_t reply_finish(DnsServer *s, const DnsQuery *q, const uint8_t *question, uint8_t *out, size_t len,
                           size_t size, Transport t) {
        uint16_t flags = dns_get_u16(out + 2);
        size_t limit = reply_limit(s, q, t);

        dns_put_u16(out, q->id);
        /* Forwarded answers are not ours: no AA (local answers do not come here). */
        flags = (uint16_t) ((flags & ~(DNS_FLAG_RD | DNS_FLAG_CD | DNS_FLAG_AA)) |
                            (q->flags & (DNS_FLAG_RD | DNS_FLAG_CD)) | DNS_FLAG_QR | DNS_FLAG_RA);
        /* RFC 6840 §5.8: AD only for clients that asked for DNSSEC or AD. */
        if (!q->do_bit && !(q->flags & DNS_FLAG_AD))
                flags &= (uint16_t) ~DNS_FLAG_AD;
        dns_put_u16(out + 2, flags);
        if (len >= q->question_end)
                memcpy(out + DNS_HEADER_SIZE, question, q->question_end - DNS_HEADER_SIZE);
        if (q->edns && len + DNS_OPT_RR_SIZE <= size) {
                DnsWriter w;
                dns_writer_init(&w, out + len, size - len);
                dns_write_opt(&w, s->options.max_udp_size, q->do_bit);
                len += w.len;
                dns_put_u16(out + 10, (uint16_t) (dns_get_u16(out + 10) + 1));
        }
        if (len > limit) {
                int r = dns_reply_truncate(out, len, limit);
                if (r < 0) {
                        len = dns_reply_error(q, DNS_RCODE_SERVFAIL, true, out, size);
                        dns_put_u16(out + 2, dns_get_u16(out + 2) | DNS_FLAG_TC);
                } else
                        len = (size_t) r;
        }
        return len;
}

/* ---- TCP connections ----------------------------------------------------- */

static void conn_close(TcpConn *c);

/* The connection did something worth keeping it for: a complete query or
 * an answer. Bytes that do not complete a query do not count, or a client
 * trickling one byte at a time would hold its slot forever. */
static void conn_touch(TcpConn *c) {
        DnsServer *s = c->server;

        c->last_active = ++s->activity;
        if (c->idle) {
                (void) sd_event_source_set_time_relative(c->idle, s->options.tcp_idle_usec);
                (void) sd_event_source_set_enabled(c->idle, SD_EVENT_ONESHOT);
        }
}

/* Idle: no query waiting for upstreams (they hold references) and nothing
 * left to write. */
static bool conn_is_idle(const TcpConn *c) {
        return c->n_ref == 1 && !c->wq_head;
}

static TcpConn *conn_unref(TcpConn *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        while (c->wq_head) {
                WriteChunk *w = c->wq_head;
                c->wq_head = w->next;
                free(w);
        }
        free(c->rbuf);
        free(c);
        return NULL;
}

static int conn_flush(TcpConn *c) {
        while (c->wq_head) {
                WriteChunk *w = c->wq_head;
                ssize_t n = write(c->fd, w->data + w->done, w->len - w->done);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return -errno;
                }
                w->done += (size_t) n;
                if (w->done < w->len)
                        break;
                c->wq_head = w->next;
                if (!c->wq_head)
                        c->wq_tail = NULL;
                c->wq_bytes -= w->len;
                free(w);
        }
        return sd_event_source_set_io_events(c->io, c->wq_head ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void conn_send(TcpConn *c, const uint8_t *p, size_t len) {
        WriteChunk *w;

        if (c->closed)
                return;
        /* Backpressure: a client that does not read its answers gets cut off. */
        if (c->wq_bytes > 256 * 1024) {
                conn_close(c);
                return;
        }
        w = malloc(sizeof(*w) + 2 + len);
        if (!w) {
                conn_close(c);
                return;
        }
        w->next = NULL;
        w->len = 2 + len;
        w->done = 0;
        dns_put_u16(w->data, (uint16_t) len);
        memcpy(w->data + 2, p, len);
        c->wq_bytes += w->len;
        if (c->wq_tail)
                c->wq_tail->next = w;
        else
                c->wq_head = w;
        c->wq_tail = w;
        conn_touch(c);
        if (conn_flush(c) < 0)
                conn_close(c);
}

static void conn_close(TcpConn *c) {
        DnsServer *s = c->server;

        if (c->closed)
                return;
        c->closed = true;
        c->io = sd_event_source_disable_unref(c->io);
        c->idle = sd_event_source_disable_unref(c->idle);
        c->fd = safe_close(c->fd);
        if (c->prev)
                c->prev->next = c->next;
        else
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_conns--;
        conn_unref(c);
}

/* ---- the query path ------------------------------------------------------ */

static void pending_free(Pending *p) {
        DnsServer *s = p->server;

        dns_waiter_cancel(&p->waiter);
        p->stale_timer = sd_event_source_disable_unref(p->stale_timer);
        if (p->prev)
                p->prev->next = p->next;
        else
                s->pending = p->next;
        if (p->next)
                p->next->prev = p->prev;
        s->n_pending--;
        conn_unref(p->conn);
        free(p);
}

static void pending_deliver(Pending *p, uint8_t *out, size_t len) {
        DnsServer *s = p->server;

        len = reply_finish(s, &p->q, p->question, out, len, DNS_PACKET_MAX, p->transport);
        switch (p->transport) {
        case TRANSPORT_UDP:
                (void) sendto(p->udp_fd, out, len, MSG_DONTWAIT, (struct sockaddr *) &p->peer, p->peer_len);
                break;
        case TRANSPORT_TCP:
                if (p->conn && !p->conn->closed)
                        conn_send(p->conn, out, len);
                break;
        case TRANSPORT_INTERNAL:
                p->done(0, out, len, p->userdata);
                break;
        }
}

static void pending_fail(Pending *p, int rcode) {
        DnsServer *s = p->server;
        size_t len;

        if (rcode == DNS_RCODE_SERVFAIL)
                s->stats.servfail++;
        if (p->transport == TRANSPORT_INTERNAL) {
                p->done(-EHOSTUNREACH, NULL, 0, p->userdata);
                return;
        }
        len = dns_reply_error(&p->q, rcode, true, s->scratch, sizeof(s->scratch));
        memcpy(s->scratch + DNS_HEADER_SIZE, p->question, p->q.question_end - DNS_HEADER_SIZE);
        if (p->transport == TRANSPORT_UDP)
                (void) sendto(p->udp_fd, s->scratch, len, MSG_DONTWAIT, (struct sockaddr *) &p->peer, p->peer_len);
        else if (p->conn && !p->conn->closed)
                conn_send(p->conn, s->scratch, len);
}

/* Serves the expired cache entry, if it is still there. */
static bool pending_serve_stale(Pending *p) {
        DnsServer *s = p->server;
        DnsCacheEntry *e;
        size_t len;

        if (!p->have_stale)
                return false;
        if (dns_cache_lookup(s->cache, p->key, p->key_len, p->hash, now_usec(s), &e) == DNS_CACHE_MISS)
                return false;
        len = dns_cache_render(e, now_usec(s), /* stale= */ true, s->scratch, sizeof(s->scratch));
        if (len == 0)
                return false;
        s->stats.stale_served++;
        pending_deliver(p, s->scratch, len);
        return true;
}

static void on_pending_reply(DnsWaiter *w, int error, const uint8_t *reply, size_t len, const DnsMessage *m) {
        Pending *p = w->userdata;
        DnsServer *s = p->server;
        int rcode = m ? (int) (m->flags & DNS_FLAG_RCODE_MASK) : -1;
        DnsCacheEntry *e;
        int n;

        /* RFC 8767 §4: when upstreams fail, a stale answer beats SERVFAIL. */
        if ((error < 0 || rcode == DNS_RCODE_SERVFAIL || rcode == DNS_RCODE_REFUSED) && pending_serve_stale(p)) {
                pending_free(p);
                return;
        }
        if (error < 0) {
                pending_fail(p, DNS_RCODE_SERVFAIL);
                pending_free(p);
                return;
        }
        /* Answer from the cache when the reply went in, so that TTL clamps
         * apply from the first answer on. */
        if (dns_cache_lookup(s->cache, p->key, p->key_len, p->hash, now_usec(s), &e) == DNS_CACHE_FRESH) {
                n = (int) dns_cache_render(e, now_usec(s), /* stale= */ false, s->scratch, sizeof(s->scratch));
                if (n > 0) {
                        pending_deliver(p, s->scratch, (size_t) n);
                        pending_free(p);
                        return;
                }
        }
        memcpy(s->scratch, reply, len);
        n = dns_message_strip_opt(s->scratch, len, m);
        if (n < 0) {
                pending_fail(p, DNS_RCODE_SERVFAIL);
                pending_free(p);
                return;
        }
        pending_deliver(p, s->scratch, (size_t) n);
        pending_free(p);
}

static int on_stale_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        Pending *p = userdata;
        (void) es;
        (void) usec;
        /* The client would give up soon: answer stale now; the upstream
         * query goes on and refreshes the cache when it completes. */
        if (pending_serve_stale(p))
                pending_free(p);
        return 0;
}

void dns_server_on_upstream_reply(const uint8_t *key, size_t key_len, uint64_t hash, int error,
                                  const uint8_t *reply, size_t len, const DnsMessage *m, void *userdata) {
        DnsServer *s = userdata;
        DnsCacheEntry *e;
        int rcode, n;

        if (error == 0) {
                rcode = m->flags & DNS_FLAG_RCODE_MASK;
                /* Keep a stale entry rather than replacing it with SERVFAIL. */
                if (rcode == DNS_RCODE_SERVFAIL &&
                    dns_cache_lookup(s->cache, key, key_len, hash, now_usec(s), &e) == DNS_CACHE_STALE)
                        goto done;
                memcpy(s->scratch, reply, len);
                n = dns_message_strip_opt(s->scratch, len, m);
                if (n >= 0 && dns_cache_insert(s->cache, key, key_len, hash, s->scratch, (size_t) n, m, now_usec(s)) > 0)
                        return;
        }
done:
        /* Nothing stored: let the next hit try a refresh again. */
        if (dns_cache_lookup(s->cache, key, key_len, hash, now_usec(s), &e) != DNS_CACHE_MISS && e)
                dns_cache_entry_set_refreshing(e, false);
}

typedef struct Origin {
        Transport transport;
        int udp_fd;
        const struct sockaddr *peer;
        socklen_t peer_len;
        TcpConn *conn;
        DnsLookupCallback done;
        void *userdata;
} Origin;

static size_t start_pending(DnsServer *s, const Origin *o, const uint8_t *pkt, const DnsQuery *q, const uint8_t *key,
                            size_t key_len, uint64_t hash, bool have_stale, uint8_t *out, size_t size) {
        Pending *p;
        int r;

        if (s->n_pending >= s->options.max_pending) {
                s->stats.dropped++;
                return have_stale ? 0 : dns_reply_error(q, DNS_RCODE_SERVFAIL, true, out, size);
        }
        p = calloc(1, sizeof(*p));
        if (!p)
                return dns_reply_error(q, DNS_RCODE_SERVFAIL, true, out, size);
        p->server = s;
        p->transport = o->transport;
        p->udp_fd = o->udp_fd;
        if (o->peer) {
                memcpy(&p->peer, o->peer, o->peer_len);
                p->peer_len = o->peer_len;
        }
        if (o->conn) {
                p->conn = o->conn;
                o->conn->n_ref++;
        }
        p->done = o->done;
        p->userdata = o->userdata;
        p->q = *q;
        memcpy(p->question, pkt + DNS_HEADER_SIZE, q->question_end - DNS_HEADER_SIZE);
        memcpy(p->key, key, key_len);
        p->key_len = key_len;
        p->hash = hash;
        p->have_stale = have_stale;
        p->waiter.callback = on_pending_reply;
        p->waiter.userdata = p;
        p->next = s->pending;
        if (s->pending)
                s->pending->prev = p;
        s->pending = p;
        s->n_pending++;

        r = dns_resolver_resolve(s->resolver, key, key_len, hash, q->qname, q->qname_len, q->qtype, q->qclass,
                                 q->do_bit, q->flags & DNS_FLAG_CD, &p->waiter);
        if (r < 0) {
                /* Could not even ask: stale if we have it, SERVFAIL otherwise. */
                if (!pending_serve_stale(p))
                        pending_fail(p, DNS_RCODE_SERVFAIL);
                pending_free(p);
                return 0;
        }
        if (have_stale && s->options.stale_client_timeout_usec > 0)
                (void) sd_event_add_time_relative(s->event, &p->stale_timer, CLOCK_MONOTONIC,
                                                  s->options.stale_client_timeout_usec, 1000, on_stale_timeout, p);
        return 0;
}

/* Handles one query; returns the length of an immediate reply in out, or
 * 0 when there is none (dropped, or answered later). */
static size_t process_query(DnsServer *s, const Origin *o, const uint8_t *pkt, size_t len, uint8_t *out,
                            size_t size) {
        uint8_t key[DNS_CACHE_KEY_MAX];
        DnsCacheEntry *e;
        DnsCacheResult cr;
        size_t key_len, n;
        uint64_t hash, now = now_usec(s);
        DnsQuery q;
        int r;

        s->stats.queries++;
        r = dns_query_parse(pkt, len, &q);
        if (_unlikely_(r < 0)) {
                if (r == -EPROTO || len < DNS_HEADER_SIZE) {
                        s->stats.dropped++;
                        return 0;
                }
                if (rate_limited(s, o->peer, now)) {
                        s->stats.rate_limited++;
                        return 0;
                }
                if (r == -EOPNOTSUPP)
                        return dns_reply_error(&q, DNS_RCODE_NOTIMP, false, out, size);
                /* RFC 1035 §4.1.1: FORMERR, without the question we could not read. */
                s->stats.formerr++;
                q.edns = false;
                return dns_reply_error(&q, DNS_RCODE_FORMERR, false, out, size);
        }
        if (_unlikely_(rate_limited(s, o->peer, now))) {
                s->stats.rate_limited++;
                return 0;
        }
        if (_unlikely_(q.edns_version > 0))
                return dns_reply_error(&q, 16 /* BADVERS, RFC 6891 §6.1.3 */, false, out, size);
        /* Meta types: OPT is no question (RFC 6891 §6.1.1); zone transfers are
         * not something a cache can give. */
        if (_unlikely_(q.qtype == DNS_TYPE_OPT)) {
                s->stats.formerr++;
                return dns_reply_error(&q, DNS_RCODE_FORMERR, true, out, size);
        }
        if (_unlikely_(q.qtype == 251 /* IXFR */ || q.qtype == 252 /* AXFR */)) {
                s->stats.refused++;
                return dns_reply_error(&q, DNS_RCODE_REFUSED, true, out, size);
        }

        if (!dns_local_is_empty(s->local)) {
                r = dns_local_answer(s->local, pkt, &q, out, size, &n);
                if (r >= 0) {
                        s->stats.local_answers++;
                        /* Already carries the client's question and OPT. */
                        if (n > reply_limit(s, &q, o->transport)) {
                                r = dns_reply_truncate(out, n, reply_limit(s, &q, o->transport));
                                n = r < 0 ? dns_reply_error(&q, DNS_RCODE_SERVFAIL, true, out, size) : (size_t) r;
                        }
                        return n;
                }
        }
        if (_unlikely_(!client_allowed(s, o->peer))) {
                s->stats.refused++;
                return dns_reply_error(&q, DNS_RCODE_REFUSED, true, out, size);
        }

        key_len = dns_cache_key(q.qname, q.qname_len, q.qtype, q.qclass, q.do_bit, q.flags & DNS_FLAG_CD, key);
        hash = dns_cache_hash(s->cache, key, key_len);
        cr = dns_cache_lookup(s->cache, key, key_len, hash, now, &e);
        if (_likely_(cr == DNS_CACHE_FRESH || cr == DNS_CACHE_FRESH_PREFETCH)) {
                s->stats.hits++;
                n = dns_cache_render(e, now, /* stale= */ false, out, size);
                if (_unlikely_(cr == DNS_CACHE_FRESH_PREFETCH)) {
                        s->stats.prefetches++;
                        if (dns_resolver_resolve(s->resolver, key, key_len, hash, q.qname, q.qname_len, q.qtype,
                                                 q.qclass, q.do_bit, q.flags & DNS_FLAG_CD, NULL) < 0)
                                dns_cache_entry_set_refreshing(e, false);
                }
                if (n > 0)
                        return reply_finish(s, &q, pkt + DNS_HEADER_SIZE, out, n, size, o->transport);
        }
        s->stats.misses++;
        return start_pending(s, o, pkt, &q, key, key_len, hash, cr == DNS_CACHE_STALE, out, size);
}

/* ---- UDP ----------------------------------------------------------------- */

static int on_udp(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        DnsServer *s = userdata;
        (void) es;
        (void) revents;

        /* Bounded so that one busy socket cannot starve the rest of the loop. */
        for (int round = 0; round < 8; round++) {
                unsigned n_send = 0;
                int n;

                for (unsigned i = 0; i < UDP_BATCH; i++) {
                        s->riov[i] = (struct iovec){ s->rbuf[i], UDP_RECV_SIZE };
                        s->rmsg[i].msg_hdr = (struct msghdr){
                                .msg_name = &s->raddr[i],
                                .msg_namelen = sizeof(s->raddr[i]),
                                .msg_iov = &s->riov[i],
                                .msg_iovlen = 1,
                        };
                }
                n = recvmmsg(fd, s->rmsg, UDP_BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0)
                        return 0;
                for (int i = 0; i < n; i++) {
                        Origin o = {
                                .transport = TRANSPORT_UDP,
                                .udp_fd = fd,
                                .peer = (struct sockaddr *) &s->raddr[i],
                                .peer_len = s->rmsg[i].msg_hdr.msg_namelen,
                        };
                        size_t len;

                        s->stats.udp_queries++;
                        if (s->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
                                s->stats.dropped++;
                                continue;
                        }
                        len = process_query(s, &o, s->rbuf[i], s->rmsg[i].msg_len, s->sbuf[n_send], DNS_PACKET_MAX);
                        if (len == 0)
                                continue;
                        s->siov[n_send] = (struct iovec){ s->sbuf[n_send], len };
                        s->smsg[n_send].msg_hdr = (struct msghdr){
                                .msg_name = &s->raddr[i],
                                .msg_namelen = s->rmsg[i].msg_hdr.msg_namelen,
                                .msg_iov = &s->siov[n_send],
                                .msg_iovlen = 1,
                        };
                        n_send++;
                }
                for (unsigned done = 0; done < n_send;) {
                        int k = sendmmsg(fd, s->smsg + done, n_send - done, MSG_DONTWAIT);
                        if (k <= 0) {
                                /* A full socket buffer drops replies like the network would. */
                                s->stats.dropped += n_send - done;
                                break;
                        }
                        done += (unsigned) k;
                }
                if (n < UDP_BATCH)
                        return 0;
        }
        return 0;
}

/* ---- TCP ----------------------------------------------------------------- */

static int on_conn_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        TcpConn *c = userdata;

        (void) usec;
        /* RFC 7766 §6.2.3: the idle timeout runs between queries, not while
         * one is being answered. */
        if (!conn_is_idle(c)) {
                (void) sd_event_source_set_time_relative(es, c->server->options.tcp_idle_usec);
                (void) sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
                return 0;
        }
        c->server->stats.tcp_idle_closed++;
        conn_close(c);
        return 0;
}

/* At the connection cap: the connection idle longest makes room (RFC 7766
 * §6.2.3: under pressure close idle connections, oldest first), so idle
 * clients cannot lock new ones out. False when every connection is busy. */
static bool conn_make_room(DnsServer *s) {
        TcpConn *victim = NULL;

        for (TcpConn *c = s->conns; c; c = c->next)
                if (conn_is_idle(c) && (!victim || c->last_active < victim->last_active))
                        victim = c;
        if (!victim)
                return false;
        s->stats.tcp_idle_closed++;
        conn_close(victim);
        return true;
}

static int on_conn_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        TcpConn *c = userdata;
        DnsServer *s = c->server;
        (void) es;

        if (revents & EPOLLOUT) {
                if (conn_flush(c) < 0) {
                        conn_close(c);
                        return 0;
                }
        }
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;
        c->n_ref++;
        for (;;) {
                ssize_t n = read(fd, c->rbuf + c->rlen, TCP_BUFFER - c->rlen);
                if (n < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                conn_close(c);
                        break;
                }
                if (n == 0) {
                        conn_close(c);
                        break;
                }
                c->rlen += (size_t) n;
                /* RFC 7766 §6.2.1: several queries may be pipelined. */
                while (!c->closed && c->rlen >= 2 && c->rlen >= 2 + (size_t) dns_get_u16(c->rbuf)) {
                        conn_touch(c);
                        size_t qlen = dns_get_u16(c->rbuf), len;
                        Origin o = {
                                .transport = TRANSPORT_TCP,
                                .udp_fd = -EBADF,
                                .peer = (struct sockaddr *) &c->peer,
                                .peer_len = c->peer_len,
                                .conn = c,
                        };
                        s->stats.tcp_queries++;
                        len = process_query(s, &o, c->rbuf + 2, qlen, s->scratch, sizeof(s->scratch));
                        if (len > 0)
                                conn_send(c, s->scratch, len);
                        memmove(c->rbuf, c->rbuf + 2 + qlen, c->rlen - 2 - qlen);
                        c->rlen -= 2 + qlen;
                }
                if (c->closed)
                        break;
        }
        conn_unref(c);
        return 0;
}

static int on_tcp_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        DnsServer *s = userdata;
        (void) es;
        (void) revents;

        for (;;) {
                struct sockaddr_storage peer;
                socklen_t peer_len = sizeof(peer);
                _cleanup_close_ int cfd = -EBADF;
                TcpConn *c;

                cfd = accept4(fd, (struct sockaddr *) &peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                        return 0;
                if (s->n_conns >= s->options.tcp_max_connections && !conn_make_room(s)) {
                        s->stats.dropped++;
                        continue;
                }
                c = calloc(1, sizeof(*c));
                if (!c)
                        continue;
                c->rbuf = malloc(TCP_BUFFER);
                if (!c->rbuf) {
                        free(c);
                        continue;
                }
                c->server = s;
                c->n_ref = 1;
                c->peer = peer;
                c->peer_len = peer_len;
                c->last_active = ++s->activity;
                if (sd_event_add_io(s->event, &c->io, cfd, EPOLLIN, on_conn_io, c) < 0 ||
                    sd_event_add_time_relative(s->event, &c->idle, CLOCK_MONOTONIC, s->options.tcp_idle_usec, 0,
                                               on_conn_idle, c) < 0) {
                        sd_event_source_disable_unref(c->io);
                        free(c->rbuf);
                        free(c);
                        continue;
                }
                c->fd = TAKE_FD(cfd);
                c->next = s->conns;
                if (s->conns)
                        s->conns->prev = c;
                s->conns = c;
                s->n_conns++;
        }
}

/* ---- set-up -------------------------------------------------------------- */

int dns_server_new(sd_event *event, DnsCache *cache, DnsResolver *resolver, DnsLocal *local,
                   const DnsServerOptions *options, DnsServer **ret) {
        DnsServer *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->cache = cache;
        s->resolver = resolver;
        s->local = local;
        s->options = *options;
        if (s->options.max_udp_size < DNS_UDP_PAYLOAD_DEFAULT)
                s->options.max_udp_size = DNS_EDNS_BUFFER;
        if (!s->options.tcp_max_connections)
                s->options.tcp_max_connections = 256;
        if (!s->options.tcp_idle_usec)
                s->options.tcp_idle_usec = 10 * USEC_PER_SEC;
        if (!s->options.max_pending)
                s->options.max_pending = 10000;
        s->allow = calloc(MAX(options->n_allow, 1), sizeof(DnsNetwork));
        s->rate = calloc(RATE_SLOTS, sizeof(RateSlot));
        s->rbuf = malloc(sizeof(*s->rbuf) * UDP_BATCH);
        s->sbuf = malloc(sizeof(*s->sbuf) * UDP_BATCH);
        if (!s->allow || !s->rate || !s->rbuf || !s->sbuf) {
                dns_server_free(s);
                return -ENOMEM;
        }
        if (options->n_allow)
                memcpy(s->allow, options->allow, options->n_allow * sizeof(DnsNetwork));
        s->options.allow = s->allow;
        *ret = s;
        return 0;
}

DnsServer *dns_server_free(DnsServer *s) {
        if (!s)
                return NULL;
        while (s->pending)
                pending_free(s->pending);
        while (s->conns)
                conn_close(s->conns);
        for (size_t i = 0; i < s->n_listeners; i++) {
                sd_event_source_disable_unref(s->listeners[i].io);
                safe_close(s->listeners[i].fd);
        }
        sd_event_unref(s->event);
        free(s->allow);
        free(s->rate);
        free(s->rbuf);
        free(s->sbuf);
        free(s);
        return NULL;
}

static int add_listener(DnsServer *s, int fd, bool tcp) {
        Listener *l;
        int r;

        if (s->n_listeners >= LISTENERS_MAX)
                return -E2BIG;
        l = &s->listeners[s->n_listeners];
        *l = (Listener){ .server = s, .fd = fd, .tcp = tcp };
        r = sd_event_add_io(s->event, &l->io, fd, EPOLLIN, tcp ? on_tcp_accept : on_udp, s);
        if (r < 0)
                return r;
        s->n_listeners++;
        return 0;
}

/* Sockets from systemd are blocking unless the unit says NonBlocking=yes;
 * an accept() or recv() loop on one would stall the whole loop. */
static int fd_nonblock(int fd) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

int dns_server_add_udp_fd(DnsServer *s, int fd) {
        int r = fd_nonblock(fd);
        return r < 0 ? r : add_listener(s, fd, false);
}

int dns_server_add_tcp_fd(DnsServer *s, int fd) {
        int r = fd_nonblock(fd);
        return r < 0 ? r : add_listener(s, fd, true);
}

int dns_server_listen(DnsServer *s, const char *address) {
        struct sockaddr_storage sa;
        unsigned sa_len;
        _cleanup_close_ int ufd = -EBADF, tfd = -EBADF;
        int one = 1, r;

        r = parse_sockaddr(address, 53, &sa, &sa_len);
        if (r < 0)
                return r;
        ufd = socket(sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        tfd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (ufd < 0 || tfd < 0)
                return -errno;
        (void) setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(ufd, (struct sockaddr *) &sa, sa_len) < 0 || bind(tfd, (struct sockaddr *) &sa, sa_len) < 0 ||
            listen(tfd, 128) < 0)
                return -errno;
        r = dns_server_add_udp_fd(s, ufd);
        if (r < 0)
                return r;
        TAKE_FD(ufd);
        r = dns_server_add_tcp_fd(s, tfd);
        if (r < 0)
                return r;
        TAKE_FD(tfd);
        return 0;
}

size_t dns_server_n_listeners(const DnsServer *s) {
        return s->n_listeners;
}

int dns_server_lookup(DnsServer *s, const uint8_t *qname, size_t qname_len, uint16_t qtype, DnsLookupCallback done,
                      void *userdata) {
        uint8_t pkt[DNS_HEADER_SIZE + DNS_NAME_MAX + 4];
        Origin o = { .transport = TRANSPORT_INTERNAL, .udp_fd = -EBADF, .done = done, .userdata = userdata };
        DnsWriter w;
        size_t n;

        dns_writer_init(&w, pkt, sizeof(pkt));
        dns_write_header(&w, 0, DNS_FLAG_RD, 1, 0, 0, 0);
        dns_write_question(&w, qname, qname_len, qtype, DNS_CLASS_IN);
        if (w.overflow)
                return -EINVAL;
        n = process_query(s, &o, pkt, w.len, s->scratch, sizeof(s->scratch));
        if (n > 0)
                done(0, s->scratch, n, userdata);
        return 0;
}

void dns_server_get_stats(const DnsServer *s, DnsServerStats *ret) {
        *ret = s->stats;
}
