/* SPDX-License-Identifier: MIT */
#pragma once

/* diskd's records in SQLite (WAL) in the state directory: disks, base
 * images, and a journal of intent. Every multi-step change writes its
 * intent first, so that after a crash disk_manager's recovery knows which
 * files to finish or roll back. */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Store Store;

typedef struct DiskRecord {
        char *id;
        char *instance_id;
        char *path;
        char *format;       /* "qcow2" | "raw" */
        char *backend;      /* "qcow2-overlay" | "reflink" | "sparse" */
        char *base_image;   /* image name or "" */
        char *backing;      /* backing file path or "" */
        uint64_t size;
        int64_t created;
} DiskRecord;

typedef struct ImageRecord {
        char *name;
        char *path;
        char *format;
        char *digest;
        uint64_t virtual_size;
        uint64_t file_size;
        int64_t created;
} ImageRecord;

/* A container image: the unpacked layers of one manifest, held as the base
 * image `image`; refs (registry references or import names) point at it,
 * and disks made from `image` hold it too. */
typedef struct ContainerRecord {
        char *digest;       /* manifest digest ("sha256:…"); a docker save archive's config digest */
        char *image;        /* images.name of the ext4 base image */
        char *source;       /* the reference or file it came from */
        char *path;         /* from the images row */
        uint64_t file_size;
        uint64_t content_bytes;
        uint64_t layers;
        int64_t created;
        char *config;       /* the run config as oci_run_config_to_json() wrote it; "" for images older than that */
        char **refs;        /* NULL-terminated */
} ContainerRecord;

typedef struct IntentRecord {
        int64_t id;
        char *op;           /* "create-disk" | "delete-disk" | "add-image" | "remove-image" */
        char *object;       /* disk id or image name */
        char *path;         /* the file the step touches */
} IntentRecord;

int store_open(const char *path, Store **ret);
Store *store_free(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_free);

void disk_record_done(DiskRecord *d);
void image_record_done(ImageRecord *i);
void intent_record_done(IntentRecord *i);
void disk_records_free(DiskRecord *d, size_t n);
void image_records_free(ImageRecord *i, size_t n);
void intent_records_free(IntentRecord *i, size_t n);

/* Intents. */
int store_intent_add(Store *s, const char *op, const char *object, const char *path, int64_t *ret_id);
int store_intent_remove(Store *s, int64_t id);
int store_intent_list(Store *s, IntentRecord **ret, size_t *ret_n);

/* Disks. _get returns -ENOENT when absent. */
int store_disk_get(Store *s, const char *id, DiskRecord *ret);
int store_disk_get_by_instance(Store *s, const char *instance_id, DiskRecord *ret);
int store_disk_list(Store *s, const char *instance_id, DiskRecord **ret, size_t *ret_n);
/* Inserts the record and removes the intent in one transaction. */
int store_disk_commit(Store *s, const DiskRecord *d, int64_t intent_id);
/* Removes the record and adds a delete intent in one transaction. */
int store_disk_remove_with_intent(Store *s, const char *id, const char *path, int64_t *ret_intent);
int store_disk_remove(Store *s, const char *id);
int store_disk_set_size(Store *s, const char *id, uint64_t size);
int store_disk_totals(Store *s, uint64_t *ret_virtual, uint64_t *ret_count);

/* Images. */
int store_image_get(Store *s, const char *name, ImageRecord *ret);
int store_image_list(Store *s, ImageRecord **ret, size_t *ret_n);
int store_image_commit(Store *s, const ImageRecord *i, int64_t intent_id);
int store_image_remove(Store *s, const char *name);
int store_image_users(Store *s, const char *name, uint64_t *ret);

/* Container images. _get returns -ENOENT when absent. */
void container_record_done(ContainerRecord *c);
void container_records_free(ContainerRecord *c, size_t n);
int store_container_get(Store *s, const char *digest, ContainerRecord *ret);
int store_container_list(Store *s, ContainerRecord **ret, size_t *ret_n);
/* The digest a ref points at; -ENOENT when none. */
int store_ref_resolve(Store *s, const char *ref, char **ret_digest);
/* Points ref at digest (moving it when it pointed elsewhere). */
int store_ref_set(Store *s, const char *ref, const char *digest);
/* Removes one ref, or with a digest every ref to it; -ENOENT when none. */
int store_ref_remove(Store *s, const char *ref_or_digest);
/* Inserts the base image and the container image, points ref at it and
 * removes the intent, in one transaction. */
int store_container_commit(Store *s, const ImageRecord *image, const ContainerRecord *c, const char *ref,
                           int64_t intent_id);
/* Container images no ref and no disk holds. */
int store_container_unreferenced(Store *s, ContainerRecord **ret, size_t *ret_n);
/* Removes a container image and its base image record and adds a
 * remove-image intent for its file, in one transaction. */
int store_container_remove_with_intent(Store *s, const ContainerRecord *c, int64_t *ret_intent);
/* Container images whose base image record is gone. */
int store_container_prune(Store *s);
