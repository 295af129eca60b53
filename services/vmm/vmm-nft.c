/* SPDX-License-Identifier: MIT */
/* Builds the nftables netlink batches for hostmesh's table with libnftnl,
 * prints the same rules as `nft -f` text, and checks that a batch touches
 * nothing but that table (the network helper's rule). */
#include <arpa/inet.h>
#include <net/if_arp.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_ipv4.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include "macro.h"
#include "vmm-nft.h"

#define SET_PEERS "peers"
#define SET_PEERS_ID 1
/* nft's datatype ids: TYPE_IPADDR is 7; a concatenation is encoded as
 * (first << 6) | second (TYPE_BITS in nft's datatype.h). `nft list` needs
 * this to print "ipv4_addr . ipv4_addr". */
#define NFT_TYPE_IPADDR 7u
#define NFT_TYPE_PEERS ((NFT_TYPE_IPADDR << 6) | NFT_TYPE_IPADDR)
#define GUARD_PREFIX "guard-"
#define GUARD_PRIORITY (-500)
/* Every message is built in place at the end of the buffer; none of ours
 * comes near this size (rules are a few hundred bytes, element messages are
 * cut at ELEMS_PER_MESSAGE). */
#define MESSAGE_ROOM (16 * 1024)
#define ELEMS_PER_MESSAGE 128

/* A growing buffer rather than an mnl_nlmsg_batch: that one has a fixed
 * limit, and a full table must go to the kernel as one transaction. */
struct NftBatch {
        char *data;
        size_t size, allocated;
        uint32_t seq;
        bool begun;
        bool ended;
};

int nft_batch_new(NftBatch **ret) {
        NftBatch *b;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        /* Distinct sequence numbers per batch make ACKs of a stale batch
         * easy to tell apart; the helper matches ACKs against these. */
        b->seq = 1;
        *ret = b;
        return 0;
}

NftBatch *nft_batch_free(NftBatch *b) {
        if (!b)
                return NULL;
        free(b->data);
        free(b);
        return NULL;
}

const void *nft_batch_data(const NftBatch *b) {
        return b->data;
}

size_t nft_batch_size(const NftBatch *b) {
        return b->size;
}

static char *batch_room(NftBatch *b) {
        if (b->allocated - b->size < MESSAGE_ROOM) {
                size_t n = MAX(b->allocated * 2, b->size + MESSAGE_ROOM * 4);
                char *p = realloc(b->data, n);

                if (!p)
                        return NULL;
                /* Netlink attributes have padding; keep it deterministic. */
                memset(p + b->allocated, 0, n - b->allocated);
                b->data = p;
                b->allocated = n;
        }
        return b->data + b->size;
}

static void batch_commit(NftBatch *b, struct nlmsghdr *nlh) {
        b->size += MNL_ALIGN(nlh->nlmsg_len);
}

static struct nlmsghdr *batch_msg(NftBatch *b, uint16_t type, uint16_t flags) {
        char *p = batch_room(b);

        if (!p)
                return NULL;
        /* Every message asks for an ACK: the helper learns which one failed. */
        return nftnl_nlmsg_build_hdr(p, type, NFPROTO_INET, flags | NLM_F_ACK, b->seq++);
}

/* Batches are opened lazily and closed by each public builder: one builder
 * call is one transaction. */
static int batch_begin(NftBatch *b) {
        char *p;

        if (b->begun)
                return -EBUSY;
        p = batch_room(b);
        if (!p)
                return -ENOMEM;
        batch_commit(b, nftnl_batch_begin(p, b->seq++));
        b->begun = true;
        return 0;
}

static int batch_end(NftBatch *b) {
        char *p = batch_room(b);

        if (!p)
                return -ENOMEM;
        batch_commit(b, nftnl_batch_end(p, b->seq++));
        b->ended = true;
        return 0;
}

static bool ifname_valid(const char *s) {
        size_t n;

        if (isempty(s))
                return false;
        n = strlen(s);
        if (n >= IFNAMSIZ)
                return false;
        for (const char *c = s; *c; c++)
                if (*c <= ' ' || *c >= 0x7f || *c == '/' || *c == ':' || *c == '"' || *c == '\\')
                        return false;
        return true;
}

static int network_check(const NftNetwork *n) {
        if (!n || !ifname_valid(n->bridge))
                return -EINVAL;
        if (n->prefixlen < 8 || n->prefixlen > 30 || n->dns_port == 0)
                return -EINVAL;
        return 0;
}

static int instance_check(const NftInstance *i) {
        if (!i || !ifname_valid(i->tap) || strlen(GUARD_PREFIX) + strlen(i->tap) >= NFT_CHAIN_MAXNAMELEN)
                return -EINVAL;
        return 0;
}

static uint32_t prefix_mask(unsigned prefixlen) {
        return htonl(prefixlen == 0 ? 0 : ~UINT32_C(0) << (32 - prefixlen));
}

/* Rule building: the expression helpers record an allocation failure in the
 * rule context instead of making every call site check. */
typedef struct Rule {
        struct nftnl_rule *r;
        bool oom;
} Rule;

static void rule_add(Rule *r, struct nftnl_expr *e) {
        if (!e) {
                r->oom = true;
                return;
        }
        nftnl_rule_add_expr(r->r, e);
}

static struct nftnl_expr *expr(Rule *r, const char *name) {
        struct nftnl_expr *e = nftnl_expr_alloc(name);

        if (!e)
                r->oom = true;
        return e;
}

static void meta(Rule *r, uint32_t key, uint32_t dreg) {
        struct nftnl_expr *e = expr(r, "meta");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
        rule_add(r, e);
}

static void payload(Rule *r, uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
        struct nftnl_expr *e = expr(r, "payload");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
        rule_add(r, e);
}

static void cmp(Rule *r, uint32_t op, const void *data, uint32_t len) {
        struct nftnl_expr *e = expr(r, "cmp");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
        nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
        rule_add(r, e);
}

static void bitwise(Rule *r, const void *mask, const void *xor, uint32_t len) {
        struct nftnl_expr *e = expr(r, "bitwise");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
        nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, len);
        nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, xor, len);
        rule_add(r, e);
}

static void verdict(Rule *r, int v) {
        struct nftnl_expr *e = expr(r, "immediate");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t) v);
        rule_add(r, e);
}

static void immediate(Rule *r, uint32_t dreg, const void *data, uint32_t len) {
        struct nftnl_expr *e = expr(r, "immediate");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, dreg);
        nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, data, len);
        rule_add(r, e);
}

static void counter(Rule *r) {
        rule_add(r, expr(r, "counter"));
}

static void match_ifname(Rule *r, uint32_t key, uint32_t op, const char *name) {
        char buf[IFNAMSIZ] = {};

        /* nft compares the whole zero-padded name, as the kernel stores it. */
        strncpy(buf, name, sizeof(buf) - 1);
        meta(r, key, NFT_REG_1);
        cmp(r, op, buf, sizeof(buf));
}

static void match_u8_meta(Rule *r, uint32_t key, uint8_t value) {
        meta(r, key, NFT_REG_1);
        cmp(r, NFT_CMP_EQ, &value, sizeof(value));
}

static void match_ipv4(Rule *r) {
        match_u8_meta(r, NFT_META_NFPROTO, NFPROTO_IPV4);
}

/* ip saddr (offset 12) or ip daddr (offset 16). */
static void match_ip_addr(Rule *r, uint32_t offset, uint32_t op, struct in_addr a) {
        payload(r, NFT_PAYLOAD_NETWORK_HEADER, offset, sizeof(a), NFT_REG_1);
        cmp(r, op, &a, sizeof(a));
}

static void match_ip_prefix(Rule *r, uint32_t offset, struct in_addr net, unsigned prefixlen) {
        uint32_t mask = prefix_mask(prefixlen), zero = 0, value = net.s_addr & mask;

        payload(r, NFT_PAYLOAD_NETWORK_HEADER, offset, sizeof(uint32_t), NFT_REG_1);
        bitwise(r, &mask, &zero, sizeof(mask));
        cmp(r, NFT_CMP_EQ, &value, sizeof(value));
}

static void match_dport(Rule *r, uint8_t l4proto, uint16_t port) {
        uint16_t p = htons(port);

        match_u8_meta(r, NFT_META_L4PROTO, l4proto);
        payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, sizeof(p), NFT_REG_1);
        cmp(r, NFT_CMP_EQ, &p, sizeof(p));
}

/* ct state established,related (ct state is a host-endian bitmask). */
static void match_ct_established(Rule *r) {
        uint32_t mask = NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED), zero = 0;
        struct nftnl_expr *e = expr(r, "ct");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
        rule_add(r, e);
        bitwise(r, &mask, &zero, sizeof(mask));
        cmp(r, NFT_CMP_NEQ, &zero, sizeof(zero));
}

static void match_ct_dnat(Rule *r) {
        uint32_t mask = IPS_DST_NAT, zero = 0;
        struct nftnl_expr *e = expr(r, "ct");

        if (!e)
                return;
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_STATUS);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
        rule_add(r, e);
        bitwise(r, &mask, &zero, sizeof(mask));
        cmp(r, NFT_CMP_NEQ, &zero, sizeof(zero));
}

static void rule_comment(Rule *r, const char *comment) {
        struct nftnl_udata_buf *u = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);

        if (!u || !nftnl_udata_put_strz(u, NFTNL_UDATA_RULE_COMMENT, comment)) {
                r->oom = true;
                if (u)
                        nftnl_udata_buf_free(u);
                return;
        }
        nftnl_rule_set_data(r->r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));
        nftnl_udata_buf_free(u);
}

/* Objects of hostmesh's table: family and table set, and the name. */
static struct nftnl_table *table_new(void) {
        struct nftnl_table *t = nftnl_table_alloc();

        if (t) {
                nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
                nftnl_table_set_str(t, NFTNL_TABLE_NAME, NFT_TABLE_NAME);
        }
        return t;
}

static struct nftnl_chain *chain_new(const char *name) {
        struct nftnl_chain *c = nftnl_chain_alloc();

        if (c) {
                nftnl_chain_set_u32(c, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
                nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, NFT_TABLE_NAME);
                nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
        }
        return c;
}

static struct nftnl_rule *rule_new(const char *chain) {
        struct nftnl_rule *r = nftnl_rule_alloc();

        if (r) {
                nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
                nftnl_rule_set_str(r, NFTNL_RULE_TABLE, NFT_TABLE_NAME);
                nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
        }
        return r;
}

static struct nftnl_set *peers_set_new(void) {
        struct nftnl_set *s = nftnl_set_alloc();

        if (s) {
                nftnl_set_set_u32(s, NFTNL_SET_FAMILY, NFPROTO_INET);
                nftnl_set_set_str(s, NFTNL_SET_TABLE, NFT_TABLE_NAME);
                nftnl_set_set_str(s, NFTNL_SET_NAME, SET_PEERS);
        }
        return s;
}

/* emit_<kind>(b, type, flags, o): one message of that type for the object,
 * which it takes (and frees) whatever happens; NULL (a failed allocation)
 * is -ENOMEM. */
#define DEFINE_EMIT(name, kind, build)                                                         \
        static int emit_##name(NftBatch *b, uint16_t type, uint16_t flags, struct nftnl_##kind *o) { \
                struct nlmsghdr *nlh;                                                          \
                                                                                               \
                if (!o)                                                                        \
                        return -ENOMEM;                                                        \
                nlh = batch_msg(b, type, flags);                                               \
                if (nlh) {                                                                     \
                        build(nlh, o);                                                         \
                        batch_commit(b, nlh);                                                  \
                }                                                                              \
                nftnl_##kind##_free(o);                                                        \
                return nlh ? 0 : -ENOMEM;                                                      \
        }
DEFINE_EMIT(table, table, nftnl_table_nlmsg_build_payload)
DEFINE_EMIT(chain, chain, nftnl_chain_nlmsg_build_payload)
DEFINE_EMIT(rule, rule, nftnl_rule_nlmsg_build_payload)
DEFINE_EMIT(set, set, nftnl_set_nlmsg_build_payload)
DEFINE_EMIT(set_elems, set, nftnl_set_elems_nlmsg_build_payload)

static int rule_start(Rule *r, const char *chain) {
        *r = (Rule) {};
        r->r = rule_new(chain);
        return r->r ? 0 : -ENOMEM;
}

/* Serializes and frees the rule. */
static int rule_finish(NftBatch *b, Rule *r, const char *comment) {
        struct nftnl_rule *o;

        rule_comment(r, comment);
        o = TAKE_PTR(r->r);
        if (r->oom) {
                nftnl_rule_free(o);
                return -ENOMEM;
        }
        return emit_rule(b, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, o);
}

static int put_table(NftBatch *b, uint16_t type, uint16_t flags) {
        return emit_table(b, type, flags, table_new());
}

static int put_base_chain(NftBatch *b, const char *name, const char *type, uint32_t hook, int32_t prio,
                          const char *dev) {
        struct nftnl_chain *c = chain_new(name);

        if (!c)
                return -ENOMEM;
        nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, type);
        nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
        nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
        nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
        if (dev)
                nftnl_chain_set_str(c, NFTNL_CHAIN_DEV, dev);
        return emit_chain(b, NFT_MSG_NEWCHAIN, NLM_F_CREATE, c);
}

/* Flush (DELRULE with only table and chain: all its rules) or DELCHAIN. */
static int put_chain_removal(NftBatch *b, const char *name, bool flush_only) {
        if (flush_only)
                return emit_rule(b, NFT_MSG_DELRULE, 0, rule_new(name));
        return emit_chain(b, NFT_MSG_DELCHAIN, 0, chain_new(name));
}

static int put_peers_set(NftBatch *b) {
        struct nftnl_set *s = peers_set_new();

        if (!s)
                return -ENOMEM;
        nftnl_set_set_u32(s, NFTNL_SET_ID, SET_PEERS_ID);
        nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, NFT_TYPE_PEERS);
        nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, 2 * sizeof(struct in_addr));
        nftnl_set_set_u32(s, NFTNL_SET_FLAGS, 0);
        return emit_set(b, NFT_MSG_NEWSET, NLM_F_CREATE, s);
}

/* NEWSETELEM or DELSETELEM for the pairs, ELEMS_PER_MESSAGE at a time. */
static int put_pairs(NftBatch *b, uint16_t type, const NftPair *pairs, size_t n_pairs) {
        for (size_t start = 0; start < n_pairs; start += ELEMS_PER_MESSAGE) {
                struct nftnl_set *s = peers_set_new();
                int r;

                if (!s)
                        return -ENOMEM;
                for (size_t k = start; k < n_pairs && k < start + ELEMS_PER_MESSAGE; k++) {
                        struct nftnl_set_elem *e = nftnl_set_elem_alloc();
                        struct in_addr key[2] = { pairs[k].a, pairs[k].b };

                        if (!e) {
                                nftnl_set_free(s);
                                return -ENOMEM;
                        }
                        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof(key));
                        nftnl_set_elem_add(s, e);
                }
                r = emit_set_elems(b, type, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0, s);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void guard_chain_name(const NftInstance *i, char buf[static NFT_CHAIN_MAXNAMELEN]) {
        snprintf(buf, NFT_CHAIN_MAXNAMELEN, GUARD_PREFIX "%s", i->tap);
}

/* The guard chain with its rules. The chain is created if missing and
 * flushed, so adding an instance twice leaves one set of rules.
 *
 * An inet ingress chain sees only IPv4 and IPv6 frames (the kernel accepts
 * everything else before the chain runs), so ARP is not filtered here; the
 * permanent neighbour entry the helper installs keeps the host's own view of
 * guest → MAC right regardless of what a guest announces. */
static int put_guard(NftBatch *b, const NftInstance *i) {
        char chain[NFT_CHAIN_MAXNAMELEN];
        Rule r;
        int ret;

        guard_chain_name(i, chain);
        ret = put_base_chain(b, chain, "filter", NF_INET_INGRESS, GUARD_PRIORITY, i->tap);
        if (ret < 0)
                return ret;
        ret = put_chain_removal(b, chain, /* flush_only= */ true);
        if (ret < 0)
                return ret;

        /* meta iiftype ether first, as nft does: the link-layer offsets
         * mean something only on Ethernet (and `nft list` prints "ether"). */
        if (rule_start(&r, chain) < 0)
                return -ENOMEM;
        meta(&r, NFT_META_IIFTYPE, NFT_REG_1);
        cmp(&r, NFT_CMP_EQ, &(uint16_t) { ARPHRD_ETHER }, sizeof(uint16_t));
        payload(&r, NFT_PAYLOAD_LL_HEADER, 6, 6, NFT_REG_1);
        cmp(&r, NFT_CMP_NEQ, i->mac, 6);
        counter(&r);
        verdict(&r, NF_DROP);
        ret = rule_finish(b, &r, "frames not from the instance's MAC");
        if (ret < 0)
                return ret;

        if (rule_start(&r, chain) < 0)
                return -ENOMEM;
        match_ipv4(&r);
        match_ip_addr(&r, 12, NFT_CMP_NEQ, i->address);
        counter(&r);
        verdict(&r, NF_DROP);
        ret = rule_finish(b, &r, "IPv4 not from the instance's address");
        if (ret < 0)
                return ret;

        if (rule_start(&r, chain) < 0)
                return -ENOMEM;
        match_u8_meta(&r, NFT_META_NFPROTO, NFPROTO_IPV6);
        counter(&r);
        verdict(&r, NF_DROP);
        return rule_finish(b, &r, "instances have no IPv6");
}

static int put_prerouting(NftBatch *b, const NftNetwork *n) {
        static const uint8_t protos[] = { IPPROTO_UDP, IPPROTO_TCP };
        int ret;

        ret = put_base_chain(b, "prerouting", "nat", NF_INET_PRE_ROUTING, NF_IP_PRI_NAT_DST, NULL);
        if (ret < 0)
                return ret;
        for (size_t k = 0; k < ELEMENTSOF(protos); k++) {
                uint16_t port = htons(n->dns_port);
                struct nftnl_expr *e;
                Rule r;

                if (rule_start(&r, "prerouting") < 0)
                        return -ENOMEM;
                match_ifname(&r, NFT_META_IIFNAME, NFT_CMP_EQ, n->bridge);
                match_ipv4(&r);
                match_ip_addr(&r, 16, NFT_CMP_EQ, n->gateway);
                match_dport(&r, protos[k], 53);
                immediate(&r, NFT_REG_1, &n->gateway, sizeof(n->gateway));
                immediate(&r, NFT_REG_2, &port, sizeof(port));
                e = expr(&r, "nat");
                if (e) {
                        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
                        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4);
                        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1);
                        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, NFT_REG_2);
                        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
                        rule_add(&r, e);
                }
                ret = rule_finish(b, &r, protos[k] == IPPROTO_UDP ? "instance DNS (udp) to dnsd" :
                                                                    "instance DNS (tcp) to dnsd");
                if (ret < 0)
                        return ret;
        }
        return 0;
}

static int put_postrouting(NftBatch *b, const NftNetwork *n) {
        Rule r;
        int ret;

        ret = put_base_chain(b, "postrouting", "nat", NF_INET_POST_ROUTING, NF_IP_PRI_NAT_SRC, NULL);
        if (ret < 0)
                return ret;
        /* Only the pool's addresses: anything else arriving on the bridge
         * was already dropped by the guard chains. */
        if (rule_start(&r, "postrouting") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_IIFNAME, NFT_CMP_EQ, n->bridge);
        match_ifname(&r, NFT_META_OIFNAME, NFT_CMP_NEQ, n->bridge);
        match_ipv4(&r);
        match_ip_prefix(&r, 12, n->pool, n->prefixlen);
        counter(&r);
        rule_add(&r, expr(&r, "masq"));
        return rule_finish(b, &r, "instances leaving the host");
}

static int put_input(NftBatch *b, const NftNetwork *n) {
        static const uint8_t protos[] = { IPPROTO_UDP, IPPROTO_TCP };
        uint8_t echo_request = 8; /* ICMP_ECHO */
        Rule r;
        int ret;

        ret = put_base_chain(b, "input", "filter", NF_INET_LOCAL_IN, NF_IP_PRI_FILTER, NULL);
        if (ret < 0)
                return ret;

        /* "accept" in a base chain ends this chain only; other tables (the
         * host's own firewall) still see the packet, which is the point. */
        if (rule_start(&r, "input") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_IIFNAME, NFT_CMP_NEQ, n->bridge);
        verdict(&r, NF_ACCEPT);
        ret = rule_finish(b, &r, "not from instances: not ours");
        if (ret < 0)
                return ret;

        if (rule_start(&r, "input") < 0)
                return -ENOMEM;
        match_ct_established(&r);
        verdict(&r, NF_ACCEPT);
        ret = rule_finish(b, &r, "replies to the host's connections");
        if (ret < 0)
                return ret;

        for (size_t k = 0; k < ELEMENTSOF(protos); k++) {
                if (rule_start(&r, "input") < 0)
                        return -ENOMEM;
                match_ipv4(&r);
                match_ip_addr(&r, 16, NFT_CMP_EQ, n->gateway);
                match_dport(&r, protos[k], n->dns_port);
                match_ct_dnat(&r);
                counter(&r);
                verdict(&r, NF_ACCEPT);
                ret = rule_finish(b, &r, "DNS to dnsd after DNAT");
                if (ret < 0)
                        return ret;
        }

        if (rule_start(&r, "input") < 0)
                return -ENOMEM;
        match_ipv4(&r);
        match_ip_addr(&r, 16, NFT_CMP_EQ, n->gateway);
        match_u8_meta(&r, NFT_META_L4PROTO, IPPROTO_ICMP);
        payload(&r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
        cmp(&r, NFT_CMP_EQ, &echo_request, 1);
        verdict(&r, NF_ACCEPT);
        ret = rule_finish(b, &r, "ping the gateway");
        if (ret < 0)
                return ret;

        if (rule_start(&r, "input") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_IIFNAME, NFT_CMP_EQ, n->bridge);
        counter(&r);
        verdict(&r, NF_DROP);
        return rule_finish(b, &r, "nothing else from instances reaches the host");
}

static int put_forward(NftBatch *b, const NftNetwork *n) {
        struct nftnl_expr *e;
        Rule r;
        int ret;

        ret = put_base_chain(b, "forward", "filter", NF_INET_FORWARD, NF_IP_PRI_FILTER, NULL);
        if (ret < 0)
                return ret;

        /* Replies first: a pair is one direction (a may send to b), and b's
         * answers must pass without b → a being a pair. This also covers
         * out → bridge replies. */
        if (rule_start(&r, "forward") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_OIFNAME, NFT_CMP_EQ, n->bridge);
        match_ct_established(&r);
        verdict(&r, NF_ACCEPT);
        ret = rule_finish(b, &r, "replies to instances");
        if (ret < 0)
                return ret;

        /* Concatenation: saddr in 32-bit register 0, daddr in 32-bit
         * register 1, looked up as one 8-byte key. */
        if (rule_start(&r, "forward") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_IIFNAME, NFT_CMP_EQ, n->bridge);
        match_ifname(&r, NFT_META_OIFNAME, NFT_CMP_EQ, n->bridge);
        match_ipv4(&r);
        payload(&r, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG32_00);
        payload(&r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG32_01);
        e = expr(&r, "lookup");
        if (e) {
                nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG32_00);
                nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, SET_PEERS);
                nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, SET_PEERS_ID);
                rule_add(&r, e);
        }
        counter(&r);
        verdict(&r, NF_ACCEPT);
        ret = rule_finish(b, &r, "instance to instance: allowed pairs");
        if (ret < 0)
                return ret;

        if (rule_start(&r, "forward") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_IIFNAME, NFT_CMP_EQ, n->bridge);
        match_ifname(&r, NFT_META_OIFNAME, NFT_CMP_EQ, n->bridge);
        counter(&r);
        verdict(&r, NF_DROP);
        ret = rule_finish(b, &r, "instance to instance: everything else");
        if (ret < 0)
                return ret;

        if (rule_start(&r, "forward") < 0)
                return -ENOMEM;
        match_ifname(&r, NFT_META_OIFNAME, NFT_CMP_EQ, n->bridge);
        counter(&r);
        verdict(&r, NF_DROP);
        return rule_finish(b, &r, "new connections to instances");
}

int nft_batch_replace_table(NftBatch *b, const NftNetwork *n, const NftInstance *instances, size_t n_instances,
                            const NftPair *pairs, size_t n_pairs) {
        int ret;

        ret = network_check(n);
        if (ret < 0)
                return ret;
        if (n_instances > 0 && !instances)
                return -EINVAL;
        if (n_pairs > 0 && !pairs)
                return -EINVAL;
        for (size_t k = 0; k < n_instances; k++) {
                ret = instance_check(&instances[k]);
                if (ret < 0)
                        return ret;
        }

        ret = batch_begin(b);
        if (ret < 0)
                return ret;
        /* Create (a no-op when it exists) so that the delete cannot fail with
         * ENOENT, then delete and build from scratch: one transaction. */
        ret = put_table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE);
        if (ret < 0)
                return ret;
        ret = put_table(b, NFT_MSG_DELTABLE, 0);
        if (ret < 0)
                return ret;
        ret = put_table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE);
        if (ret < 0)
                return ret;
        ret = put_peers_set(b);
        if (ret < 0)
                return ret;
        ret = put_prerouting(b, n);
        if (ret < 0)
                return ret;
        ret = put_postrouting(b, n);
        if (ret < 0)
                return ret;
        ret = put_input(b, n);
        if (ret < 0)
                return ret;
        ret = put_forward(b, n);
        if (ret < 0)
                return ret;
        for (size_t k = 0; k < n_instances; k++) {
                ret = put_guard(b, &instances[k]);
                if (ret < 0)
                        return ret;
        }
        ret = put_pairs(b, NFT_MSG_NEWSETELEM, pairs, n_pairs);
        if (ret < 0)
                return ret;
        return batch_end(b);
}

int nft_batch_add_instance(NftBatch *b, const NftNetwork *n, const NftInstance *i, const NftPair *pairs,
                           size_t n_pairs) {
        int ret;

        ret = network_check(n);
        if (ret < 0)
                return ret;
        ret = instance_check(i);
        if (ret < 0)
                return ret;
        if (n_pairs > 0 && !pairs)
                return -EINVAL;

        ret = batch_begin(b);
        if (ret < 0)
                return ret;
        ret = put_guard(b, i);
        if (ret < 0)
                return ret;
        ret = put_pairs(b, NFT_MSG_NEWSETELEM, pairs, n_pairs);
        if (ret < 0)
                return ret;
        return batch_end(b);
}

int nft_batch_remove_instance(NftBatch *b, const NftNetwork *n, const NftInstance *i, const NftPair *pairs,
                              size_t n_pairs) {
        char chain[NFT_CHAIN_MAXNAMELEN];
        int ret;

        ret = network_check(n);
        if (ret < 0)
                return ret;
        ret = instance_check(i);
        if (ret < 0)
                return ret;
        if (n_pairs > 0 && !pairs)
                return -EINVAL;

        ret = batch_begin(b);
        if (ret < 0)
                return ret;
        ret = put_pairs(b, NFT_MSG_DELSETELEM, pairs, n_pairs);
        if (ret < 0)
                return ret;
        /* A chain with rules cannot be deleted (EBUSY): flush it first, in
         * the same transaction. */
        guard_chain_name(i, chain);
        ret = put_chain_removal(b, chain, /* flush_only= */ true);
        if (ret < 0)
                return ret;
        ret = put_chain_removal(b, chain, /* flush_only= */ false);
        if (ret < 0)
                return ret;
        return batch_end(b);
}

/* `nft -f` text. */

static const char *ip4(struct in_addr a, char buf[static INET_ADDRSTRLEN]) {
        return inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
}

static void text_pairs(FILE *f, const NftPair *pairs, size_t n_pairs) {
        for (size_t k = 0; k < n_pairs; k++) {
                char a[INET_ADDRSTRLEN], bb[INET_ADDRSTRLEN];

                fprintf(f, "%s%s . %s", k == 0 ? "" : ", ", ip4(pairs[k].a, a), ip4(pairs[k].b, bb));
        }
}

static void text_guard(FILE *f, const NftInstance *i, const char *rule_prefix) {
        char a[INET_ADDRSTRLEN];
        const uint8_t *m = i->mac;

        fprintf(f, "%sether saddr != %02x:%02x:%02x:%02x:%02x:%02x counter drop comment \"frames not from the "
                   "instance's MAC\"\n", rule_prefix, m[0], m[1], m[2], m[3], m[4], m[5]);
        fprintf(f, "%smeta nfproto ipv4 ip saddr != %s counter drop comment \"IPv4 not from the instance's "
                   "address\"\n", rule_prefix, ip4(i->address, a));
        fprintf(f, "%smeta nfproto ipv6 counter drop comment \"instances have no IPv6\"\n", rule_prefix);
}

static int text_finish(FILE *f, char **buf, char **ret) {
        if (fflush(f) != 0 || ferror(f)) {
                fclose(f);
                free(*buf);
                return -ENOMEM;
        }
        fclose(f);
        *ret = *buf;
        return 0;
}

int nft_text_replace_table(const NftNetwork *n, const NftInstance *instances, size_t n_instances,
                           const NftPair *pairs, size_t n_pairs, char **ret) {
        char gw[INET_ADDRSTRLEN], pool[INET_ADDRSTRLEN];
        const char *br = n ? n->bridge : NULL;
        char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        r = network_check(n);
        if (r < 0)
                return r;
        for (size_t k = 0; k < n_instances; k++) {
                r = instance_check(&instances[k]);
                if (r < 0)
                        return r;
        }
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        ip4(n->gateway, gw);
        ip4((struct in_addr) { n->pool.s_addr & prefix_mask(n->prefixlen) }, pool);

        fprintf(f, "table inet " NFT_TABLE_NAME " {}\ndelete table inet " NFT_TABLE_NAME "\n");
        fprintf(f, "table inet " NFT_TABLE_NAME " {\n");
        fprintf(f, "\tset " SET_PEERS " {\n\t\ttype ipv4_addr . ipv4_addr\n");
        if (n_pairs > 0) {
                fprintf(f, "\t\telements = { ");
                text_pairs(f, pairs, n_pairs);
                fprintf(f, " }\n");
        }
        fprintf(f, "\t}\n");
        fprintf(f, "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
        fprintf(f, "\t\tiifname \"%s\" meta nfproto ipv4 ip daddr %s udp dport 53 dnat ip to %s:%u "
                   "comment \"instance DNS (udp) to dnsd\"\n", br, gw, gw, n->dns_port);
        fprintf(f, "\t\tiifname \"%s\" meta nfproto ipv4 ip daddr %s tcp dport 53 dnat ip to %s:%u "
                   "comment \"instance DNS (tcp) to dnsd\"\n\t}\n", br, gw, gw, n->dns_port);
        fprintf(f, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
        fprintf(f, "\t\tiifname \"%s\" oifname != \"%s\" meta nfproto ipv4 ip saddr %s/%u counter masquerade "
                   "comment \"instances leaving the host\"\n\t}\n", br, br, pool, n->prefixlen);
        fprintf(f, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
        fprintf(f, "\t\tiifname != \"%s\" accept comment \"not from instances: not ours\"\n", br);
        fprintf(f, "\t\tct state established,related accept comment \"replies to the host's connections\"\n");
        fprintf(f, "\t\tmeta nfproto ipv4 ip daddr %s udp dport %u ct status dnat counter accept "
                   "comment \"DNS to dnsd after DNAT\"\n", gw, n->dns_port);
        fprintf(f, "\t\tmeta nfproto ipv4 ip daddr %s tcp dport %u ct status dnat counter accept "
                   "comment \"DNS to dnsd after DNAT\"\n", gw, n->dns_port);
        fprintf(f, "\t\tmeta nfproto ipv4 ip daddr %s icmp type echo-request accept comment \"ping the "
                   "gateway\"\n", gw);
        fprintf(f, "\t\tiifname \"%s\" counter drop comment \"nothing else from instances reaches the "
                   "host\"\n\t}\n", br);
        fprintf(f, "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
        fprintf(f, "\t\toifname \"%s\" ct state established,related accept comment \"replies to "
                   "instances\"\n", br);
        fprintf(f, "\t\tiifname \"%s\" oifname \"%s\" meta nfproto ipv4 ip saddr . ip daddr @" SET_PEERS
                   " counter accept comment \"instance to instance: allowed pairs\"\n", br, br);
        fprintf(f, "\t\tiifname \"%s\" oifname \"%s\" counter drop comment \"instance to instance: "
                   "everything else\"\n", br, br);
        fprintf(f, "\t\toifname \"%s\" counter drop comment \"new connections to instances\"\n\t}\n", br);
        for (size_t k = 0; k < n_instances; k++) {
                fprintf(f, "\tchain " GUARD_PREFIX "%s {\n\t\ttype filter hook ingress device \"%s\" "
                           "priority %d; policy accept;\n", instances[k].tap, instances[k].tap, GUARD_PRIORITY);
                text_guard(f, &instances[k], "\t\t");
                fprintf(f, "\t}\n");
        }
        fprintf(f, "}\n");
        return text_finish(f, &buf, ret);
}

int nft_text_add_instance(const NftNetwork *n, const NftInstance *i, const NftPair *pairs, size_t n_pairs,
                          char **ret) {
        char prefix[128];
        char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        r = network_check(n);
        if (r < 0)
                return r;
        r = instance_check(i);
        if (r < 0)
                return r;
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fprintf(f, "add chain inet " NFT_TABLE_NAME " " GUARD_PREFIX "%s { type filter hook ingress device "
                   "\"%s\" priority %d; policy accept; }\n", i->tap, i->tap, GUARD_PRIORITY);
        fprintf(f, "flush chain inet " NFT_TABLE_NAME " " GUARD_PREFIX "%s\n", i->tap);
        snprintf(prefix, sizeof(prefix), "add rule inet " NFT_TABLE_NAME " " GUARD_PREFIX "%s ", i->tap);
        text_guard(f, i, prefix);
        if (n_pairs > 0) {
                fprintf(f, "add element inet " NFT_TABLE_NAME " " SET_PEERS " { ");
                text_pairs(f, pairs, n_pairs);
                fprintf(f, " }\n");
        }
        return text_finish(f, &buf, ret);
}

int nft_text_remove_instance(const NftNetwork *n, const NftInstance *i, const NftPair *pairs, size_t n_pairs,
                             char **ret) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        r = network_check(n);
        if (r < 0)
                return r;
        r = instance_check(i);
        if (r < 0)
                return r;
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (n_pairs > 0) {
                fprintf(f, "delete element inet " NFT_TABLE_NAME " " SET_PEERS " { ");
                text_pairs(f, pairs, n_pairs);
                fprintf(f, " }\n");
        }
        fprintf(f, "flush chain inet " NFT_TABLE_NAME " " GUARD_PREFIX "%s\n", i->tap);
        fprintf(f, "delete chain inet " NFT_TABLE_NAME " " GUARD_PREFIX "%s\n", i->tap);
        return text_finish(f, &buf, ret);
}

/* Scope check. Every object message names its table in attribute 1
 * (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
 * NFTA_SET_ELEM_LIST_TABLE all equal 1). */
#define NFTA_ANY_TABLE 1

static bool message_type_allowed(uint16_t msg) {
        switch (msg) {
        case NFT_MSG_NEWTABLE:
        case NFT_MSG_DELTABLE:
        case NFT_MSG_NEWCHAIN:
        case NFT_MSG_DELCHAIN:
        case NFT_MSG_NEWRULE:
        case NFT_MSG_DELRULE:
        case NFT_MSG_NEWSET:
        case NFT_MSG_DELSET:
        case NFT_MSG_NEWSETELEM:
        case NFT_MSG_DELSETELEM:
                return true;
        default:
                /* Gets and dumps (nothing to read), objects, flowtables,
                 * generation messages: vmmd needs none of them. */
                return false;
        }
}

/* The kernel compares names with nla_strcmp(), which ignores one trailing
 * NUL; accept exactly the two spellings it treats as equal. */
static bool attr_is_our_table(const struct nlattr *a) {
        size_t len = mnl_attr_get_payload_len(a);
        const char *p = mnl_attr_get_payload(a);
        size_t want = strlen(NFT_TABLE_NAME);

        if (len == want + 1 && p[want] != '\0')
                return false;
        if (len != want && len != want + 1)
                return false;
        return memcmp(p, NFT_TABLE_NAME, want) == 0;
}

static int check_object_message(const struct nlmsghdr *nlh) {
        const struct nfgenmsg *g;
        size_t off, end;
        bool table = false;
        uint16_t msg;

        if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct nfgenmsg)))
                return -EBADMSG;
        if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES)
                return -EPERM;
        msg = NFNL_MSG_TYPE(nlh->nlmsg_type);
        if (!message_type_allowed(msg))
                return -EPERM;
        g = mnl_nlmsg_get_payload(nlh);
        if (g->nfgen_family != NFPROTO_INET)
                return -EPERM;

        /* Walk the attributes ourselves, strictly: the kernel takes the last
         * of duplicate attributes, so every table attribute must be ours,
         * and nothing may be left over. */
        off = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct nfgenmsg));
        end = nlh->nlmsg_len;
        while (off < end) {
                const struct nlattr *a = (const struct nlattr *) ((const char *) nlh + off);
                uint16_t type;

                if (end - off < sizeof(struct nlattr))
                        return -EBADMSG;
                if (a->nla_len < sizeof(struct nlattr) || a->nla_len > end - off)
                        return -EBADMSG;
                type = a->nla_type & NLA_TYPE_MASK;
                if (type == NFTA_ANY_TABLE) {
                        if (!attr_is_our_table(a))
                                return -EPERM;
                        table = true;
                }
                /* A table handle makes the kernel look the table up by
                 * handle instead of by name: refuse it. */
                if ((msg == NFT_MSG_NEWTABLE || msg == NFT_MSG_DELTABLE) && type == NFTA_TABLE_HANDLE)
                        return -EPERM;
                /* Table flags (dormant, owner: tied to the helper's socket
                 * and closed to everyone else) are nothing vmmd needs. */
                if (msg == NFT_MSG_NEWTABLE && type == NFTA_TABLE_FLAGS)
                        return -EPERM;
                off += MNL_ALIGN(a->nla_len);
        }
        if (off != MNL_ALIGN(end) && off != end)
                return -EBADMSG;
        if (!table)
                return -EPERM;
        return 0;
}

static int check_marker(const struct nlmsghdr *nlh) {
        const struct nfgenmsg *g;

        if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(struct nfgenmsg))
                return -EBADMSG;
        g = mnl_nlmsg_get_payload(nlh);
        /* The begin marker selects the subsystem the batch goes to. */
        if (ntohs(g->res_id) != NFNL_SUBSYS_NFTABLES)
                return -EPERM;
        return 0;
}

int nft_batch_check_scope(const void *data, size_t size) {
        const char *p = data;
        size_t off = 0;
        unsigned n = 0;
        bool ended = false;

        if (!data || size == 0)
                return -EBADMSG;
        while (off < size) {
                const struct nlmsghdr *nlh = (const struct nlmsghdr *) (p + off);
                size_t step;
                int r;

                if (size - off < sizeof(struct nlmsghdr))
                        return -EBADMSG;
                if (nlh->nlmsg_len < sizeof(struct nlmsghdr) || nlh->nlmsg_len > size - off)
                        return -EBADMSG;
                if (ended)
                        return -EBADMSG; /* Nothing after the end marker. */

                if (nlh->nlmsg_type == NFNL_MSG_BATCH_BEGIN) {
                        if (n != 0)
                                return -EBADMSG;
                        r = check_marker(nlh);
                } else if (nlh->nlmsg_type == NFNL_MSG_BATCH_END) {
                        if (n == 0)
                                return -EBADMSG;
                        r = check_marker(nlh);
                        ended = true;
                } else if (n == 0)
                        return -EBADMSG; /* Must start with the begin marker. */
                else
                        r = check_object_message(nlh);
                if (r < 0)
                        return r;

                n++;
                step = MNL_ALIGN(nlh->nlmsg_len);
                if (step > size - off)
                        step = size - off;
                off += step;
        }
        if (!ended)
                return -EBADMSG;
        return 0;
}
