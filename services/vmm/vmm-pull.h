/* SPDX-License-Identifier: MIT */
#pragma once

/* Images a guest names from inside (docker pull, docker run of an image it
 * does not have): the guest asks over the agent channel (AGENT_IMAGE_PULL),
 * vmmd resolves the reference through diskd's PullImage, as at create, and
 * streams the base image diskd unpacked (its read-only ext4 file) back in
 * AGENT_IMAGE_DATA frames, then AGENT_IMAGE_END with the image's config as
 * Dockerfile instructions. The guest chooses a reference and nothing else:
 * the file is the one diskd names for it, and diskd's registry policy
 * decides what may be fetched. At most AGENT_IMAGE_PULLS_MAX pulls per
 * instance are in flight; the data queued for the guest is bounded, so
 * commands' frames pass between the image's. */

#include <stdint.h>

typedef struct Instance Instance;
typedef struct VmmPull VmmPull;
typedef struct Hostmesh__Disk__V1__ImageConfig Hostmesh__Disk__V1__ImageConfig;

/* Image data queued for the guest beyond which a pull waits for the
 * channel to drain. */
#define VMM_PULL_QUEUE_BYTES (256 * 1024)

/* An AGENT_IMAGE_PULL frame: ref is NULL when it named no valid reference. */
void vmm_pull_request(Instance *i, uint32_t id, const char *ref);
/* The agent channel drained below its low-water mark. */
void vmm_pull_on_writable(Instance *i);
/* The channel is gone: pulls end (one whose diskd call is in flight is
 * dropped when diskd answers). */
void vmm_pull_release_all(Instance *i);

/* The image's config as `docker import --change` instructions
 * (NULL-terminated; empty without a config). -EINVAL when a value cannot be
 * written as an instruction (a newline in it). */
int vmm_pull_config_changes(const Hostmesh__Disk__V1__ImageConfig *config, char ***ret);
