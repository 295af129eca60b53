/* SPDX-License-Identifier: MIT */
/* The network helper against the real kernel, in a network namespace of the
 * test's own: bridge, taps, and the nftables table, checked with `ip` and
 * `nft` as an administrator would. Needs root; exits 77 (skipped) without
 * it or without network namespaces. The tests run in order and build on
 * each other (one bridge, two instances). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/table.h>

#include "vmm-nethelper.h"
#include "vmm-nft.h"

static NetHelper *helper;
static int helper_fd = -EBADF; /* helper's socket, for raw messages */
static int tap_fds[2] = { -EBADF, -EBADF };

static NftNetwork net(void) {
        NftNetwork n = { .bridge = "hm0", .prefixlen = 16, .dns_port = 5353 };

        inet_pton(AF_INET, "10.88.0.1", &n.gateway);
        inet_pton(AF_INET, "10.88.0.0", &n.pool);
        return n;
}

static NftInstance inst(unsigned k) {
        static const char *const taps[] = { "hmt0", "hmt1" };
        static const char *const addresses[] = { "10.88.0.2", "10.88.0.3" };
        NftInstance i = { .tap = taps[k], .mac = { 0x02, 0x48, 0x4d, 0, 0, (uint8_t) (2 + k) } };

        inet_pton(AF_INET, addresses[k], &i.address);
        return i;
}

/* 0 → 1 and 1 → 0. */
static NftPair pair(unsigned from) {
        return (NftPair) { .a = inst(from).address, .b = inst(1 - from).address };
}

static json_t *run_json(const char *cmd) {
        FILE *f;
        json_t *j;

        f = popen(cmd, "r");
        assert_non_null(f);
        j = json_loadf(f, 0, NULL);
        assert_int_equal(pclose(f), 0);
        assert_non_null(j);
        return j;
}

static bool json_array_contains(json_t *a, const char *s) {
        json_t *it;
        size_t k;

        json_array_foreach(a, k, it)
                if (json_is_string(it) && streq(json_string_value(it), s))
                        return true;
        return false;
}

static int run(const char *cmd) {
        int r = system(cmd);

        return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* Number of "kind" objects (chain, rule, set, table) in `nft -j list
 * ruleset`, restricted to table and, when not NULL, to a chain or set name
 * ("chain" for rules, "name" otherwise). */
static int count(const char *kind, const char *table, const char *name) {
        json_t *j = run_json("nft -j list ruleset"), *items = json_object_get(j, "nftables"), *it;
        size_t k;
        int n = 0;

        json_array_foreach(items, k, it) {
                json_t *o = json_object_get(it, kind);

                if (!o || !streq_ptr(json_string_value(json_object_get(o, kind[0] == 't' ? "name" : "table")), table))
                        continue;
                if (name && !streq_ptr(json_string_value(json_object_get(o, streq(kind, "rule") ? "chain" : "name")),
                                       name))
                        continue;
                n++;
        }
        json_decref(j);
        return n;
}

static int peers_elements(void) {
        json_t *j = run_json("nft -j list set inet hostmesh peers"), *items = json_object_get(j, "nftables"), *it;
        size_t k;
        int n = -1;

        json_array_foreach(items, k, it) {
                json_t *s = json_object_get(it, "set");

                if (s)
                        n = (int) json_array_size(json_object_get(s, "elem"));
        }
        json_decref(j);
        return n;
}

static int apply_replace(size_t n_instances, size_t n_pairs) {
        NftNetwork n = net();
        NftInstance is[] = { inst(0), inst(1) };
        NftPair ps[] = { pair(0), pair(1) };
        NftBatch *b = NULL;
        char *error = NULL;
        int r;

        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_replace_table(b, &n, is, n_instances, ps, n_pairs), 0);
        r = nethelper_apply(helper, nft_batch_data(b), nft_batch_size(b), &error);
        if (r < 0)
                fprintf(stderr, "apply: %s\n", error ?: "(no message)");
        free(error);
        nft_batch_free(b);
        return r;
}

static void test_setup_bridge_is_idempotent(void **state) {
        struct in_addr gw;
        char *error = NULL;
        json_t *j, *link, *addr;
        char fwd[4] = {};
        int fd;

        (void) state;
        inet_pton(AF_INET, "10.88.0.1", &gw);
        assert_int_equal(nethelper_setup_bridge(helper, "hm0", gw, 16, &error), 0);
        assert_int_equal(nethelper_setup_bridge(helper, "hm0", gw, 16, &error), 0);
        assert_null(error);

        j = run_json("ip -d -j addr show dev hm0");
        link = json_array_get(j, 0);
        assert_string_equal(json_string_value(json_object_get(json_object_get(link, "linkinfo"), "info_kind")),
                            "bridge");
        assert_true(json_array_contains(json_object_get(link, "flags"), "UP"));
        addr = json_array_get(json_object_get(link, "addr_info"), 0);
        assert_string_equal(json_string_value(json_object_get(addr, "local")), "10.88.0.1");
        assert_int_equal(json_integer_value(json_object_get(addr, "prefixlen")), 16);
        json_decref(j);

        fd = open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_true(read(fd, fwd, sizeof(fwd) - 1) > 0);
        close(fd);
        assert_string_equal(fwd, "1\n");

        /* A link of that name that is not a bridge is refused, not reused. */
        assert_int_equal(nethelper_setup_bridge(helper, "lo", gw, 16, &error), -EEXIST);
        assert_non_null(strstr(error, "not a bridge"));
        free(error);
}

static void test_create_tap_gives_an_fd_on_an_isolated_port(void **state) {
        char *error = NULL;

        (void) state;
        for (unsigned k = 0; k < 2; k++) {
                NftInstance i = inst(k);
                char cmd[128];
                json_t *j, *link, *slave;

                assert_int_equal(nethelper_create_tap(helper, "hm0", i.tap, i.mac, i.address, &tap_fds[k], &error),
                                 0);
                assert_true(tap_fds[k] >= 0);
                assert_true(fcntl(tap_fds[k], F_GETFD) & FD_CLOEXEC);

                snprintf(cmd, sizeof(cmd), "ip -d -j link show dev %s", i.tap);
                j = run_json(cmd);
                link = json_array_get(j, 0);
                assert_string_equal(json_string_value(json_object_get(link, "master")), "hm0");
                assert_string_equal(json_string_value(json_object_get(json_object_get(link, "linkinfo"),
                                                                      "info_kind")), "tun");
                slave = json_object_get(json_object_get(link, "linkinfo"), "info_slave_data");
                assert_true(json_is_true(json_object_get(slave, "isolated")));
                json_decref(j);
        }

        /* The neighbour entries are permanent: guests cannot move them. */
        assert_int_equal(run("ip neigh show dev hm0 | grep -q '^10.88.0.2 lladdr 02:48:4d:00:00:02 PERMANENT'"), 0);
        assert_int_equal(run("ip neigh show dev hm0 | grep -q '^10.88.0.3 lladdr 02:48:4d:00:00:03 PERMANENT'"), 0);

        /* A persistent tap of that name is opened again once its user
         * (QEMU) is gone; while it is open, it is busy. */
        {
                NftInstance i = inst(0);
                int fd = -EBADF;

                assert_int_equal(nethelper_create_tap(helper, "hm0", i.tap, i.mac, i.address, &fd, &error), -EBUSY);
                assert_non_null(strstr(error, "in use"));
                free(error);
                close(tap_fds[0]);
                assert_int_equal(nethelper_create_tap(helper, "hm0", i.tap, i.mac, i.address, &tap_fds[0], &error),
                                 0);
                assert_true(tap_fds[0] >= 0);
        }
        /* Not a bridge. */
        {
                NftInstance i = inst(0);
                int fd = -EBADF;

                assert_int_equal(nethelper_create_tap(helper, "lo", "hmt9", i.mac, i.address, &fd, &error), -ENOTTY);
                free(error);
        }
}

static void test_replace_table_installs_the_table(void **state) {
        (void) state;
        assert_int_equal(apply_replace(2, 2), 0);
        assert_int_equal(count("table", "hostmesh", NULL), 1);
        assert_int_equal(count("chain", "hostmesh", NULL), 6);
        assert_int_equal(count("chain", "hostmesh", "guard-hmt0"), 1);
        assert_int_equal(count("chain", "hostmesh", "guard-hmt1"), 1);
        assert_int_equal(count("rule", "hostmesh", "prerouting"), 2);
        assert_int_equal(count("rule", "hostmesh", "postrouting"), 1);
        assert_int_equal(count("rule", "hostmesh", "input"), 6);
        assert_int_equal(count("rule", "hostmesh", "forward"), 4);
        assert_int_equal(count("rule", "hostmesh", "guard-hmt0"), 3);
        assert_int_equal(peers_elements(), 2);

        /* What nft prints back is what nft_text_* says (the same rules). */
        assert_int_equal(run("nft list chain inet hostmesh guard-hmt0 | grep -q "
                             "'ether saddr != 02:48:4d:00:00:02 counter packets 0 bytes 0 drop comment'"), 0);
        assert_int_equal(run("nft list chain inet hostmesh forward | grep -q "
                             "'iifname \"hm0\" oifname \"hm0\" ip saddr . ip daddr @peers'"), 0);
        assert_int_equal(run("nft list chain inet hostmesh prerouting | grep -q "
                             "'ip daddr 10.88.0.1 udp dport 53 dnat ip to 10.88.0.1:5353'"), 0);
        assert_int_equal(run("nft list chain inet hostmesh postrouting | grep -q "
                             "'ip saddr 10.88.0.0/16 counter packets 0 bytes 0 masquerade'"), 0);

        /* Again: the same table, not twice the rules. */
        assert_int_equal(apply_replace(2, 2), 0);
        assert_int_equal(count("rule", "hostmesh", "forward"), 4);
        assert_int_equal(count("rule", "hostmesh", "guard-hmt1"), 3);
}

static void test_replace_table_with_many_pairs_is_one_batch(void **state) {
        enum { N = 20000 };
        NftNetwork n = net();
        NftInstance is[] = { inst(0), inst(1) };
        NftPair *ps = calloc(N, sizeof(NftPair));
        NftBatch *b = NULL;
        char *error = NULL;

        (void) state;
        assert_non_null(ps);
        for (unsigned k = 0; k < N; k++)
                ps[k] = (NftPair) { .a = { htonl(0x0a580000u + k) }, .b = { htonl(0x0a590000u + k) } };
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_replace_table(b, &n, is, 2, ps, N), 0);
        assert_true(nft_batch_size(b) > 256 * 1024);
        assert_int_equal(nethelper_apply(helper, nft_batch_data(b), nft_batch_size(b), &error), 0);
        nft_batch_free(b);
        free(ps);
        assert_int_equal(peers_elements(), N);

        assert_int_equal(apply_replace(2, 2), 0);
        assert_int_equal(peers_elements(), 2);
}

static void test_remove_and_add_instance(void **state) {
        NftNetwork n = net();
        NftInstance i = inst(1);
        NftPair ps[] = { pair(0), pair(1) };
        NftBatch *b = NULL;
        char *error = NULL;

        (void) state;
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_remove_instance(b, &n, &i, ps, 2), 0);
        assert_int_equal(nethelper_apply(helper, nft_batch_data(b), nft_batch_size(b), &error), 0);
        nft_batch_free(b);
        assert_int_equal(count("chain", "hostmesh", "guard-hmt1"), 0);
        assert_int_equal(count("chain", "hostmesh", "guard-hmt0"), 1);
        assert_int_equal(peers_elements(), 0);

        /* Removing it again: the kernel says the chain is gone. */
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_remove_instance(b, &n, &i, NULL, 0), 0);
        assert_int_equal(nethelper_apply(helper, nft_batch_data(b), nft_batch_size(b), &error), -ENOENT);
        assert_non_null(error);
        assert_non_null(strstr(error, "nftables refused the batch"));
        free(error);
        nft_batch_free(b);

        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_add_instance(b, &n, &i, ps, 2), 0);
        assert_int_equal(nethelper_apply(helper, nft_batch_data(b), nft_batch_size(b), &error), 0);
        nft_batch_free(b);
        assert_int_equal(count("chain", "hostmesh", "guard-hmt1"), 1);
        assert_int_equal(count("rule", "hostmesh", "guard-hmt1"), 3);
        assert_int_equal(peers_elements(), 2);

        /* Adding it twice leaves one set of rules. */
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_add_instance(b, &n, &i, ps, 2), 0);
        assert_int_equal(nethelper_apply(helper, nft_batch_data(b), nft_batch_size(b), &error), 0);
        nft_batch_free(b);
        assert_int_equal(count("rule", "hostmesh", "guard-hmt1"), 3);
        assert_int_equal(peers_elements(), 2);
}

static void test_replace_table_repairs_hand_edits_and_spares_other_tables(void **state) {
        (void) state;
        assert_int_equal(run("nft add table inet other && nft add chain inet other keep && "
                             "nft add rule inet other keep counter"), 0);
        /* The first rule of forward, by its handle. */
        assert_int_equal(run("h=$(nft -a list chain inet hostmesh forward | "
                             "sed -n 's/.*replies to instances.*# handle \\([0-9]*\\)$/\\1/p') && "
                             "nft delete rule inet hostmesh forward handle $h"), 0);
        assert_int_equal(run("nft add chain inet hostmesh stale"), 0);
        assert_int_equal(count("rule", "hostmesh", "forward"), 3);
        assert_int_equal(count("chain", "hostmesh", "stale"), 1);

        assert_int_equal(apply_replace(2, 2), 0);
        assert_int_equal(count("rule", "hostmesh", "forward"), 4);
        assert_int_equal(count("chain", "hostmesh", "stale"), 0);
        assert_int_equal(count("rule", "other", "keep"), 1);
}

static void test_apply_refuses_a_foreign_table(void **state) {
        struct nftnl_table *t = nftnl_table_alloc();
        char buf[4096] = {}, *error = NULL;
        struct nlmsghdr *nlh;
        size_t off = 0;

        (void) state;
        nlh = nftnl_batch_begin(buf, 1);
        off += nlh->nlmsg_len;
        nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
        nftnl_table_set_str(t, NFTNL_TABLE_NAME, "other");
        nlh = nftnl_nlmsg_build_hdr(buf + off, NFT_MSG_DELTABLE, NFPROTO_INET, NLM_F_ACK, 2);
        nftnl_table_nlmsg_build_payload(nlh, t);
        off += MNL_ALIGN(nlh->nlmsg_len);
        nlh = nftnl_batch_end(buf + off, 3);
        off += nlh->nlmsg_len;
        nftnl_table_free(t);

        assert_int_equal(nethelper_apply(helper, buf, off, &error), -EPERM);
        assert_non_null(strstr(error, "touches more than table inet hostmesh"));
        free(error);
        assert_int_equal(count("table", "other", NULL), 1);
        assert_int_equal(count("rule", "other", "keep"), 1);
        assert_int_equal(count("rule", "hostmesh", "forward"), 4);

        /* Garbage. */
        assert_int_equal(nethelper_apply(helper, "garbage!", 8, &error), -EBADMSG);
        free(error);
}


/* Packets as a guest would send them: written into the tap (the guest's
 * transmit side), read back from it (the guest's receive side). Frames
 * carry a virtio_net_hdr (IFF_VNET_HDR, 10 bytes, all zero here). */
#define VNET_HDR_LEN 10

static void bridge_mac(uint8_t mac[6]) {
        struct ifreq ifr = {};
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        strcpy(ifr.ifr_name, "hm0");
        assert_int_equal(ioctl(fd, SIOCGIFHWADDR, &ifr), 0);
        memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
        close(fd);
}

static uint16_t checksum(const void *data, size_t len) {
        const uint8_t *p = data;
        uint32_t sum = 0;

        for (size_t k = 0; k + 1 < len; k += 2)
                sum += (uint32_t) (p[k] << 8 | p[k + 1]);
        if (len & 1)
                sum += (uint32_t) p[len - 1] << 8;
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return htons((uint16_t) ~sum);
}

/* An IPv4 packet (ICMP echo request or UDP) from a guest. */
static void guest_send(int tap_fd, const uint8_t src_mac[6], const char *src, const char *dst, uint8_t proto,
                       uint16_t sport, uint16_t dport) {
        uint8_t frame[VNET_HDR_LEN + 14 + 20 + 8 + 4] = {};
        uint8_t *eth = frame + VNET_HDR_LEN, *l4 = eth + 14 + 20;
        struct iphdr *ip = (struct iphdr *) (eth + 14);
        uint8_t dst_mac[6];

        bridge_mac(dst_mac);
        memcpy(eth, dst_mac, 6);
        memcpy(eth + 6, src_mac, 6);
        eth[12] = 0x08; /* ethertype IPv4 */
        ip->version = 4;
        ip->ihl = 5;
        ip->tot_len = htons(20 + 8 + 4);
        ip->ttl = 64;
        ip->protocol = proto;
        inet_pton(AF_INET, src, &ip->saddr);
        inet_pton(AF_INET, dst, &ip->daddr);
        ip->check = checksum(ip, 20);
        if (proto == IPPROTO_ICMP) {
                struct icmphdr *icmp = (struct icmphdr *) l4;

                icmp->type = ICMP_ECHO;
                icmp->un.echo.id = htons(sport);
                icmp->un.echo.sequence = htons(1);
                memcpy(l4 + 8, "ping", 4);
                icmp->checksum = checksum(l4, 12);
        } else {
                struct udphdr *udp = (struct udphdr *) l4;

                udp->source = htons(sport);
                udp->dest = htons(dport);
                udp->len = htons(8 + 4);
                memcpy(l4 + 8, "dns?", 4); /* UDP checksum 0: none (IPv4). */
        }
        assert_int_equal(write(tap_fd, frame, sizeof(frame)), (ssize_t) sizeof(frame));
}

/* Waits up to timeout_ms for an IPv4 frame from src to dst with that
 * protocol (and UDP source port, when not 0) on the tap. */
static bool guest_receives(int tap_fd, const char *src, const char *dst, uint8_t proto, uint16_t sport,
                           int timeout_ms) {
        struct in_addr s, d;

        inet_pton(AF_INET, src, &s);
        inet_pton(AF_INET, dst, &d);
        for (;;) {
                struct pollfd p = { .fd = tap_fd, .events = POLLIN };
                uint8_t frame[2048];
                const struct iphdr *ip;
                ssize_t n;

                if (poll(&p, 1, timeout_ms) <= 0)
                        return false;
                n = read(tap_fd, frame, sizeof(frame));
                if (n < VNET_HDR_LEN + 14 + 20 + 8)
                        continue;
                if (frame[VNET_HDR_LEN + 12] != 0x08 || frame[VNET_HDR_LEN + 13] != 0x00)
                        continue; /* Not IPv4 (ARP, IPv6 from the host). */
                ip = (const struct iphdr *) (frame + VNET_HDR_LEN + 14);
                if (ip->protocol != proto || ip->saddr != s.s_addr || ip->daddr != d.s_addr)
                        continue;
                if (sport != 0 && ntohs(((const struct udphdr *) (ip + 1))->source) != sport)
                        continue;
                return true;
        }
}

static void drain(int tap_fd) {
        while (guest_receives(tap_fd, "0.0.0.0", "0.0.0.0", 255, 0, 50))
                ;
}

static void test_guest_pings_the_gateway_and_spoofing_is_dropped(void **state) {
        NftInstance i = inst(0);
        uint8_t other_mac[6] = { 0x02, 0x48, 0x4d, 0, 0, 0x99 };

        (void) state;
        drain(tap_fds[0]);
        guest_send(tap_fds[0], i.mac, "10.88.0.2", "10.88.0.1", IPPROTO_ICMP, 77, 0);
        assert_true(guest_receives(tap_fds[0], "10.88.0.1", "10.88.0.2", IPPROTO_ICMP, 0, 1000));

        /* Another source address, then another MAC: the guard chain drops
         * both before the host sees them. */
        guest_send(tap_fds[0], i.mac, "10.88.0.3", "10.88.0.1", IPPROTO_ICMP, 78, 0);
        assert_false(guest_receives(tap_fds[0], "10.88.0.1", "10.88.0.3", IPPROTO_ICMP, 0, 300));
        assert_int_equal(run("nft list chain inet hostmesh guard-hmt0 | "
                             "grep -q 'ip saddr != 10.88.0.2 counter packets 1 '"), 0);
        guest_send(tap_fds[0], other_mac, "10.88.0.2", "10.88.0.1", IPPROTO_ICMP, 79, 0);
        assert_false(guest_receives(tap_fds[0], "10.88.0.1", "10.88.0.2", IPPROTO_ICMP, 0, 300));
        assert_int_equal(run("nft list chain inet hostmesh guard-hmt0 | "
                             "grep -q 'ether saddr != 02:48:4d:00:00:02 counter packets 1 '"), 0);
}

static void test_guest_dns_reaches_dnsd_through_dnat(void **state) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(5353) }, from;
        socklen_t from_len = sizeof(from);
        NftInstance i = inst(0);
        struct pollfd p;
        char buf[16];
        int fd;

        (void) state;
        /* dnsd's place: the gateway address, the DNS port of the network. */
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        inet_pton(AF_INET, "10.88.0.1", &a.sin_addr);
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);

        drain(tap_fds[0]);
        guest_send(tap_fds[0], i.mac, "10.88.0.2", "10.88.0.1", IPPROTO_UDP, 40000, 53);
        p = (struct pollfd) { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 1000), 1);
        assert_int_equal(recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *) &from, &from_len), 4);
        assert_memory_equal(buf, "dns?", 4);
        assert_int_equal(ntohs(from.sin_port), 40000);
        assert_int_equal(from.sin_addr.s_addr, i.address.s_addr);

        /* The answer goes back from port 53, as the guest asked. */
        assert_int_equal(sendto(fd, "dns!", 4, 0, (struct sockaddr *) &from, from_len), 4);
        assert_true(guest_receives(tap_fds[0], "10.88.0.1", "10.88.0.2", IPPROTO_UDP, 53, 1000));

        /* Straight to the DNS port, without DNAT: dropped in input. */
        guest_send(tap_fds[0], i.mac, "10.88.0.2", "10.88.0.1", IPPROTO_UDP, 40001, 5353);
        p = (struct pollfd) { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 300), 0);
        close(fd);
        assert_int_equal(run("nft list chain inet hostmesh input | "
                             "grep -q 'counter packets [1-9].*nothing else from instances'"), 0);
}

static void test_guests_talk_only_as_pairs_allow(void **state) {
        NftInstance i = inst(0);

        (void) state;
        drain(tap_fds[1]);
        /* 0 → 1 is a pair: routed by the host, out through hmt1. */
        guest_send(tap_fds[0], i.mac, "10.88.0.2", "10.88.0.3", IPPROTO_UDP, 41000, 9);
        assert_true(guest_receives(tap_fds[1], "10.88.0.2", "10.88.0.3", IPPROTO_UDP, 41000, 1000));

        /* Without pairs: dropped in forward. */
        assert_int_equal(apply_replace(2, 0), 0);
        guest_send(tap_fds[0], i.mac, "10.88.0.2", "10.88.0.3", IPPROTO_UDP, 41001, 9);
        assert_false(guest_receives(tap_fds[1], "10.88.0.2", "10.88.0.3", IPPROTO_UDP, 41001, 300));
        assert_int_equal(run("nft list chain inet hostmesh forward | "
                             "grep -q 'everything else.*' && nft list chain inet hostmesh forward | "
                             "grep -q 'oifname \"hm0\" counter packets 1 .*everything else'"), 0);
        assert_int_equal(apply_replace(2, 2), 0);
}

static void test_helper_answers_malformed_requests_and_goes_on(void **state) {
        static const size_t sizes[] = { 3, 1000 };
        char big[1000] = {}, reply[512];
        char **l = NULL, *error = NULL;

        (void) state;
        for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
                int32_t err;
                ssize_t n;

                memset(big, 0x41, sizes[k]);
                assert_int_equal(send(helper_fd, big, sizes[k], 0), (ssize_t) sizes[k]);
                n = recv(helper_fd, reply, sizeof(reply), 0);
                /* Reply: type, length, then the errno. */
                assert_true(n >= 12);
                memcpy(&err, reply + 8, sizeof(err));
                assert_int_equal(err, -EBADMSG);
        }
        assert_int_equal(nethelper_list_taps(helper, "hm0", &l, &error), 0);
        strv_free(l);
}

static bool list_has(char **l, const char *name) {
        for (char **i = l; i && *i; i++)
                if (streq(*i, name))
                        return true;
        return false;
}

static void test_list_and_delete_taps(void **state) {
        struct in_addr guest = inst(1).address;
        char **l = NULL, *error = NULL;

        (void) state;
        assert_int_equal(nethelper_list_taps(helper, "hm0", &l, &error), 0);
        assert_true(list_has(l, "hmt0") && list_has(l, "hmt1"));
        assert_null(l[2]);
        l = strv_free(l);

        /* Remove the instance's rules first, as vmmd does, then the tap. */
        close(tap_fds[1]);
        tap_fds[1] = -EBADF;
        assert_int_equal(nethelper_delete_tap(helper, "hm0", "hmt1", guest, &error), 0);
        assert_int_equal(if_nametoindex("hmt1"), 0);
        assert_int_equal(run("ip neigh show dev hm0 | grep -q '^10.88.0.3 '"), 1);
        /* Gone already: fine. */
        assert_int_equal(nethelper_delete_tap(helper, "hm0", "hmt1", guest, &error), 0);

        assert_int_equal(nethelper_list_taps(helper, "hm0", &l, &error), 0);
        assert_true(list_has(l, "hmt0"));
        assert_null(l[1]);
        l = strv_free(l);

        /* Only taps may be deleted. */
        assert_int_equal(nethelper_delete_tap(helper, "hm0", "hm0", guest, &error), -EPERM);
        assert_non_null(strstr(error, "not a tap"));
        free(error);
        assert_true(if_nametoindex("hm0") > 0);
        assert_int_equal(nethelper_delete_tap(helper, "hm0", "lo", guest, &error), -EPERM);
        free(error);

        /* A name the client refuses to send. */
        assert_int_equal(nethelper_delete_tap(helper, "hm0", "much-too-long-name", guest, &error), -EINVAL);
}

static void test_spawned_helper_serves_and_exits_on_close(void **state) {
        NetHelper *h = NULL;
        char **l = NULL, *error = NULL;

        (void) state;
        assert_int_equal(nethelper_spawn("/nonexistent/hostmesh-vmm-nethelper", &h), -ENOENT);
        assert_int_equal(nethelper_spawn(NETHELPER_PATH, &h), 0);
        assert_true(nethelper_pid(h) > 0);
        assert_int_equal(nethelper_list_taps(h, "hm0", &l, &error), 0);
        assert_true(list_has(l, "hmt0"));
        strv_free(l);
        /* Waits for the helper, which exits on EOF. */
        nethelper_free(h);
}

static void test_a_dead_helper_is_reported_with_what_to_do(void **state) {
        NetHelper *h = NULL;
        char **l = NULL, *error = NULL;
        int status;

        (void) state;
        assert_int_equal(nethelper_spawn(NETHELPER_PATH, &h), 0);
        assert_int_equal(kill(nethelper_pid(h), SIGKILL), 0);
        assert_int_equal(waitpid(nethelper_pid(h), &status, 0), nethelper_pid(h));
        assert_int_equal(nethelper_list_taps(h, "hm0", &l, &error), -ECONNRESET);
        assert_non_null(error);
        assert_non_null(strstr(error, "restart vmmd"));
        free(error);
        error = NULL;
        /* Every later call says the same, none hangs. */
        assert_int_equal(nethelper_delete_tap(h, "hm0", "hmt0", (struct in_addr){}, &error), -ECONNRESET);
        assert_non_null(error);
        free(error);
        nethelper_free(h);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_setup_bridge_is_idempotent),
                cmocka_unit_test(test_create_tap_gives_an_fd_on_an_isolated_port),
                cmocka_unit_test(test_replace_table_installs_the_table),
                cmocka_unit_test(test_replace_table_with_many_pairs_is_one_batch),
                cmocka_unit_test(test_remove_and_add_instance),
                cmocka_unit_test(test_replace_table_repairs_hand_edits_and_spares_other_tables),
                cmocka_unit_test(test_apply_refuses_a_foreign_table),
                cmocka_unit_test(test_guest_pings_the_gateway_and_spoofing_is_dropped),
                cmocka_unit_test(test_guest_dns_reaches_dnsd_through_dnat),
                cmocka_unit_test(test_guests_talk_only_as_pairs_allow),
                cmocka_unit_test(test_helper_answers_malformed_requests_and_goes_on),
                cmocka_unit_test(test_list_and_delete_taps),
                cmocka_unit_test(test_spawned_helper_serves_and_exits_on_close),
                cmocka_unit_test(test_a_dead_helper_is_reported_with_what_to_do),
        };
        int pair[2], r;
        pid_t pid;

        if (geteuid() != 0) {
                fprintf(stderr, "Not root, skipping.\n");
                return 77;
        }
        /* Everything below happens in a namespace of our own, children
         * (the helper, ip, nft) included. */
        if (unshare(CLONE_NEWNET) < 0) {
                fprintf(stderr, "No network namespace (%m), skipping.\n");
                return 77;
        }
        if (access("/dev/net/tun", R_OK | W_OK) < 0 || run("nft --version >/dev/null 2>&1") != 0 ||
            run("ip -V >/dev/null 2>&1") != 0) {
                fprintf(stderr, "No /dev/net/tun, nft or ip, skipping.\n");
                return 77;
        }
        assert_int_equal(run("ip link set lo up"), 0);

        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(pair[0]);
                _exit(nethelper_serve(pair[1]) < 0 ? 1 : 0);
        }
        close(pair[1]);
        helper_fd = pair[0];
        assert_int_equal(nethelper_new_from_fd(pair[0], &helper), 0);

        r = cmocka_run_group_tests(tests, NULL, NULL);

        for (unsigned k = 0; k < 2; k++)
                if (tap_fds[k] >= 0)
                        close(tap_fds[k]);
        helper = nethelper_free(helper);
        /* The in-process helper exits on EOF with 0. */
        {
                int status = 0;

                if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        fprintf(stderr, "The helper did not exit cleanly.\n");
                        r = r ?: 1;
                }
        }
        return r;
}
