/* SPDX-License-Identifier: MIT */
#pragma once

/* Images named inside the instance, fetched through the host (see
 * agent-protocol.h, AGENT_IMAGE_PULL). The Docker proxies ask on a unix
 * socket only root in the guest reaches (PULL_SOCKET; containers see their
 * own docker.sock and nothing else of /run/hostmesh): one line with the
 * reference, answered when the image is in dockerd, or is not, with one
 * line "<AgentPullStatus> <message>". hostmesh-init asks vmmd, writes the
 * image diskd unpacked (an ext4 file, sparse) next to dockerd's data,
 * mounts it read-only through a loop device and imports it as the
 * create-time images are (tar | docker import, with the image's config as
 * --change instructions), under the reference asked for. */

#include <poll.h>
#include <stdbool.h>
#include <sys/types.h>

#include "agent-protocol.h"

#define PULL_SOCKET "/run/hostmesh/docker/pull.sock"
#define PULL_REQUEST_MAX 512   /* one line: a reference is at most 255 bytes */

/* Sends a frame to the host (hostmesh-init's port writer). */
typedef int (*PullSendFunc)(AgentBuffer *b);

/* How frames reach the host; set once at start. */
void pull_set_sender(PullSendFunc send);
/* Listens on PULL_SOCKET (once; later calls do nothing). 0 or a negative errno. */
int pull_listen(void);
/* The fds to poll (the listener, proxies' connections): appends at most
 * PULL_POLL_MAX entries to p and returns how many. */
#define PULL_POLL_MAX 8
size_t pull_poll_fds(struct pollfd *p);
/* After poll(): the same entries pull_poll_fds() added. */
void pull_on_poll(const struct pollfd *p, size_t n);
/* AGENT_IMAGE_DATA and AGENT_IMAGE_END frames. */
void pull_on_frame(const AgentFrame *f);
/* The host's end of the channel closed (vmmd stopped or restarted): a
 * restarted vmmd knows nothing of the pulls the old one was answering, so
 * every pull waiting for the host is answered "unavailable" now rather
 * than never. Pulls already importing go on. */
void pull_host_gone(void);
/* PID 1 reaped a child: an import may have ended. */
void pull_child_exited(pid_t pid, int status);
