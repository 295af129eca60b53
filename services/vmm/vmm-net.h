/* SPDX-License-Identifier: MIT */
#pragma once

/* Instance networking, vmmd's unprivileged half: the address pool, tap
 * names and MACs, the nftables batches (vmm-nft) and the calls to the
 * privileged network helper (vmm-nethelper) that creates taps and applies
 * the batches. All of it is a no-op when [vmm] network = no. */

#include <stdbool.h>
#include <stdint.h>

typedef struct Manager Manager;
typedef struct Instance Instance;

/* Parses the [vmm] network settings; logs and fails on a bad one. */
int vmm_net_configure(Manager *m);
/* Starts the helper, drops CAP_NET_ADMIN from vmmd itself and sets up the
 * bridge. */
int vmm_net_start(Manager *m);
/* Makes taps and the ruleset match the instances vmmd knows: nothing
 * leaked, nothing missing. Runs once the instances are re-attached. */
int vmm_net_reconcile(Manager *m);
void vmm_net_stop(Manager *m);

/* Gives the instance an address, a tap on the bridge and its rules, in
 * that order, undoing on failure. *ret_tap_fd: for QEMU. */
int vmm_net_attach(Manager *m, Instance *i, int *ret_tap_fd, char **ret_error);
/* Removes the rules and the tap and frees the address. Idempotent. */
void vmm_net_detach(Manager *m, Instance *i);

/* Lowest free address of the pool after the gateway; -ENOSPC when none. */
int vmm_net_allocate_address(Manager *m, char **ret);
/* The guest's MAC, derived from its address (02:68:6d + its low 24 bits). */
void vmm_net_mac(const Instance *i, uint8_t mac[6]);
/* Kernel command line keys for hostmesh-init (NULL without network). */
char *vmm_net_guest_cmdline(Manager *m, const Instance *i);
