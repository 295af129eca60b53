/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dns-packet.h"
#include "macro.h"

/* A query for "www.Example.com IN A" with an EDNS0 OPT record asking for
 * DNSSEC records (DO) and a 4096-byte UDP payload. */
static const uint8_t query_www_example_a_edns[] = {
        0x12, 0x34,             /* ID */
        0x01, 0x00,             /* flags: RD */
        0x00, 0x01,             /* QDCOUNT 1 */
        0x00, 0x00,             /* ANCOUNT 0 */
        0x00, 0x00,             /* NSCOUNT 0 */
        0x00, 0x01,             /* ARCOUNT 1 (OPT) */
        3, 'w', 'w', 'w', 7, 'E', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, /* QNAME */
        0x00, 0x01,             /* QTYPE A */
        0x00, 0x01,             /* QCLASS IN */
        0x00,                   /* OPT owner: root */
        0x00, 0x29,             /* TYPE OPT (41) */
        0x10, 0x00,             /* CLASS = UDP payload 4096 */
        0x00,                   /* extended RCODE */
        0x00,                   /* EDNS version 0 */
        0x80, 0x00,             /* flags: DO */
        0x00, 0x00,             /* RDLENGTH 0 */
};

static void test_query_parse_lowercases_name_and_reads_edns(void **state) {
        static const uint8_t want[] = { 3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0 };
        DnsQuery q;

        assert_int_equal(dns_query_parse(query_www_example_a_edns, sizeof(query_www_example_a_edns), &q), 0);
        assert_int_equal(q.id, 0x1234);
        assert_int_equal(q.qname_len, sizeof(want));
        assert_memory_equal(q.qname, want, sizeof(want));
        assert_int_equal(q.qtype, DNS_TYPE_A);
        assert_int_equal(q.qclass, DNS_CLASS_IN);
        assert_int_equal(q.question_end, 12 + 17 + 4);
        assert_true(q.edns);
        assert_true(q.do_bit);
        assert_int_equal(q.udp_size, 4096);
}

static void test_query_parse_without_edns_gets_512(void **state) {
        uint8_t p[sizeof(query_www_example_a_edns)];
        DnsQuery q;

        memcpy(p, query_www_example_a_edns, sizeof(p));
        p[11] = 0; /* ARCOUNT 0: the OPT bytes become trailing garbage, ignored */
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), 0);
        assert_false(q.edns);
        assert_int_equal(q.udp_size, 512);
}

static void test_query_parse_rejects_truncated_and_responses(void **state) {
        uint8_t p[sizeof(query_www_example_a_edns)];
        DnsQuery q;

        /* Every prefix that cuts the header, name, type/class or OPT is malformed. */
        for (size_t n = 0; n < sizeof(query_www_example_a_edns); n++)
                assert_int_equal(dns_query_parse(query_www_example_a_edns, n, &q), -EBADMSG);
        memcpy(p, query_www_example_a_edns, sizeof(p));
        p[2] |= 0x80; /* QR: a response, never answered */
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), -EPROTO);
        memcpy(p, query_www_example_a_edns, sizeof(p));
        p[2] |= 0x28; /* opcode 5 (UPDATE) */
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), -EOPNOTSUPP);
        memcpy(p, query_www_example_a_edns, sizeof(p));
        p[5] = 2; /* QDCOUNT 2 */
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), -EBADMSG);
}

static void test_query_parse_rejects_two_opt_records(void **state) {
        uint8_t p[sizeof(query_www_example_a_edns) + 11];
        DnsQuery q;

        memcpy(p, query_www_example_a_edns, sizeof(query_www_example_a_edns));
        memcpy(p + sizeof(query_www_example_a_edns), query_www_example_a_edns + 33, 11); /* second OPT */
        p[11] = 2;
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), -EBADMSG);
}

static void test_query_parse_rejects_oversize_label(void **state) {
        uint8_t p[12 + 1 + 64 + 1 + 4] = {
                0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, /* header, QDCOUNT 1 */
                64,                                   /* label length 64 > 63 */
        };
        DnsQuery q;

        memset(p + 13, 'a', 64);
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), -EBADMSG);
        p[12] = 63; /* the same with a legal 63-byte label and a 1-byte tail label */
        p[12 + 1 + 63] = 0;
        assert_int_equal(dns_query_parse(p, 12 + 1 + 63 + 1 + 4, &q), 0);
}

static void test_query_parse_rejects_name_over_255(void **state) {
        /* Five labels of 50 bytes: 5 * 51 + 1 = 256 > 255. */
        uint8_t p[12 + 256 + 4] = { 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
        DnsQuery q;

        for (int i = 0; i < 5; i++) {
                p[12 + i * 51] = 50;
                memset(p + 12 + i * 51 + 1, 'a', 50);
        }
        assert_int_equal(dns_query_parse(p, sizeof(p), &q), -EBADMSG);
}

static void test_name_read_rejects_pointer_loops(void **state) {
        uint8_t self[] = {
                0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, /* header */
                0xC0, 12,                                 /* pointer to itself */
        };
        uint8_t pair[] = {
                0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, /* header */
                1, 'a', 0xC0, 16,                          /* "a" then pointer forward to 16 */
                0xC0, 12,                                  /* pointer back to 12: a two-hop loop */
        };
        uint8_t into_header[] = {
                0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, /* header */
                0xC0, 2,                                  /* pointer into the header */
        };
        size_t off = 12;

        assert_int_equal(dns_name_read(self, sizeof(self), &off, NULL), -EBADMSG);
        off = 12;
        assert_int_equal(dns_name_read(pair, sizeof(pair), &off, NULL), -EBADMSG);
        off = 16;
        assert_int_equal(dns_name_read(pair, sizeof(pair), &off, NULL), -EBADMSG);
        off = 12;
        assert_int_equal(dns_name_read(into_header, sizeof(into_header), &off, NULL), -EBADMSG);
}

static void test_name_read_follows_backward_pointer(void **state) {
        uint8_t p[] = {
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* header */
                3, 'c', 'o', 'm', 0,                /* 12: "com" */
                3, 'f', 'o', 'o', 0xC0, 12,         /* 17: "foo" + pointer to "com" */
        };
        uint8_t out[DNS_NAME_MAX];
        size_t off = 17;

        assert_int_equal(dns_name_read(p, sizeof(p), &off, out), 9);
        assert_int_equal(off, sizeof(p));
        assert_memory_equal(out, "\3foo\3com", 9);
}

static void test_name_string_round_trip(void **state) {
        uint8_t w[DNS_NAME_MAX];
        char s[DNS_NAME_STRING_MAX];
        size_t n;
        char long_label[80];

        assert_int_equal(dns_name_from_string("www.example.com.", w, &n), 0);
        assert_int_equal(n, 17);
        dns_name_to_string(w, s);
        assert_string_equal(s, "www.example.com");
        assert_int_equal(dns_name_from_string("a\\.b.c", w, &n), 0);
        assert_int_equal(w[0], 3);
        dns_name_to_string(w, s);
        assert_string_equal(s, "a\\.b.c");
        assert_int_equal(dns_name_from_string(".", w, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(dns_name_from_string("a..b", w, &n), -EINVAL);
        assert_int_equal(dns_name_from_string("", w, &n), -EINVAL);
        memset(long_label, 'x', 64);
        long_label[64] = 0;
        assert_int_equal(dns_name_from_string(long_label, w, &n), -EINVAL);
}

static void test_name_in_zone_is_label_aligned(void **state) {
        uint8_t name[DNS_NAME_MAX], zone[DNS_NAME_MAX], other[DNS_NAME_MAX];
        size_t nl, zl, ol;

        assert_int_equal(dns_name_from_string("vm1.hostmesh.internal", name, &nl), 0);
        assert_int_equal(dns_name_from_string("Hostmesh.Internal", zone, &zl), 0);
        assert_int_equal(dns_name_from_string("xhostmesh.internal", other, &ol), 0);
        assert_true(dns_name_in_zone(name, nl, zone, zl));
        assert_true(dns_name_in_zone(zone, zl, zone, zl));
        assert_false(dns_name_in_zone(other, ol, zone, zl));
}

static void test_type_names(void **state) {
        assert_int_equal(dns_type_from_string("aaaa"), DNS_TYPE_AAAA);
        assert_int_equal(dns_type_from_string("TYPE65"), 65);
        assert_int_equal(dns_type_from_string("TYPE70000"), -EINVAL);
        assert_int_equal(dns_type_from_string("BOGUS"), -EINVAL);
        assert_string_equal(dns_type_to_string(DNS_TYPE_MX), "MX");
}

/* A response to "a.test A" with two answer RRsets of n A records each
 * ("a.test" then "b.test"), owner names compressed, and an OPT record. */
static size_t build_two_rrsets(uint8_t *buf, size_t size, int n) {
        static const uint8_t qname[] = { 1, 'a', 4, 't', 'e', 's', 't', 0 };
        static const uint8_t bname[] = { 1, 'b', 0xC0, 14 }; /* "b" + pointer to "test" at 14 */
        DnsWriter w;

        dns_writer_init(&w, buf, size);
        dns_write_header(&w, 7, DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA, 1, (uint16_t) (2 * n), 0, 1);
        dns_write_question(&w, qname, sizeof(qname), DNS_TYPE_A, DNS_CLASS_IN);
        for (int i = 0; i < n; i++) {
                uint8_t a[4] = { 10, 0, 0, (uint8_t) i };
                dns_write_rr(&w, NULL, 0, DNS_TYPE_A, DNS_CLASS_IN, 300, a, 4); /* owner: pointer to 12 */
        }
        for (int i = 0; i < n; i++) {
                uint8_t a[4] = { 10, 0, 1, (uint8_t) i };
                dns_write_rr(&w, bname, sizeof(bname), DNS_TYPE_A, DNS_CLASS_IN, 300, a, 4);
        }
        dns_write_opt(&w, 1232, false);
        assert_false(w.overflow);
        return w.len;
}

static void test_message_parse_reads_sections(void **state) {
        uint8_t buf[2048];
        size_t len = build_two_rrsets(buf, sizeof(buf), 3);
        DnsMessage m;
        _cleanup_free_ char *s = NULL;

        assert_int_equal(dns_message_parse(buf, len, &m), 0);
        assert_int_equal(m.n_rrs, 7);
        assert_int_equal(m.opt_index, 6);
        assert_int_equal(m.qtype, DNS_TYPE_A);
        assert_int_equal(m.rrs[0].ttl, 300);
        s = dns_rdata_to_string(buf, len, &m.rrs[4]);
        assert_string_equal(s, "10.0.1.1");
        assert_int_equal(dns_message_strip_opt(buf, len, &m), len - DNS_OPT_RR_SIZE);
        assert_int_equal(dns_get_u16(buf + 10), 0);
        dns_message_done(&m);
}

static void test_message_parse_rejects_counts_beyond_packet(void **state) {
        uint8_t buf[2048];
        size_t len = build_two_rrsets(buf, sizeof(buf), 1);
        DnsMessage m;

        dns_put_u16(buf + 6, 0xFFFF); /* ANCOUNT 65535 in a 60-byte packet */
        assert_int_equal(dns_message_parse(buf, len, &m), -EBADMSG);
}

static void test_truncate_keeps_whole_rrsets_and_opt(void **state) {
        uint8_t buf[4096];
        size_t len = build_two_rrsets(buf, sizeof(buf), 30);
        DnsMessage m;
        int r;

        /* 12 + 12 (question) + 30 * 16 ("a.test", owner a 2-byte pointer)
         * + 30 * 18 ("b.test", owner "b" + pointer) + 11 (OPT) = 1055 bytes,
         * so 600 bytes hold the first RRset only. */
        assert_int_equal(len, 1055);
        r = dns_reply_truncate(buf, len, 600);
        assert_int_equal(r, 12 + 12 + 480 + 11);
        assert_true(dns_get_u16(buf + 2) & DNS_FLAG_TC);
        assert_int_equal(dns_get_u16(buf + 6), 30);   /* ANCOUNT: the whole first RRset */
        assert_int_equal(dns_get_u16(buf + 10), 1);   /* ARCOUNT: OPT kept */
        assert_int_equal(dns_message_parse(buf, (size_t) r, &m), 0);
        assert_int_equal(m.opt_index, 30);
        dns_message_done(&m);

        /* Below the first RRset: only the question is left. */
        len = build_two_rrsets(buf, sizeof(buf), 30);
        r = dns_reply_truncate(buf, len, 100);
        assert_int_equal(r, 12 + 12 + 11);
        assert_int_equal(dns_get_u16(buf + 6), 0);
        assert_true(dns_get_u16(buf + 2) & DNS_FLAG_TC);

        /* Fits: untouched. */
        len = build_two_rrsets(buf, sizeof(buf), 30);
        assert_int_equal(dns_reply_truncate(buf, len, 1232), (int) len);
        assert_false(dns_get_u16(buf + 2) & DNS_FLAG_TC);
}

static void test_reply_error_echoes_question_and_edns(void **state) {
        uint8_t out[512];
        DnsQuery q;
        size_t n;

        assert_int_equal(dns_query_parse(query_www_example_a_edns, sizeof(query_www_example_a_edns), &q), 0);
        n = dns_reply_error(&q, DNS_RCODE_REFUSED, true, out, sizeof(out));
        assert_int_equal(n, sizeof(query_www_example_a_edns));
        assert_int_equal(dns_get_u16(out), 0x1234);
        assert_int_equal(dns_get_u16(out + 2) & DNS_FLAG_RCODE_MASK, DNS_RCODE_REFUSED);
        assert_true(dns_get_u16(out + 2) & DNS_FLAG_QR);
        assert_int_equal(dns_get_u16(out + 10), 1);
        /* BADVERS (16): low bits 0 in the header, upper bits 1 in OPT. */
        n = dns_reply_error(&q, 16, false, out, sizeof(out));
        assert_int_equal(n, 12 + 11);
        assert_int_equal(dns_get_u16(out + 2) & DNS_FLAG_RCODE_MASK, 0);
        assert_int_equal(out[12 + 5], 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_query_parse_lowercases_name_and_reads_edns),
                cmocka_unit_test(test_query_parse_without_edns_gets_512),
                cmocka_unit_test(test_query_parse_rejects_truncated_and_responses),
                cmocka_unit_test(test_query_parse_rejects_two_opt_records),
                cmocka_unit_test(test_query_parse_rejects_oversize_label),
                cmocka_unit_test(test_query_parse_rejects_name_over_255),
                cmocka_unit_test(test_name_read_rejects_pointer_loops),
                cmocka_unit_test(test_name_read_follows_backward_pointer),
                cmocka_unit_test(test_name_string_round_trip),
                cmocka_unit_test(test_name_in_zone_is_label_aligned),
                cmocka_unit_test(test_type_names),
                cmocka_unit_test(test_message_parse_reads_sections),
                cmocka_unit_test(test_message_parse_rejects_counts_beyond_packet),
                cmocka_unit_test(test_truncate_keeps_whole_rrsets_and_opt),
                cmocka_unit_test(test_reply_error_echoes_question_and_edns),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
