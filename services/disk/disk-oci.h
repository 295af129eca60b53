/* SPDX-License-Identifier: MIT */
#pragma once

/* OCI image documents (image-spec v1.0/1.1) and their Docker v2 schema 2
 * equivalents: references, descriptors, indexes, manifests, configs, and
 * the manifest.json of a `docker save` archive. All of it arrives from
 * registries or files users hand us: parsed with bounds, refused with a
 * message saying what is wrong. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OCI_DIGEST_MAX 72           /* "sha256:" + 64 hex + NUL */
#define OCI_MAX_LAYERS 128
#define OCI_MAX_MANIFESTS 256
#define OCI_DOCUMENT_MAX (4U << 20) /* a manifest, index or config */

#define OCI_MT_INDEX "application/vnd.oci.image.index.v1+json"
#define OCI_MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define DOCKER_MT_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define DOCKER_MT_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

/* A reference: host[:port]/repository[:tag][@sha256:hex]. */
typedef struct OciRef {
        char host[256];
        char repository[256];
        char tag[129];              /* "" when only a digest was given */
        char digest[OCI_DIGEST_MAX];
} OciRef;
/* -EINVAL with a message for anything else. The host is required: there
 * is no default registry. A missing tag means "latest". */
int oci_ref_parse(const char *s, OciRef *ret, char **ret_error);
/* "host/repo:tag" or "host/repo@digest": the key a pulled image is listed by. */
int oci_ref_format(const OciRef *ref, char **ret);
bool oci_digest_is_valid(const char *digest);
/* True for loopback registries (127.0.0.0/8, ::1, localhost), the only ones
 * spoken to over plain HTTP. */
bool oci_host_is_loopback(const char *host);

typedef struct OciDescriptor {
        char media_type[128];
        char digest[OCI_DIGEST_MAX];
        uint64_t size;
        char os[32], architecture[32], variant[32];   /* index entries */
        char ref_name[256];         /* org.opencontainers.image.ref.name, OCI layout index.json */
} OciDescriptor;

typedef enum OciKind {
        OCI_KIND_INDEX,             /* OCI index or Docker manifest list */
        OCI_KIND_MANIFEST,          /* OCI or Docker v2 schema 2 manifest */
} OciKind;

typedef struct OciDocument {
        OciKind kind;
        OciDescriptor config;       /* manifests */
        OciDescriptor *entries;     /* layers of a manifest, manifests of an index */
        size_t n_entries;
} OciDocument;

/* Parses a manifest or an index. content_type (the HTTP header, may be
 * NULL) decides when the document has no mediaType of its own. */
int oci_document_parse(const char *json, size_t len, const char *content_type, OciDocument *ret, char **ret_error);
void oci_document_done(OciDocument *d);
/* The linux/amd64 entry of an index; -ENOENT when there is none. */
int oci_index_pick(const OciDocument *index, const char *os, const char *architecture, const OciDescriptor **ret);
/* 0 for the layer media types diskd unpacks (tar, tar+gzip, OCI and
 * Docker), -EOPNOTSUPP otherwise (zstd, foreign layers). */
int oci_layer_type_check(const char *media_type);

/* What a container runs with, from the config's "config" object
 * (image-spec config.md): Entrypoint, Cmd, Env, WorkingDir, User. The
 * string lists are NULL-terminated and never NULL; the strings are never
 * NULL ("" when the image sets none). */
#define OCI_RUN_STRINGS_MAX 1024    /* entries per list */
typedef struct OciRunConfig {
        char **entrypoint;
        char **cmd;
        char **env;                 /* NAME=VALUE */
        char *working_dir;
        char *user;
} OciRunConfig;

typedef struct OciConfig {
        char os[32], architecture[32];
        char **diff_ids;            /* rootfs.diff_ids: digests of the uncompressed layers */
        size_t n_diff_ids;
        OciRunConfig run;
} OciConfig;
int oci_config_parse(const char *json, size_t len, OciConfig *ret, char **ret_error);
void oci_config_done(OciConfig *c);

/* The run config as diskd keeps it (compact JSON with the image-spec's
 * key names) and back; _from_json refuses what _to_json would not write. */
int oci_run_config_to_json(const OciRunConfig *c, char **ret);
int oci_run_config_from_json(const char *json, OciRunConfig *ret);
void oci_run_config_done(OciRunConfig *c);

/* manifest.json of `docker save`: the first image in it. Paths are
 * relative to the archive and checked to stay inside it. */
typedef struct DockerSave {
        char *config;               /* path of the config JSON */
        char *tag;                  /* RepoTags[0] or NULL */
        char **layers;              /* paths of the layer tars */
        size_t n_layers;
} DockerSave;
int docker_save_parse(const char *json, size_t len, DockerSave *ret, char **ret_error);
void docker_save_done(DockerSave *d);
