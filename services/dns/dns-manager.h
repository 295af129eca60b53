/* SPDX-License-Identifier: MIT */
#pragma once

/* The dns daemon's manager: owns the loop, the rpc server, the config
 * and every piece of state (cache, resolver, local records, listeners). */

#include <stdio.h>
#include <systemd/sd-event.h>

#include "daemon.h"
#include "dns-cache.h"
#include "dns-local.h"
#include "dns-server.h"
#include "dns-upstream.h"
#include "macro.h"
#include "metrics.h"
#include "rpc.h"

typedef struct DnsConfig {
        RpcServerOptions rpc;
        char **listen;                 /* "127.0.0.1:5353" ... */
        char **upstreams;              /* "192.0.2.1[:port]" ...; empty: resolv_conf */
        char *resolv_conf;
        char **local_zones;
        char **allow;                  /* client networks allowed to recurse */
        uint32_t rate_limit;           /* queries per second per client, 0 = off */
        uint32_t cache_max_entries;
        uint64_t cache_max_bytes;
        uint32_t min_ttl;
        uint32_t max_ttl;
        uint32_t negative_max_ttl;
        uint32_t servfail_ttl;
        uint64_t stale_max_age_usec;
        uint64_t stale_client_timeout_usec;
        uint32_t prefetch_percent;
        uint64_t upstream_timeout_usec;
        uint32_t max_clients_per_question;
        uint32_t tcp_max_connections;  /* the longest idle one makes room at the cap */
        uint64_t tcp_idle_timeout_usec;
} DnsConfig;

typedef struct Manager {
        sd_event *event;
        RpcLoop *rpc_loop;
        RpcServer *server;
        DnsConfig config;
        DnsCache *cache;
        DnsResolver *resolver;
        DnsLocal *local;
        char *records_path;            /* <state>/records.json */
        DnsServer *dns;
        Metrics *metrics;
        DnsServerStats exported;       /* counters already added to metrics */
        DnsCacheStats exported_cache;
        DnsResolverStats exported_resolver;
} Manager;

int manager_new(const DaemonArgs *args, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_start(Manager *m);
int manager_run(Manager *m);
void manager_print_config(Manager *m, FILE *f);
/* Writes the local records to the state file (after each change). */
void manager_save_records(Manager *m);
/* Prometheus text of the DNS counters (caller frees). */
int manager_format_metrics(Manager *m, char **ret);
