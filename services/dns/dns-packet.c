/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns-packet.h"

/* ---- names --------------------------------------------------------------- */

int dns_name_read(const uint8_t *pkt, size_t len, size_t *offset, uint8_t *out) {
        size_t pos = *offset, out_len = 0, end = 0;
        /* RFC 9267 §2: a pointer must point strictly before everything read
         * so far. Each jump lowers the limit, so no chain of pointers can
         * loop, however it is built. */
        size_t limit = pos;
        bool jumped = false;

        for (;;) {
                uint8_t c;

                if (pos >= len)
                        return -EBADMSG;
                c = pkt[pos];
                if (c == 0) {
                        if (out)
                                out[out_len] = 0;
                        out_len++;
                        if (!jumped)
                                end = pos + 1;
                        break;
                }
                if ((c & 0xC0) == 0xC0) {
                        size_t target;

                        if (pos + 1 >= len)
                                return -EBADMSG;
                        target = (size_t) (c & 0x3F) << 8 | pkt[pos + 1];
                        if (target >= limit || target < DNS_HEADER_SIZE)
                                return -EBADMSG;
                        if (!jumped)
                                end = pos + 2;
                        jumped = true;
                        limit = target;
                        pos = target;
                        continue;
                }
                /* 0x40 and 0x80 label types are extended/obsolete (RFC 6891 §5). */
                if (c & 0xC0)
                        return -EBADMSG;
                if (pos + 1 + c > len)
                        return -EBADMSG;
                /* Room for this label plus the terminating root label. */
                if (out_len + 1 + c + 1 > DNS_NAME_MAX)
                        return -EBADMSG;
                if (out)
                        memcpy(out + out_len, pkt + pos, 1 + (size_t) c);
                out_len += 1 + (size_t) c;
                pos += 1 + (size_t) c;
        }
        *offset = end;
        return (int) out_len;
}

void dns_name_lower(uint8_t *name, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (name[i] >= 'A' && name[i] <= 'Z')
                        name[i] |= 0x20;
}

/* Label length octets are < 64 and so never in 'A'..'Z'; comparing the
 * whole wire form case-insensitively is therefore label aligned. */
static bool bytes_equal_nocase(const uint8_t *a, const uint8_t *b, size_t n) {
        for (size_t i = 0; i < n; i++) {
                uint8_t x = a[i], y = b[i];
                if (x >= 'A' && x <= 'Z')
                        x |= 0x20;
                if (y >= 'A' && y <= 'Z')
                        y |= 0x20;
                if (x != y)
                        return false;
        }
        return true;
}

bool dns_name_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
        return a_len == b_len && bytes_equal_nocase(a, b, a_len);
}

bool dns_name_in_zone(const uint8_t *name, size_t name_len, const uint8_t *zone, size_t zone_len) {
        size_t pos = 0;

        if (zone_len > name_len)
                return false;
        /* Walk label boundaries until the rest is as long as the zone. */
        while (name_len - pos > zone_len) {
                if (name[pos] == 0)
                        return false;
                pos += 1 + (size_t) name[pos];
        }
        return name_len - pos == zone_len && bytes_equal_nocase(name + pos, zone, zone_len);
}

int dns_name_from_string(const char *s, uint8_t out[static DNS_NAME_MAX], size_t *ret_len) {
        size_t len = 0;

        if (!s || !*s)
                return -EINVAL;
        if (strcmp(s, ".") == 0) {
                out[0] = 0;
                *ret_len = 1;
                return 0;
        }
        while (*s) {
                size_t label_start = len;
                size_t n = 0;

                if (len + 1 >= DNS_NAME_MAX)
                        return -EINVAL;
                len++; /* length octet, filled in below */
                while (*s && *s != '.') {
                        unsigned c = (unsigned char) *s++;
                        if (c == '\\') {
                                if (isdigit((unsigned char) s[0]) && isdigit((unsigned char) s[1]) &&
                                    isdigit((unsigned char) s[2])) {
                                        c = (unsigned) (s[0] - '0') * 100 + (unsigned) (s[1] - '0') * 10 +
                                            (unsigned) (s[2] - '0');
                                        if (c > 255)
                                                return -EINVAL;
                                        s += 3;
                                } else if (*s)
                                        c = (unsigned char) *s++;
                                else
                                        return -EINVAL;
                        }
                        if (n >= DNS_LABEL_MAX || len + 1 >= DNS_NAME_MAX)
                                return -EINVAL;
                        out[len++] = (uint8_t) c;
                        n++;
                }
                if (n == 0)
                        return -EINVAL; /* empty label: "a..b" or a leading dot */
                out[label_start] = (uint8_t) n;
                if (*s == '.') {
                        s++;
                        if (!*s)
                                break; /* trailing dot */
                }
        }
        if (len + 1 > DNS_NAME_MAX)
                return -EINVAL;
        out[len++] = 0;
        *ret_len = len;
        return 0;
}

void dns_name_to_string(const uint8_t *name, char *buf) {
        char *p = buf;
        size_t pos = 0;

        if (name[0] == 0) {
                strcpy(buf, ".");
                return;
        }
        while (name[pos] != 0 && pos < DNS_NAME_MAX) {
                uint8_t n = name[pos++];
                if (p != buf)
                        *p++ = '.';
                for (uint8_t i = 0; i < n; i++) {
                        uint8_t c = name[pos++];
                        if (c == '.' || c == '\\')
                                p += sprintf(p, "\\%c", c);
                        else if (c <= ' ' || c >= 0x7f)
                                p += sprintf(p, "\\%03u", c);
                        else
                                *p++ = (char) c;
                }
        }
        *p = 0;
}

/* ---- types --------------------------------------------------------------- */

static const struct {
        uint16_t type;
        const char *name;
} type_names[] = {
        { DNS_TYPE_A, "A" },       { DNS_TYPE_NS, "NS" },   { DNS_TYPE_CNAME, "CNAME" }, { DNS_TYPE_SOA, "SOA" },
        { DNS_TYPE_PTR, "PTR" },   { DNS_TYPE_MX, "MX" },   { DNS_TYPE_TXT, "TXT" },     { DNS_TYPE_AAAA, "AAAA" },
        { DNS_TYPE_SRV, "SRV" },   { DNS_TYPE_OPT, "OPT" }, { 43, "DS" },               { 46, "RRSIG" },
        { 47, "NSEC" },            { 48, "DNSKEY" },        { 50, "NSEC3" },            { 64, "SVCB" },
        { 65, "HTTPS" },           { 257, "CAA" },          { DNS_TYPE_ANY, "ANY" },
};

const char *dns_type_to_string(uint16_t type) {
        for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
                if (type_names[i].type == type)
                        return type_names[i].name;
        return NULL;
}

int dns_type_from_string(const char *s) {
        unsigned long v;
        char *end;

        if (!s || !*s)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
                if (strcasecmp(type_names[i].name, s) == 0)
                        return type_names[i].type;
        /* RFC 3597 §5: TYPEnnn */
        if (strncasecmp(s, "TYPE", 4) != 0 || !isdigit((unsigned char) s[4]))
                return -EINVAL;
        errno = 0;
        v = strtoul(s + 4, &end, 10);
        if (errno != 0 || *end || v > 65535)
                return -EINVAL;
        return (int) v;
}

const char *dns_rcode_to_string(int rcode) {
        static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED" };
        if (rcode >= 0 && (size_t) rcode < sizeof(names) / sizeof(names[0]))
                return names[rcode];
        if (rcode == 16)
                return "BADVERS";
        return "UNKNOWN";
}

/* ---- queries ------------------------------------------------------------- */

/* Reads one RR header after its owner name; *pos is at the owner. */
static int rr_read(const uint8_t *pkt, size_t len, size_t *pos, DnsRR *rr, uint8_t *owner_out, int *owner_len) {
        size_t p = *pos;
        int r;

        rr->start = (uint16_t) p;
        r = dns_name_read(pkt, len, &p, owner_out);
        if (r < 0)
                return r;
        if (owner_len)
                *owner_len = r;
        if (len - p < 10)
                return -EBADMSG;
        rr->type = dns_get_u16(pkt + p);
        rr->class = dns_get_u16(pkt + p + 2);
        rr->ttl_offset = (uint16_t) (p + 4);
        rr->ttl = dns_get_u32(pkt + p + 4);
        rr->rdlength = dns_get_u16(pkt + p + 8);
        p += 10;
        if (len - p < rr->rdlength)
                return -EBADMSG;
        rr->rdata_offset = (uint16_t) p;
        p += rr->rdlength;
        rr->end = (uint16_t) p;
        *pos = p;
        return 0;
}

int dns_query_parse(const uint8_t *pkt, size_t len, DnsQuery *q) {
        size_t pos = DNS_HEADER_SIZE, out = 0;
        uint16_t qd, an, ns, ar;

        if (len < DNS_HEADER_SIZE || len > DNS_PACKET_MAX)
                return -EBADMSG;
        q->id = dns_get_u16(pkt);
        q->flags = dns_get_u16(pkt + 2);
        q->edns = false;
        q->do_bit = false;
        q->edns_version = 0;
        q->udp_size = DNS_UDP_PAYLOAD_DEFAULT;
        if (q->flags & DNS_FLAG_QR)
                return -EPROTO;
        if (q->flags & DNS_FLAG_OPCODE_MASK)
                return -EOPNOTSUPP;
        qd = dns_get_u16(pkt + 4);
        an = dns_get_u16(pkt + 6);
        ns = dns_get_u16(pkt + 8);
        ar = dns_get_u16(pkt + 10);
        if (qd != 1 || an != 0 || ns != 0)
                return -EBADMSG;

        /* The question name comes first, so it cannot be compressed (a pointer
         * could only point into the header): a plain label walk that lower-cases
         * as it copies. */
        for (;;) {
                uint8_t c;
                if (pos >= len)
                        return -EBADMSG;
                c = pkt[pos];
                if (c == 0) {
                        q->qname[out++] = 0;
                        pos++;
                        break;
                }
                if (c > DNS_LABEL_MAX || pos + 1 + c > len || out + 1 + c + 1 > DNS_NAME_MAX)
                        return -EBADMSG;
                q->qname[out++] = c;
                pos++;
                for (uint8_t i = 0; i < c; i++) {
                        uint8_t ch = pkt[pos++];
                        q->qname[out++] = (ch >= 'A' && ch <= 'Z') ? (ch | 0x20) : ch;
                }
        }
        q->qname_len = (uint16_t) out;
        if (len - pos < 4)
                return -EBADMSG;
        q->qtype = dns_get_u16(pkt + pos);
        q->qclass = dns_get_u16(pkt + pos + 2);
        pos += 4;
        q->question_end = (uint16_t) pos;

        for (uint16_t i = 0; i < ar; i++) {
                DnsRR rr;
                int owner_len, r;

                r = rr_read(pkt, len, &pos, &rr, NULL, &owner_len);
                if (r < 0)
                        return r;
                if (rr.type != DNS_TYPE_OPT)
                        continue;
                /* RFC 6891 §6.1.1: one OPT, owned by the root. */
                if (q->edns || owner_len != 1)
                        return -EBADMSG;
                q->edns = true;
                q->udp_size = rr.class < DNS_UDP_PAYLOAD_DEFAULT ? DNS_UDP_PAYLOAD_DEFAULT : rr.class;
                q->edns_version = (uint8_t) (rr.ttl >> 16);
                q->do_bit = rr.ttl & DNS_EDNS_FLAG_DO;
        }
        return 0;
}

/* ---- whole messages ------------------------------------------------------ */

/* Checks that exactly one (possibly compressed) name fills rdata from *p,
 * leaving `tail` bytes after it. */
static int rdata_name(const uint8_t *pkt, size_t len, const DnsRR *rr, size_t *p, uint8_t *out) {
        int r;

        if (*p >= rr->end)
                return -EBADMSG;
        r = dns_name_read(pkt, rr->end, p, out);
        (void) len;
        return r;
}

static int rr_validate_rdata(const uint8_t *pkt, size_t len, const DnsRR *rr) {
        size_t p = rr->rdata_offset;
        int r;

        switch (rr->type) {
        case DNS_TYPE_A:
                return rr->rdlength == 4 ? 0 : -EBADMSG;
        case DNS_TYPE_AAAA:
                return rr->rdlength == 16 ? 0 : -EBADMSG;
        case DNS_TYPE_NS:
        case DNS_TYPE_CNAME:
        case DNS_TYPE_PTR:
                r = rdata_name(pkt, len, rr, &p, NULL);
                break;
        case DNS_TYPE_MX:
                if (rr->rdlength < 3)
                        return -EBADMSG;
                p += 2;
                r = rdata_name(pkt, len, rr, &p, NULL);
                break;
        case DNS_TYPE_SRV:
                if (rr->rdlength < 7)
                        return -EBADMSG;
                p += 6;
                r = rdata_name(pkt, len, rr, &p, NULL);
                break;
        case DNS_TYPE_SOA:
                r = rdata_name(pkt, len, rr, &p, NULL);
                if (r < 0)
                        return r;
                r = rdata_name(pkt, len, rr, &p, NULL);
                if (r < 0)
                        return r;
                p += 20;
                break;
        case DNS_TYPE_TXT:
                while (p < rr->end)
                        p += 1 + (size_t) pkt[p];
                r = 0;
                break;
        default:
                return 0;
        }
        if (r < 0)
                return r;
        return p == rr->end ? 0 : -EBADMSG;
}

int dns_message_parse(const uint8_t *pkt, size_t len, DnsMessage *m) {
        size_t pos = DNS_HEADER_SIZE, total;
        int r;

        memset(m, 0, sizeof(*m));
        m->opt_index = -1;
        m->soa_index = -1;
        m->udp_size = DNS_UDP_PAYLOAD_DEFAULT;
        if (len < DNS_HEADER_SIZE || len > DNS_PACKET_MAX)
                return -EBADMSG;
        m->id = dns_get_u16(pkt);
        m->flags = dns_get_u16(pkt + 2);
        m->qdcount = dns_get_u16(pkt + 4);
        for (int i = 0; i < 3; i++)
                m->counts[i] = dns_get_u16(pkt + 6 + 2 * i);
        if (m->qdcount > 1)
                return -EBADMSG;
        if (m->qdcount == 1) {
                r = dns_name_read(pkt, len, &pos, m->qname);
                if (r < 0)
                        return r;
                m->qname_len = (uint16_t) r;
                if (len - pos < 4)
                        return -EBADMSG;
                m->qtype = dns_get_u16(pkt + pos);
                m->qclass = dns_get_u16(pkt + pos + 2);
                pos += 4;
        }
        m->question_end = (uint16_t) pos;

        total = (size_t) m->counts[0] + m->counts[1] + m->counts[2];
        /* Every RR takes at least 11 bytes: refuse counts the packet cannot hold
         * before allocating anything for them. */
        if (total > (len - pos) / 11)
                return -EBADMSG;
        if (total > 0) {
                m->rrs = calloc(total, sizeof(DnsRR));
                if (!m->rrs)
                        return -ENOMEM;
        }
        for (int s = 0; s < 3; s++)
                for (uint16_t i = 0; i < m->counts[s]; i++) {
                        DnsRR *rr = &m->rrs[m->n_rrs];
                        int owner_len;

                        r = rr_read(pkt, len, &pos, rr, NULL, &owner_len);
                        if (r < 0)
                                goto fail;
                        rr->section = (uint8_t) s;
                        r = rr_validate_rdata(pkt, len, rr);
                        if (r < 0)
                                goto fail;
                        if (rr->type == DNS_TYPE_OPT) {
                                r = -EBADMSG;
                                if (s != DNS_SECTION_ADDITIONAL || m->opt_index >= 0 || owner_len != 1)
                                        goto fail;
                                m->opt_index = (int) m->n_rrs;
                                m->udp_size = rr->class < DNS_UDP_PAYLOAD_DEFAULT ? DNS_UDP_PAYLOAD_DEFAULT
                                                                                  : rr->class;
                                m->do_bit = rr->ttl & DNS_EDNS_FLAG_DO;
                        }
                        if (rr->type == DNS_TYPE_SOA && s == DNS_SECTION_AUTHORITY && m->soa_index < 0) {
                                m->soa_index = (int) m->n_rrs;
                                m->soa_minimum = dns_get_u32(pkt + rr->end - 4);
                        }
                        m->n_rrs++;
                }
        return 0;
fail:
        dns_message_done(m);
        return r;
}

void dns_message_done(DnsMessage *m) {
        free(m->rrs);
        m->rrs = NULL;
        m->n_rrs = 0;
}

char *dns_rdata_to_string(const uint8_t *pkt, size_t len, const DnsRR *rr) {
        const uint8_t *d = pkt + rr->rdata_offset;
        uint8_t name[DNS_NAME_MAX], name2[DNS_NAME_MAX];
        char s1[DNS_NAME_STRING_MAX], s2[DNS_NAME_STRING_MAX];
        size_t p = rr->rdata_offset;
        char *ret = NULL;

        if ((size_t) rr->rdata_offset + rr->rdlength > len)
                return NULL;
        switch (rr->type) {
        case DNS_TYPE_A:
        case DNS_TYPE_AAAA: {
                char buf[INET6_ADDRSTRLEN];
                if (rr->rdlength != (rr->type == DNS_TYPE_A ? 4 : 16) ||
                    !inet_ntop(rr->type == DNS_TYPE_A ? AF_INET : AF_INET6, d, buf, sizeof(buf)))
                        return NULL;
                return strdup(buf);
        }
        case DNS_TYPE_NS:
        case DNS_TYPE_CNAME:
        case DNS_TYPE_PTR:
                if (rdata_name(pkt, len, rr, &p, name) < 0)
                        return NULL;
                dns_name_to_string(name, s1);
                return strdup(s1);
        case DNS_TYPE_MX:
                if (rr->rdlength < 3)
                        return NULL;
                p += 2;
                if (rdata_name(pkt, len, rr, &p, name) < 0)
                        return NULL;
                dns_name_to_string(name, s1);
                return asprintf(&ret, "%u %s", dns_get_u16(d), s1) < 0 ? NULL : ret;
        case DNS_TYPE_SRV:
                if (rr->rdlength < 7)
                        return NULL;
                p += 6;
                if (rdata_name(pkt, len, rr, &p, name) < 0)
                        return NULL;
                dns_name_to_string(name, s1);
                return asprintf(&ret, "%u %u %u %s", dns_get_u16(d), dns_get_u16(d + 2), dns_get_u16(d + 4), s1) < 0
                               ? NULL
                               : ret;
        case DNS_TYPE_SOA:
                if (rdata_name(pkt, len, rr, &p, name) < 0 || rdata_name(pkt, len, rr, &p, name2) < 0 ||
                    p + 20 != rr->end)
                        return NULL;
                dns_name_to_string(name, s1);
                dns_name_to_string(name2, s2);
                return asprintf(&ret, "%s %s %u %u %u %u %u", s1, s2, dns_get_u32(pkt + p), dns_get_u32(pkt + p + 4),
                                dns_get_u32(pkt + p + 8), dns_get_u32(pkt + p + 12), dns_get_u32(pkt + p + 16)) < 0
                               ? NULL
                               : ret;
        case DNS_TYPE_TXT: {
                /* Each character-string quoted, with " and \ escaped. */
                char *out = malloc((size_t) rr->rdlength * 4 + 3), *o = out;
                size_t i = 0;
                if (!out)
                        return NULL;
                while (i < rr->rdlength) {
                        uint8_t n = d[i++];
                        if (i + n > rr->rdlength)
                                return free(out), NULL;
                        if (o != out)
                                *o++ = ' ';
                        *o++ = '"';
                        for (uint8_t k = 0; k < n; k++, i++) {
                                uint8_t c = d[i];
                                if (c == '"' || c == '\\')
                                        *o++ = '\\', *o++ = (char) c;
                                else if (c < ' ' || c >= 0x7f)
                                        o += sprintf(o, "\\%03u", c);
                                else
                                        *o++ = (char) c;
                        }
                        *o++ = '"';
                }
                *o = 0;
                return out;
        }
        default: {
                /* RFC 3597 §5 generic form. */
                char *out = malloc(16 + (size_t) rr->rdlength * 2), *o = out;
                if (!out)
                        return NULL;
                o += sprintf(o, "\\# %u%s", rr->rdlength, rr->rdlength ? " " : "");
                for (uint16_t i = 0; i < rr->rdlength; i++)
                        o += sprintf(o, "%02x", d[i]);
                return out;
        }
        }
}

/* ---- writing ------------------------------------------------------------- */

void dns_writer_init(DnsWriter *w, uint8_t *buf, size_t size) {
        *w = (DnsWriter){ .buf = buf, .size = size };
}

void dns_write_bytes(DnsWriter *w, const void *p, size_t n) {
        if (n == 0)
                return; /* p may be NULL then (empty rdata), and memcpy wants it not to be */
        if (w->overflow || w->size - w->len < n) {
                w->overflow = true;
                return;
        }
        memcpy(w->buf + w->len, p, n);
        w->len += n;
}

void dns_write_u16(DnsWriter *w, uint16_t v) {
        uint8_t b[2];
        dns_put_u16(b, v);
        dns_write_bytes(w, b, 2);
}

void dns_write_u32(DnsWriter *w, uint32_t v) {
        uint8_t b[4];
        dns_put_u32(b, v);
        dns_write_bytes(w, b, 4);
}

void dns_write_header(DnsWriter *w, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar) {
        dns_write_u16(w, id);
        dns_write_u16(w, flags);
        dns_write_u16(w, qd);
        dns_write_u16(w, an);
        dns_write_u16(w, ns);
        dns_write_u16(w, ar);
}

void dns_write_question(DnsWriter *w, const uint8_t *name, size_t name_len, uint16_t type, uint16_t class) {
        dns_write_bytes(w, name, name_len);
        dns_write_u16(w, type);
        dns_write_u16(w, class);
}

void dns_write_rr(DnsWriter *w, const uint8_t *owner, size_t owner_len, uint16_t type, uint16_t class,
                  uint32_t ttl, const void *rdata, size_t rdlength) {
        if (owner_len == 0)
                dns_write_u16(w, 0xC000 | DNS_HEADER_SIZE);
        else
                dns_write_bytes(w, owner, owner_len);
        dns_write_u16(w, type);
        dns_write_u16(w, class);
        dns_write_u32(w, ttl);
        dns_write_u16(w, (uint16_t) rdlength);
        dns_write_bytes(w, rdata, rdlength);
}

static void write_opt_full(DnsWriter *w, uint16_t udp_size, bool do_bit, uint8_t ext_rcode) {
        static const uint8_t root = 0;
        dns_write_rr(w, &root, 1, DNS_TYPE_OPT, udp_size,
                     (uint32_t) ext_rcode << 24 | (do_bit ? DNS_EDNS_FLAG_DO : 0), NULL, 0);
}

void dns_write_opt(DnsWriter *w, uint16_t udp_size, bool do_bit) {
        write_opt_full(w, udp_size, do_bit, 0);
}

size_t dns_reply_error(const DnsQuery *q, int rcode, bool question, uint8_t *buf, size_t size) {
        DnsWriter w;
        uint16_t flags = DNS_FLAG_QR | DNS_FLAG_RA | (q->flags & (DNS_FLAG_OPCODE_MASK | DNS_FLAG_RD | DNS_FLAG_CD)) |
                         (uint16_t) (rcode & 0xF);

        dns_writer_init(&w, buf, size);
        dns_write_header(&w, q->id, flags, question ? 1 : 0, 0, 0, q->edns ? 1 : 0);
        if (question)
                dns_write_question(&w, q->qname, q->qname_len, q->qtype, q->qclass);
        /* RFC 6891 §7: extended RCODEs (BADVERS = 16) carry their upper bits in OPT. */
        if (q->edns)
                write_opt_full(&w, DNS_EDNS_BUFFER, q->do_bit, (uint8_t) (rcode >> 4));
        return w.overflow ? 0 : w.len;
}

int dns_reply_truncate(uint8_t *pkt, size_t len, size_t max) {
        uint8_t opt[DNS_OPT_RR_SIZE + 512];
        size_t opt_len = 0, keep;
        uint16_t kept[3] = {};
        bool tc = false;
        DnsMessage m;
        int r;

        if (len <= max)
                return (int) len;
        r = dns_message_parse(pkt, len, &m);
        if (r < 0)
                return r;
        if (m.opt_index >= 0) {
                const DnsRR *o = &m.rrs[m.opt_index];
                opt_len = (size_t) o->end - o->start;
                if (opt_len > sizeof(opt)) {
                        /* Options we do not need to echo: keep a bare OPT. */
                        memcpy(opt, pkt + o->start, DNS_OPT_RR_SIZE);
                        dns_put_u16(opt + 9, 0);
                        opt_len = DNS_OPT_RR_SIZE;
                } else
                        memcpy(opt, pkt + o->start, opt_len);
        }
        keep = m.question_end;
        if (keep + opt_len > max) {
                dns_message_done(&m);
                return -EBADMSG;
        }
        for (size_t i = 0; i < m.n_rrs;) {
                size_t j = i, end;
                uint8_t owner_i[DNS_NAME_MAX];
                size_t p = m.rrs[i].start;
                int li;

                if ((int) i == m.opt_index) {
                        i++;
                        continue;
                }
                li = dns_name_read(pkt, len, &p, owner_i);
                /* Extend over the RRset: same section, owner, type and class. */
                for (j = i + 1; j < m.n_rrs && (int) j != m.opt_index; j++) {
                        uint8_t owner_j[DNS_NAME_MAX];
                        size_t q = m.rrs[j].start;
                        int lj = dns_name_read(pkt, len, &q, owner_j);
                        if (m.rrs[j].section != m.rrs[i].section || m.rrs[j].type != m.rrs[i].type ||
                            m.rrs[j].class != m.rrs[i].class || li < 0 || lj < 0 ||
                            !dns_name_equal(owner_i, (size_t) li, owner_j, (size_t) lj))
                                break;
                }
                end = m.rrs[j - 1].end;
                /* Records are contiguous up to here only when nothing was skipped. */
                if (m.rrs[i].start != keep || end + opt_len > max) {
                        /* RFC 2181 §9: missing additional data is not truncation. */
                        if (m.rrs[i].section != DNS_SECTION_ADDITIONAL)
                                tc = true;
                        break;
                }
                kept[m.rrs[i].section] += (uint16_t) (j - i);
                keep = end;
                i = j;
        }
        memmove(pkt + keep, opt, opt_len);
        for (int s = 0; s < 3; s++)
                dns_put_u16(pkt + 6 + 2 * s, (uint16_t) (kept[s] + (s == 2 && opt_len ? 1 : 0)));
        if (tc)
                dns_put_u16(pkt + 2, dns_get_u16(pkt + 2) | DNS_FLAG_TC);
        dns_message_done(&m);
        return (int) (keep + opt_len);
}

int dns_message_strip_opt(uint8_t *pkt, size_t len, const DnsMessage *m) {
        const DnsRR *o;

        if (m->opt_index < 0)
                return (int) len;
        if ((size_t) m->opt_index != m->n_rrs - 1)
                return -EBADMSG;
        o = &m->rrs[m->opt_index];
        dns_put_u16(pkt + 10, (uint16_t) (m->counts[2] - 1));
        return o->start;
}
