/* SPDX-License-Identifier: MIT */
#pragma once

/* An OCI Distribution client (distribution-spec "pull"): manifests and
 * blobs over HTTP/1.1 with libcurl, anonymous bearer tokens when the
 * registry asks for them, every blob checked against its digest while it
 * streams. HTTPS always, except for loopback registries, which are spoken
 * to over plain HTTP (like --insecure-registry, but never for another host).
 * Blocking: runs on worker threads. */

#include <stddef.h>
#include <stdint.h>

#include "disk-oci.h"

typedef struct Registry Registry;

int registry_new(const OciRef *ref, Registry **ret);
Registry *registry_free(Registry *r);

/* GET /v2/<name>/manifests/<reference> accepting OCI and Docker v2 types.
 * *ret_digest is the sha256 of the body; when `reference` is a digest the
 * body must match it (-ESTALE otherwise). Errors: -ENOENT (no such
 * repository, tag or digest), -ECONNREFUSED/-EHOSTUNREACH/-EHOSTDOWN (the
 * registry is down), -EACCES (refused), -EPROTO (anything else). */
int registry_get_manifest(Registry *r, const char *reference, char **ret_body, size_t *ret_len,
                          char **ret_content_type, char ret_digest[OCI_DIGEST_MAX], char **ret_error);
/* GET /v2/<name>/blobs/<digest> into fd (a fresh file). The bytes are
 * hashed as they arrive: a different digest or size is -ESTALE and the
 * caller throws the file away. */
int registry_get_blob(Registry *r, const OciDescriptor *blob, int fd, uint64_t max_size, char **ret_error);
/* Blobs fetched by this client: the cache test checks that a pull of a
 * known image fetched none. */
uint64_t registry_blobs_fetched(const Registry *r);
