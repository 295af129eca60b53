/* SPDX-License-Identifier: MIT */
/* nsc dns: the caching DNS forwarder (dnsd): statistics, cache flush,
 * local records and lookups through dnsd. */
#include <stdio.h>
#include <string.h>

#include "hostmesh/dns/v1/dns.pb-c.h"
#include "nsc.h"
#include "parse-util.h"

#define DNS_METHOD(m) "/hostmesh.dns.v1.Dns/" m

static int verb_stats(Nsc *n, int argc, char **argv);
static int verb_flush(Nsc *n, int argc, char **argv);
static int verb_records_list(Nsc *n, int argc, char **argv);
static int verb_records_add(Nsc *n, int argc, char **argv);
static int verb_records_remove(Nsc *n, int argc, char **argv);
static int verb_lookup(Nsc *n, int argc, char **argv);

NSC_COMMAND(dns_stats, .name = "dns stats", .usage = "[--prometheus]",
            .summary = "Show DNS cache and upstream statistics", .run = verb_stats);
NSC_COMMAND(dns_flush, .name = "dns flush", .usage = "[NAME]",
            .summary = "Drop cached DNS answers (all, or for one name)", .run = verb_flush);
NSC_COMMAND(dns_records_list, .name = "dns records list", .usage = "",
            .summary = "List local DNS records", .run = verb_records_list);
NSC_COMMAND(dns_records_add, .name = "dns records add", .usage = "NAME TYPE VALUE [--ttl SECONDS]",
            .summary = "Add a local DNS record (answered authoritatively)", .run = verb_records_add);
NSC_COMMAND(dns_records_remove, .name = "dns records remove", .usage = "NAME [TYPE]",
            .summary = "Remove local DNS records", .run = verb_records_remove);
NSC_COMMAND(dns_lookup, .name = "dns lookup", .usage = "NAME [TYPE]",
            .summary = "Resolve a name through dnsd", .run = verb_lookup);

/* Positional arguments and the few options these verbs take; the global
 * "-o json" is skipped (nsc has parsed it already). */
typedef struct Args {
        const char *pos[4];
        int n_pos;
        const char *ttl;
        bool prometheus;
} Args;

static int parse_args(Nsc *n, const NscCommand *cmd, int argc, char **argv, int max_pos, Args *a) {
        *a = (Args){};
        for (int i = 1; i < argc; i++) {
                const char *s = argv[i];
                if (streq(s, "--ttl") && i + 1 < argc) {
                        a->ttl = argv[++i];
                        continue;
                }
                if (strncmp(s, "--ttl=", 6) == 0) {
                        a->ttl = s + 6;
                        continue;
                }
                if (streq(s, "--prometheus")) {
                        a->prometheus = true;
                        continue;
                }
                if (s[0] == '-' && s[1])
                        return nsc_usage(n, cmd, "unknown option '%s'.", s);
                if (a->n_pos >= max_pos)
                        return nsc_usage(n, cmd, "unexpected argument '%s'.", s);
                a->pos[a->n_pos++] = s;
        }
        return 0;
}

static int verb_stats(Nsc *n, int argc, char **argv) {
        Hostmesh__Dns__V1__GetStatsRequest req = HOSTMESH__DNS__V1__GET_STATS_REQUEST__INIT;
        Hostmesh__Dns__V1__GetStatsResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_dns_stats, argc, argv, 0, &a);
        if (r != 0)
                return r;
        r = nsc_call(n, DNS_METHOD("GetStats"), &req.base, &hostmesh__dns__v1__get_stats_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (a.prometheus) {
                fputs(resp->prometheus ? resp->prometheus : "", stdout);
        } else if (n->json) {
                json_t *lat = json_array(), *ups = json_array();
                for (size_t i = 0; i < resp->n_upstream_latency; i++) {
                        double le = resp->upstream_latency[i]->le_ms;
                        json_array_append_new(lat, json_pack("{s:o,s:I}", "le_ms",
                                                             le > 1e300 ? json_string("+Inf") : json_real(le), "count",
                                                             (json_int_t) resp->upstream_latency[i]->count));
                }
                for (size_t i = 0; i < resp->n_upstreams; i++) {
                        const Hostmesh__Dns__V1__UpstreamHealth *u = resp->upstreams[i];
                        json_array_append_new(ups, json_pack("{s:s,s:b,s:I,s:I,s:I,s:f}", "address", u->address,
                                                             "healthy", u->healthy, "queries", (json_int_t) u->queries,
                                                             "failures", (json_int_t) u->failures, "timeouts",
                                                             (json_int_t) u->timeouts, "srtt_ms", u->srtt_ms));
                }
                nsc_print_json(json_pack(
                        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:f,s:o}",
                        "queries", (json_int_t) resp->queries, "hits", (json_int_t) resp->hits, "misses",
                        (json_int_t) resp->misses, "stale_served", (json_int_t) resp->stale_served, "prefetches",
                        (json_int_t) resp->prefetches, "coalesced", (json_int_t) resp->coalesced, "evictions",
                        (json_int_t) resp->evictions, "cache_entries", (json_int_t) resp->cache_entries, "cache_bytes",
                        (json_int_t) resp->cache_bytes, "local_answers", (json_int_t) resp->local_answers, "refused",
                        (json_int_t) resp->refused, "formerr", (json_int_t) resp->formerr, "servfail",
                        (json_int_t) resp->servfail, "rate_limited", (json_int_t) resp->rate_limited, "dropped",
                        (json_int_t) resp->dropped, "tcp_queries", (json_int_t) resp->tcp_queries, "upstream_queries",
                        (json_int_t) resp->upstream_queries, "tcp_fallbacks", (json_int_t) resp->tcp_fallbacks,
                        "mismatched_replies", (json_int_t) resp->mismatched_replies, "upstream_latency", lat,
                        "upstream_latency_sum_ms", resp->upstream_latency_sum_ms, "upstreams", ups));
        } else {
                double hit_rate = resp->queries ? 100.0 * (double) resp->hits / (double) resp->queries : 0;
                printf("queries        %llu (%.1f%% cache hits)\n", (unsigned long long) resp->queries, hit_rate);
                printf("hits/misses    %llu / %llu\n", (unsigned long long) resp->hits,
                       (unsigned long long) resp->misses);
                printf("stale served   %llu\n", (unsigned long long) resp->stale_served);
                printf("prefetches     %llu\n", (unsigned long long) resp->prefetches);
                printf("coalesced      %llu\n", (unsigned long long) resp->coalesced);
                printf("cache          %llu entries, %llu bytes, %llu evictions\n",
                       (unsigned long long) resp->cache_entries, (unsigned long long) resp->cache_bytes,
                       (unsigned long long) resp->evictions);
                printf("local answers  %llu\n", (unsigned long long) resp->local_answers);
                printf("refused/formerr/servfail/rate-limited  %llu/%llu/%llu/%llu\n",
                       (unsigned long long) resp->refused, (unsigned long long) resp->formerr,
                       (unsigned long long) resp->servfail, (unsigned long long) resp->rate_limited);
                printf("upstream       %llu queries, %llu TCP fallbacks, %llu mismatched replies ignored\n",
                       (unsigned long long) resp->upstream_queries, (unsigned long long) resp->tcp_fallbacks,
                       (unsigned long long) resp->mismatched_replies);
                printf("\n%-28s %-8s %10s %10s %10s %10s\n", "UPSTREAM", "HEALTHY", "QUERIES", "FAILURES", "TIMEOUTS",
                       "SRTT_MS");
                for (size_t i = 0; i < resp->n_upstreams; i++) {
                        const Hostmesh__Dns__V1__UpstreamHealth *u = resp->upstreams[i];
                        printf("%-28s %-8s %10llu %10llu %10llu %10.2f\n", u->address, u->healthy ? "yes" : "no",
                               (unsigned long long) u->queries, (unsigned long long) u->failures,
                               (unsigned long long) u->timeouts, u->srtt_ms);
                }
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_flush(Nsc *n, int argc, char **argv) {
        Hostmesh__Dns__V1__FlushRequest req = HOSTMESH__DNS__V1__FLUSH_REQUEST__INIT;
        Hostmesh__Dns__V1__FlushResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_dns_flush, argc, argv, 1, &a);
        if (r != 0)
                return r;
        req.name = (char *) (a.n_pos > 0 ? a.pos[0] : "");
        r = nsc_call(n, DNS_METHOD("Flush"), &req.base, &hostmesh__dns__v1__flush_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:I}", "flushed", (json_int_t) resp->flushed));
        else
                printf("Flushed %llu cached answer(s).\n", (unsigned long long) resp->flushed);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static json_t *record_to_json(const Hostmesh__Dns__V1__Record *r) {
        return json_pack("{s:s,s:s,s:s,s:I}", "name", r->name, "type", r->type, "value", r->value, "ttl",
                         (json_int_t) r->ttl);
}

static int verb_records_list(Nsc *n, int argc, char **argv) {
        Hostmesh__Dns__V1__ListRecordsRequest req = HOSTMESH__DNS__V1__LIST_RECORDS_REQUEST__INIT;
        Hostmesh__Dns__V1__ListRecordsResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_dns_records_list, argc, argv, 0, &a);
        if (r != 0)
                return r;
        r = nsc_call(n, DNS_METHOD("ListRecords"), &req.base, &hostmesh__dns__v1__list_records_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *recs = json_array(), *zones = json_array();
                for (size_t i = 0; i < resp->n_records; i++)
                        json_array_append_new(recs, record_to_json(resp->records[i]));
                for (size_t i = 0; i < resp->n_zones; i++)
                        json_array_append_new(zones, json_string(resp->zones[i]));
                nsc_print_json(json_pack("{s:o,s:o}", "records", recs, "zones", zones));
        } else {
                printf("%-40s %-6s %-8s %s\n", "NAME", "TYPE", "TTL", "VALUE");
                for (size_t i = 0; i < resp->n_records; i++)
                        printf("%-40s %-6s %-8u %s\n", resp->records[i]->name, resp->records[i]->type,
                               resp->records[i]->ttl, resp->records[i]->value);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_records_add(Nsc *n, int argc, char **argv) {
        Hostmesh__Dns__V1__AddRecordRequest req = HOSTMESH__DNS__V1__ADD_RECORD_REQUEST__INIT;
        Hostmesh__Dns__V1__AddRecordResponse *resp = NULL;
        uint32_t ttl = 60;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_dns_records_add, argc, argv, 3, &a);
        if (r != 0)
                return r;
        if (a.n_pos != 3)
                return nsc_usage(n, &nsc_command_dns_records_add, "NAME, TYPE and VALUE are required.");
        if (a.ttl && safe_atou32(a.ttl, &ttl) < 0)
                return nsc_usage(n, &nsc_command_dns_records_add, "--ttl wants a number of seconds, not '%s'.", a.ttl);
        req.name = (char *) a.pos[0];
        req.type = (char *) a.pos[1];
        req.value = (char *) a.pos[2];
        req.ttl = ttl;
        r = nsc_call(n, DNS_METHOD("AddRecord"), &req.base, &hostmesh__dns__v1__add_record_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:s,s:s,s:s,s:I}", "name", req.name, "type", req.type, "value", req.value,
                                         "ttl", (json_int_t) ttl));
        else
                printf("Added %s %s %s (ttl %u).\n", req.name, req.type, req.value, ttl);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_records_remove(Nsc *n, int argc, char **argv) {
        Hostmesh__Dns__V1__RemoveRecordRequest req = HOSTMESH__DNS__V1__REMOVE_RECORD_REQUEST__INIT;
        Hostmesh__Dns__V1__RemoveRecordResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_dns_records_remove, argc, argv, 2, &a);
        if (r != 0)
                return r;
        if (a.n_pos < 1)
                return nsc_usage(n, &nsc_command_dns_records_remove, "NAME is required.");
        req.name = (char *) a.pos[0];
        req.type = (char *) (a.n_pos > 1 ? a.pos[1] : "");
        r = nsc_call(n, DNS_METHOD("RemoveRecord"), &req.base, &hostmesh__dns__v1__remove_record_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:I}", "removed", (json_int_t) resp->removed));
        else
                printf("Removed %u record(s).\n", resp->removed);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_lookup(Nsc *n, int argc, char **argv) {
        Hostmesh__Dns__V1__LookupRequest req = HOSTMESH__DNS__V1__LOOKUP_REQUEST__INIT;
        Hostmesh__Dns__V1__LookupResponse *resp = NULL;
        Args a;
        int r;

        r = parse_args(n, &nsc_command_dns_lookup, argc, argv, 2, &a);
        if (r != 0)
                return r;
        if (a.n_pos < 1)
                return nsc_usage(n, &nsc_command_dns_lookup, "NAME is required.");
        req.name = (char *) a.pos[0];
        req.type = (char *) (a.n_pos > 1 ? a.pos[1] : "A");
        r = nsc_call(n, DNS_METHOD("Lookup"), &req.base, &hostmesh__dns__v1__lookup_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *ans = json_array(), *auth = json_array();
                for (size_t i = 0; i < resp->n_answers; i++)
                        json_array_append_new(ans, record_to_json(resp->answers[i]));
                for (size_t i = 0; i < resp->n_authority; i++)
                        json_array_append_new(auth, record_to_json(resp->authority[i]));
                nsc_print_json(json_pack("{s:s,s:b,s:b,s:o,s:o}", "rcode", resp->rcode, "authoritative",
                                         resp->authoritative, "truncated", resp->truncated, "answers", ans,
                                         "authority", auth));
        } else {
                printf("%s%s\n", resp->rcode, resp->authoritative ? " (authoritative)" : "");
                for (size_t i = 0; i < resp->n_answers; i++)
                        printf("%-40s %-8u %-6s %s\n", resp->answers[i]->name, resp->answers[i]->ttl,
                               resp->answers[i]->type, resp->answers[i]->value);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}
