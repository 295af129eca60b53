/* SPDX-License-Identifier: MIT */
#pragma once

/* The nftables side of instance networking: netlink batches for the one
 * table hostmesh owns ("inet hostmesh"), built with libnftnl. Building a
 * batch needs no privilege; the network helper applies it.
 *
 * The table (inet family; IPv4 is what instances get):
 *   set peers        ipv4_addr . ipv4_addr: pairs allowed to talk (same tenant)
 *   chain prerouting nat/dstnat: DNS (udp+tcp 53 to the gateway) → gateway:dns_port
 *   chain postrouting nat/srcnat: instance traffic leaving by another device is masqueraded
 *   chain input      filter: from the bridge only DNS (after DNAT), ICMP echo and
 *                    established traffic reach the host; everything else is dropped
 *   chain forward    filter: bridge → bridge only for @peers; bridge → out accepted;
 *                    out → bridge only established/related
 *   chain guard-<tap> ingress on the instance's tap (one per instance): frames
 *                    not from its MAC and IPv4 not from its address are dropped,
 *                    IPv6 is dropped (instances have none)
 * Traffic that does not come from or go to the bridge is never touched. */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define NFT_TABLE_NAME "hostmesh"

typedef struct NftNetwork {
        const char *bridge;        /* "hm0" */
        struct in_addr gateway;    /* the bridge's address, instances' gateway and DNS */
        struct in_addr pool;       /* network address of the pool */
        unsigned prefixlen;        /* pool prefix length (8..30) */
        uint16_t dns_port;         /* where dnsd listens on the gateway address */
} NftNetwork;

typedef struct NftInstance {
        const char *tap;           /* tap device name, at most 15 bytes */
        struct in_addr address;
        uint8_t mac[6];
} NftInstance;

/* One allowed direction: a may send to b. */
typedef struct NftPair {
        struct in_addr a, b;
} NftPair;

/* A batch holds one transaction: one builder call per NftBatch (a second
 * one is -EBUSY). Every message asks for an ACK. */
typedef struct NftBatch NftBatch;

int nft_batch_new(NftBatch **ret);
NftBatch *nft_batch_free(NftBatch *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(NftBatch *, nft_batch_free);
const void *nft_batch_data(const NftBatch *b);
size_t nft_batch_size(const NftBatch *b);

/* Replaces the whole table in one transaction: an existing table (with
 * whatever was added or removed by hand) is deleted and the table is
 * created again from the arguments. This is the reconciliation at start. */
int nft_batch_replace_table(NftBatch *b, const NftNetwork *n, const NftInstance *instances, size_t n_instances,
                            const NftPair *pairs, size_t n_pairs);
/* One instance's rules: its guard chain and its pairs. Adding is
 * idempotent (the guard chain is flushed and filled again). Removing needs
 * the chain and every pair to be there: the kernel refuses a missing one
 * (ENOENT) and the whole batch does nothing. Older kernels (Debian 12's
 * 6.1) also refuse a guard chain for a tap that does not exist (ENOENT). */
int nft_batch_add_instance(NftBatch *b, const NftNetwork *n, const NftInstance *i, const NftPair *pairs,
                           size_t n_pairs);
int nft_batch_remove_instance(NftBatch *b, const NftNetwork *n, const NftInstance *i, const NftPair *pairs,
                              size_t n_pairs);
/* The same rules as `nft -f` text (the benchmark's peer and for humans). */
int nft_text_replace_table(const NftNetwork *n, const NftInstance *instances, size_t n_instances,
                           const NftPair *pairs, size_t n_pairs, char **ret);
int nft_text_add_instance(const NftNetwork *n, const NftInstance *i, const NftPair *pairs, size_t n_pairs,
                          char **ret);
int nft_text_remove_instance(const NftNetwork *n, const NftInstance *i, const NftPair *pairs, size_t n_pairs,
                             char **ret);

/* Checks that every message of a batch is a begin/end marker or an
 * nf_tables message for the inet table NFT_TABLE_NAME (the helper's rule:
 * vmmd may not touch any other table). 0, or -EPERM/-EBADMSG. */
int nft_batch_check_scope(const void *data, size_t size);
