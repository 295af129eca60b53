/* SPDX-License-Identifier: MIT */
#pragma once

/* Container images: pulled from an OCI registry or imported from an OCI
 * layout or a `docker save` archive, unpacked once per manifest digest
 * into a read-only ext4 base image, listed by their refs, and collected
 * when no ref and no disk holds them. The slow parts run on worker
 * threads; records are written on the loop. */

#include <stdbool.h>
#include <stdint.h>

#include "disk-manager.h"
#include "disk-store.h"

typedef struct ContainerOutcome {
        bool cached;        /* the image was there already: nothing fetched or unpacked */
        bool coalesced;     /* the call waited for another call's pull of the same image */
        uint64_t blobs;     /* blobs this call fetched */
} ContainerOutcome;
typedef void (*ContainerDone)(int r, const ContainerRecord *c, ContainerOutcome outcome, const char *error,
                              void *userdata);

/* Returns < 0 (with *ret_error) when refused at once; then `done` is not
 * called. A pull or an import of an image that another call is fetching
 * or unpacking (the same reference, or the same digest once resolved)
 * waits for that call and hears its outcome, error included. Errors: -EINVAL malformed ref, -ENOENT unknown repository/tag,
 * -ECONNREFUSED & co. registry down, -ESTALE digest mismatch, -EINVAL or
 * -E2BIG for a refused layer. */
int container_pull_async(Manager *m, const char *ref, ContainerDone done, void *userdata, char **ret_error);
/* path: an OCI layout directory, or a tar of one or of `docker save`. name
 * (may be empty) is the ref to list it by; otherwise the archive's own tag,
 * otherwise its digest. */
int container_import_async(Manager *m, const char *path, const char *name, ContainerDone done, void *userdata,
                           char **ret_error);
int container_list(Manager *m, ContainerRecord **ret, size_t *ret_n, char **ret_error);
/* Removes a ref (or every ref of a digest) and collects what nothing
 * holds any more. -ENOENT when there was no such ref. */
int container_delete(Manager *m, const char *ref, unsigned *ret_collected, char **ret_error);
/* Removes container images no ref and no disk holds. */
int container_gc(Manager *m, unsigned *ret_collected, char **ret_error);
/* Start-up: clears half-made unpack trees and collects garbage. */
int container_recover(Manager *m);
/* The job list's destructor, for the manager. */
void container_jobs_free(Manager *m);
