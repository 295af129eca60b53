/* SPDX-License-Identifier: MIT */
#include "dns-grpc.h"
#include "dns-manager.h"
#include "hostmesh/dns/v1/dns.pb-c.h"
#include "log.h"

/* Names and types arrive from other services and users: check them here so
 * that the manager's modules only see well-formed input. */
static int check_name(RpcCall *c, const char *name, uint8_t *wire, size_t *len) {
        if (isempty(name) || dns_name_from_string(name, wire, len) < 0) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                              "'%s' is not a DNS name; use labels of 1-63 characters, 255 in all.", name ? name : "");
                return -EINVAL;
        }
        dns_name_lower(wire, *len);
        return 0;
}

static void handle_add_record(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Dns__V1__AddRecordRequest *req = (const void *) msg;
        Hostmesh__Dns__V1__AddRecordResponse resp = HOSTMESH__DNS__V1__ADD_RECORD_RESPONSE__INIT;
        Manager *m = userdata;
        uint8_t wire[DNS_NAME_MAX];
        size_t len;
        int r;

        if (check_name(c, req->name, wire, &len) < 0)
                return;
        r = dns_local_add(m->local, req->name, req->type, req->value, req->ttl);
        if (r == -EINVAL) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                              "Record %s %s '%s' is not valid; types are A, AAAA, CNAME, PTR, TXT with a matching value.",
                              req->name, req->type, req->value);
                return;
        }
        if (r == -EEXIST) {
                rpc_call_fail(c, RPC_ALREADY_EXISTS,
                              "%s has a CNAME or other records; a CNAME must stand alone (RFC 1034). Remove first.",
                              req->name);
                return;
        }
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Failed to add record %s %s: too many records? Remove unused ones.",
                                    req->name, req->type);
                return;
        }
        manager_save_records(m);
        /* A local record replaces whatever was cached for the name. */
        (void) dns_cache_flush(m->cache, wire, len);
        log_struct(LOG_INFO, 0, FIELDS("DNS_NAME=x"), "Added record %s %s %s ttl=%u.", req->name, req->type,
                   req->value, req->ttl);
        rpc_call_reply(c, &resp.base);
}

static void handle_remove_record(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Dns__V1__RemoveRecordRequest *req = (const void *) msg;
        Hostmesh__Dns__V1__RemoveRecordResponse resp = HOSTMESH__DNS__V1__REMOVE_RECORD_RESPONSE__INIT;
        Manager *m = userdata;
        uint8_t wire[DNS_NAME_MAX];
        size_t len;
        int r;

        if (check_name(c, req->name, wire, &len) < 0)
                return;
        r = dns_local_remove(m->local, req->name, req->type);
        if (r == -ENOENT) {
                rpc_call_fail(c, RPC_NOT_FOUND, "No local record %s %s; see ListRecords.", req->name,
                              isempty(req->type) ? "(any type)" : req->type);
                return;
        }
        if (r < 0) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "Unknown record type '%s'.", req->type);
                return;
        }
        manager_save_records(m);
        log_info("Removed %d record(s) %s %s.", r, req->name, isempty(req->type) ? "*" : req->type);
        resp.removed = (uint32_t) r;
        rpc_call_reply(c, &resp.base);
}

typedef struct RecordList {
        Hostmesh__Dns__V1__Record *records;
        Hostmesh__Dns__V1__Record **ptrs;
        size_t n;
} RecordList;

static void collect_record(const DnsLocalRecordInfo *info, void *userdata) {
        RecordList *l = userdata;
        Hostmesh__Dns__V1__Record *r = &l->records[l->n];

        hostmesh__dns__v1__record__init(r);
        r->name = (char *) info->name;
        r->type = (char *) info->type;
        r->value = (char *) info->value;
        r->ttl = info->ttl;
        l->ptrs[l->n++] = r;
}

static void handle_list_records(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Dns__V1__ListRecordsResponse resp = HOSTMESH__DNS__V1__LIST_RECORDS_RESPONSE__INIT;
        Manager *m = userdata;
        size_t n = dns_local_count(m->local);
        RecordList l = {};
        (void) msg;

        l.records = calloc(MAX(n, 1), sizeof(*l.records));
        l.ptrs = calloc(MAX(n, 1), sizeof(*l.ptrs));
        if (!l.records || !l.ptrs) {
                free(l.records);
                free(l.ptrs);
                rpc_call_fail_errno(c, -ENOMEM, "Out of memory listing records.");
                return;
        }
        dns_local_foreach(m->local, collect_record, &l);
        resp.records = l.ptrs;
        resp.n_records = l.n;
        resp.zones = m->config.local_zones;
        for (char **z = m->config.local_zones; z && *z; z++)
                resp.n_zones++;
        rpc_call_reply(c, &resp.base);
        free(l.records);
        free(l.ptrs);
}

static void handle_flush(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Dns__V1__FlushRequest *req = (const void *) msg;
        Hostmesh__Dns__V1__FlushResponse resp = HOSTMESH__DNS__V1__FLUSH_RESPONSE__INIT;
        Manager *m = userdata;
        uint8_t wire[DNS_NAME_MAX];
        size_t len = 0;

        if (!isempty(req->name) && check_name(c, req->name, wire, &len) < 0)
                return;
        resp.flushed = dns_cache_flush(m->cache, isempty(req->name) ? NULL : wire, len);
        log_info("Flushed %llu cache entr%s%s%s.", (unsigned long long) resp.flushed, resp.flushed == 1 ? "y" : "ies",
                 isempty(req->name) ? "" : " for ", isempty(req->name) ? "" : req->name);
        rpc_call_reply(c, &resp.base);
}

/* Converts the RRs of one section of a reply into Records. */
static void fill_records(const uint8_t *p, size_t len, const DnsMessage *msg, int section,
                         Hostmesh__Dns__V1__Record ***ret, size_t *ret_n) {
        Hostmesh__Dns__V1__Record **v = calloc(msg->n_rrs + 1, sizeof(*v));
        size_t n = 0;

        for (size_t i = 0; v && i < msg->n_rrs; i++) {
                const DnsRR *rr = &msg->rrs[i];
                uint8_t owner[DNS_NAME_MAX];
                char name[DNS_NAME_STRING_MAX], tbuf[16];
                const char *tn = dns_type_to_string(rr->type);
                size_t off = rr->start;
                Hostmesh__Dns__V1__Record *r;

                if (rr->section != section || rr->type == DNS_TYPE_OPT || dns_name_read(p, len, &off, owner) < 0)
                        continue;
                r = calloc(1, sizeof(*r));
                if (!r)
                        break;
                hostmesh__dns__v1__record__init(r);
                dns_name_to_string(owner, name);
                if (!tn) {
                        snprintf(tbuf, sizeof(tbuf), "TYPE%u", rr->type);
                        tn = tbuf;
                }
                r->name = strdup(name);
                r->type = strdup(tn);
                r->value = dns_rdata_to_string(p, len, rr);
                r->ttl = rr->ttl;
                if (!r->value)
                        r->value = strdup("");
                v[n++] = r;
        }
        *ret = v;
        *ret_n = n;
}

static void free_records(Hostmesh__Dns__V1__Record **v, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(v[i]->name);
                free(v[i]->type);
                free(v[i]->value);
                free(v[i]);
        }
        free(v);
}

static void lookup_done(int error, const uint8_t *reply, size_t len, void *userdata) {
        RpcCall *c = userdata;
        Hostmesh__Dns__V1__LookupResponse resp = HOSTMESH__DNS__V1__LOOKUP_RESPONSE__INIT;
        DnsMessage msg;
        int r;

        if (error < 0) {
                rpc_call_fail(c, RPC_UNAVAILABLE, "No upstream resolver answered; check [dns] upstreams and GetStats.");
                rpc_call_unref(c);
                return;
        }
        r = dns_message_parse(reply, len, &msg);
        if (r < 0) {
                rpc_call_fail(c, RPC_INTERNAL, "The answer could not be parsed.");
                rpc_call_unref(c);
                return;
        }
        resp.rcode = (char *) dns_rcode_to_string(msg.flags & DNS_FLAG_RCODE_MASK);
        resp.authoritative = msg.flags & DNS_FLAG_AA;
        resp.truncated = msg.flags & DNS_FLAG_TC;
        fill_records(reply, len, &msg, DNS_SECTION_ANSWER, &resp.answers, &resp.n_answers);
        fill_records(reply, len, &msg, DNS_SECTION_AUTHORITY, &resp.authority, &resp.n_authority);
        rpc_call_reply(c, &resp.base);
        free_records(resp.answers, resp.n_answers);
        free_records(resp.authority, resp.n_authority);
        dns_message_done(&msg);
        rpc_call_unref(c);
}

static void handle_lookup(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Dns__V1__LookupRequest *req = (const void *) msg;
        Manager *m = userdata;
        uint8_t wire[DNS_NAME_MAX];
        size_t len;
        int type = DNS_TYPE_A, r;

        if (check_name(c, req->name, wire, &len) < 0)
                return;
        if (!isempty(req->type)) {
                type = dns_type_from_string(req->type);
                if (type < 0) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "Unknown record type '%s'; use A, AAAA, MX, TYPEnnn...",
                                      req->type);
                        return;
                }
        }
        rpc_call_ref(c);
        r = dns_server_lookup(m->dns, wire, len, (uint16_t) type, lookup_done, c);
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Failed to start the lookup.");
                rpc_call_unref(c);
        }
}

static void handle_get_stats(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Dns__V1__GetStatsResponse resp = HOSTMESH__DNS__V1__GET_STATS_RESPONSE__INIT;
        Hostmesh__Dns__V1__LatencyBucket buckets[DNS_LATENCY_BUCKETS], *bucket_ptrs[DNS_LATENCY_BUCKETS];
        Hostmesh__Dns__V1__UpstreamHealth ups[16], *up_ptrs[16];
        DnsUpstreamStats us[16];
        Manager *m = userdata;
        DnsServerStats ss;
        DnsCacheStats cs;
        DnsResolverStats rs;
        _cleanup_free_ char *prom = NULL;
        size_t n;
        (void) msg;

        dns_server_get_stats(m->dns, &ss);
        dns_cache_get_stats(m->cache, &cs);
        dns_resolver_get_stats(m->resolver, &rs);
        resp.queries = ss.queries;
        resp.hits = ss.hits;
        resp.misses = ss.misses;
        resp.stale_served = ss.stale_served;
        resp.prefetches = ss.prefetches;
        resp.coalesced = rs.coalesced;
        resp.evictions = cs.evictions;
        resp.cache_entries = cs.entries;
        resp.cache_bytes = cs.bytes;
        resp.local_answers = ss.local_answers;
        resp.refused = ss.refused;
        resp.formerr = ss.formerr;
        resp.servfail = ss.servfail;
        resp.rate_limited = ss.rate_limited;
        resp.dropped = ss.dropped;
        resp.tcp_queries = ss.tcp_queries;
        resp.upstream_queries = rs.transactions;
        resp.tcp_fallbacks = rs.tcp_fallbacks;
        resp.mismatched_replies = rs.mismatched_replies;
        for (size_t i = 0; i < DNS_LATENCY_BUCKETS; i++) {
                hostmesh__dns__v1__latency_bucket__init(&buckets[i]);
                buckets[i].le_ms = i + 1 == DNS_LATENCY_BUCKETS ? __builtin_inf() : dns_latency_bucket_ms[i];
                buckets[i].count = rs.latency_buckets[i];
                bucket_ptrs[i] = &buckets[i];
        }
        resp.upstream_latency = bucket_ptrs;
        resp.n_upstream_latency = DNS_LATENCY_BUCKETS;
        resp.upstream_latency_sum_ms = rs.latency_sum_ms;
        n = MIN(dns_resolver_get_upstream_stats(m->resolver, us, ELEMENTSOF(us)), ELEMENTSOF(us));
        for (size_t i = 0; i < n; i++) {
                hostmesh__dns__v1__upstream_health__init(&ups[i]);
                ups[i].address = us[i].address;
                ups[i].healthy = us[i].healthy;
                ups[i].queries = us[i].queries;
                ups[i].failures = us[i].failures;
                ups[i].timeouts = us[i].timeouts;
                ups[i].srtt_ms = us[i].srtt_ms;
                up_ptrs[i] = &ups[i];
        }
        resp.upstreams = up_ptrs;
        resp.n_upstreams = n;
        if (manager_format_metrics(m, &prom) >= 0)
                resp.prometheus = prom;
        rpc_call_reply(c, &resp.base);
}

#define METHOD(name, lower, handler)                                                                          \
        { "/hostmesh.dns.v1.Dns/" name, RPC_UNARY, &hostmesh__dns__v1__##lower##_request__descriptor,          \
          &hostmesh__dns__v1__##lower##_response__descriptor, handler }

int dns_grpc_register(Manager *m) {
        static const RpcMethod methods[] = {
                METHOD("AddRecord", add_record, handle_add_record),
                METHOD("RemoveRecord", remove_record, handle_remove_record),
                METHOD("ListRecords", list_records, handle_list_records),
                METHOD("Flush", flush, handle_flush),
                METHOD("Lookup", lookup, handle_lookup),
                METHOD("GetStats", get_stats, handle_get_stats),
        };
        return rpc_server_add_methods(m->server, methods, ELEMENTSOF(methods), m);
}
