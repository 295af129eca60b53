/* SPDX-License-Identifier: MIT */
#pragma once

/* Queries to upstream resolvers, on the daemon's sd-event loop.
 *
 * Hygiene against off-path spoofing (Kaminsky, SAD DNS, DNSpooq): every
 * attempt uses a fresh connected UDP socket bound to a random source port
 * and a random 16-bit ID from getrandom(); a reply is accepted only if it
 * comes from the upstream's address and port, carries the ID, and repeats
 * the exact question. Replies with TC set are retried over TCP. Queries
 * carry EDNS0 with a 1232-byte buffer.
 *
 * Identical questions in flight share one transaction (coalescing); the
 * number of clients waiting on one question is capped, so one question can
 * never have many upstream queries open at once (birthday attacks).
 *
 * Upstreams are tried in configured order, skipping those marked down
 * after repeated failures until a back-off passes (failover). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "dns-packet.h"

typedef struct DnsResolver DnsResolver;
typedef struct DnsTransaction DnsTransaction;
typedef struct DnsWaiter DnsWaiter;

/* Called for each waiter when its transaction ends: error 0 with the reply
 * (as received, OPT included) and its parse, or a negative errno
 * (-ETIMEDOUT, -ECONNREFUSED, -EBADMSG...). */
typedef void (*DnsWaiterCallback)(DnsWaiter *w, int error, const uint8_t *reply, size_t len, const DnsMessage *m);

/* Embedded by the caller in whatever waits for an answer. */
struct DnsWaiter {
        DnsWaiter *next;
        DnsWaiter *prev;
        DnsTransaction *transaction;
        DnsWaiterCallback callback;
        void *userdata;
};

/* Called once per transaction before the waiters, with the question key,
 * so that a reply is cached once however many wait (error 0), or a failed
 * refresh is noted (error < 0, reply NULL). */
typedef void (*DnsReplyHook)(const uint8_t *key, size_t key_len, uint64_t hash, int error, const uint8_t *reply,
                             size_t len, const DnsMessage *m, void *userdata);

#define DNS_LATENCY_BUCKETS 12
extern const double dns_latency_bucket_ms[DNS_LATENCY_BUCKETS]; /* upper bounds; the last is +Inf */

typedef struct DnsUpstreamStats {
        char address[64];           /* "192.0.2.1:53" */
        bool healthy;
        uint64_t queries;
        uint64_t failures;
        uint64_t timeouts;
        double srtt_ms;             /* smoothed round-trip time */
} DnsUpstreamStats;

typedef struct DnsResolverStats {
        uint64_t transactions;
        uint64_t coalesced;
        uint64_t coalesce_refused;  /* waiter cap reached */
        uint64_t tcp_fallbacks;
        uint64_t mismatched_replies; /* wrong ID or question: possibly spoofed */
        uint64_t in_flight;
        uint64_t latency_buckets[DNS_LATENCY_BUCKETS];
        double latency_sum_ms;
} DnsResolverStats;

int dns_resolver_new(sd_event *event, DnsResolver **ret);
DnsResolver *dns_resolver_free(DnsResolver *r);

void dns_resolver_set_reply_hook(DnsResolver *r, DnsReplyHook hook, void *userdata);
void dns_resolver_set_timeout(DnsResolver *r, uint64_t usec);          /* per attempt */
/* Called with each upstream round-trip time in seconds (for a histogram). */
void dns_resolver_set_latency_observer(DnsResolver *r, void (*observe)(double seconds, void *userdata), void *userdata);
void dns_resolver_set_max_waiters(DnsResolver *r, unsigned n);         /* per question */

/* "192.0.2.1", "192.0.2.1:5300", "[2001:db8::1]:53". */
int dns_resolver_add_upstream(DnsResolver *r, const char *spec);
/* Adds every `nameserver` of a resolv.conf; returns how many. */
int dns_resolver_add_resolv_conf(DnsResolver *r, const char *path);
size_t dns_resolver_n_upstreams(const DnsResolver *r);

/* Resolves a question (lower-cased qname). `key`/`hash` identify it for
 * coalescing (see dns_cache_key). `w` may be NULL for a refresh nobody
 * waits for. Returns 0 when a new transaction started, 1 when the waiter
 * joined one in flight, -EBUSY when the per-question cap is reached,
 * -ENETUNREACH without upstreams. */
int dns_resolver_resolve(DnsResolver *r, const uint8_t *key, size_t key_len, uint64_t hash, const uint8_t *qname,
                         size_t qname_len, uint16_t qtype, uint16_t qclass, bool do_bit, bool cd, DnsWaiter *w);
/* Detaches a waiter; its callback will not run. The transaction goes on
 * (its reply is still cached). */
void dns_waiter_cancel(DnsWaiter *w);

void dns_resolver_get_stats(const DnsResolver *r, DnsResolverStats *ret);
/* Fills up to n entries; returns the number of upstreams. */
size_t dns_resolver_get_upstream_stats(const DnsResolver *r, DnsUpstreamStats *ret, size_t n);
