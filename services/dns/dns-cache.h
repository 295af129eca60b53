/* SPDX-License-Identifier: MIT */
#pragma once

/* Cache of whole DNS responses, keyed by (lower-cased qname, qtype, qclass,
 * DO, CD). Responses are stored in wire form without the OPT record and
 * with each RR's TTL remembered, so serving a hit is one copy plus a few
 * TTL stores. Open addressing (linear probing, backward-shift deletion)
 * over a fixed slot array; CLOCK eviction keeps entries that are being
 * used; expired entries stay for serve-stale (RFC 8767) until their
 * maximum stale age. Times are monotonic microseconds passed in by the
 * caller, so the cache is deterministic under test. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns-packet.h"

#define DNS_CACHE_KEY_MAX (DNS_NAME_MAX + 5)

typedef struct DnsCache DnsCache;
typedef struct DnsCacheEntry DnsCacheEntry;

typedef struct DnsCacheConfig {
        uint32_t max_entries;          /* hard cap on entries */
        uint64_t max_bytes;            /* hard cap on stored bytes (wire + key + TTL table) */
        uint32_t min_ttl;              /* seconds; positive answers are kept at least this long */
        uint32_t max_ttl;              /* seconds; and at most this long */
        uint32_t negative_max_ttl;     /* RFC 2308 §5 cap for NXDOMAIN/NODATA */
        uint32_t servfail_ttl;         /* RFC 2308 §7.1: SERVFAIL kept briefly */
        uint64_t stale_max_age_usec;   /* RFC 8767 §5: how long past expiry an answer may be served */
        uint32_t prefetch_min_hits;    /* hits before an entry is worth refreshing early */
        uint32_t prefetch_percent;     /* refresh once less than this % of the TTL is left */
} DnsCacheConfig;

void dns_cache_config_defaults(DnsCacheConfig *c);

typedef struct DnsCacheStats {
        uint64_t hits;
        uint64_t misses;
        uint64_t stale_hits;
        uint64_t inserts;
        uint64_t evictions;
        uint64_t expired;
        uint64_t entries;
        uint64_t bytes;
} DnsCacheStats;

typedef enum DnsCacheResult {
        DNS_CACHE_MISS,
        DNS_CACHE_FRESH,
        DNS_CACHE_FRESH_PREFETCH,      /* fresh, and the caller should refresh it now */
        DNS_CACHE_STALE,               /* expired but may be served if upstreams fail */
} DnsCacheResult;

int dns_cache_new(const DnsCacheConfig *config, DnsCache **ret);
DnsCache *dns_cache_free(DnsCache *c);

/* Builds the cache key of a question into key[DNS_CACHE_KEY_MAX]; qname
 * must be lower-cased. Returns the key length. */
size_t dns_cache_key(const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass, bool do_bit,
                     bool cd, uint8_t *key);
uint64_t dns_cache_hash(const DnsCache *c, const uint8_t *key, size_t key_len);

/* Looks a key up and counts the hit or miss. *ret_entry stays valid until
 * the next insert, flush or eviction. Entries past their stale window are
 * dropped here and reported as misses. */
DnsCacheResult dns_cache_lookup(DnsCache *c, const uint8_t *key, size_t key_len, uint64_t hash, uint64_t now,
                                DnsCacheEntry **ret_entry);
/* Writes the entry's response to out with TTLs aged to `now` (or all set to
 * 30 when `stale`, RFC 8767 §4) and ID 0. Returns the length, 0 if out is
 * too small. */
size_t dns_cache_render(const DnsCacheEntry *e, uint64_t now, bool stale, uint8_t *out, size_t size);
/* Marks that the stale entry's refresh is under way (or no longer). */
void dns_cache_entry_set_refreshing(DnsCacheEntry *e, bool b);
bool dns_cache_entry_refreshing(const DnsCacheEntry *e);
int dns_cache_entry_rcode(const DnsCacheEntry *e);

/* Stores the upstream reply `pkt` (OPT already stripped, see
 * dns_message_strip_opt; `m` its parse) under `key`. Works out the TTL:
 * positive answers min of their RRs' TTLs clamped to [min_ttl, max_ttl];
 * NXDOMAIN/NODATA min(SOA TTL, SOA MINIMUM) capped (RFC 2308 §5) and not
 * cached without an SOA; SERVFAIL servfail_ttl. Returns 1 stored, 0 not
 * cacheable, negative errno. */
int dns_cache_insert(DnsCache *c, const uint8_t *key, size_t key_len, uint64_t hash, const uint8_t *pkt,
                     size_t len, const DnsMessage *m, uint64_t now);

/* Drops every entry (name NULL) or every entry whose qname is `name`
 * (lower-cased wire form), any type. Returns the number dropped. */
size_t dns_cache_flush(DnsCache *c, const uint8_t *name, size_t name_len);

void dns_cache_get_stats(const DnsCache *c, DnsCacheStats *ret);
/* Bytes the cache itself holds in memory: tables plus entries (for the
 * per-100k-entries figure). */
size_t dns_cache_memory_usage(const DnsCache *c);
