/* SPDX-License-Identifier: MIT */
#pragma once

/* The DNS data plane: UDP and TCP listeners on the daemon's sd-event loop
 * and the path of every query: parse → rate limit → local records → ACL →
 * cache → upstream (coalesced), with serve-stale when upstreams fail or are
 * slower than the client timeout. UDP is read and answered in batches
 * (recvmmsg/sendmmsg); a cache hit allocates nothing. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "dns-cache.h"
#include "dns-local.h"
#include "dns-upstream.h"

typedef struct DnsServer DnsServer;

typedef struct DnsNetwork {
        int family;
        uint8_t addr[16];
        unsigned prefix;
} DnsNetwork;

/* "10.0.0.0/8", "::1/128", "192.0.2.1" (a host). */
int dns_network_parse(const char *s, DnsNetwork *ret);
bool dns_network_contains(const DnsNetwork *n, const struct sockaddr *sa);

typedef struct DnsServerOptions {
        const DnsNetwork *allow;                 /* clients allowed to recurse; n_allow == 0: nobody */
        size_t n_allow;
        uint32_t rate_limit_qps;                 /* per client address; 0 = unlimited */
        uint64_t stale_client_timeout_usec;      /* RFC 8767 §5: answer stale after this long */
        uint16_t max_udp_size;                   /* our EDNS payload limit for replies */
        unsigned tcp_max_connections;            /* at the cap, the longest idle one makes room; 0 = 256 */
        uint64_t tcp_idle_usec;                  /* no complete query for this long: closed; 0 = 10 s */
        unsigned max_pending;                    /* client queries waiting for upstreams */
} DnsServerOptions;

typedef struct DnsServerStats {
        uint64_t queries;
        uint64_t udp_queries;
        uint64_t tcp_queries;
        uint64_t hits;
        uint64_t misses;
        uint64_t stale_served;
        uint64_t prefetches;
        uint64_t local_answers;
        uint64_t refused;
        uint64_t formerr;
        uint64_t servfail;
        uint64_t rate_limited;
        uint64_t dropped;
        uint64_t tcp_idle_closed;                /* TCP connections closed idle (timeout, or to make room) */
} DnsServerStats;

int dns_server_new(sd_event *event, DnsCache *cache, DnsResolver *resolver, DnsLocal *local,
                   const DnsServerOptions *options, DnsServer **ret);
DnsServer *dns_server_free(DnsServer *s);

/* Serve on sockets handed over by systemd (or bound by the caller). */
int dns_server_add_udp_fd(DnsServer *s, int fd);
int dns_server_add_tcp_fd(DnsServer *s, int fd);
/* Binds UDP and TCP on "127.0.0.1:5353" / "[::1]:53" itself. */
int dns_server_listen(DnsServer *s, const char *address);
size_t dns_server_n_listeners(const DnsServer *s);

/* The reply hook for the resolver: stores upstream answers in the cache. */
void dns_server_on_upstream_reply(const uint8_t *key, size_t key_len, uint64_t hash, int error,
                                  const uint8_t *reply, size_t len, const DnsMessage *m, void *userdata);

/* Resolves a question through the same path as a client (local, cache,
 * upstream); done runs once, possibly before this returns, with a reply in
 * wire form or a negative errno. */
typedef void (*DnsLookupCallback)(int error, const uint8_t *reply, size_t len, void *userdata);
int dns_server_lookup(DnsServer *s, const uint8_t *qname, size_t qname_len, uint16_t qtype,
                      DnsLookupCallback done, void *userdata);

void dns_server_get_stats(const DnsServer *s, DnsServerStats *ret);
