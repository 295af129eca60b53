/* SPDX-License-Identifier: MIT */
#pragma once

/* vmmd's end of the guest agent channel (guest/agent-protocol.h): a
 * connection to QEMU's virtio-serial chardev socket, frames in both
 * directions, a write queue for when the guest is slow to read. */

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent-protocol.h"

typedef struct AgentConn AgentConn;

typedef struct AgentCallbacks {
        void (*ready)(AgentConn *a, const AgentReady *ready, void *userdata);
        void (*token_ack)(AgentConn *a, int32_t result, void *userdata);
        void (*output)(AgentConn *a, uint32_t id, AgentFrameType stream, const uint8_t *data, size_t size,
                       void *userdata);
        void (*exit)(AgentConn *a, uint32_t id, int32_t code, void *userdata);
        /* A container's main task (by its command id): "running" or "failed: why". */
        void (*container_state)(AgentConn *a, uint32_t id, const char *state, void *userdata);
        /* The guest asks for an image (AGENT_IMAGE_PULL): ref is NULL when
         * the frame was well formed but named no valid reference. */
        void (*image_pull)(AgentConn *a, uint32_t id, const char *ref, void *userdata);
        /* The write queue fell below AGENT_CONN_LOW_WATER after being above
         * it: bulk senders (image data) may queue more. */
        void (*writable)(AgentConn *a, void *userdata);
        /* The connection is gone (QEMU exited, or a malformed frame). */
        void (*disconnected)(AgentConn *a, int error, void *userdata);
} AgentCallbacks;

int agent_conn_connect(sd_event *e, const char *path, const AgentCallbacks *cb, void *userdata, AgentConn **ret);
AgentConn *agent_conn_free(AgentConn *a);
/* Queues an encoded frame (or several) for the guest. */
int agent_conn_send(AgentConn *a, const AgentBuffer *b);
/* Bytes queued for the guest and not written yet. Bulk senders keep this
 * below a bound of their own, so that the frames of commands and
 * containers queued after theirs wait behind at most that much. */
#define AGENT_CONN_LOW_WATER (64 * 1024)
size_t agent_conn_queued(const AgentConn *a);
