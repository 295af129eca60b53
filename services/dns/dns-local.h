/* SPDX-License-Identifier: MIT */
#pragma once

/* Local records: names the host answers itself, authoritatively (AA),
 * never forwarded. vmmd adds "<instance-id>.<zone> A <address>" for each
 * instance. A name inside one of the local zones without records gets
 * NXDOMAIN with the zone's SOA (so that clients cache it per RFC 2308). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns-packet.h"

#define DNS_LOCAL_RECORDS_MAX 65536
#define DNS_LOCAL_ZONES_MAX 64

typedef struct DnsLocal DnsLocal;

typedef struct DnsLocalRecordInfo {
        const char *name;    /* presentation form, lower case, no trailing dot */
        const char *type;    /* "A" */
        const char *value;   /* normalized: "10.88.0.5" */
        uint32_t ttl;
} DnsLocalRecordInfo;

int dns_local_new(DnsLocal **ret);
DnsLocal *dns_local_free(DnsLocal *l);

int dns_local_add_zone(DnsLocal *l, const char *zone);
/* Adds a record; the same name, type and value again only updates the TTL.
 * Types: A, AAAA, CNAME, PTR, TXT. -EINVAL with a bad name/type/value,
 * -EEXIST for a second CNAME or CNAME next to other data (RFC 1034 §3.6.2),
 * -ENOSPC at DNS_LOCAL_RECORDS_MAX. */
int dns_local_add(DnsLocal *l, const char *name, const char *type, const char *value, uint32_t ttl);
/* Removes the records of name with that type (all types when type is NULL
 * or ""). Returns how many, or -ENOENT when none matched. */
int dns_local_remove(DnsLocal *l, const char *name, const char *type);
/* Calls cb for each record, in no particular order. */
void dns_local_foreach(const DnsLocal *l, void (*cb)(const DnsLocalRecordInfo *r, void *userdata), void *userdata);
size_t dns_local_count(const DnsLocal *l);
/* The records as JSON, for dnsd's state file:
 * [{"name": "...", "type": "A", "value": "10.88.0.5", "ttl": 30}, ...]. */
int dns_local_dump_json(const DnsLocal *l, char **ret);
/* Adds the records of such a dump. Each entry goes through dns_local_add;
 * entries that are not valid are skipped and counted. -EBADMSG when the
 * text is not a JSON array. */
int dns_local_load_json(DnsLocal *l, const char *text, size_t size, size_t *ret_loaded, size_t *ret_skipped);
bool dns_local_is_empty(const DnsLocal *l);

/* Answers the query q (pkt is the raw query, whose question is echoed) when
 * it is about local data: returns the rcode with the reply in out
 * (*ret_len), or -ENOENT when the name is not local and should be
 * resolved upstream. */
int dns_local_answer(const DnsLocal *l, const uint8_t *pkt, const DnsQuery *q, uint8_t *out, size_t size,
                     size_t *ret_len);
