/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to every parser that sees network input: the query
 * parser and the local-records answerer (client packets), the message
 * parser, rdata formatter, cache insert and render (upstream replies), OPT
 * stripping and truncation (replies to clients). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns-cache.h"
#include "dns-local.h"
#include "dns-packet.h"

static DnsCache *cache;
static DnsLocal *local;

static void setup(void) {
        DnsCacheConfig cfg;

        if (cache)
                return;
        dns_cache_config_defaults(&cfg);
        cfg.max_entries = 64;
        cfg.max_bytes = 1 << 20;
        if (dns_cache_new(&cfg, &cache) < 0 || dns_local_new(&local) < 0)
                abort();
        (void) dns_local_add_zone(local, "hostmesh.internal");
        (void) dns_local_add(local, "vm.hostmesh.internal", "A", "10.88.0.5", 30);
        (void) dns_local_add(local, "t.hostmesh.internal", "TXT", "hello", 30);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t buf[DNS_PACKET_MAX], out[DNS_PACKET_MAX];
        static uint64_t now;
        DnsQuery q;
        DnsMessage m;
        size_t n;

        if (size > DNS_PACKET_MAX)
                return 0;
        setup();
        now += 1000000;
        if (dns_query_parse(data, size, &q) == 0) {
                (void) dns_reply_error(&q, DNS_RCODE_FORMERR, true, out, sizeof(out));
                if (dns_local_answer(local, data, &q, out, sizeof(out), &n) >= 0 &&
                    dns_message_parse(out, n, &m) == 0)
                        dns_message_done(&m);
        }
        if (dns_message_parse(data, size, &m) == 0) {
                uint8_t key[DNS_CACHE_KEY_MAX];
                DnsCacheEntry *e;
                size_t key_len;
                int len;

                for (size_t i = 0; i < m.n_rrs; i++)
                        free(dns_rdata_to_string(data, size, &m.rrs[i]));
                memcpy(buf, data, size);
                len = dns_message_strip_opt(buf, size, &m);
                if (len >= 0 && m.qdcount == 1) {
                        dns_name_lower(m.qname, m.qname_len);
                        key_len = dns_cache_key(m.qname, m.qname_len, m.qtype, m.qclass, false, false, key);
                        uint64_t h = dns_cache_hash(cache, key, key_len);
                        (void) dns_cache_insert(cache, key, key_len, h, buf, (size_t) len, &m, now);
                        if (dns_cache_lookup(cache, key, key_len, h, now, &e) != DNS_CACHE_MISS) {
                                n = dns_cache_render(e, now, false, out, sizeof(out));
                                if (n > 0)
                                        (void) dns_reply_truncate(out, n, 512);
                        }
                }
                dns_message_done(&m);
                memcpy(buf, data, size);
                (void) dns_reply_truncate(buf, size, size > 64 ? size / 2 : 12);
        }
        return 0;
}
