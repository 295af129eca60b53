/* SPDX-License-Identifier: MIT */
#pragma once

/* What diskd does, independent of gRPC: every verb validates its input,
 * returns a negative errno and, on failure, a message for the caller in
 * *ret_error (what went wrong and what to do). */

#include <stdbool.h>
#include <stdint.h>

#include "disk-image.h"
#include "disk-manager.h"
#include "disk-store.h"

typedef struct DiskCreateParams {
        const char *instance_id;
        const char *shape;
        uint64_t size_bytes;
        const char *base_image;
        const char *format;
        const char *tenant_id;
} DiskCreateParams;

typedef struct PoolStats {
        const char *path;
        const char *filesystem;
        bool reflink;
        const char *backend;
        uint64_t capacity, free, allocated, virtual_total, reserve;
        double overcommit;
        uint64_t disks, images;
} PoolStats;

int disk_create(Manager *m, const DiskCreateParams *p, DiskRecord *ret, char **ret_error);
/* The same for the rpc layer: `done` runs on the loop, right away for the
 * millisecond backends, after a worker thread's copy for the "copy" backend
 * (a raw disk from a raw base on a pool without reflink). Returns < 0 (with
 * *ret_error) when refused; then `done` is not called. */
typedef void (*DiskCreateDone)(int r, const DiskRecord *disk, const char *error, void *userdata);
int disk_create_async(Manager *m, const DiskCreateParams *p, DiskCreateDone done, void *userdata,
                      char **ret_error);

/* One CreateDisk in progress. */
struct CreateJob {
        char id[32];
        char *path;
        const char *format;         /* static strings */
        const char *backend;
        uint64_t size;
        uint64_t start;
        char *instance_id, *base_image, *image_path, *image_format;
        int64_t intent;
        int r;                      /* written by the worker */
        DiskCreateDone done;
        void *userdata;
        CreateJob *next;
};
CreateJob *create_job_free(CreateJob *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(CreateJob *, create_job_free);
int disk_describe(Manager *m, const char *disk_id, DiskRecord *ret, char **ret_error);
int disk_list(Manager *m, const char *instance_id, DiskRecord **ret, size_t *ret_n, char **ret_error);
int disk_resize(Manager *m, const char *disk_id, uint64_t size, DiskRecord *ret, char **ret_error);
/* 1 deleted, 0 there was no such disk. */
int disk_delete(Manager *m, const char *disk_id, char **ret_error);
int disk_pool_stats(Manager *m, PoolStats *ret, char **ret_error);

int image_add(Manager *m, const char *name, const char *source, const char *format, uint64_t size,
              ImageRecord *ret, char **ret_error);
/* The same with the copy/mkfs/digest on a worker thread, so that the loop
 * keeps serving while a large image comes in: validation and records on the
 * loop, `done` on the loop. Returns < 0 (with *ret_error) when refused at
 * once; then `done` is not called. */
typedef void (*ImageAddDone)(int r, const ImageRecord *image, const char *error, void *userdata);
int image_add_async(Manager *m, const char *name, const char *source, const char *format, uint64_t size,
                    ImageAddDone done, void *userdata, char **ret_error);

/* One AddImage in progress. */
struct ImageJob {
        Manager *manager;
        char *name, *source, *path;
        bool directory;
        uint64_t size;
        int64_t intent;
        /* Written by the worker, read after pthread_join(). */
        int r;
        bool copy_failed;
        char *output;
        ImageProbe probe;
        char digest[IMAGE_DIGEST_MAX];
        ImageAddDone done;
        void *userdata;
        ImageJob *next;
};
ImageJob *image_job_free(ImageJob *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(ImageJob *, image_job_free);
int image_list(Manager *m, ImageRecord **ret, size_t *ret_n, char **ret_error);
int image_remove(Manager *m, const char *name, char **ret_error);
/* With image_source_dirs set: whether `real` (a resolved path) lies below one. */
bool source_allowed(Manager *m, const char *real);
/* Disks using the image. */
int image_users(Manager *m, const char *name, uint64_t *ret);

/* Start-up: finishes or rolls back interrupted steps from the intent
 * journal, then reconciles files and records. Logs what it did. */
int disk_recover(Manager *m);
