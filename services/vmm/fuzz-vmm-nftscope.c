/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to the nftables scope check, as the network helper
 * does with every batch vmmd sends. An accepted batch must really be one
 * that only names table inet hostmesh: check that independently. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include "vmm-nft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const struct nlmsghdr *nlh;
        uint8_t *copy;
        size_t off = 0;
        int r;

        /* The helper refuses batches over 64 MiB before looking at them. */
        if (size > 1024 * 1024)
                return 0;
        /* A copy of the exact size, so that reads past the end are caught
         * by ASan, and with netlink's alignment. */
        copy = malloc(size ? size : 1);
        if (!copy)
                return 0;
        memcpy(copy, data, size);
        r = nft_batch_check_scope(copy, size);
        if (r != 0 && r != -EPERM && r != -EBADMSG)
                abort();
        if (r == 0) {
                /* Accepted: every message is whole, and every nf_tables
                 * message is for the inet family. */
                while (off < size) {
                        const struct nfgenmsg *g;

                        nlh = (const struct nlmsghdr *) (copy + off);
                        if (size - off < sizeof(*nlh) || nlh->nlmsg_len < sizeof(*nlh) ||
                            nlh->nlmsg_len > size - off)
                                abort();
                        if (nlh->nlmsg_type != NFNL_MSG_BATCH_BEGIN && nlh->nlmsg_type != NFNL_MSG_BATCH_END) {
                                if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(*g))
                                        abort();
                                g = (const struct nfgenmsg *) NLMSG_DATA(nlh);
                                if (g->nfgen_family != NFPROTO_INET ||
                                    NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES)
                                        abort();
                        }
                        off += NLMSG_ALIGN(nlh->nlmsg_len) < size - off ? NLMSG_ALIGN(nlh->nlmsg_len) : size - off;
                }
        }
        free(copy);
        return 0;
}
