/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "fs-util.h"
#include "log.h"
#include "parse-util.h"
#include "vmm-manager.h"
#include "vmm-net.h"
#include "vmm-nethelper.h"
#include "vmm-nft.h"
#include "vmm-store.h"

#define NETHELPER_NAME "hostmesh-vmm-nethelper"

int vmm_net_configure(Manager *m) {
        VmmConfig *c = &m->config;
        uint32_t hostmask;
        int r;

        if (!c->network)
                return 0;
        r = parse_ipv4_prefix(c->network_pool, &m->net_pool, &m->net_prefixlen);
        if (r < 0 || m->net_prefixlen < 8 || m->net_prefixlen > 29)
                return log_error_errno(-EINVAL, "[vmm] network_pool = %s: expected a network a.b.c.d/n with n in 8..29.",
                                       c->network_pool);
        if (strlen(c->network_bridge) >= IFNAMSIZ || !filename_is_valid(c->network_bridge, IFNAMSIZ - 1))
                return log_error_errno(-EINVAL, "[vmm] network_bridge = %s: not a valid interface name.",
                                       c->network_bridge);
        if (c->network_dns_port == 0 || c->network_dns_port > UINT16_MAX)
                return log_error_errno(-EINVAL, "[vmm] network_dns_port = %u: expected 1..65535.", c->network_dns_port);
        /* The gateway (the bridge, and the instances' DNS) is the first
         * address of the pool; instances get the ones after it. */
        hostmask = ~(uint32_t) 0 >> m->net_prefixlen;
        m->net_gateway.s_addr = htonl(ntohl(m->net_pool.s_addr) + 1);
        m->net_pool_size = hostmask - 1; /* without the network and broadcast addresses */
        return 0;
}

static bool instance_has_net(const Instance *i) {
        return i->tap != NULL && i->address != NULL;
}

void vmm_net_mac(const Instance *i, uint8_t mac[6]) {
        struct in_addr a = {};
        uint32_t h;

        if (i->address)
                (void) inet_pton(AF_INET, i->address, &a);
        h = ntohl(a.s_addr);
        /* Locally administered, unicast ("hm"), and unique within the pool
         * since pools are at most a /8. */
        mac[0] = 0x02;
        mac[1] = 0x68;
        mac[2] = 0x6d;
        mac[3] = (uint8_t) (h >> 16);
        mac[4] = (uint8_t) (h >> 8);
        mac[5] = (uint8_t) h;
}

char *vmm_net_guest_cmdline(Manager *m, const Instance *i) {
        char gw[INET_ADDRSTRLEN];
        char *s;

        if (!instance_has_net(i) || !inet_ntop(AF_INET, &m->net_gateway, gw, sizeof(gw)))
                return NULL;
        if (asprintf(&s, "hostmesh.ip=%s hostmesh.gw=%s hostmesh.dns=%s hostmesh.domain=%s", i->address, gw, gw,
                     m->config.dns_zone) < 0)
                return NULL;
        return s;
}

static void fill_network(Manager *m, NftNetwork *n) {
        *n = (NftNetwork){
                .bridge = m->config.network_bridge,
                .gateway = m->net_gateway,
                .pool = m->net_pool,
                .prefixlen = m->net_prefixlen,
                .dns_port = (uint16_t) m->config.network_dns_port,
        };
}

static int fill_instance(const Instance *i, NftInstance *ret) {
        *ret = (NftInstance){ .tap = i->tap };
        if (inet_pton(AF_INET, i->address, &ret->address) != 1)
                return -EINVAL;
        vmm_net_mac(i, ret->mac);
        return 0;
}

/* Whether a and b may talk: only instances of one tenant, and only when
 * the config says so. */
static bool instances_are_peers(Manager *m, const Instance *a, const Instance *b) {
        return m->config.network_same_tenant && a != b && instance_has_net(a) && instance_has_net(b) &&
               streq_ptr(a->tenant, b->tenant);
}

/* The pairs between i and its peers: both directions, or only those
 * where i sends (to list every pair of the table once). */
static int collect_pairs(Manager *m, const Instance *i, bool both_directions, NftPair **ret, size_t *ret_n) {
        NftPair *v = NULL;
        size_t n = 0;
        struct in_addr self;

        *ret = NULL;
        *ret_n = 0;
        if (!m->config.network_same_tenant || inet_pton(AF_INET, i->address, &self) != 1)
                return 0;
        for (size_t k = 0; k < m->n_instances; k++) {
                Instance *o = m->instances[k];
                struct in_addr other;
                if (!instances_are_peers(m, i, o) || inet_pton(AF_INET, o->address, &other) != 1)
                        continue;
                NftPair *nv = realloc(v, (n + 2) * sizeof(NftPair));
                if (!nv) {
                        free(v);
                        return -ENOMEM;
                }
                v = nv;
                v[n++] = (NftPair){ .a = self, .b = other };
                if (both_directions)
                        v[n++] = (NftPair){ .a = other, .b = self };
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static int apply(Manager *m, NftBatch *b, char **ret_error) {
        return nethelper_apply(m->nethelper, nft_batch_data(b), nft_batch_size(b), ret_error);
}

/* Lowest free address after the gateway. Addresses of instances that still
 * hold a tap are in use, whatever their state. */
int vmm_net_allocate_address(Manager *m, char **ret) {
        uint32_t base = ntohl(m->net_pool.s_addr);
        size_t words = (m->net_pool_size + 2 + 63) / 64;
        _cleanup_free_ uint64_t *used = calloc(words, sizeof(uint64_t));
        char buf[INET_ADDRSTRLEN];

        if (!used)
                return -ENOMEM;
        for (size_t k = 0; k < m->n_instances; k++) {
                struct in_addr a;
                const Instance *i = m->instances[k];
                if (!instance_has_net(i) || inet_pton(AF_INET, i->address, &a) != 1)
                        continue;
                uint32_t off = ntohl(a.s_addr) - base;
                if (off <= m->net_pool_size)
                        used[off / 64] |= UINT64_C(1) << (off % 64);
        }
        for (uint32_t off = 2; off <= m->net_pool_size; off++)
                if (!(used[off / 64] & (UINT64_C(1) << (off % 64)))) {
                        struct in_addr a = { .s_addr = htonl(base + off) };
                        if (!inet_ntop(AF_INET, &a, buf, sizeof(buf)))
                                return -EINVAL;
                        *ret = strdup(buf);
                        return *ret ? 0 : -ENOMEM;
                }
        return -ENOSPC;
}

/* "hm" + the first 13 characters of the id: at most 15 bytes (IFNAMSIZ). */
static int tap_name(const Instance *i, char **ret) {
        return asprintf(ret, "hm%.13s", i->id) < 0 ? -ENOMEM : 0;
}

int vmm_net_attach(Manager *m, Instance *i, int *ret_tap_fd, char **ret_error) {
        _cleanup_(nft_batch_freep) NftBatch *b = NULL;
        _cleanup_free_ NftPair *pairs = NULL;
        _cleanup_close_ int fd = -EBADF;
        NftNetwork net;
        NftInstance ni;
        size_t n_pairs;
        uint8_t mac[6];
        int r;

        *ret_tap_fd = -EBADF;
        if (!m->nethelper)
                return 0;
        if (!i->address) {
                r = vmm_net_allocate_address(m, &i->address);
                if (r == -ENOSPC) {
                        if (asprintf(ret_error, "The address pool %s is exhausted; destroy instances or widen "
                                     "[vmm] network_pool", m->config.network_pool) < 0)
                                *ret_error = NULL;
                        return r;
                }
                if (r < 0)
                        return r;
        }
        r = tap_name(i, &i->tap);
        if (r < 0)
                return r;
        vmm_net_mac(i, mac);
        r = fill_instance(i, &ni);
        if (r < 0)
                goto fail;
        r = nethelper_create_tap(m->nethelper, m->config.network_bridge, i->tap, mac, ni.address, &fd, ret_error);
        if (r < 0)
                goto fail;
        fill_network(m, &net);
        r = collect_pairs(m, i, /* both_directions= */ true, &pairs, &n_pairs);
        if (r >= 0)
                r = nft_batch_new(&b);
        if (r >= 0)
                r = nft_batch_add_instance(b, &net, &ni, pairs, n_pairs);
        if (r >= 0)
                r = apply(m, b, ret_error);
        if (r < 0) {
                (void) nethelper_delete_tap(m->nethelper, m->config.network_bridge, i->tap, ni.address, NULL);
                goto fail;
        }
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: address %s on %s (%zu peers).", i->id,
                   i->address, i->tap, n_pairs / 2);
        *ret_tap_fd = TAKE_FD(fd);
        return 0;
fail:
        free(i->tap);
        i->tap = NULL;
        return r;
}

/* Replaces hostmesh's table, in one transaction, with what the instances
 * vmmd knows (those holding a tap) need. */
static int replace_table(Manager *m, size_t *ret_instances, size_t *ret_pairs, char **ret_error) {
        _cleanup_(nft_batch_freep) NftBatch *b = NULL;
        _cleanup_free_ NftInstance *v = NULL;
        _cleanup_free_ NftPair *pairs = NULL;
        size_t n = 0, n_pairs = 0;
        NftNetwork net;
        int r;

        v = calloc(m->n_instances + 1, sizeof(NftInstance));
        if (!v)
                return -ENOMEM;
        for (size_t k = 0; k < m->n_instances; k++) {
                Instance *i = m->instances[k];
                _cleanup_free_ NftPair *p = NULL;
                size_t np;

                if (!instance_has_net(i))
                        continue;
                r = fill_instance(i, &v[n]);
                if (r < 0)
                        return r;
                /* Every direction once: as the sender's. */
                r = collect_pairs(m, i, /* both_directions= */ false, &p, &np);
                if (r < 0)
                        return r;
                if (np > 0) {
                        NftPair *grown = realloc(pairs, (n_pairs + np) * sizeof(NftPair));
                        if (!grown)
                                return -ENOMEM;
                        pairs = grown;
                        memcpy(pairs + n_pairs, p, np * sizeof(NftPair));
                        n_pairs += np;
                }
                n++;
        }
        fill_network(m, &net);
        r = nft_batch_new(&b);
        if (r >= 0)
                r = nft_batch_replace_table(b, &net, v, n, pairs, n_pairs);
        if (r >= 0)
                r = apply(m, b, ret_error);
        if (r < 0)
                return r;
        if (ret_instances)
                *ret_instances = n;
        if (ret_pairs)
                *ret_pairs = n_pairs;
        return 0;
}

/* Gives back an instance's tap and address (its rules are dealt with by
 * the caller). */
static void release_tap(Manager *m, Instance *i) {
        _cleanup_free_ char *error = NULL;
        struct in_addr a = {};
        int r;

        (void) inet_pton(AF_INET, i->address, &a);
        r = nethelper_delete_tap(m->nethelper, m->config.network_bridge, i->tap, a, &error);
        if (r < 0)
                log_struct(LOG_WARNING, r, FIELDS(i->log_field), "Instance %s: cannot delete tap %s: %s, ignoring",
                           i->id, i->tap, error ?: strerror(-r));
        free(i->tap);
        i->tap = NULL;
}

void vmm_net_detach(Manager *m, Instance *i) {
        _cleanup_(nft_batch_freep) NftBatch *b = NULL;
        _cleanup_free_ NftPair *pairs = NULL;
        _cleanup_free_ char *error = NULL, *error2 = NULL;
        NftNetwork net;
        NftInstance ni;
        size_t n_pairs = 0;
        int r;

        if (!instance_has_net(i) || !m->nethelper)
                return;
        fill_network(m, &net);
        r = fill_instance(i, &ni);
        if (r >= 0)
                r = collect_pairs(m, i, /* both_directions= */ true, &pairs, &n_pairs);
        if (r >= 0)
                r = nft_batch_new(&b);
        if (r >= 0)
                r = nft_batch_remove_instance(b, &net, &ni, pairs, n_pairs);
        if (r >= 0)
                r = apply(m, b, &error);
        release_tap(m, i);
        if (r < 0) {
                /* The table is not what vmmd thinks (changed by hand?): a
                 * pair left behind would let the next holder of this address
                 * talk to a peer. Replace the whole table instead. */
                log_struct(LOG_WARNING, r, FIELDS(i->log_field),
                           "Instance %s: cannot remove its nftables rules (%s); replacing the table.", i->id,
                           error ?: strerror(-r));
                r = replace_table(m, NULL, NULL, &error2);
                if (r < 0)
                        log_struct(LOG_ERR, r, FIELDS(i->log_field),
                                   "Failed to replace the nftables table inet %s: %s; restart vmmd to reconcile.",
                                   NFT_TABLE_NAME, error2 ?: strerror(-r));
        }
}

/* vmmd keeps no network privilege once the helper runs: CAP_NET_ADMIN is
 * dropped from the effective, permitted and inheritable sets (and the
 * ambient set, which systemd may have filled). */
static int drop_net_admin(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[2] = {};

        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        if (!(d[0].permitted & (1U << CAP_NET_ADMIN)))
                return 0;
        d[0].effective &= ~(1U << CAP_NET_ADMIN);
        d[0].permitted &= ~(1U << CAP_NET_ADMIN);
        d[0].inheritable &= ~(1U << CAP_NET_ADMIN);
        (void) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_NET_ADMIN, 0, 0);
        if (syscall(SYS_capset, &h, d) < 0)
                return -errno;
        return 1;
}

static char *helper_path(Manager *m) {
        _cleanup_free_ char *self = NULL;
        char buf[4096];
        ssize_t n;

        if (!isempty(m->config.network_helper))
                return strdup(m->config.network_helper);
        /* Next to vmmd: the build tree and the installed libexec dir alike. */
        n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
        if (n <= 0)
                return NULL;
        buf[n] = 0;
        char *slash = strrchr(buf, '/');
        if (!slash)
                return NULL;
        *slash = 0;
        return path_join(buf, NETHELPER_NAME);
}

int vmm_net_reconcile(Manager *m) {
        _cleanup_(strv_freep) char **taps = NULL;
        _cleanup_free_ char *error = NULL;
        size_t n = 0, n_pairs = 0, removed = 0;
        int r;

        if (!m->nethelper)
                return 0;
        r = nethelper_list_taps(m->nethelper, m->config.network_bridge, &taps, &error);
        if (r < 0)
                return log_error_errno(r, "Failed to list the taps on %s: %s", m->config.network_bridge,
                                       error ?: strerror(-r));
        for (size_t k = 0; k < m->n_instances; k++) {
                Instance *i = m->instances[k];
                bool present = false;

                if (!instance_has_net(i))
                        continue;
                for (char **t = taps; t && *t; t++)
                        present = present || streq(*t, i->tap);
                if (instance_state_is_final(i->state) || !present) {
                        /* Gone while vmmd was away (or never finished). */
                        release_tap(m, i);
                        (void) store_save(m->store, i);
                }
        }
        for (char **t = taps; t && *t; t++) {
                bool known = false;
                for (size_t k = 0; k < m->n_instances; k++)
                        known = known || streq_ptr(m->instances[k]->tap, *t);
                if (known)
                        continue;
                /* A tap vmmd does not know: left by a crash or made by hand. */
                r = nethelper_delete_tap(m->nethelper, m->config.network_bridge, *t, (struct in_addr){}, NULL);
                if (r < 0)
                        log_warning_errno(r, "Failed to delete stale tap %s: %m, ignoring", *t);
                else
                        removed++;
        }
        r = replace_table(m, &n, &n_pairs, &error);
        if (r < 0)
                return log_error_errno(r, "Failed to install the nftables table inet %s: %s", NFT_TABLE_NAME,
                                       error ?: strerror(-r));
        log_info("Network reconciled: table inet %s with %zu instances and %zu allowed pairs; %zu stale taps removed.",
                 NFT_TABLE_NAME, n, n_pairs, removed);
        return 0;
}

int vmm_net_start(Manager *m) {
        _cleanup_free_ char *path = NULL, *error = NULL;
        int r;

        if (!m->config.network) {
                log_info("Instance networking is off ([vmm] network = no): instances get no NIC.");
                return 0;
        }
        path = helper_path(m);
        if (!path)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = nethelper_spawn(path, &m->nethelper);
        if (r < 0)
                return log_error_errno(r, "Failed to start the network helper %s: %m (install it next to vmmd, set "
                                       "[vmm] network_helper, or set [vmm] network = no)", path);
        r = drop_net_admin();
        if (r < 0)
                return log_error_errno(r, "Failed to drop CAP_NET_ADMIN: %m");
        r = nethelper_setup_bridge(m->nethelper, m->config.network_bridge, m->net_gateway, m->net_prefixlen, &error);
        if (r < 0)
                return log_error_errno(r, "Failed to set up bridge %s: %s (vmmd needs CAP_NET_ADMIN for its helper; "
                                       "or set [vmm] network = no)",
                                       m->config.network_bridge, error ?: strerror(-r));
        return 0;
}

void vmm_net_stop(Manager *m) {
        m->nethelper = nethelper_free(m->nethelper);
}
