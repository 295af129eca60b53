/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dns-cache.h"
#include "macro.h"

/* RFC 8767 §4: stale answers are served with a TTL of 30 seconds. */
#define STALE_TTL 30

struct DnsCacheEntry {
        uint64_t hash;
        /* One allocation: u32 ttls[n_ttl] | u16 ttl_offsets[n_ttl] | key | wire.
         * The TTL table comes first so that it stays aligned. */
        uint8_t *data;
        uint64_t inserted;
        uint64_t expire;
        uint32_t ttl;
        uint32_t hits;
        uint32_t size;          /* bytes of data */
        uint16_t key_len;
        uint16_t wire_len;
        uint16_t n_ttl;
        uint8_t rcode;
        bool used;
        bool referenced;        /* CLOCK bit: set on every hit, cleared by the hand */
        bool refreshing;        /* a prefetch or stale refresh is in flight */
};

struct DnsCache {
        DnsCacheConfig config;
        DnsCacheEntry *entries;        /* max_entries slots; also the CLOCK ring */
        uint32_t *free_slots;
        uint32_t n_free;
        /* Index: hash tag (upper 32 bits) | slot + 1 (lower 32 bits); 0 = empty.
         * Kept at least twice the number of entries, so probes stay short, and
         * grown by doubling rather than sized for max_entries up front: a
         * small hot set then stays within a few cache lines and pages, which
         * is what makes a hit cheap (TLB misses dominate otherwise). */
        uint64_t *index;
        uint64_t index_mask;
        uint64_t index_max;            /* the size index_mask + 1 may grow to */
        uint32_t hand;
        uint64_t seed;
        DnsCacheStats stats;
};

static inline uint32_t *entry_ttls(const DnsCacheEntry *e) {
        return (uint32_t *) e->data;
}
static inline uint16_t *entry_offsets(const DnsCacheEntry *e) {
        return (uint16_t *) (e->data + 4 * (size_t) e->n_ttl);
}
static inline uint8_t *entry_key(const DnsCacheEntry *e) {
        return e->data + 6 * (size_t) e->n_ttl;
}
static inline uint8_t *entry_wire(const DnsCacheEntry *e) {
        return entry_key(e) + e->key_len;
}

void dns_cache_config_defaults(DnsCacheConfig *c) {
        *c = (DnsCacheConfig){
                .max_entries = 100000,
                .max_bytes = 64ULL << 20,
                .min_ttl = 0,
                .max_ttl = 86400,
                .negative_max_ttl = 3600,
                .servfail_ttl = 5,
                .stale_max_age_usec = 86400 * USEC_PER_SEC,
                .prefetch_min_hits = 2,
                .prefetch_percent = 10,
        };
}

int dns_cache_new(const DnsCacheConfig *config, DnsCache **ret) {
        _cleanup_free_ DnsCache *c = NULL;
        uint64_t n_index = 16;

        if (config->max_entries == 0 || config->max_entries > (1u << 28))
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->config = *config;
        while (n_index < 2 * (uint64_t) config->max_entries)
                n_index <<= 1;
        c->index_max = n_index;
        n_index = MIN(n_index, 1024);
        c->index_mask = n_index - 1;
        c->entries = calloc(config->max_entries, sizeof(DnsCacheEntry));
        c->free_slots = malloc(sizeof(uint32_t) * config->max_entries);
        c->index = calloc(n_index, sizeof(uint64_t));
        if (!c->entries || !c->free_slots || !c->index) {
                free(c->entries);
                free(c->free_slots);
                free(c->index);
                return -ENOMEM;
        }
        /* Free slots are popped from the end: hand out slot 0 first. */
        for (uint32_t i = 0; i < config->max_entries; i++)
                c->free_slots[i] = config->max_entries - 1 - i;
        c->n_free = config->max_entries;
        /* A secret seed so that clients cannot aim queries at one probe chain. */
        if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != sizeof(c->seed))
                c->seed = (uint64_t) (uintptr_t) c ^ 0x9e3779b97f4a7c15ULL;
        *ret = TAKE_PTR(c);
        return 0;
}

DnsCache *dns_cache_free(DnsCache *c) {
        if (!c)
                return NULL;
        for (uint32_t i = 0; i < c->config.max_entries; i++)
                free(c->entries[i].data);
        free(c->entries);
        free(c->free_slots);
        free(c->index);
        free(c);
        return NULL;
}

size_t dns_cache_key(const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass, bool do_bit,
                     bool cd, uint8_t *key) {
        memcpy(key, qname, qname_len);
        dns_put_u16(key + qname_len, qtype);
        dns_put_u16(key + qname_len + 2, qclass);
        key[qname_len + 4] = (uint8_t) ((do_bit ? 1 : 0) | (cd ? 2 : 0));
        return qname_len + 5;
}

static inline uint64_t mix64(uint64_t x) {
        x ^= x >> 32;
        x *= 0xd6e8feb86659fd93ULL;
        x ^= x >> 32;
        x *= 0xd6e8feb86659fd93ULL;
        x ^= x >> 32;
        return x;
}

uint64_t dns_cache_hash(const DnsCache *c, const uint8_t *key, size_t key_len) {
        uint64_t h = c->seed ^ (key_len * 0x9e3779b97f4a7c15ULL);
        size_t i = 0;

        for (; i + 8 <= key_len; i += 8) {
                uint64_t k;
                memcpy(&k, key + i, 8);
                h = mix64(h ^ k) + 0x9e3779b97f4a7c15ULL;
        }
        if (i < key_len) {
                uint64_t k = 0;
                memcpy(&k, key + i, key_len - i);
                h = mix64(h ^ k);
        }
        return mix64(h ^ c->seed);
}

static uint64_t index_find(const DnsCache *c, uint32_t slot, uint64_t hash) {
        for (uint64_t i = hash & c->index_mask;; i = (i + 1) & c->index_mask)
                if ((uint32_t) c->index[i] == slot + 1)
                        return i;
}

/* Backward-shift deletion keeps every probe chain unbroken without
 * tombstones. */
static void index_delete(DnsCache *c, uint64_t i) {
        uint64_t j = i;

        for (;;) {
                uint64_t home;

                c->index[i] = 0;
                for (;;) {
                        j = (j + 1) & c->index_mask;
                        if (!c->index[j])
                                return;
                        home = c->entries[(uint32_t) c->index[j] - 1].hash & c->index_mask;
                        /* Move j to the hole at i unless its home lies cyclically in (i, j]. */
                        if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                                break;
                }
                c->index[i] = c->index[j];
                i = j;
        }
}

static void entry_remove(DnsCache *c, uint32_t slot) {
        DnsCacheEntry *e = &c->entries[slot];

        index_delete(c, index_find(c, slot, e->hash));
        c->stats.bytes -= e->size;
        c->stats.entries--;
        free(e->data);
        *e = (DnsCacheEntry){};
        c->free_slots[c->n_free++] = slot;
}

DnsCacheResult dns_cache_lookup(DnsCache *c, const uint8_t *key, size_t key_len, uint64_t hash, uint64_t now,
                                DnsCacheEntry **ret_entry) {
        uint32_t tag = (uint32_t) (hash >> 32);

        for (uint64_t i = hash & c->index_mask;; i = (i + 1) & c->index_mask) {
                uint64_t v = c->index[i];
                DnsCacheEntry *e;

                if (!v)
                        break;
                if ((uint32_t) (v >> 32) != tag)
                        continue;
                e = &c->entries[(uint32_t) v - 1];
                if (e->hash != hash || e->key_len != key_len || memcmp(entry_key(e), key, key_len) != 0)
                        continue;

                if (_unlikely_(now >= e->expire)) {
                        /* SERVFAIL is never served stale; others within the window. */
                        if (e->rcode == DNS_RCODE_SERVFAIL || now - e->expire >= c->config.stale_max_age_usec) {
                                entry_remove(c, (uint32_t) v - 1);
                                c->stats.expired++;
                                break;
                        }
                        c->stats.misses++;
                        *ret_entry = e;
                        return DNS_CACHE_STALE;
                }
                e->referenced = true;
                e->hits++;
                c->stats.hits++;
                *ret_entry = e;
                /* Popular and in the last prefetch_percent of its TTL: refresh now
                 * so that clients never see it expire. */
                if (!e->refreshing && c->config.prefetch_percent > 0 && e->hits >= c->config.prefetch_min_hits &&
                    e->ttl >= 10 &&
                    (e->expire - now) * 100 < (uint64_t) e->ttl * USEC_PER_SEC * c->config.prefetch_percent) {
                        e->refreshing = true;
                        return DNS_CACHE_FRESH_PREFETCH;
                }
                return DNS_CACHE_FRESH;
        }
        c->stats.misses++;
        *ret_entry = NULL;
        return DNS_CACHE_MISS;
}

size_t dns_cache_render(const DnsCacheEntry *e, uint64_t now, bool stale, uint8_t *out, size_t size) {
        const uint32_t *ttls = entry_ttls(e);
        const uint16_t *offs = entry_offsets(e);
        uint32_t age = (uint32_t) ((now > e->inserted ? now - e->inserted : 0) / USEC_PER_SEC);

        if (e->wire_len > size)
                return 0;
        memcpy(out, entry_wire(e), e->wire_len);
        for (uint16_t i = 0; i < e->n_ttl; i++)
                dns_put_u32(out + offs[i], stale ? STALE_TTL : (ttls[i] > age ? ttls[i] - age : 0));
        return e->wire_len;
}

void dns_cache_entry_set_refreshing(DnsCacheEntry *e, bool b) {
        e->refreshing = b;
}

bool dns_cache_entry_refreshing(const DnsCacheEntry *e) {
        return e->refreshing;
}

int dns_cache_entry_rcode(const DnsCacheEntry *e) {
        return e->rcode;
}

/* CLOCK: the hand clears reference bits and evicts the first entry that
 * was not used since the hand last passed it, so entries in use survive a
 * scan of one-off names. Expired entries go first. */
static void evict_one(DnsCache *c, uint64_t now) {
        for (uint64_t n = 0; n < 2 * (uint64_t) c->config.max_entries + 1; n++) {
                DnsCacheEntry *e;

                c->hand = (c->hand + 1) % c->config.max_entries;
                e = &c->entries[c->hand];
                if (!e->used)
                        continue;
                if (e->referenced && now < e->expire) {
                        e->referenced = false;
                        continue;
                }
                entry_remove(c, c->hand);
                c->stats.evictions++;
                return;
        }
}

static uint32_t clamp_u32(uint32_t v, uint32_t lo, uint32_t hi) {
        return v < lo ? lo : v > hi ? hi : v;
}

/* Doubles the index and re-inserts every entry. */
static int index_grow(DnsCache *c) {
        uint64_t n = (c->index_mask + 1) * 2, mask = n - 1;
        uint64_t *index = calloc(n, sizeof(uint64_t));

        if (!index)
                return -ENOMEM;
        for (uint64_t i = 0; i <= c->index_mask; i++) {
                uint64_t v = c->index[i], j;
                if (!v)
                        continue;
                for (j = c->entries[(uint32_t) v - 1].hash & mask; index[j]; j = (j + 1) & mask)
                        ;
                index[j] = v;
        }
        free(c->index);
        c->index = index;
        c->index_mask = mask;
        return 0;
}

int dns_cache_insert(DnsCache *c, const uint8_t *key, size_t key_len, uint64_t hash, const uint8_t *pkt,
                     size_t len, const DnsMessage *m, uint64_t now) {
        int rcode = m->flags & DNS_FLAG_RCODE_MASK;
        uint32_t ttl = UINT32_MAX, n_ttl = 0, slot;
        size_t need;
        DnsCacheEntry *e = NULL;
        uint8_t *data;
        bool negative;

        if (key_len > DNS_CACHE_KEY_MAX || len > UINT16_MAX || (m->flags & DNS_FLAG_TC))
                return 0;
        negative = rcode == DNS_RCODE_NXDOMAIN || (rcode == DNS_RCODE_NOERROR && m->counts[DNS_SECTION_ANSWER] == 0);
        if (rcode == DNS_RCODE_SERVFAIL) {
                ttl = c->config.servfail_ttl;
        } else if (negative) {
                /* RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM);
                 * without an SOA the answer is not cached at all. */
                if (m->soa_index < 0)
                        return 0;
                ttl = MIN(m->rrs[m->soa_index].ttl, m->soa_minimum);
                ttl = MIN(ttl, c->config.negative_max_ttl);
        } else if (rcode == DNS_RCODE_NOERROR) {
                for (size_t i = 0; i < m->n_rrs; i++)
                        if ((int) i != m->opt_index && m->rrs[i].section != DNS_SECTION_ADDITIONAL)
                                ttl = MIN(ttl, m->rrs[i].ttl);
                ttl = clamp_u32(ttl, c->config.min_ttl, c->config.max_ttl);
        } else
                return 0; /* REFUSED, NOTIMP, FORMERR... are the upstream's trouble, not data */
        if (ttl == 0)
                return 0;

        for (size_t i = 0; i < m->n_rrs; i++)
                if ((int) i != m->opt_index)
                        n_ttl++;
        need = 6 * (size_t) n_ttl + key_len + len;
        if (need > c->config.max_bytes)
                return 0;

        /* Replace an existing entry for the key (refresh, prefetch). */
        for (uint64_t i = hash & c->index_mask; c->index[i]; i = (i + 1) & c->index_mask) {
                DnsCacheEntry *x = &c->entries[(uint32_t) c->index[i] - 1];
                if (x->hash == hash && x->key_len == key_len && memcmp(entry_key(x), key, key_len) == 0) {
                        entry_remove(c, (uint32_t) c->index[i] - 1);
                        break;
                }
        }
        while (c->n_free == 0 || c->stats.bytes + need > c->config.max_bytes) {
                if (c->stats.entries == 0)
                        return 0;
                evict_one(c, now);
        }

        if ((c->stats.entries + 1) * 2 > c->index_mask + 1 && c->index_mask + 1 < c->index_max && index_grow(c) < 0)
                return -ENOMEM;
        data = malloc(need);
        if (!data)
                return -ENOMEM;
        slot = c->free_slots[--c->n_free];
        e = &c->entries[slot];
        *e = (DnsCacheEntry){
                .hash = hash,
                .data = data,
                .inserted = now,
                .expire = now + (uint64_t) ttl * USEC_PER_SEC,
                .ttl = ttl,
                .size = (uint32_t) need,
                .key_len = (uint16_t) key_len,
                .wire_len = (uint16_t) len,
                .n_ttl = (uint16_t) n_ttl,
                .rcode = (uint8_t) rcode,
                .used = true,
        };
        memcpy(entry_key(e), key, key_len);
        memcpy(entry_wire(e), pkt, len);
        dns_put_u16(entry_wire(e), 0);
        for (size_t i = 0, k = 0; i < m->n_rrs; i++) {
                uint32_t t;
                if ((int) i == m->opt_index)
                        continue;
                /* Each RR keeps its own TTL, brought into the entry's bounds: never
                 * beyond max_ttl, never below min_ttl, and for negative answers and
                 * SERVFAIL never beyond the entry itself. */
                t = m->rrs[i].ttl;
                if (negative || rcode == DNS_RCODE_SERVFAIL)
                        t = MIN(t, ttl);
                else
                        t = clamp_u32(t, c->config.min_ttl, c->config.max_ttl);
                entry_ttls(e)[k] = t;
                entry_offsets(e)[k] = m->rrs[i].ttl_offset;
                k++;
        }
        for (uint64_t i = hash & c->index_mask;; i = (i + 1) & c->index_mask)
                if (!c->index[i]) {
                        c->index[i] = (hash >> 32) << 32 | (uint64_t) (slot + 1);
                        break;
                }
        c->stats.entries++;
        c->stats.bytes += need;
        c->stats.inserts++;
        return 1;
}

size_t dns_cache_flush(DnsCache *c, const uint8_t *name, size_t name_len) {
        size_t n = 0;

        for (uint32_t i = 0; i < c->config.max_entries; i++) {
                DnsCacheEntry *e = &c->entries[i];
                if (!e->used)
                        continue;
                if (name && (e->key_len != name_len + 5 || memcmp(entry_key(e), name, name_len) != 0))
                        continue;
                entry_remove(c, i);
                n++;
        }
        return n;
}

void dns_cache_get_stats(const DnsCache *c, DnsCacheStats *ret) {
        *ret = c->stats;
}

size_t dns_cache_memory_usage(const DnsCache *c) {
        size_t n = sizeof(*c) + (size_t) c->config.max_entries * (sizeof(DnsCacheEntry) + sizeof(uint32_t)) +
                   (c->index_mask + 1) * sizeof(uint64_t);

        for (uint32_t i = 0; i < c->config.max_entries; i++)
                if (c->entries[i].used)
                        n += malloc_usable_size(c->entries[i].data) + sizeof(size_t);
        return n;
}
