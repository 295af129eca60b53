/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dns-cache.h"
#include "macro.h"

#define SEC(x) ((uint64_t) (x) * USEC_PER_SEC)

typedef struct Reply {
        uint8_t wire[512];
        size_t len;
        DnsMessage m;
        uint8_t key[DNS_CACHE_KEY_MAX];
        size_t key_len;
        uint8_t qname[DNS_NAME_MAX];
        size_t qname_len;
} Reply;

/* An answer "NAME A 10.0.0.1" with the given TTL, or with rcode != 0 an
 * empty answer with (when soa_ttl > 0) an SOA in the authority section
 * whose own TTL is soa_ttl and whose MINIMUM is soa_min. */
static void build(Reply *r, DnsCache *c, const char *name, int rcode, uint32_t ttl, uint32_t soa_ttl,
                  uint32_t soa_min) {
        static const uint8_t soa_rdata[] = {
                2, 'n', 's', 0xC0, 12,      /* MNAME ns.<qname> */
                4, 'h', 'o', 's', 't', 0,   /* RNAME host. */
                0, 0, 0, 1,                 /* SERIAL */
                0, 0, 0x0e, 0x10,           /* REFRESH 3600 */
                0, 0, 0x02, 0x58,           /* RETRY 600 */
                0, 1, 0x51, 0x80,           /* EXPIRE 86400 */
                0, 0, 0, 0,                 /* MINIMUM, patched below */
        };
        uint8_t soa[sizeof(soa_rdata)];
        const uint8_t a[4] = { 10, 0, 0, 1 };
        bool answer = rcode == 0 && ttl > 0;
        bool with_soa = !answer && soa_ttl > 0;
        DnsWriter w;

        assert_int_equal(dns_name_from_string(name, r->qname, &r->qname_len), 0);
        dns_writer_init(&w, r->wire, sizeof(r->wire));
        dns_write_header(&w, 0x4242, (uint16_t) (DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA | rcode), 1, answer ? 1 : 0,
                         with_soa ? 1 : 0, 0);
        dns_write_question(&w, r->qname, r->qname_len, DNS_TYPE_A, DNS_CLASS_IN);
        if (answer)
                dns_write_rr(&w, NULL, 0, DNS_TYPE_A, DNS_CLASS_IN, ttl, a, 4);
        if (with_soa) {
                memcpy(soa, soa_rdata, sizeof(soa));
                dns_put_u32(soa + sizeof(soa) - 4, soa_min);
                dns_write_rr(&w, NULL, 0, DNS_TYPE_SOA, DNS_CLASS_IN, soa_ttl, soa, sizeof(soa));
        }
        assert_false(w.overflow);
        r->len = w.len;
        assert_int_equal(dns_message_parse(r->wire, r->len, &r->m), 0);
        r->key_len = dns_cache_key(r->qname, r->qname_len, DNS_TYPE_A, DNS_CLASS_IN, false, false, r->key);
        (void) c;
}

static int insert(DnsCache *c, Reply *r, uint64_t now) {
        int k = dns_cache_insert(c, r->key, r->key_len, dns_cache_hash(c, r->key, r->key_len), r->wire, r->len,
                                 &r->m, now);
        dns_message_done(&r->m);
        return k;
}

static DnsCacheResult lookup(DnsCache *c, Reply *r, uint64_t now, DnsCacheEntry **e) {
        return dns_cache_lookup(c, r->key, r->key_len, dns_cache_hash(c, r->key, r->key_len), now, e);
}

/* TTL of the first RR after the question, as rendered. */
static uint32_t rendered_ttl(const DnsCacheEntry *e, Reply *r, uint64_t now, bool stale) {
        uint8_t out[512];
        size_t n = dns_cache_render(e, now, stale, out, sizeof(out));
        size_t off = 12 + r->qname_len + 4 + 2 + 4;
        assert_true(n > off + 4);
        assert_int_equal(dns_get_u16(out), 0); /* ID is the caller's to patch */
        return dns_get_u32(out + off);
}

static DnsCache *new_cache(uint32_t max_entries) {
        DnsCacheConfig cfg;
        DnsCache *c;

        dns_cache_config_defaults(&cfg);
        cfg.max_entries = max_entries;
        assert_int_equal(dns_cache_new(&cfg, &c), 0);
        return c;
}

static void test_cache_hit_after_miss_with_decreasing_ttl(void **state) {
        DnsCache *c = new_cache(16);
        DnsCacheEntry *e;
        Reply r;

        build(&r, c, "www.example.com", 0, 300, 0, 0);
        assert_int_equal(lookup(c, &r, SEC(100), &e), DNS_CACHE_MISS);
        assert_int_equal(insert(c, &r, SEC(100)), 1);
        assert_int_equal(lookup(c, &r, SEC(100), &e), DNS_CACHE_FRESH);
        assert_int_equal(rendered_ttl(e, &r, SEC(100), false), 300);
        assert_int_equal(lookup(c, &r, SEC(140), &e), DNS_CACHE_FRESH);
        assert_int_equal(rendered_ttl(e, &r, SEC(140), false), 260);
        dns_cache_free(c);
}

static void test_cache_clamps_ttl_to_min_and_max(void **state) {
        DnsCacheConfig cfg;
        DnsCache *c;
        DnsCacheEntry *e;
        Reply r;

        dns_cache_config_defaults(&cfg);
        cfg.min_ttl = 60;
        cfg.max_ttl = 600;
        assert_int_equal(dns_cache_new(&cfg, &c), 0);
        build(&r, c, "short.example", 0, 5, 0, 0);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, SEC(30), &e), DNS_CACHE_FRESH);
        assert_int_equal(rendered_ttl(e, &r, SEC(30), false), 30);
        build(&r, c, "long.example", 0, 100000, 0, 0);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, 0, &e), DNS_CACHE_FRESH);
        assert_int_equal(rendered_ttl(e, &r, 0, false), 600);
        assert_int_equal(lookup(c, &r, SEC(601), &e), DNS_CACHE_STALE);
        dns_cache_free(c);
}

static void test_cache_negative_ttl_is_soa_minimum(void **state) {
        DnsCache *c = new_cache(16);
        DnsCacheEntry *e;
        Reply r;

        /* RFC 2308 §5: min(SOA TTL 900, MINIMUM 60) = 60. */
        build(&r, c, "nx.example", DNS_RCODE_NXDOMAIN, 0, 900, 60);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, SEC(59), &e), DNS_CACHE_FRESH);
        assert_int_equal(dns_cache_entry_rcode(e), DNS_RCODE_NXDOMAIN);
        assert_int_equal(rendered_ttl(e, &r, SEC(59), false), 1);
        assert_int_equal(lookup(c, &r, SEC(60), &e), DNS_CACHE_STALE);

        /* Capped at negative_max_ttl (3600). */
        build(&r, c, "nx2.example", DNS_RCODE_NXDOMAIN, 0, 86400, 86400);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, SEC(3599), &e), DNS_CACHE_FRESH);
        assert_int_equal(lookup(c, &r, SEC(3600), &e), DNS_CACHE_STALE);

        /* NODATA is negative too; without an SOA nothing is cached. */
        build(&r, c, "nodata.example", 0, 0, 0, 0);
        assert_int_equal(insert(c, &r, 0), 0);
        assert_int_equal(lookup(c, &r, 0, &e), DNS_CACHE_MISS);
        dns_cache_free(c);
}

static void test_cache_servfail_briefly_and_never_stale(void **state) {
        DnsCache *c = new_cache(16);
        DnsCacheEntry *e;
        Reply r;

        build(&r, c, "broken.example", DNS_RCODE_SERVFAIL, 0, 0, 0);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, SEC(4), &e), DNS_CACHE_FRESH);
        assert_int_equal(lookup(c, &r, SEC(5), &e), DNS_CACHE_MISS);
        build(&r, c, "refused.example", DNS_RCODE_REFUSED, 0, 0, 0);
        assert_int_equal(insert(c, &r, 0), 0);
        dns_message_done(&r.m);
        dns_cache_free(c);
}

static void test_cache_serves_stale_with_ttl_30_until_max_age(void **state) {
        DnsCache *c = new_cache(16);
        DnsCacheEntry *e;
        Reply r;

        build(&r, c, "stale.example", 0, 10, 0, 0);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, SEC(11), &e), DNS_CACHE_STALE);
        assert_int_equal(rendered_ttl(e, &r, SEC(11), true), 30);
        assert_int_equal(lookup(c, &r, SEC(10) + SEC(86400) - 1, &e), DNS_CACHE_STALE);
        assert_int_equal(lookup(c, &r, SEC(10) + SEC(86400), &e), DNS_CACHE_MISS);
        dns_cache_free(c);
}

static void test_cache_prefetches_popular_entries_near_expiry(void **state) {
        DnsCache *c = new_cache(16);
        DnsCacheEntry *e;
        Reply r;

        build(&r, c, "hot.example", 0, 100, 0, 0);
        assert_int_equal(insert(c, &r, 0), 1);
        assert_int_equal(lookup(c, &r, SEC(10), &e), DNS_CACHE_FRESH);
        assert_int_equal(lookup(c, &r, SEC(20), &e), DNS_CACHE_FRESH);    /* 80 s left: not yet */
        assert_int_equal(lookup(c, &r, SEC(95), &e), DNS_CACHE_FRESH_PREFETCH);
        assert_int_equal(lookup(c, &r, SEC(96), &e), DNS_CACHE_FRESH);    /* one refresh at a time */
        /* The refresh replaces the entry and starts a new TTL. */
        build(&r, c, "hot.example", 0, 100, 0, 0);
        assert_int_equal(insert(c, &r, SEC(97)), 1);
        assert_int_equal(lookup(c, &r, SEC(150), &e), DNS_CACHE_FRESH);
        assert_false(dns_cache_entry_refreshing(e));
        dns_cache_free(c);
}

static void test_cache_flush_by_name_and_all(void **state) {
        DnsCache *c = new_cache(16);
        DnsCacheEntry *e;
        Reply a, b;

        build(&a, c, "a.example", 0, 100, 0, 0);
        assert_int_equal(insert(c, &a, 0), 1);
        build(&b, c, "b.example", 0, 100, 0, 0);
        assert_int_equal(insert(c, &b, 0), 1);
        assert_int_equal(dns_cache_flush(c, a.qname, a.qname_len), 1);
        assert_int_equal(lookup(c, &a, 0, &e), DNS_CACHE_MISS);
        assert_int_equal(lookup(c, &b, 0, &e), DNS_CACHE_FRESH);
        assert_int_equal(dns_cache_flush(c, NULL, 0), 1);
        assert_int_equal(lookup(c, &b, 0, &e), DNS_CACHE_MISS);
        dns_cache_free(c);
}

static void test_cache_eviction_keeps_hot_entries(void **state) {
        DnsCache *c = new_cache(4);
        DnsCacheEntry *e;
        DnsCacheStats st;
        Reply r[8];
        char name[32];

        for (int i = 0; i < 4; i++) {
                snprintf(name, sizeof(name), "n%d.example", i);
                build(&r[i], c, name, 0, 300, 0, 0);
                assert_int_equal(insert(c, &r[i], 0), 1);
        }
        /* n0 and n1 are hot; n2 and n3 were never read. */
        assert_int_equal(lookup(c, &r[0], 1, &e), DNS_CACHE_FRESH);
        assert_int_equal(lookup(c, &r[1], 1, &e), DNS_CACHE_FRESH);
        for (int i = 4; i < 6; i++) {
                snprintf(name, sizeof(name), "n%d.example", i);
                build(&r[i], c, name, 0, 300, 0, 0);
                assert_int_equal(insert(c, &r[i], 2), 1);
        }
        assert_int_equal(lookup(c, &r[0], 3, &e), DNS_CACHE_FRESH);
        assert_int_equal(lookup(c, &r[1], 3, &e), DNS_CACHE_FRESH);
        assert_int_equal(lookup(c, &r[2], 3, &e), DNS_CACHE_MISS);
        assert_int_equal(lookup(c, &r[3], 3, &e), DNS_CACHE_MISS);
        dns_cache_get_stats(c, &st);
        assert_int_equal(st.evictions, 2);
        assert_int_equal(st.entries, 4);
        dns_cache_free(c);
}

static void test_cache_respects_byte_limit(void **state) {
        DnsCacheConfig cfg;
        DnsCache *c;
        DnsCacheStats st;
        Reply r;
        char name[32];

        dns_cache_config_defaults(&cfg);
        cfg.max_bytes = 1000;
        assert_int_equal(dns_cache_new(&cfg, &c), 0);
        for (int i = 0; i < 100; i++) {
                snprintf(name, sizeof(name), "n%d.example", i);
                build(&r, c, name, 0, 300, 0, 0);
                assert_int_equal(insert(c, &r, 0), 1);
        }
        dns_cache_get_stats(c, &st);
        assert_true(st.bytes <= 1000);
        assert_true(st.evictions > 80);
        dns_cache_free(c);
}

/* Not a pass/fail check: prints what 100k typical entries cost. */
static void test_cache_memory_per_100k_entries(void **state) {
        DnsCache *c = new_cache(100000);
        DnsCacheStats st;
        Reply r;
        char name[64];

        for (int i = 0; i < 100000; i++) {
                snprintf(name, sizeof(name), "host%d.bench.example", i);
                build(&r, c, name, 0, 3600, 0, 0);
                assert_int_equal(insert(c, &r, 0), 1);
        }
        dns_cache_get_stats(c, &st);
        assert_int_equal(st.entries, 100000);
        printf("cache: 100000 entries, %zu bytes in memory (%.1f MiB, %zu bytes/entry)\n",
               dns_cache_memory_usage(c), dns_cache_memory_usage(c) / 1048576.0, dns_cache_memory_usage(c) / 100000);
        dns_cache_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cache_hit_after_miss_with_decreasing_ttl),
                cmocka_unit_test(test_cache_clamps_ttl_to_min_and_max),
                cmocka_unit_test(test_cache_negative_ttl_is_soa_minimum),
                cmocka_unit_test(test_cache_servfail_briefly_and_never_stale),
                cmocka_unit_test(test_cache_serves_stale_with_ttl_30_until_max_age),
                cmocka_unit_test(test_cache_prefetches_popular_entries_near_expiry),
                cmocka_unit_test(test_cache_flush_by_name_and_all),
                cmocka_unit_test(test_cache_eviction_keeps_hot_entries),
                cmocka_unit_test(test_cache_respects_byte_limit),
                cmocka_unit_test(test_cache_memory_per_100k_entries),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
