/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>

#include "config.h"
#include "dns-grpc.h"
#include "dns-manager.h"
#include "fs-util.h"
#include "log.h"
#include "parse-util.h"
#include "paths.h"

#define DEFAULT_LISTEN "127.0.0.1:5353"

static const ConfigItem config_table[] = {
        DAEMON_RPC_CONFIG_ITEMS(DnsConfig, rpc),
        CONFIG_ITEM("dns", "listen", config_type_strv, DnsConfig, listen,
                    "Addresses for DNS over UDP and TCP when systemd passes no sockets (default " DEFAULT_LISTEN ")"),
        CONFIG_ITEM("dns", "upstreams", config_type_strv, DnsConfig, upstreams,
                    "Upstream resolvers, ip[:port], tried in order; empty: the nameservers of resolv_conf"),
        CONFIG_ITEM("dns", "resolv_conf", config_type_string, DnsConfig, resolv_conf,
                    "Where to find upstreams when none are configured"),
        CONFIG_ITEM("dns", "local_zones", config_type_strv, DnsConfig, local_zones,
                    "Zones answered only from local records (NXDOMAIN for unknown names)"),
        CONFIG_ITEM("dns", "allow", config_type_strv, DnsConfig, allow,
                    "Client networks allowed to use the cache and upstreams"),
        CONFIG_ITEM("dns", "rate_limit", config_type_uint32, DnsConfig, rate_limit,
                    "Queries per second per client address (0 = no limit)"),
        CONFIG_ITEM("dns", "cache_max_entries", config_type_uint32, DnsConfig, cache_max_entries,
                    "Most responses kept in the cache"),
        CONFIG_ITEM("dns", "cache_max_bytes", config_type_size, DnsConfig, cache_max_bytes,
                    "Most bytes of responses kept in the cache"),
        CONFIG_ITEM("dns", "min_ttl", config_type_uint32, DnsConfig, min_ttl, "Shortest TTL (s) of a cached answer"),
        CONFIG_ITEM("dns", "max_ttl", config_type_uint32, DnsConfig, max_ttl, "Longest TTL (s) of a cached answer"),
        CONFIG_ITEM("dns", "negative_max_ttl", config_type_uint32, DnsConfig, negative_max_ttl,
                    "Longest TTL (s) of a cached NXDOMAIN/NODATA (RFC 2308)"),
        CONFIG_ITEM("dns", "servfail_ttl", config_type_uint32, DnsConfig, servfail_ttl,
                    "How long (s) a SERVFAIL is cached"),
        CONFIG_ITEM("dns", "stale_max_age", config_type_usec, DnsConfig, stale_max_age_usec,
                    "How long past expiry an answer may be served when upstreams fail (RFC 8767)"),
        CONFIG_ITEM("dns", "stale_client_timeout", config_type_usec, DnsConfig, stale_client_timeout_usec,
                    "Answer stale after waiting this long for upstreams"),
        CONFIG_ITEM("dns", "prefetch_percent", config_type_uint32, DnsConfig, prefetch_percent,
                    "Refresh popular answers in the last N% of their TTL (0 = off)"),
        CONFIG_ITEM("dns", "upstream_timeout", config_type_usec, DnsConfig, upstream_timeout_usec,
                    "Wait this long for one upstream before trying the next"),
        CONFIG_ITEM("dns", "max_clients_per_question", config_type_uint32, DnsConfig, max_clients_per_question,
                    "Clients that may wait on one upstream question"),
        CONFIG_ITEM("dns", "tcp_max_connections", config_type_uint32, DnsConfig, tcp_max_connections,
                    "Open DNS-over-TCP connections; at the cap the one idle longest is closed for a new client"),
        CONFIG_ITEM("dns", "tcp_idle_timeout", config_type_usec, DnsConfig, tcp_idle_timeout_usec,
                    "A TCP connection without a complete query for this long is closed (RFC 7766)"),
};

static int strv_set_default(char ***strv, const char *const *values) {
        size_t n = 0;
        char **v;

        if (*strv)
                return 0;
        while (values[n])
                n++;
        v = calloc(n + 1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(v[i] = strdup(values[i]))) {
                        for (size_t j = 0; j < i; j++)
                                free(v[j]);
                        free(v);
                        return -ENOMEM;
                }
        *strv = v;
        return 0;
}

int manager_new(const DaemonArgs *args, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        DnsCacheConfig cc;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        dns_cache_config_defaults(&cc);
        m->config = (DnsConfig){
                .rpc = { .name = "dns" },
                .cache_max_entries = cc.max_entries,
                .cache_max_bytes = cc.max_bytes,
                .min_ttl = cc.min_ttl,
                .max_ttl = cc.max_ttl,
                .negative_max_ttl = cc.negative_max_ttl,
                .servfail_ttl = cc.servfail_ttl,
                .stale_max_age_usec = cc.stale_max_age_usec,
                /* RFC 8767 §5 suggests 1.8 s. */
                .stale_client_timeout_usec = 1800 * USEC_PER_MSEC,
                .prefetch_percent = cc.prefetch_percent,
                .upstream_timeout_usec = 2 * USEC_PER_SEC,
                .max_clients_per_question = 256,
                .tcp_max_connections = 256,
                .tcp_idle_timeout_usec = 10 * USEC_PER_SEC,
        };
        m->config.resolv_conf = strdup("/etc/resolv.conf");
        if (!m->config.resolv_conf)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = daemon_load_config(args, config_table, ELEMENTSOF(config_table), &m->config);
        if (r < 0)
                return r;
        /* Defaults for lists go in after loading, because lists append. */
        r = strv_set_default(&m->config.listen, (const char *const[]){ DEFAULT_LISTEN, NULL });
        if (r >= 0)
                r = strv_set_default(&m->config.allow,
                                     (const char *const[]){ "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                                                            "192.168.0.0/16", "fc00::/7", NULL });
        if (r < 0)
                return log_error_errno(r, "Out of memory.");
        if (m->config.tcp_max_connections == 0 || m->config.tcp_max_connections > 65536 ||
            m->config.tcp_idle_timeout_usec == 0)
                return log_error_errno(-EINVAL, "Invalid config: tcp_max_connections must be 1-65536 and "
                                       "tcp_idle_timeout > 0.");
        if (m->config.cache_max_entries == 0 || m->config.min_ttl > m->config.max_ttl)
                return log_error_errno(-EINVAL,
                                       "Invalid config: cache_max_entries must be > 0 and min_ttl <= max_ttl.");
        for (char **a = m->config.allow; *a; a++) {
                DnsNetwork n;
                if (dns_network_parse(*a, &n) < 0)
                        return log_error_errno(-EINVAL, "Invalid config: allow: '%s' is not a network (a.b.c.d/n).", *a);
        }
        for (char **z = m->config.local_zones; z && *z; z++) {
                uint8_t w[DNS_NAME_MAX];
                size_t n;
                if (dns_name_from_string(*z, w, &n) < 0)
                        return log_error_errno(-EINVAL, "Invalid config: local_zones: '%s' is not a DNS name.", *z);
        }
        for (char **l = m->config.listen; *l; l++) {
                struct sockaddr_storage ss;
                unsigned len;
                if (parse_sockaddr(*l, 53, &ss, &len) < 0)
                        return log_error_errno(-EINVAL, "Invalid config: listen: '%s' is not ip[:port].", *l);
        }

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        dns_server_free(m->dns);
        rpc_server_free(m->server);
        dns_resolver_free(m->resolver);
        dns_cache_free(m->cache);
        dns_local_free(m->local);
        free(m->records_path);
        metrics_free(m->metrics);
        rpc_loop_free(m->rpc_loop);
        sd_event_unref(m->event);
        config_done(config_table, ELEMENTSOF(config_table), &m->config);
        free(m);
        return NULL;
}

void manager_print_config(Manager *m, FILE *f) {
        config_print(config_table, ELEMENTSOF(config_table), &m->config, f);
}

static void observe_latency(double seconds, void *userdata);

static int setup_data_plane(Manager *m) {
        DnsCacheConfig cc;
        DnsServerOptions so = {};
        _cleanup_free_ DnsNetwork *allow = NULL;
        size_t n_allow = 0;
        int r;

        dns_cache_config_defaults(&cc);
        cc.max_entries = m->config.cache_max_entries;
        cc.max_bytes = m->config.cache_max_bytes;
        cc.min_ttl = m->config.min_ttl;
        cc.max_ttl = m->config.max_ttl;
        cc.negative_max_ttl = m->config.negative_max_ttl;
        cc.servfail_ttl = m->config.servfail_ttl;
        cc.stale_max_age_usec = m->config.stale_max_age_usec;
        cc.prefetch_percent = m->config.prefetch_percent;
        r = dns_cache_new(&cc, &m->cache);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the cache (%u entries): %m", cc.max_entries);

        r = dns_local_new(&m->local);
        if (r < 0)
                return log_error_errno(r, "Out of memory.");
        for (char **z = m->config.local_zones; z && *z; z++) {
                r = dns_local_add_zone(m->local, *z);
                if (r < 0)
                        return log_error_errno(r, "Failed to add local zone %s: %m", *z);
        }

        r = dns_resolver_new(m->event, &m->resolver);
        if (r < 0)
                return log_error_errno(r, "Out of memory.");
        dns_resolver_set_timeout(m->resolver, m->config.upstream_timeout_usec);
        dns_resolver_set_max_waiters(m->resolver, m->config.max_clients_per_question);
        dns_resolver_set_latency_observer(m->resolver, observe_latency, m);
        for (char **u = m->config.upstreams; u && *u; u++) {
                r = dns_resolver_add_upstream(m->resolver, *u);
                if (r < 0)
                        return log_error_errno(r, "Invalid upstream '%s' (want ip[:port]): %m", *u);
        }
        if (dns_resolver_n_upstreams(m->resolver) == 0 && m->config.resolv_conf) {
                r = dns_resolver_add_resolv_conf(m->resolver, m->config.resolv_conf);
                if (r < 0)
                        log_warning_errno(r, "Failed to read %s, continuing without upstreams: %m",
                                          m->config.resolv_conf);
        }
        if (dns_resolver_n_upstreams(m->resolver) == 0)
                log_warning("No upstream resolvers: only local records and the cache will answer.");

        for (char **a = m->config.allow; *a; a++)
                n_allow++;
        allow = calloc(MAX(n_allow, 1), sizeof(DnsNetwork));
        if (!allow)
                return log_error_errno(-ENOMEM, "Out of memory.");
        for (size_t i = 0; i < n_allow; i++)
                (void) dns_network_parse(m->config.allow[i], &allow[i]);
        so.allow = allow;
        so.n_allow = n_allow;
        so.rate_limit_qps = m->config.rate_limit;
        so.stale_client_timeout_usec = m->config.stale_client_timeout_usec;
        so.max_udp_size = DNS_EDNS_BUFFER;
        so.tcp_max_connections = m->config.tcp_max_connections;
        so.tcp_idle_usec = m->config.tcp_idle_timeout_usec;
        r = dns_server_new(m->event, m->cache, m->resolver, m->local, &so, &m->dns);
        if (r < 0)
                return log_error_errno(r, "Out of memory.");
        dns_resolver_set_reply_hook(m->resolver, dns_server_on_upstream_reply, m->dns);
        return 0;
}

static void observe_latency(double seconds, void *userdata) {
        Manager *m = userdata;
        Metric *h = metrics_histogram(m->metrics, "hostmesh_dns_upstream_latency_seconds",
                                      "Round-trip time of upstream queries", NULL);
        if (h)
                metric_observe(h, seconds);
}

/* Under systemd the DNS sockets come from the socket units next to the
 * gRPC socket, named dns-udp and dns-tcp; run by hand we bind them. */
static int setup_listeners(Manager *m) {
        unsigned taken = 0;
        int fd, r;

        while ((fd = rpc_server_take_fd(m->server, "dns-udp")) >= 0) {
                r = dns_server_add_udp_fd(m->dns, fd);
                if (r < 0)
                        return log_error_errno(r, "Failed to watch the passed UDP socket: %m");
                taken++;
        }
        while ((fd = rpc_server_take_fd(m->server, "dns-tcp")) >= 0) {
                r = dns_server_add_tcp_fd(m->dns, fd);
                if (r < 0)
                        return log_error_errno(r, "Failed to watch the passed TCP socket: %m");
                taken++;
        }
        if (taken > 0) {
                log_info("Serving DNS on %u socket(s) passed by systemd.", taken);
                return 0;
        }
        for (char **l = m->config.listen; *l; l++) {
                r = dns_server_listen(m->dns, *l);
                if (r < 0)
                        /* The admin API stays up so that the problem can be seen
                         * and records kept; DNS on this address does not. */
                        log_error_errno(r, "Failed to listen for DNS on %s, continuing without it: %m", *l);
                else
                        log_info("Serving DNS on %s (UDP and TCP).", *l);
        }
        return 0;
}

/* Local records live in the state directory (records.json), so that the
 * names vmmd registered survive dnsd's restarts. */
static int load_records(Manager *m) {
        _cleanup_free_ char *dir = hostmesh_state_dir("dns"), *text = NULL;
        size_t size, loaded = 0, skipped = 0;
        int r;

        if (!dir || !(m->records_path = path_join(dir, "records.json")))
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create state directory %s: %m", dir);
        r = read_full_file(m->records_path, &text, &size, 64 * 1024 * 1024);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Failed to read %s: %m", m->records_path);
        r = dns_local_load_json(m->local, text, size, &loaded, &skipped);
        if (r < 0)
                /* Keep serving; the next change writes a good file. */
                log_error_errno(r, "%s is not a list of records, ignoring it: %m", m->records_path);
        else
                log_info("Loaded %zu local records from %s%s.", loaded, m->records_path,
                         skipped > 0 ? " (some entries were not valid and were skipped)" : "");
        return 0;
}

void manager_save_records(Manager *m) {
        _cleanup_free_ char *text = NULL;
        int r;

        if (!m->records_path)
                return;
        r = dns_local_dump_json(m->local, &text);
        if (r >= 0)
                r = write_file_atomic(m->records_path, text, strlen(text), 0600);
        if (r < 0)
                log_warning_errno(r, "Failed to save the local records to %s: %m; they are lost when dnsd restarts.",
                                  m->records_path);
}

int manager_start(Manager *m) {
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        m->metrics = metrics_new();
        if (!m->metrics)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = setup_data_plane(m);
        if (r < 0)
                return r;
        r = load_records(m);
        if (r < 0)
                return r;
        r = rpc_loop_new(m->event, &m->rpc_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to start the rpc loop: %m");
        r = rpc_server_new(m->rpc_loop, &m->config.rpc, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to create the rpc server: %m");
        r = dns_grpc_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register methods: %m");
        r = rpc_server_start(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to start serving: %m");
        return setup_listeners(m);
}

int manager_run(Manager *m) {
        return sd_event_loop(m->event);
}

static void export_counter(Manager *m, const char *name, const char *help, uint64_t now, uint64_t *last) {
        Metric *c = metrics_counter(m->metrics, name, help, NULL);
        if (c && now > *last)
                metric_add(c, now - *last);
        *last = now;
}

int manager_format_metrics(Manager *m, char **ret) {
        DnsServerStats ss;
        DnsCacheStats cs;
        DnsResolverStats rs;
        DnsUpstreamStats us[16];
        size_t n;
        Metric *g;

        dns_server_get_stats(m->dns, &ss);
        dns_cache_get_stats(m->cache, &cs);
        dns_resolver_get_stats(m->resolver, &rs);
        export_counter(m, "hostmesh_dns_queries_total", "DNS queries received", ss.queries, &m->exported.queries);
        export_counter(m, "hostmesh_dns_cache_hits_total", "Queries answered from the cache", ss.hits, &m->exported.hits);
        export_counter(m, "hostmesh_dns_cache_misses_total", "Queries not answered from the cache", ss.misses,
                       &m->exported.misses);
        export_counter(m, "hostmesh_dns_stale_served_total", "Expired answers served (RFC 8767)", ss.stale_served,
                       &m->exported.stale_served);
        export_counter(m, "hostmesh_dns_prefetches_total", "Popular answers refreshed before expiry", ss.prefetches,
                       &m->exported.prefetches);
        export_counter(m, "hostmesh_dns_local_answers_total", "Queries answered from local records", ss.local_answers,
                       &m->exported.local_answers);
        export_counter(m, "hostmesh_dns_rate_limited_total", "Queries dropped by the per-client rate limit",
                       ss.rate_limited, &m->exported.rate_limited);
        export_counter(m, "hostmesh_dns_tcp_idle_closed_total",
                       "TCP connections closed for being idle (timeout, or to make room for a new client)",
                       ss.tcp_idle_closed, &m->exported.tcp_idle_closed);
        export_counter(m, "hostmesh_dns_coalesced_total", "Queries that joined an upstream query in flight",
                       rs.coalesced, &m->exported_resolver.coalesced);
        export_counter(m, "hostmesh_dns_upstream_queries_total", "Upstream transactions", rs.transactions,
                       &m->exported_resolver.transactions);
        export_counter(m, "hostmesh_dns_cache_evictions_total", "Cache entries evicted to make room", cs.evictions,
                       &m->exported_cache.evictions);
        g = metrics_gauge(m->metrics, "hostmesh_dns_cache_entries", "Entries in the cache", NULL);
        if (g)
                metric_set(g, (int64_t) cs.entries);
        g = metrics_gauge(m->metrics, "hostmesh_dns_cache_bytes", "Bytes of responses in the cache", NULL);
        if (g)
                metric_set(g, (int64_t) cs.bytes);
        n = dns_resolver_get_upstream_stats(m->resolver, us, ELEMENTSOF(us));
        for (size_t i = 0; i < n && i < ELEMENTSOF(us); i++) {
                char labels[160];
                snprintf(labels, sizeof(labels), "upstream=\"%.63s\"", us[i].address);
                g = metrics_gauge(m->metrics, "hostmesh_dns_upstream_healthy", "1 when the upstream answers", labels);
                if (g)
                        metric_set(g, us[i].healthy ? 1 : 0);
        }
        return metrics_format(m->metrics, "part=\"dns\"", ret);
}
