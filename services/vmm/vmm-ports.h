/* SPDX-License-Identifier: MIT */
#pragma once

/* Exported container ports: a host port taken from a configured range
 * ([vmm] export_ports) and a TCP forwarder on [vmm] export_address:PORT
 * that joins every accepted connection to the instance's address and the
 * container's port over instance networking. Both live on vmmd's loop. */

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* ---- the range of host ports -------------------------------------------- */

typedef struct PortPool PortPool;

/* first..last inclusive, 1 <= first <= last <= 65535. */
int port_pool_new(uint16_t first, uint16_t last, PortPool **ret);
PortPool *port_pool_free(PortPool *p);
/* The lowest free port, now taken; -ENOSPC when every port is taken. */
int port_pool_allocate(PortPool *p, uint16_t *ret);
/* Takes a given port (a live instance's at a restart): -ERANGE outside
 * the range, -EEXIST when it is taken already. */
int port_pool_reserve(PortPool *p, uint16_t port);
void port_pool_release(PortPool *p, uint16_t port);
size_t port_pool_free_count(const PortPool *p);

/* ---- the forwarder ---------------------------------------------------- */

/* Bytes buffered per direction of a connection: reading from one side
 * stops while this much waits for the other side to take it. */
#define PORT_FORWARD_BUFFER (64 * 1024)
/* Connections per forwarder; more are accepted and closed at once. */
#define PORT_FORWARD_CONNECTIONS_MAX 256

typedef struct PortForward PortForward;

/* Listens on listen_addr:listen_port (SO_REUSEADDR, so that a restarted
 * vmmd gets its ports back while old connections linger) and connects
 * each accepted connection to target:target_port. -EADDRINUSE when the
 * port is held by someone else. */
int port_forward_new(sd_event *e, struct in_addr listen_addr, uint16_t listen_port, struct in_addr target,
                     uint16_t target_port, PortForward **ret);
/* Closes the listener and every connection. */
PortForward *port_forward_free(PortForward *f);
size_t port_forward_connections(const PortForward *f);
/* Connections accepted and connections that could not reach the target, since it was made. */
uint64_t port_forward_accepted(const PortForward *f);
uint64_t port_forward_refused(const PortForward *f);
