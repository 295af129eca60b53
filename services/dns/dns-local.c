/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dns-local.h"
#include "macro.h"

#define BUCKETS 4096
#define LOCAL_SOA_TTL 30

typedef struct Record {
        struct Record *next;
        uint8_t name[DNS_NAME_MAX];
        size_t name_len;
        uint16_t type;
        uint32_t ttl;
        uint8_t rdata[512];
        size_t rdlength;
        char *name_str;
        char *value_str;
} Record;

typedef struct Zone {
        uint8_t name[DNS_NAME_MAX];
        size_t name_len;
} Zone;

struct DnsLocal {
        Record *buckets[BUCKETS];
        size_t n_records;
        Zone zones[DNS_LOCAL_ZONES_MAX];
        size_t n_zones;
        uint32_t serial;
};

static size_t bucket_of(const uint8_t *name, size_t len) {
        uint32_t h = 2166136261u; /* FNV-1a over the lower-cased wire name */
        for (size_t i = 0; i < len; i++)
                h = (h ^ name[i]) * 16777619u;
        return h % BUCKETS;
}

int dns_local_new(DnsLocal **ret) {
        DnsLocal *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->serial = 1;
        *ret = l;
        return 0;
}

static Record *record_free(Record *r) {
        if (r) {
                free(r->name_str);
                free(r->value_str);
                free(r);
        }
        return NULL;
}

DnsLocal *dns_local_free(DnsLocal *l) {
        if (!l)
                return NULL;
        for (size_t b = 0; b < BUCKETS; b++)
                while (l->buckets[b]) {
                        Record *r = l->buckets[b];
                        l->buckets[b] = r->next;
                        record_free(r);
                }
        free(l);
        return NULL;
}

int dns_local_add_zone(DnsLocal *l, const char *zone) {
        Zone *z;
        int r;

        if (l->n_zones >= DNS_LOCAL_ZONES_MAX)
                return -E2BIG;
        z = &l->zones[l->n_zones];
        r = dns_name_from_string(zone, z->name, &z->name_len);
        if (r < 0)
                return r;
        dns_name_lower(z->name, z->name_len);
        l->n_zones++;
        return 0;
}

/* Value in presentation form → rdata, and back to a normalized string. */
static int parse_value(uint16_t type, const char *value, uint8_t *rdata, size_t *rdlength, char **ret_norm) {
        char buf[DNS_NAME_STRING_MAX];
        size_t n;
        int r;

        switch (type) {
        case DNS_TYPE_A:
        case DNS_TYPE_AAAA: {
                int af = type == DNS_TYPE_A ? AF_INET : AF_INET6;
                if (inet_pton(af, value, rdata) != 1)
                        return -EINVAL;
                *rdlength = type == DNS_TYPE_A ? 4 : 16;
                if (!inet_ntop(af, rdata, buf, sizeof(buf)))
                        return -EINVAL;
                break;
        }
        case DNS_TYPE_CNAME:
        case DNS_TYPE_PTR:
                r = dns_name_from_string(value, rdata, &n);
                if (r < 0)
                        return r;
                dns_name_lower(rdata, n);
                *rdlength = n;
                dns_name_to_string(rdata, buf);
                break;
        case DNS_TYPE_TXT: {
                /* One string of up to 255 bytes per character-string. */
                size_t len = strlen(value), o = 0;
                if (len > 400)
                        return -EINVAL;
                for (size_t i = 0; i < len || i == 0; i += 255) {
                        size_t k = MIN(len - i, 255);
                        rdata[o++] = (uint8_t) k;
                        memcpy(rdata + o, value + i, k);
                        o += k;
                        if (len == 0)
                                break;
                }
                *rdlength = o;
                snprintf(buf, sizeof(buf), "%s", value);
                break;
        }
        default:
                return -EOPNOTSUPP;
        }
        *ret_norm = strdup(buf);
        return *ret_norm ? 0 : -ENOMEM;
}

static Record *find_first(const DnsLocal *l, const uint8_t *name, size_t len) {
        for (Record *r = l->buckets[bucket_of(name, len)]; r; r = r->next)
                if (r->name_len == len && memcmp(r->name, name, len) == 0)
                        return r;
        return NULL;
}

int dns_local_add(DnsLocal *l, const char *name, const char *type, const char *value, uint32_t ttl) {
        Record *rec;
        char s[DNS_NAME_STRING_MAX];
        size_t b;
        int t, k;

        if (!name || !type || !value)
                return -EINVAL;
        t = dns_type_from_string(type);
        if (t < 0)
                return -EINVAL;
        rec = calloc(1, sizeof(*rec));
        if (!rec)
                return -ENOMEM;
        rec->type = (uint16_t) t;
        rec->ttl = ttl;
        k = dns_name_from_string(name, rec->name, &rec->name_len);
        if (k >= 0)
                k = parse_value(rec->type, value, rec->rdata, &rec->rdlength, &rec->value_str);
        if (k < 0) {
                record_free(rec);
                return k == -EOPNOTSUPP ? -EINVAL : k;
        }
        dns_name_lower(rec->name, rec->name_len);
        b = bucket_of(rec->name, rec->name_len);
        for (Record *x = l->buckets[b]; x; x = x->next) {
                if (x->name_len != rec->name_len || memcmp(x->name, rec->name, rec->name_len) != 0)
                        continue;
                if (x->type == rec->type && x->rdlength == rec->rdlength &&
                    memcmp(x->rdata, rec->rdata, rec->rdlength) == 0) {
                        x->ttl = ttl;
                        record_free(rec);
                        l->serial++;
                        return 0;
                }
                /* RFC 1034 §3.6.2: a CNAME stands alone at its name. */
                if (x->type == DNS_TYPE_CNAME || rec->type == DNS_TYPE_CNAME) {
                        record_free(rec);
                        return -EEXIST;
                }
        }
        if (l->n_records >= DNS_LOCAL_RECORDS_MAX) {
                record_free(rec);
                return -ENOSPC;
        }
        dns_name_to_string(rec->name, s);
        rec->name_str = strdup(s);
        if (!rec->name_str) {
                record_free(rec);
                return -ENOMEM;
        }
        rec->next = l->buckets[b];
        l->buckets[b] = rec;
        l->n_records++;
        l->serial++;
        return 0;
}

int dns_local_remove(DnsLocal *l, const char *name, const char *type) {
        uint8_t wire[DNS_NAME_MAX];
        size_t len;
        int t = -1, n = 0, k;

        k = dns_name_from_string(name, wire, &len);
        if (k < 0)
                return k;
        dns_name_lower(wire, len);
        if (!isempty(type)) {
                t = dns_type_from_string(type);
                if (t < 0)
                        return -EINVAL;
        }
        for (Record **p = &l->buckets[bucket_of(wire, len)]; *p;) {
                Record *r = *p;
                if (r->name_len == len && memcmp(r->name, wire, len) == 0 && (t < 0 || r->type == t)) {
                        *p = r->next;
                        record_free(r);
                        l->n_records--;
                        n++;
                } else
                        p = &r->next;
        }
        if (n == 0)
                return -ENOENT;
        l->serial++;
        return n;
}

void dns_local_foreach(const DnsLocal *l, void (*cb)(const DnsLocalRecordInfo *r, void *userdata), void *userdata) {
        for (size_t b = 0; b < BUCKETS; b++)
                for (Record *r = l->buckets[b]; r; r = r->next) {
                        DnsLocalRecordInfo info = {
                                .name = r->name_str,
                                .type = dns_type_to_string(r->type),
                                .value = r->value_str,
                                .ttl = r->ttl,
                        };
                        cb(&info, userdata);
                }
}

static void dump_one(const DnsLocalRecordInfo *r, void *userdata) {
        json_t *a = userdata;

        (void) json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I}", "name", r->name, "type", r->type, "value",
                                                  r->value, "ttl", (json_int_t) r->ttl));
}

int dns_local_dump_json(const DnsLocal *l, char **ret) {
        json_t *a = json_array();
        char *s;

        if (!a)
                return -ENOMEM;
        dns_local_foreach(l, dump_one, a);
        if (json_array_size(a) != l->n_records) {
                json_decref(a);
                return -ENOMEM;
        }
        s = json_dumps(a, JSON_INDENT(1) | JSON_SORT_KEYS);
        json_decref(a);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int dns_local_load_json(DnsLocal *l, const char *text, size_t size, size_t *ret_loaded, size_t *ret_skipped) {
        size_t loaded = 0, skipped = 0, k;
        json_t *a, *e;

        /* REJECT_DUPLICATES: a file with two values for one key is not ours. */
        a = json_loadb(text, size, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_array(a)) {
                json_decref(a);
                return -EBADMSG;
        }
        json_array_foreach(a, k, e) {
                json_t *ttl = json_object_get(e, "ttl");
                const char *name = json_string_value(json_object_get(e, "name")),
                           *type = json_string_value(json_object_get(e, "type")),
                           *value = json_string_value(json_object_get(e, "value"));

                if (!name || !type || !value || !json_is_integer(ttl) || json_integer_value(ttl) < 0 ||
                    json_integer_value(ttl) > UINT32_MAX ||
                    dns_local_add(l, name, type, value, (uint32_t) json_integer_value(ttl)) < 0)
                        skipped++;
                else
                        loaded++;
        }
        json_decref(a);
        if (ret_loaded)
                *ret_loaded = loaded;
        if (ret_skipped)
                *ret_skipped = skipped;
        return 0;
}

size_t dns_local_count(const DnsLocal *l) {
        return l->n_records;
}

bool dns_local_is_empty(const DnsLocal *l) {
        return l->n_records == 0 && l->n_zones == 0;
}

static const Zone *zone_of(const DnsLocal *l, const uint8_t *name, size_t len) {
        const Zone *best = NULL;
        for (size_t i = 0; i < l->n_zones; i++)
                if (dns_name_in_zone(name, len, l->zones[i].name, l->zones[i].name_len) &&
                    (!best || l->zones[i].name_len > best->name_len))
                        best = &l->zones[i];
        return best;
}

static void write_soa(DnsWriter *w, const DnsLocal *l, const Zone *z) {
        uint8_t rdata[2 * DNS_NAME_MAX + 20];
        size_t n = 0;

        /* MNAME: the zone itself; RNAME: hostmaster.<zone>. */
        if (z->name_len + 11 + z->name_len + 20 > sizeof(rdata))
                return;
        memcpy(rdata, z->name, z->name_len);
        n = z->name_len;
        rdata[n++] = 10;
        memcpy(rdata + n, "hostmaster", 10);
        n += 10;
        if (n + z->name_len + 20 > sizeof(rdata)) {
                w->overflow = true;
                return;
        }
        memcpy(rdata + n, z->name, z->name_len);
        n += z->name_len;
        dns_put_u32(rdata + n, l->serial);
        dns_put_u32(rdata + n + 4, 3600);   /* REFRESH */
        dns_put_u32(rdata + n + 8, 600);    /* RETRY */
        dns_put_u32(rdata + n + 12, 86400); /* EXPIRE */
        dns_put_u32(rdata + n + 16, LOCAL_SOA_TTL); /* MINIMUM: negative answers live this long */
        n += 20;
        dns_write_rr(w, z->name, z->name_len, DNS_TYPE_SOA, DNS_CLASS_IN, LOCAL_SOA_TTL, rdata, n);
}

int dns_local_answer(const DnsLocal *l, const uint8_t *pkt, const DnsQuery *q, uint8_t *out, size_t size,
                     size_t *ret_len) {
        const Zone *z;
        Record *first;
        uint16_t an = 0, ns = 0;
        int rcode = DNS_RCODE_NOERROR;
        DnsWriter w;
        bool apex;

        if (l->n_records == 0 && l->n_zones == 0)
                return -ENOENT;
        if (q->qclass != DNS_CLASS_IN && q->qclass != 255)
                return -ENOENT;
        first = find_first(l, q->qname, q->qname_len);
        z = zone_of(l, q->qname, q->qname_len);
        if (!first && !z)
                return -ENOENT;
        apex = z && z->name_len == q->qname_len;

        dns_writer_init(&w, out, size);
        dns_write_header(&w, q->id, 0, 1, 0, 0, 0);
        dns_write_bytes(&w, pkt + DNS_HEADER_SIZE, q->question_end - DNS_HEADER_SIZE);
        if (first) {
                for (Record *r = first; r; r = r->next) {
                        if (r->name_len != q->qname_len || memcmp(r->name, q->qname, q->qname_len) != 0)
                                continue;
                        if (r->type == q->qtype || q->qtype == DNS_TYPE_ANY || r->type == DNS_TYPE_CNAME) {
                                dns_write_rr(&w, NULL, 0, r->type, DNS_CLASS_IN, r->ttl, r->rdata, r->rdlength);
                                an++;
                        }
                }
        }
        if (apex && (q->qtype == DNS_TYPE_SOA || q->qtype == DNS_TYPE_ANY)) {
                write_soa(&w, l, z);
                an++;
        }
        if (an == 0) {
                /* No data: NXDOMAIN when the name does not exist at all, NODATA
                 * otherwise; both with the SOA for negative caching. */
                if (!first && !apex)
                        rcode = DNS_RCODE_NXDOMAIN;
                if (z) {
                        write_soa(&w, l, z);
                        ns = 1;
                }
        }
        if (q->edns) {
                dns_write_opt(&w, DNS_EDNS_BUFFER, q->do_bit);
        }
        if (w.overflow)
                return -ENOBUFS;
        dns_put_u16(out + 2, (uint16_t) (DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA | (q->flags & DNS_FLAG_RD) | rcode));
        dns_put_u16(out + 6, an);
        dns_put_u16(out + 8, ns);
        dns_put_u16(out + 10, q->edns ? 1 : 0);
        *ret_len = w.len;
        return rcode;
}
