/* SPDX-License-Identifier: MIT */
#pragma once

/* DNS wire format (RFC 1035) with the robustness rules of RFC 9267:
 * every read is bounds checked, compression pointers must point strictly
 * backwards (so they cannot loop), labels are at most 63 octets and names
 * at most 255. EDNS0 (RFC 6891) is understood for the OPT record only.
 *
 * Names are handled in uncompressed wire form ("\3www\7example\3com\0"). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER_SIZE 12
#define DNS_LABEL_MAX 63
#define DNS_NAME_MAX 255
#define DNS_NAME_STRING_MAX 1024         /* worst case with \DDD escapes */
#define DNS_UDP_PAYLOAD_DEFAULT 512      /* RFC 1035 §4.2.1, without EDNS0 */
#define DNS_EDNS_BUFFER 1232             /* DNS flag day 2020 */
#define DNS_PACKET_MAX 65535
#define DNS_OPT_RR_SIZE 11               /* root owner, type, class, ttl, rdlength */

enum {
        DNS_TYPE_A = 1,
        DNS_TYPE_NS = 2,
        DNS_TYPE_CNAME = 5,
        DNS_TYPE_SOA = 6,
        DNS_TYPE_PTR = 12,
        DNS_TYPE_MX = 15,
        DNS_TYPE_TXT = 16,
        DNS_TYPE_AAAA = 28,
        DNS_TYPE_SRV = 33,
        DNS_TYPE_OPT = 41,
        DNS_TYPE_ANY = 255,
};

enum { DNS_CLASS_IN = 1 };

enum {
        DNS_RCODE_NOERROR = 0,
        DNS_RCODE_FORMERR = 1,
        DNS_RCODE_SERVFAIL = 2,
        DNS_RCODE_NXDOMAIN = 3,
        DNS_RCODE_NOTIMP = 4,
        DNS_RCODE_REFUSED = 5,
};

/* Header flag bits (second 16-bit word). */
#define DNS_FLAG_QR 0x8000u
#define DNS_FLAG_OPCODE_MASK 0x7800u
#define DNS_FLAG_AA 0x0400u
#define DNS_FLAG_TC 0x0200u
#define DNS_FLAG_RD 0x0100u
#define DNS_FLAG_RA 0x0080u
#define DNS_FLAG_AD 0x0020u
#define DNS_FLAG_CD 0x0010u
#define DNS_FLAG_RCODE_MASK 0x000fu
#define DNS_EDNS_FLAG_DO 0x8000u

enum { DNS_SECTION_ANSWER, DNS_SECTION_AUTHORITY, DNS_SECTION_ADDITIONAL };

static inline uint16_t dns_get_u16(const uint8_t *p) {
        return (uint16_t) ((uint16_t) p[0] << 8 | p[1]);
}
static inline uint32_t dns_get_u32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}
static inline void dns_put_u16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}
static inline void dns_put_u32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

/* ---- names --------------------------------------------------------------- */

/* Reads the (possibly compressed) name at *offset of pkt[0..len), writes its
 * uncompressed wire form to out (DNS_NAME_MAX bytes, may be NULL to only
 * validate) and advances *offset past the name as it appears in the packet.
 * Returns the wire length, or -EBADMSG. */
int dns_name_read(const uint8_t *pkt, size_t len, size_t *offset, uint8_t *out);
/* ASCII lower-casing of a wire-form name, in place. */
void dns_name_lower(uint8_t *name, size_t len);
bool dns_name_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len); /* case-insensitive */
/* True when `name` is `zone` or below it (case-insensitive, label aligned). */
bool dns_name_in_zone(const uint8_t *name, size_t name_len, const uint8_t *zone, size_t zone_len);
/* "www.Example.com" or "www.example.com." → wire form. -EINVAL on empty
 * labels, bad escapes or oversize labels/names. */
int dns_name_from_string(const char *s, uint8_t out[static DNS_NAME_MAX], size_t *ret_len);
/* Presentation form without the trailing dot ("." for the root); escapes
 * dots, backslashes and non-printables. buf needs DNS_NAME_STRING_MAX. */
void dns_name_to_string(const uint8_t *name, char *buf);

/* ---- types --------------------------------------------------------------- */

const char *dns_type_to_string(uint16_t type);     /* NULL for unknown types */
int dns_type_from_string(const char *s);            /* "A", "aaaa", "TYPE65" → type, or -EINVAL */
const char *dns_rcode_to_string(int rcode);

/* ---- queries (the hot path) --------------------------------------------- */

typedef struct DnsQuery {
        uint16_t id;
        uint16_t flags;
        uint8_t qname[DNS_NAME_MAX];   /* lower-cased wire form */
        uint16_t qname_len;
        uint16_t qtype;
        uint16_t qclass;
        uint16_t question_end;         /* offset just past the question */
        bool edns;                     /* an OPT record was present */
        bool do_bit;
        uint8_t edns_version;
        uint16_t udp_size;             /* payload the client accepts: 512 without EDNS */
} DnsQuery;

/* Parses a client query. Returns 0, -EBADMSG for a malformed packet (the
 * caller answers FORMERR when at least the header was readable, i.e. len
 * >= DNS_HEADER_SIZE), -EPROTO when it is a response (drop it),
 * -EOPNOTSUPP for opcodes other than QUERY (NOTIMP). */
int dns_query_parse(const uint8_t *pkt, size_t len, DnsQuery *ret);

/* ---- whole messages ----------------------------------------------------- */

typedef struct DnsRR {
        uint16_t start;          /* offset of the owner name */
        uint16_t end;            /* offset just past the rdata */
        uint16_t ttl_offset;
        uint16_t rdata_offset;
        uint16_t rdlength;
        uint16_t type;
        uint16_t class;
        uint32_t ttl;
        uint8_t section;
} DnsRR;

typedef struct DnsMessage {
        uint16_t id;
        uint16_t flags;
        uint16_t qdcount;
        uint16_t counts[3];           /* answer, authority, additional as in the header */
        uint8_t qname[DNS_NAME_MAX];  /* as sent, not lower-cased */
        uint16_t qname_len;
        uint16_t qtype;
        uint16_t qclass;
        uint16_t question_end;
        DnsRR *rrs;                   /* every RR of the three sections, in order */
        size_t n_rrs;
        int opt_index;                /* index in rrs of the OPT record, -1 if none */
        bool do_bit;
        uint16_t udp_size;
        int soa_index;                /* first SOA in the authority section, -1 if none */
        uint32_t soa_minimum;
} DnsMessage;

/* Parses and validates a whole message (header, at most one question, all
 * RRs, names inside the rdata of well-known types). Returns 0 or -EBADMSG;
 * on success ret->rrs must be released with dns_message_done(). */
int dns_message_parse(const uint8_t *pkt, size_t len, DnsMessage *ret);
void dns_message_done(DnsMessage *m);

/* Formats the rdata of an RR for people ("10.0.0.1", "mail.example.com",
 * "10 mx.example.com", "\"text\""); unknown types use RFC 3597 "\# n hex".
 * Returns a malloc'ed string, NULL on OOM or malformed rdata. */
char *dns_rdata_to_string(const uint8_t *pkt, size_t len, const DnsRR *rr);

/* ---- writing ------------------------------------------------------------- */

typedef struct DnsWriter {
        uint8_t *buf;
        size_t size;
        size_t len;
        bool overflow;           /* set once anything did not fit; len stops growing */
} DnsWriter;

void dns_writer_init(DnsWriter *w, uint8_t *buf, size_t size);
void dns_write_bytes(DnsWriter *w, const void *p, size_t n);
void dns_write_u16(DnsWriter *w, uint16_t v);
void dns_write_u32(DnsWriter *w, uint32_t v);
void dns_write_header(DnsWriter *w, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar);
void dns_write_question(DnsWriter *w, const uint8_t *name, size_t name_len, uint16_t type, uint16_t class);
/* An RR with an uncompressed owner name, or with owner_len == 0 a pointer
 * to the question name at offset 12. */
void dns_write_rr(DnsWriter *w, const uint8_t *owner, size_t owner_len, uint16_t type, uint16_t class,
                  uint32_t ttl, const void *rdata, size_t rdlength);
void dns_write_opt(DnsWriter *w, uint16_t udp_size, bool do_bit);

/* Builds a header-plus-question reply with `rcode` to the query q (FORMERR,
 * SERVFAIL, REFUSED, NOTIMP...). Returns the length, 0 if it did not fit. */
size_t dns_reply_error(const DnsQuery *q, int rcode, bool question, uint8_t *buf, size_t size);

/* Cuts a reply down to `max` bytes (RFC 2181 §9): keeps the header, the
 * question and as many whole RRsets as fit, sets TC when an answer or
 * authority RRset had to go, and keeps the OPT record (RFC 6891 §7).
 * Works in place; returns the new length or -EBADMSG. */
int dns_reply_truncate(uint8_t *pkt, size_t len, size_t max);

/* Removes the OPT record of a parsed message in place, when it is the last
 * record (where every server puts it). Returns the new length, or -EBADMSG
 * when an OPT record sits elsewhere. */
int dns_message_strip_opt(uint8_t *pkt, size_t len, const DnsMessage *m);
