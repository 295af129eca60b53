/* SPDX-License-Identifier: MIT */
/* Disk and image verbs. Every change that touches a file follows the same
 * order so that a crash at any point is recoverable:
 *   1. an intent row (op, object, path) is committed;
 *   2. the file is made (or removed);
 *   3. the record is written and the intent removed in one transaction.
 * disk_recover() at start-up rolls back creates that did not reach 3 and
 * finishes deletes that did not. */

#include <dirent.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "error-util.h"
#include "disk-exec.h"
#include "disk-image.h"
#include "disk-ops.h"
#include "disk-pool.h"
#include "disk-work.h"
#include "fs-util.h"
#include "log.h"
#include "metrics.h"
#include "parse-util.h"
#include "shape.h"

#define DISK_ID_LEN 21              /* "disk-" + 16 hex */
#define NAME_MAX_LEN 64
#define INSTANCE_ID_MAX 128
#define DISK_SIZE_MIN (1ULL << 20)
#define DISK_SIZE_MAX (64ULL << 40)
#define MIB (1ULL << 20)
/* What an overlay allocates at once: its metadata clusters. */
#define OVERLAY_PHYSICAL (256ULL << 10)

static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

/* Logs with DISK_ID= and INSTANCE_ID= as structured fields. */
#define log_disk(level, disk_id, instance_id, ...)                                             \
        do {                                                                                    \
                char _f_disk[64], _f_inst[160];                                                 \
                snprintf(_f_disk, sizeof(_f_disk), "DISK_ID=%s", (disk_id));                    \
                snprintf(_f_inst, sizeof(_f_inst), "INSTANCE_ID=%s", (instance_id));            \
                log_struct(level, 0, FIELDS(_f_disk, _f_inst), __VA_ARGS__);                    \
        } while (0)

static bool disk_id_is_valid(const char *id) {
        if (!id || strlen(id) != DISK_ID_LEN || strncmp(id, "disk-", 5) != 0)
                return false;
        for (const char *p = id + 5; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

static bool name_is_valid(const char *name) {
        return filename_is_valid(name, NAME_MAX_LEN) && name[0] != '.';
}

static int disk_id_new(char ret[DISK_ID_LEN + 1]) {
        uint8_t b[8];

        if (getrandom(b, sizeof(b), 0) != sizeof(b))
                return -EIO;
        snprintf(ret, DISK_ID_LEN + 1, "disk-%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
                 b[6], b[7]);
        return 0;
}

static bool tenant_allowed_large(Manager *m, const char *tenant) {
        for (char **t = m->config.large_shape_tenants; t && *t; t++)
                if (streq(*t, "*") || (!isempty(tenant) && streq(*t, tenant)))
                        return true;
        return false;
}

static int admission(Manager *m, uint64_t new_virtual, uint64_t new_physical, char **ret_error) {
        uint64_t virtual_total, count;
        PoolSpace space;
        int r;

        r = pool_space(m->pool, &space);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read the pool's free space (%s): %s.", m->pool->path, strerror(-r));
        r = store_disk_totals(m->store, &virtual_total, &count);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read the disk records: %s.", strerror(-r));
        PoolAdmission a = {
                .capacity = space.capacity,
                .free = space.free,
                .virtual_total = virtual_total,
                .reserve = m->config.reserve,
                .overcommit = m->config.overcommit_ratio,
        };
        return pool_admit(&a, new_virtual, new_physical, ret_error);
}

static void record_metrics(Manager *m, const char *backend, uint64_t start) {
        char labels[64];

        if (!m->metrics)
                return;
        snprintf(labels, sizeof(labels), "backend=\"%s\"", backend);
        metric_observe(metrics_histogram(m->metrics, "hostmesh_disk_create_seconds",
                                         "Time to provision a disk, by backend.", labels),
                       (double) (monotonic_usec() - start) / 1e6);
        metric_add(metrics_counter(m->metrics, "hostmesh_disk_created_total", "Disks created, by backend.", labels), 1);
}

/* Validates a CreateDisk request, decides the backend, admits it and
 * records the intent: everything that needs the store, on the loop. Returns
 * 1 with *ret_existing when the instance has this disk already. */
static int create_prepare(Manager *m, const DiskCreateParams *p, CreateJob **ret_job, DiskRecord *ret_existing,
                          char **ret_error) {
        _cleanup_(image_record_done) ImageRecord image = {};
        _cleanup_free_ char *path = NULL, *file = NULL;
        const char *format, *backend, *instance_id = p->instance_id ? p->instance_id : "";
        uint64_t start = monotonic_usec(), size, physical = 0, virtual_total, count;
        _cleanup_(create_job_freep) CreateJob *j = NULL;
        char id[DISK_ID_LEN + 1];
        bool have_base = !isempty(p->base_image);
        int r;

        /* Validate everything before touching anything. */
        if (!isempty(instance_id) && !filename_is_valid(instance_id, INSTANCE_ID_MAX))
                return error_set(ret_error, -EINVAL,
                            "Invalid instance_id '%.*s': use 1-%d characters of [A-Za-z0-9._-].", 64, instance_id,
                            INSTANCE_ID_MAX);
        if (!isempty(p->shape) && p->size_bytes > 0)
                return error_set(ret_error, -EINVAL, "Give either a shape or size_bytes, not both.");
        if (!isempty(p->shape)) {
                Shape shape;
                r = shape_parse(p->shape, tenant_allowed_large(m, p->tenant_id), &shape);
                if (r == -EPERM)
                        return error_set(ret_error, -EPERM,
                                    "Shape '%s' has more than 64 GB of memory, which tenant '%s' may not use; "
                                    "add the tenant to large_shape_tenants in disk.conf.",
                                    p->shape, isempty(p->tenant_id) ? "(none)" : p->tenant_id);
                if (r < 0)
                        return error_set(ret_error, -EINVAL, "Invalid shape '%.*s': %s.", 32, p->shape, shape_valid_help());
                size = shape_disk_bytes(&shape);
        } else if (p->size_bytes > 0) {
                if (p->size_bytes < DISK_SIZE_MIN || p->size_bytes > DISK_SIZE_MAX)
                        return error_set(ret_error, -EINVAL, "size_bytes must be between 1 MiB and 64 TiB.");
                size = (p->size_bytes + MIB - 1) & ~(MIB - 1);
        } else
                return error_set(ret_error, -EINVAL, "A disk needs a shape (e.g. 4x8) or size_bytes.");
        if (!isempty(p->format) && !streq(p->format, "qcow2") && !streq(p->format, "raw"))
                return error_set(ret_error, -EINVAL, "Invalid format '%.*s': use \"qcow2\", \"raw\" or leave it empty.", 16,
                            p->format);
        if (have_base) {
                if (!name_is_valid(p->base_image))
                        return error_set(ret_error, -EINVAL, "Invalid image name '%.*s'.", 64, p->base_image);
                r = store_image_get(m->store, p->base_image, &image);
                if (r == -ENOENT)
                        return error_set(ret_error, -ENOENT, "No base image '%s'; see 'nsc disk images list'.",
                                    p->base_image);
                if (r < 0)
                        return error_set(ret_error, r, "Cannot read image records: %s.", strerror(-r));
                if (image.virtual_size > size)
                        return error_set(ret_error, -EINVAL, "Base image '%s' (%llu bytes) is larger than the disk (%llu bytes).",
                                    image.name, (unsigned long long) image.virtual_size, (unsigned long long) size);
        }

        /* Backend: reflink when the pool can and the base is raw; a qcow2
         * overlay otherwise; an empty sparse file without a base. */
        if (!have_base) {
                format = streq_ptr(p->format, "qcow2") ? "qcow2" : "raw";
                backend = streq(format, "qcow2") ? "qcow2" : "sparse";
        } else if (streq(image.format, "raw") && !streq_ptr(p->format, "qcow2") &&
                   (m->pool->reflink || streq_ptr(p->format, "raw"))) {
                format = "raw";
                backend = m->pool->reflink ? "reflink" : "copy";
                if (!m->pool->reflink)
                        physical = image.file_size;
        } else if (streq_ptr(p->format, "raw"))
                return error_set(ret_error, -EINVAL,
                            "Base image '%s' is qcow2; a raw disk needs a raw base image. Ask for format qcow2.",
                            image.name);
        else {
                format = "qcow2";
                backend = "qcow2-overlay";
        }
        if (streq(format, "qcow2"))
                physical = OVERLAY_PHYSICAL;

        /* One disk per instance: asking again returns it (vmmd may retry). */
        if (!isempty(instance_id)) {
                DiskRecord existing = {};
                r = store_disk_get_by_instance(m->store, instance_id, &existing);
                if (r >= 0) {
                        if (existing.size == size && streq(existing.base_image, have_base ? p->base_image : "") &&
                            (isempty(p->format) || streq(existing.format, p->format))) {
                                *ret_existing = existing;
                                return 1;
                        }
                        r = error_set(ret_error, -EEXIST,
                                 "Instance '%s' already has disk %s (%llu bytes, image '%s'); delete it first.",
                                 instance_id, existing.id, (unsigned long long) existing.size, existing.base_image);
                        disk_record_done(&existing);
                        return r;
                }
                if (r != -ENOENT)
                        return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
                for (CreateJob *c = m->create_jobs; c; c = c->next)
                        if (streq(c->instance_id, instance_id))
                                return error_set(ret_error, -EBUSY, "A disk for instance '%s' is being created (%s); "
                                            "ask again when that call returns.", instance_id, c->id);
        }

        r = store_disk_totals(m->store, &virtual_total, &count);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
        if (count >= m->config.max_disks)
                return error_set(ret_error, -ENOSPC, "The pool holds %llu disks, the limit (max_disks in disk.conf).",
                            (unsigned long long) count);
        r = admission(m, size, physical, ret_error);
        if (r < 0)
                return r;

        r = disk_id_new(id);
        if (r < 0)
                return error_set(ret_error, r, "Cannot generate a disk id.");
        if (asprintf(&file, "%s.%s", id, format) < 0)
                return -ENOMEM;
        path = path_join(m->pool->disks_dir, file);
        if (!path)
                return -ENOMEM;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        memcpy(j->id, id, sizeof(id));
        j->path = TAKE_PTR(path);
        j->format = format;
        j->backend = backend;
        j->size = size;
        j->start = start;
        j->instance_id = strdup(instance_id);
        j->base_image = strdup(have_base ? image.name : "");
        j->image_path = strdup(have_base ? image.path : "");
        j->image_format = strdup(have_base ? image.format : "");
        if (!j->instance_id || !j->base_image || !j->image_path || !j->image_format)
                return -ENOMEM;
        r = store_intent_add(m->store, "create-disk", j->id, j->path, &j->intent);
        if (r < 0)
                return error_set(ret_error, r, "Cannot record the intent to create a disk: %s.", strerror(-r));
        *ret_job = TAKE_PTR(j);
        return 0;
}

/* Makes the disk file: files only, so the slow backend (a full copy) can run
 * on a worker thread. */
static void create_run(void *data) {
        CreateJob *j = data;
        const char *backing = j->image_path, *backing_format = j->image_format;

        if (streq(j->backend, "sparse"))
                j->r = pool_create_sparse(j->path, j->size);
        else if (streq(j->backend, "qcow2"))
                j->r = pool_create_qcow2(j->path, j->size, NULL, NULL);
        else if (streq(j->backend, "qcow2-overlay"))
                j->r = pool_create_qcow2(j->path, j->size, backing, backing_format);
        else if (streq(j->backend, "reflink"))
                j->r = pool_create_reflink(j->path, j->size, backing);
        else {
                j->r = image_copy(backing, j->path);
                if (j->r >= 0 && truncate(j->path, (off_t) j->size) < 0) {
                        j->r = negative_errno();
                        (void) unlink(j->path);
                }
        }
}

/* Back on the loop: the record, or the clean-up. */
static int create_finish(Manager *m, CreateJob *j, DiskRecord *ret, char **ret_error) {
        int r = j->r;

        if (r < 0) {
                (void) store_intent_remove(m->store, j->intent);
                return error_set(ret_error, r, "Failed to create the %s disk file in %s: %s.", j->backend,
                            m->pool->disks_dir, strerror(-r));
        }
        DiskRecord d = {
                .id = j->id,
                .instance_id = j->instance_id,
                .path = j->path,
                .format = (char *) j->format,
                .backend = (char *) j->backend,
                .base_image = j->base_image,
                .backing = streq(j->backend, "qcow2-overlay") ? j->image_path : (char *) "",
                .size = j->size,
                .created = (int64_t) time(NULL),
        };
        r = store_disk_commit(m->store, &d, j->intent);
        if (r < 0) {
                (void) unlink(j->path);
                (void) store_intent_remove(m->store, j->intent);
                return error_set(ret_error, r, "Failed to record disk %s: %s.", j->id, strerror(-r));
        }
        record_metrics(m, j->backend, j->start);
        log_disk(LOG_INFO, j->id, j->instance_id, "Created %s disk %s (%llu bytes) for '%s'.", j->backend, j->id,
                 (unsigned long long) j->size, j->instance_id);
        return store_disk_get(m->store, j->id, ret);
}

CreateJob *create_job_free(CreateJob *j) {
        if (!j)
                return NULL;
        free(j->path);
        free(j->instance_id);
        free(j->base_image);
        free(j->image_path);
        free(j->image_format);
        free(j);
        return NULL;
}

int disk_create(Manager *m, const DiskCreateParams *p, DiskRecord *ret, char **ret_error) {
        _cleanup_(create_job_freep) CreateJob *j = NULL;
        int r;

        r = create_prepare(m, p, &j, ret, ret_error);
        if (r != 0)
                return r < 0 ? r : 0;
        create_run(j);
        return create_finish(m, j, ret, ret_error);
}

static void create_job_unlink(Manager *m, CreateJob *j) {
        for (CreateJob **q = &m->create_jobs; *q; q = &(*q)->next)
                if (*q == j) {
                        *q = j->next;
                        break;
                }
}

static void create_work_complete(Manager *m, void *data, bool cancelled) {
        _cleanup_(disk_record_done) DiskRecord rec = {};
        CreateJob *j = data;
        char *error = NULL;
        int r;

        create_job_unlink(m, j);
        if (cancelled) {
                /* The intent stays: the next start removes the half-made file. */
                r = error_set(&error, -ECANCELED, "diskd is shutting down; create the disk again.");
                j->done(r, NULL, error, j->userdata);
        } else {
                r = create_finish(m, j, &rec, &error);
                j->done(r, r >= 0 ? &rec : NULL, error, j->userdata);
        }
        free(error);
        create_job_free(j);
}

int disk_create_async(Manager *m, const DiskCreateParams *p, DiskCreateDone done, void *userdata,
                      char **ret_error) {
        _cleanup_(disk_record_done) DiskRecord rec = {};
        _cleanup_(create_job_freep) CreateJob *j = NULL;
        int r;

        r = create_prepare(m, p, &j, &rec, ret_error);
        if (r < 0)
                return r;
        if (r > 0 || !streq(j->backend, "copy")) {
                /* Everything but a full copy takes milliseconds: do it now. */
                if (r == 0) {
                        create_run(j);
                        r = create_finish(m, j, &rec, ret_error);
                        if (r < 0)
                                return r;
                }
                done(0, &rec, NULL, userdata);
                return 0;
        }
        j->done = done;
        j->userdata = userdata;
        j->next = m->create_jobs;
        m->create_jobs = j;
        r = work_start(m, create_run, create_work_complete, j);
        if (r < 0) {
                create_job_unlink(m, j);
                (void) store_intent_remove(m->store, j->intent);
                return error_set(ret_error, r, "Cannot start creating disk %s: %s.", j->id, strerror(-r));
        }
        TAKE_PTR(j);
        return 0;
}

int disk_describe(Manager *m, const char *disk_id, DiskRecord *ret, char **ret_error) {
        int r;

        if (!disk_id_is_valid(disk_id))
                return error_set(ret_error, -EINVAL, "Invalid disk id '%.*s': disk ids look like disk-0123456789abcdef.", 32,
                            disk_id ? disk_id : "");
        r = store_disk_get(m->store, disk_id, ret);
        if (r == -ENOENT)
                return error_set(ret_error, r, "No disk %s; see 'nsc disk list'.", disk_id);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
        return 0;
}

int disk_list(Manager *m, const char *instance_id, DiskRecord **ret, size_t *ret_n, char **ret_error) {
        int r;

        if (!isempty(instance_id) && !filename_is_valid(instance_id, INSTANCE_ID_MAX))
                return error_set(ret_error, -EINVAL, "Invalid instance_id.");
        r = store_disk_list(m->store, instance_id, ret, ret_n);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
        return 0;
}

int disk_resize(Manager *m, const char *disk_id, uint64_t size, DiskRecord *ret, char **ret_error) {
        _cleanup_(disk_record_done) DiskRecord d = {};
        _cleanup_free_ char *size_arg = NULL, *output = NULL;
        int r;

        r = disk_describe(m, disk_id, &d, ret_error);
        if (r < 0)
                return r;
        if (size < DISK_SIZE_MIN || size > DISK_SIZE_MAX)
                return error_set(ret_error, -EINVAL, "size_bytes must be between 1 MiB and 64 TiB.");
        size = (size + MIB - 1) & ~(MIB - 1);
        if (size < d.size)
                return error_set(ret_error, -EINVAL, "Disk %s is %llu bytes; disks only grow (asked for %llu).", d.id,
                            (unsigned long long) d.size, (unsigned long long) size);
        if (size > d.size) {
                r = admission(m, size - d.size, 0, ret_error);
                if (r < 0)
                        return r;
                if (streq(d.format, "raw")) {
                        if (truncate(d.path, (off_t) size) < 0)
                                return error_set(ret_error, negative_errno(), "Failed to grow %s: %m.", d.path);
                } else {
                        if (asprintf(&size_arg, "%llu", (unsigned long long) size) < 0)
                                return -ENOMEM;
                        char *argv[] = { (char *) "qemu-img", (char *) "resize", (char *) "-q", (char *) "-f",
                                         (char *) "qcow2", d.path, size_arg, NULL };
                        r = disk_exec(argv, &output);
                        if (r < 0)
                                return error_set(ret_error, r, "qemu-img resize of %s failed: %s", d.path,
                                            output ? output : strerror(-r));
                }
                r = store_disk_set_size(m->store, d.id, size);
                if (r < 0)
                        return error_set(ret_error, r, "Failed to record the new size of %s: %s.", d.id, strerror(-r));
        }
        return store_disk_get(m->store, d.id, ret);
}

int disk_delete(Manager *m, const char *disk_id, char **ret_error) {
        _cleanup_(disk_record_done) DiskRecord d = {};
        int64_t intent;
        int r;

        if (!disk_id_is_valid(disk_id))
                return error_set(ret_error, -EINVAL, "Invalid disk id '%.*s': disk ids look like disk-0123456789abcdef.", 32,
                            disk_id ? disk_id : "");
        r = store_disk_get(m->store, disk_id, &d);
        if (r == -ENOENT)
                return 0; /* idempotent */
        if (r < 0)
                return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
        r = store_disk_remove_with_intent(m->store, d.id, d.path, &intent);
        if (r < 0)
                return error_set(ret_error, r, "Failed to remove the record of %s: %s.", d.id, strerror(-r));
        if (unlink(d.path) < 0 && errno != ENOENT)
                /* The intent stays: the next start retries. */
                return error_set(ret_error, negative_errno(), "Failed to remove %s: %m; it will be retried at restart.",
                            d.path);
        (void) store_intent_remove(m->store, intent);
        log_disk(LOG_INFO, d.id, d.instance_id, "Deleted disk %s of '%s'.", d.id, d.instance_id);
        if (m->metrics)
                metric_add(metrics_counter(m->metrics, "hostmesh_disk_deleted_total", "Disks deleted.", NULL), 1);
        return 1;
}

static uint64_t dir_allocated(const char *dir) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        uint64_t total = 0;
        struct dirent *de;

        if (!d)
                return 0;
        while ((de = readdir(d))) {
                struct stat st;
                if (de->d_name[0] == '.')
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                        total += (uint64_t) st.st_blocks * 512;
        }
        return total;
}

int disk_pool_stats(Manager *m, PoolStats *ret, char **ret_error) {
        ImageRecord *images = NULL;
        size_t n_images = 0;
        PoolSpace space;
        int r;

        r = pool_space(m->pool, &space);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read the pool's free space: %s.", strerror(-r));
        *ret = (PoolStats){
                .path = m->pool->path,
                .filesystem = m->pool->fs_name,
                .reflink = m->pool->reflink,
                .backend = m->pool->reflink ? "reflink" : "qcow2-overlay",
                .capacity = space.capacity,
                .free = space.free,
                .reserve = m->config.reserve,
                .overcommit = m->config.overcommit_ratio,
                .allocated = dir_allocated(m->pool->disks_dir) + dir_allocated(m->pool->images_dir),
        };
        r = store_disk_totals(m->store, &ret->virtual_total, &ret->disks);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
        r = store_image_list(m->store, &images, &n_images);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read image records: %s.", strerror(-r));
        image_records_free(images, n_images);
        ret->images = n_images;
        return 0;
}

/* With image_source_dirs set, the source (symlinks resolved) must lie
 * below one of them: diskd reads files its callers may not be able to. */
bool source_allowed(Manager *m, const char *real) {
        if (!m->config.image_source_dirs || !m->config.image_source_dirs[0])
                return true;
        for (char **d = m->config.image_source_dirs; *d; d++) {
                size_t l = strlen(*d);
                while (l > 1 && (*d)[l - 1] == '/')
                        l--;
                if (strncmp(real, *d, l) == 0 && (real[l] == '/' || (l == 1 && (*d)[0] == '/')))
                        return true;
        }
        return false;
}

/* Validates an AddImage request and records its intent: everything that
 * needs the store, on the loop thread. */
static int image_job_prepare(Manager *m, const char *name, const char *source, const char *format, uint64_t size,
                             ImageJob **ret, char **ret_error) {
        _cleanup_free_ char *file = NULL, *real_source = NULL;
        _cleanup_(image_job_freep) ImageJob *j = NULL;
        ImageProbe probe = {};
        struct stat st;
        bool directory;
        int r;

        if (!name_is_valid(name))
                return error_set(ret_error, -EINVAL, "Invalid image name '%.*s': use 1-%d characters of [A-Za-z0-9._-], "
                            "not starting with a dot.", 64, name ? name : "", NAME_MAX_LEN);
        if (isempty(source) || source[0] != '/')
                return error_set(ret_error, -EINVAL, "The source must be an absolute path.");
        if (!isempty(format) && !streq(format, "raw") && !streq(format, "qcow2"))
                return error_set(ret_error, -EINVAL, "Invalid format '%.*s': use \"raw\", \"qcow2\" or leave it empty.", 16,
                            format);
        if (stat(source, &st) < 0)
                return error_set(ret_error, negative_errno(), "Cannot open %s: %m.", source);
        /* From here on the resolved path: what was checked is what is read. */
        real_source = realpath(source, NULL);
        if (!real_source)
                return error_set(ret_error, negative_errno(), "Cannot resolve %s: %m.", source);
        source = real_source;
        if (!source_allowed(m, source))
                return error_set(ret_error, -EPERM, "%s is outside the directories images may come from "
                            "(image_source_dirs in disk.conf).", source);
        directory = S_ISDIR(st.st_mode);
        if (!directory && !S_ISREG(st.st_mode))
                return error_set(ret_error, -EINVAL, "%s is neither a regular file nor a directory.", source);
        if (directory && streq_ptr(format, "qcow2"))
                return error_set(ret_error, -EINVAL, "A directory becomes a raw ext4 image; leave the format empty.");
        if (!directory && size > 0)
                return error_set(ret_error, -EINVAL, "size_bytes applies to directories only.");
        if (!directory) {
                r = image_probe(source, &probe);
                if (r == -EXDEV)
                        return error_set(ret_error, -EINVAL, "%s has a backing file itself; flatten it first "
                                    "(qemu-img convert -O qcow2).", source);
                if (r < 0)
                        return error_set(ret_error, r == -EBADMSG ? -EINVAL : r, "%s is not a usable image: %s.", source,
                                    r == -EBADMSG ? "corrupt, encrypted or unsupported qcow2" : strerror(-r));
                if (!isempty(format) && !streq(format, probe.format))
                        return error_set(ret_error, -EINVAL, "%s is a %s image, not %s.", source, probe.format, format);
                if (probe.virtual_size == 0)
                        return error_set(ret_error, -EINVAL, "%s is empty.", source);
        }
        ImageRecord existing = {};
        r = store_image_get(m->store, name, &existing);
        image_record_done(&existing);
        if (r >= 0)
                return error_set(ret_error, -EEXIST, "An image named '%s' exists; remove it first or pick another name.",
                            name);
        for (ImageJob *p = m->image_jobs; p; p = p->next)
                if (streq(p->name, name))
                        return error_set(ret_error, -EEXIST, "An image named '%s' is being added right now.", name);
        r = admission(m, 0, directory ? 0 : probe.file_size, ret_error);
        if (r < 0)
                return r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->name = strdup(name);
        j->source = strdup(source);
        if (asprintf(&file, "%s.%s", name, directory ? "raw" : probe.format) < 0)
                return -ENOMEM;
        j->path = path_join(m->pool->images_dir, file);
        if (!j->name || !j->source || !j->path)
                return -ENOMEM;
        j->directory = directory;
        j->size = size;

        r = store_intent_add(m->store, "add-image", name, j->path, &j->intent);
        if (r < 0)
                return error_set(ret_error, r, "Cannot record the intent to add an image: %s.", strerror(-r));
        (void) unlink(j->path); /* a leftover of a crash before recovery could run */
        *ret = TAKE_PTR(j);
        return 0;
}

/* The slow part (copy or mkfs, probe, digest): files only, no manager
 * state, so it may run on a worker thread. */
static void image_job_run(ImageJob *j) {
        if (j->directory)
                j->r = image_make_ext4(j->source, j->path, j->size, &j->output);
        else
                j->r = image_copy(j->source, j->path);
        if (j->r < 0) {
                j->copy_failed = true;
                return;
        }
        j->r = image_probe(j->path, &j->probe);
        if (j->r >= 0)
                j->r = image_digest(j->path, j->digest);
}

/* Back on the loop: the record, or the clean-up. */
static int image_job_finish(Manager *m, ImageJob *j, ImageRecord *ret, char **ret_error) {
        int r = j->r;

        if (r < 0 && j->copy_failed) {
                (void) unlink(j->path);
                (void) store_intent_remove(m->store, j->intent);
                return error_set(ret_error, r,
                            j->directory ? "mkfs.ext4 -d %s failed: %s" : "Copying %s into the pool failed: %s",
                            j->source, j->output ? j->output : strerror(-r));
        }
        if (r >= 0) {
                ImageRecord i = {
                        .name = j->name,
                        .path = j->path,
                        .format = j->probe.format,
                        .digest = j->digest,
                        .virtual_size = j->probe.virtual_size,
                        .file_size = j->probe.file_size,
                        .created = (int64_t) time(NULL),
                };
                r = store_image_commit(m->store, &i, j->intent);
        }
        if (r < 0) {
                (void) unlink(j->path);
                (void) store_intent_remove(m->store, j->intent);
                return error_set(ret_error, r, "Failed to register image '%s': %s.", j->name, strerror(-r));
        }
        log_info("Added base image '%s' (%s, %llu bytes, %s) from %s.", j->name, j->probe.format,
                 (unsigned long long) j->probe.virtual_size, j->digest, j->source);
        return store_image_get(m->store, j->name, ret);
}

ImageJob *image_job_free(ImageJob *j) {
        if (!j)
                return NULL;
        free(j->name);
        free(j->source);
        free(j->path);
        free(j->output);
        free(j);
        return NULL;
}

int image_add(Manager *m, const char *name, const char *source, const char *format, uint64_t size,
              ImageRecord *ret, char **ret_error) {
        _cleanup_(image_job_freep) ImageJob *j = NULL;
        int r;

        r = image_job_prepare(m, name, source, format, size, &j, ret_error);
        if (r < 0)
                return r;
        image_job_run(j);
        return image_job_finish(m, j, ret, ret_error);
}

static void image_job_unlink(Manager *m, ImageJob *j) {
        for (ImageJob **p = &m->image_jobs; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        break;
                }
}

static void image_work_run(void *data) {
        image_job_run(data);
}

static void image_work_complete(Manager *m, void *data, bool cancelled) {
        _cleanup_(image_record_done) ImageRecord rec = {};
        ImageJob *j = data;
        char *error = NULL;
        int r;

        image_job_unlink(m, j);
        if (cancelled) {
                /* Shutting down: the intent stays, the next start rolls back. */
                r = error_set(&error, -ECANCELED, "diskd is shutting down; add the image again.");
                j->done(r, NULL, error, j->userdata);
        } else {
                r = image_job_finish(m, j, &rec, &error);
                j->done(r, r >= 0 ? &rec : NULL, error, j->userdata);
        }
        free(error);
        image_job_free(j);
}

int image_add_async(Manager *m, const char *name, const char *source, const char *format, uint64_t size,
                    ImageAddDone done, void *userdata, char **ret_error) {
        ImageJob *j = NULL;
        int r;

        r = image_job_prepare(m, name, source, format, size, &j, ret_error);
        if (r < 0)
                return r;
        j->manager = m;
        j->done = done;
        j->userdata = userdata;
        j->next = m->image_jobs;
        m->image_jobs = j;
        r = work_start(m, image_work_run, image_work_complete, j);
        if (r < 0) {
                image_job_unlink(m, j);
                (void) store_intent_remove(m->store, j->intent);
                image_job_free(j);
                return error_set(ret_error, r, "Cannot start adding image '%s': %s.", name, strerror(-r));
        }
        return 0;
}

int image_list(Manager *m, ImageRecord **ret, size_t *ret_n, char **ret_error) {
        int r = store_image_list(m->store, ret, ret_n);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read image records: %s.", strerror(-r));
        return 0;
}

int image_users(Manager *m, const char *name, uint64_t *ret) {
        return store_image_users(m->store, name, ret);
}

int image_remove(Manager *m, const char *name, char **ret_error) {
        _cleanup_(image_record_done) ImageRecord i = {};
        uint64_t users;
        int64_t intent;
        int r;

        if (!name_is_valid(name))
                return error_set(ret_error, -EINVAL, "Invalid image name '%.*s'.", 64, name ? name : "");
        r = store_image_get(m->store, name, &i);
        if (r == -ENOENT)
                return error_set(ret_error, r, "No image '%s'; see 'nsc disk images list'.", name);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read image records: %s.", strerror(-r));
        r = store_image_users(m->store, name, &users);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read disk records: %s.", strerror(-r));
        if (users > 0)
                return error_set(ret_error, -EBUSY, "Image '%s' is the base of %llu disk(s); delete them first.", name,
                            (unsigned long long) users);
        r = store_intent_add(m->store, "remove-image", name, i.path, &intent);
        if (r >= 0)
                r = store_image_remove(m->store, name);
        if (r < 0)
                return error_set(ret_error, r, "Failed to remove the record of image '%s': %s.", name, strerror(-r));
        if (unlink(i.path) < 0 && errno != ENOENT)
                return error_set(ret_error, negative_errno(), "Failed to remove %s: %m; it will be retried at restart.",
                            i.path);
        (void) store_intent_remove(m->store, intent);
        log_info("Removed base image '%s'.", name);
        return 0;
}

/* ---- recovery ---- */

static bool path_in_dir(const char *path, const char *dir) {
        size_t l = strlen(dir);
        return strncmp(path, dir, l) == 0 && path[l] == '/' && !strchr(path + l + 1, '/');
}

static int recover_intents(Manager *m) {
        IntentRecord *intents = NULL;
        size_t n = 0;
        int r;

        r = store_intent_list(m->store, &intents, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                IntentRecord *t = &intents[i];
                bool has_record;

                /* Only ever touch files inside the pool, whatever the row says. */
                if (!path_in_dir(t->path, m->pool->disks_dir) && !path_in_dir(t->path, m->pool->images_dir)) {
                        log_warning("Intent %lld names %s outside the pool, dropping it.", (long long) t->id, t->path);
                        (void) store_intent_remove(m->store, t->id);
                        continue;
                }
                if (streq(t->op, "create-disk") || streq(t->op, "delete-disk")) {
                        DiskRecord d = {};
                        has_record = store_disk_get(m->store, t->object, &d) >= 0;
                        disk_record_done(&d);
                } else {
                        ImageRecord im = {};
                        has_record = store_image_get(m->store, t->object, &im) >= 0;
                        image_record_done(&im);
                }
                if (!has_record) {
                        if (unlink(t->path) < 0 && errno != ENOENT) {
                                log_warning_errno(negative_errno(), "Failed to remove %s: %m; retrying at next start.",
                                                  t->path);
                                continue;
                        }
                        log_notice("%s %s was interrupted; %s %s.",
                                   streq(t->op, "create-disk") || streq(t->op, "add-image") ? "Creating" : "Removing",
                                   t->object,
                                   streq(t->op, "create-disk") || streq(t->op, "add-image") ? "rolled back, removed"
                                                                                             : "finished removing",
                                   t->path);
                }
                (void) store_intent_remove(m->store, t->id);
        }
        intent_records_free(intents, n);
        return 0;
}

static bool path_known(char **paths, size_t n, const char *path) {
        for (size_t i = 0; i < n; i++)
                if (streq(paths[i], path))
                        return true;
        return false;
}

/* Files in `dir` that no record names are removed; reported either way. */
static void reconcile_dir(const char *dir, char **paths, size_t n) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *p = NULL;
                if (de->d_name[0] == '.')
                        continue;
                p = path_join(dir, de->d_name);
                if (!p || path_known(paths, n, p))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0)
                        log_warning_errno(negative_errno(), "Orphan file %s has no record; failed to remove it: %m", p);
                else
                        log_warning("Orphan file %s had no record; removed it.", p);
        }
}

int disk_recover(Manager *m) {
        DiskRecord *disks = NULL;
        ImageRecord *images = NULL;
        size_t n_disks = 0, n_images = 0;
        _cleanup_free_ char **paths = NULL;
        size_t n_paths = 0;
        int r;

        r = recover_intents(m);
        if (r < 0)
                return r;

        r = store_image_list(m->store, &images, &n_images);
        if (r < 0)
                return r;
        r = store_disk_list(m->store, NULL, &disks, &n_disks);
        if (r < 0) {
                image_records_free(images, n_images);
                return r;
        }
        paths = calloc(n_disks + n_images + 1, sizeof(char *));
        if (!paths) {
                r = -ENOMEM;
                goto finish;
        }

        /* Records without files: a disk whose file vanished is useless, an
         * image likewise; drop the records so that space accounting is true. */
        for (size_t i = 0; i < n_images; i++) {
                if (access(images[i].path, F_OK) < 0) {
                        log_warning("Image '%s' lost its file %s; dropping the record.", images[i].name, images[i].path);
                        (void) store_image_remove(m->store, images[i].name);
                } else
                        paths[n_paths++] = images[i].path;
        }
        for (size_t i = 0; i < n_disks; i++) {
                if (access(disks[i].path, F_OK) < 0) {
                        log_disk(LOG_WARNING, disks[i].id, disks[i].instance_id,
                                 "Disk %s of '%s' lost its file %s; dropping the record.", disks[i].id,
                                 disks[i].instance_id, disks[i].path);
                        (void) store_disk_remove(m->store, disks[i].id);
                } else
                        paths[n_paths++] = disks[i].path;
        }
        reconcile_dir(m->pool->disks_dir, paths, n_paths);
        reconcile_dir(m->pool->images_dir, paths, n_paths);
        r = 0;
finish:
        disk_records_free(disks, n_disks);
        image_records_free(images, n_images);
        return r;
}
