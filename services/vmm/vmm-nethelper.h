/* SPDX-License-Identifier: MIT */
#pragma once

/* The privileged half of instance networking (OpenBSD-style privilege
 * separation): hostmesh-vmm-nethelper holds CAP_NET_ADMIN, creates the
 * bridge and the taps, applies nftables batches after checking that they
 * touch only hostmesh's table, and passes tap fds back. vmmd talks to it
 * over a SOCK_SEQPACKET socketpair; every message is length-checked on
 * both sides. The helper exits when vmmd's end closes.
 *
 * All calls are synchronous (each is a few netlink round trips). Errors are
 * negative errno; where the helper sent a message, *ret_error (when not
 * NULL) gets it. */

#include <netinet/in.h>
#include <stdint.h>

#include "macro.h"

typedef struct NetHelper NetHelper;

/* Starts the helper binary (path) with one end of a socketpair as fd 3. */
int nethelper_spawn(const char *path, NetHelper **ret);
/* Wraps an already connected socket (tests run the helper loop in-process). */
int nethelper_new_from_fd(int fd, NetHelper **ret);
NetHelper *nethelper_free(NetHelper *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(NetHelper *, nethelper_free);
pid_t nethelper_pid(const NetHelper *h);

/* Creates the bridge if missing (with a random MAC of its own, so that it
 * does not change as taps come and go), gives it address/prefixlen, brings
 * it up; enables IPv4 forwarding; disables ICMP redirects on the bridge.
 * -EEXIST when a link of that name is not a bridge. */
int nethelper_setup_bridge(NetHelper *h, const char *bridge, struct in_addr address, unsigned prefixlen,
                           char **ret_error);
/* Creates a persistent tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) on the bridge,
 * port isolated (guests reach each other only through the host's routing
 * and thus the forward chain), up; adds a permanent neighbour entry
 * guest → mac on the bridge. An existing tap of that name is reused; one
 * still open elsewhere (QEMU running) is -EBUSY.
 * *ret_fd: an open queue of the tap, to hand to QEMU. */
int nethelper_create_tap(NetHelper *h, const char *bridge, const char *tap, const uint8_t mac[6],
                         struct in_addr guest, int *ret_fd, char **ret_error);
/* Removes the tap (if present) and the neighbour entry (if present); a link
 * of that name that is not a tap is -EPERM. Takes ~20 ms (the kernel
 * unregistering the device). */
int nethelper_delete_tap(NetHelper *h, const char *bridge, const char *tap, struct in_addr guest,
                         char **ret_error);
/* Names of the taps enslaved to the bridge (NULL-terminated, free with strv_free() from macro.h). */
int nethelper_list_taps(NetHelper *h, const char *bridge, char ***ret, char **ret_error);
/* Applies one nftables batch (nft_batch_*), refused unless
 * nft_batch_check_scope() accepts it. */
int nethelper_apply(NetHelper *h, const void *batch, size_t size, char **ret_error);

/* The helper's side: serves requests on fd until it closes. Used by
 * hostmesh-vmm-nethelper's main() and by tests. */
int nethelper_serve(int fd);
