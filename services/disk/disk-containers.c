/* SPDX-License-Identifier: MIT */
/* Container images in diskd. A pull or an import has two worker phases
 * with the loop between them:
 *   1. resolve: the manifest (from the registry or the archive) and its
 *      digest. On the loop: when that digest is unpacked already, the ref
 *      is pointed at it and the call is done (nothing fetched). Otherwise an
 *      add-image intent is committed for the ext4 file.
 *   2. fetch and unpack: every blob checked against its digest, the layers
 *      applied in order to a staging tree under <state>/unpack/, the tree
 *      made into ext4 in the pool. On the loop: the base image, the
 *      container image and the ref in one transaction with the intent's
 *      removal.
 * A crash in 2 leaves an intent (recovery removes the file) and a staging
 * tree (removed at start): nothing half-made is ever listed. */

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "error-util.h"
#include "disk-containers.h"
#include "disk-ext4.h"
#include "disk-image.h"
#include "disk-oci.h"
#include "disk-ops.h"
#include "disk-registry.h"
#include "disk-tar.h"
#include "disk-work.h"
#include "fs-util.h"
#include "log.h"

#define IMAGE_PREFIX "oci-"

/* A caller that asked for an image while a job for it was in flight: it
 * gets that job's outcome instead of a second fetch and unpack. */
typedef struct ContainerWaiter {
        char *ref;                  /* what this caller's image is listed by; NULL: the job's own */
        ContainerDone done;
        void *userdata;
        struct ContainerWaiter *next;
} ContainerWaiter;

struct ContainerJob {
        Manager *manager;
        bool import;
        char *ref;                  /* what the image is listed by after this call */
        char *source;               /* the reference or path asked for */
        char *name;                 /* import: the name asked for, may be empty */
        OciRef oci;
        TarLimits limits;
        char *staging;              /* <state>/unpack/<random> */
        char *unpack_root;          /* where phase 1 left the import's files */
        Registry *registry;

        /* Phase 1. */
        bool resolved;              /* set on the loop when phase 1 is done: digest is final */
        char digest[OCI_DIGEST_MAX];
        OciDocument manifest;       /* OCI layout and registry */
        DockerSave save;            /* docker save archives */
        bool docker_save;

        /* Phase 2. */
        char *image_name, *image_path;
        int64_t intent;
        TarStats stats;
        uint64_t fetch_usec, unpack_usec, mkfs_usec;   /* where phase 2's time went */
        ImageProbe probe;
        char file_digest[IMAGE_DIGEST_MAX];
        char *run_config;           /* oci_run_config_to_json() of the image's config */

        int r;
        char *error;
        ContainerDone done;
        void *userdata;
        ContainerWaiter *waiters;
        ContainerJob *next;
};

static ContainerWaiter *waiters_free(ContainerWaiter *w) {
        while (w) {
                ContainerWaiter *next = w->next;
                free(w->ref);
                free(w);
                w = next;
        }
        return NULL;
}

static ContainerJob *job_free(ContainerJob *j) {
        if (!j)
                return NULL;
        if (j->staging) {
                (void) rm_rf_at(AT_FDCWD, j->staging);
                free(j->staging);
        }
        free(j->ref);
        free(j->source);
        free(j->name);
        free(j->unpack_root);
        registry_free(j->registry);
        oci_document_done(&j->manifest);
        docker_save_done(&j->save);
        free(j->image_name);
        free(j->image_path);
        free(j->run_config);
        free(j->error);
        waiters_free(j->waiters);
        free(j);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(ContainerJob *, job_free);

static void job_unlink(Manager *m, ContainerJob *j) {
        for (ContainerJob **p = &m->container_jobs; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        break;
                }
}

void container_jobs_free(Manager *m) {
        while (m->container_jobs) {
                ContainerJob *j = m->container_jobs;
                m->container_jobs = j->next;
                job_free(j);
        }
}

static int staging_new(Manager *m, char **ret) {
        _cleanup_free_ char *dir = path_join(m->state_dir, "unpack"), *path = NULL;
        uint8_t b[8];
        int r;

        if (!dir)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (getrandom(b, sizeof(b), 0) != sizeof(b))
                return -EIO;
        if (asprintf(&path, "%s/%02x%02x%02x%02x%02x%02x%02x%02x", dir, b[0], b[1], b[2], b[3], b[4], b[5], b[6],
                     b[7]) < 0)
                return -ENOMEM;
        if (mkdir(path, 0700) < 0)
                return negative_errno();
        *ret = TAKE_PTR(path);
        return 0;
}

/* ---- phase 1: what image is it ---- */

/* A whole small file from fd, from its start. */
static int read_fd_all(int fd, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t got = 0;

        if (lseek(fd, 0, SEEK_SET) < 0 || fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((uint64_t) st.st_size > OCI_DOCUMENT_MAX)
                return -E2BIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (got < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? negative_errno() : -EIO;
                got += (size_t) n;
        }
        buf[got] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = got;
        return 0;
}

static int read_small_file(int dir_fd, const char *path, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);

        if (fd < 0)
                return negative_errno();
        return read_fd_all(fd, ret, ret_len);
}

/* Opens a file of the archive or layout below root, refusing symlinks
 * that would lead out of it. */
static int open_in(const char *root, const char *rel, int *ret_fd) {
        _cleanup_free_ char *path = path_join(root, rel), *real = NULL, *real_root = NULL;
        size_t l;
        int fd;

        if (!path)
                return -ENOMEM;
        real = realpath(path, NULL);
        real_root = realpath(root, NULL);
        if (!real || !real_root)
                return negative_errno();
        l = strlen(real_root);
        if (strncmp(real, real_root, l) != 0 || real[l] != '/')
                return -EXDEV;
        fd = open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        *ret_fd = fd;
        return 0;
}

static int blob_rel(const char *digest, char ret[128]) {
        snprintf(ret, 128, "blobs/sha256/%s", digest + 7);
        return 0;
}

/* The sha256 of what fd holds, compared with `digest`. */
static int verify_fd(int fd, const char *digest) {
        char path[64], got[IMAGE_DIGEST_MAX];
        int r;

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        r = image_digest(path, got);
        if (r < 0)
                return r;
        return streq(got, digest) ? 0 : -ESTALE;
}

static int layout_read_blob(ContainerJob *j, const char *digest, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -EBADF;
        char rel[128];
        int r;

        blob_rel(digest, rel);
        r = open_in(j->unpack_root, rel, &fd);
        if (r < 0)
                return error_set(&j->error, r == -ENOENT ? -EINVAL : r, "The OCI layout %s has no blob %s.", j->source, digest);
        r = verify_fd(fd, digest);
        if (r < 0)
                return error_set(&j->error, r, "Blob %s in %s does not match its digest; nothing was kept.", digest, j->source);
        r = read_fd_all(fd, ret, ret_len);
        if (r < 0)
                return error_set(&j->error, r, "Cannot read blob %s of %s: %s.", digest, j->source, strerror(-r));
        return 0;
}

static int resolve_layout(ContainerJob *j) {
        _cleanup_free_ char *text = NULL, *mtext = NULL;
        _cleanup_(oci_document_done) OciDocument index = {};
        const OciDescriptor *pick = NULL;
        OciDescriptor chosen;
        size_t len, mlen;
        int r;

        {
                _cleanup_free_ char *p = path_join(j->unpack_root, "index.json");
                r = p ? read_small_file(AT_FDCWD, p, &text, &len) : -ENOMEM;
        }
        if (r < 0)
                return error_set(&j->error, r, "Cannot read index.json of %s: %s.", j->source, strerror(-r));
        r = oci_document_parse(text, len, OCI_MT_INDEX, &index, &j->error);
        if (r < 0)
                return r;
        for (int depth = 0;; depth++) {
                if (index.kind != OCI_KIND_INDEX || index.n_entries == 0)
                        return error_set(&j->error, -EINVAL, "index.json of %s lists no image.", j->source);
                if (oci_index_pick(&index, "linux", "amd64", &pick) < 0) {
                        /* A layout of one image often gives no platform. */
                        pick = NULL;
                        for (size_t i = 0; i < index.n_entries && !pick; i++)
                                if (!index.entries[i].os[0])
                                        pick = &index.entries[i];
                        if (!pick)
                                return error_set(&j->error, -ENOENT, "%s holds no linux/amd64 image.", j->source);
                }
                chosen = *pick;
                if (!isempty(chosen.ref_name) && isempty(j->name) && !j->ref) {
                        j->ref = strdup(chosen.ref_name);
                        if (!j->ref)
                                return -ENOMEM;
                }
                r = layout_read_blob(j, chosen.digest, &mtext, &mlen);
                if (r < 0)
                        return r;
                oci_document_done(&index);
                r = oci_document_parse(mtext, mlen, chosen.media_type, &index, &j->error);
                free(mtext);
                mtext = NULL;
                if (r < 0)
                        return r;
                if (index.kind == OCI_KIND_MANIFEST)
                        break;
                if (depth > 0)
                        return error_set(&j->error, -EINVAL, "%s nests indexes deeper than diskd follows.", j->source);
        }
        memcpy(j->digest, chosen.digest, sizeof(j->digest));
        j->manifest = index;
        index = (OciDocument){};
        return 0;
}

static int resolve_docker_save(ContainerJob *j) {
        _cleanup_free_ char *text = NULL, *p = path_join(j->unpack_root, "manifest.json");
        _cleanup_close_ int fd = -EBADF;
        char path[64];
        size_t len;
        int r;

        r = p ? read_small_file(AT_FDCWD, p, &text, &len) : -ENOMEM;
        if (r < 0)
                return error_set(&j->error, r, "Cannot read manifest.json of %s: %s.", j->source, strerror(-r));
        r = docker_save_parse(text, len, &j->save, &j->error);
        if (r < 0)
                return r;
        r = open_in(j->unpack_root, j->save.config, &fd);
        if (r < 0)
                return error_set(&j->error, -EINVAL, "%s names config %s, which is not in the archive.", j->source,
                            j->save.config);
        /* A docker save archive has no manifest: the image is known by its
         * config's digest (what docker calls the image id). */
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        r = image_digest(path, j->digest);
        if (r < 0)
                return error_set(&j->error, r, "Cannot read %s in %s: %s.", j->save.config, j->source, strerror(-r));
        if (isempty(j->name) && j->save.tag && !j->ref) {
                j->ref = strdup(j->save.tag);
                if (!j->ref)
                        return -ENOMEM;
        }
        j->docker_save = true;
        return 0;
}

static void resolve_import(ContainerJob *j) {
        _cleanup_free_ char *index = NULL, *manifest = NULL;
        struct stat st;

        if (stat(j->source, &st) < 0) {
                j->r = error_set(&j->error, negative_errno(), "Cannot open %s: %m.", j->source);
                return;
        }
        if (S_ISDIR(st.st_mode))
                j->unpack_root = strdup(j->source);
        else {
                _cleanup_close_ int root = -EBADF, fd = -EBADF;
                TarStats stats = {};

                j->unpack_root = path_join(j->staging, "archive");
                if (!j->unpack_root || mkdir(j->unpack_root, 0700) < 0) {
                        j->r = -ENOMEM;
                        return;
                }
                root = open(j->unpack_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                fd = open(j->source, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (root < 0 || fd < 0) {
                        j->r = error_set(&j->error, negative_errno(), "Cannot open %s: %m.", j->source);
                        return;
                }
                j->r = tar_unpack_layer_fd(root, fd, &j->limits, &stats, &j->error);
                if (j->r < 0)
                        return;
        }
        if (!j->unpack_root) {
                j->r = -ENOMEM;
                return;
        }
        index = path_join(j->unpack_root, "index.json");
        manifest = path_join(j->unpack_root, "manifest.json");
        if (!index || !manifest) {
                j->r = -ENOMEM;
                return;
        }
        /* Newer docker save archives are OCI layouts with a manifest.json
         * as well: the layout is the better description. */
        if (access(index, F_OK) == 0)
                j->r = resolve_layout(j);
        else if (access(manifest, F_OK) == 0)
                j->r = resolve_docker_save(j);
        else
                j->r = error_set(&j->error, -EINVAL, "%s is neither an OCI layout (index.json) nor a docker save archive "
                            "(manifest.json).", j->source);
}

static void resolve_pull(ContainerJob *j) {
        _cleanup_free_ char *body = NULL, *type = NULL;
        _cleanup_(oci_document_done) OciDocument doc = {};
        size_t len;
        int r;

        r = registry_new(&j->oci, &j->registry);
        if (r < 0) {
                j->r = r;
                return;
        }
        r = registry_get_manifest(j->registry, j->oci.digest[0] ? j->oci.digest : j->oci.tag, &body, &len, &type,
                                  j->digest, &j->error);
        if (r >= 0)
                r = oci_document_parse(body, len, type, &doc, &j->error);
        if (r >= 0 && doc.kind == OCI_KIND_INDEX) {
                const OciDescriptor *pick;
                char want[OCI_DIGEST_MAX];

                if (oci_index_pick(&doc, "linux", "amd64", &pick) < 0) {
                        j->r = error_set(&j->error, -ENOENT, "%s has no linux/amd64 image.", j->source);
                        return;
                }
                memcpy(want, pick->digest, sizeof(want));
                free(body);
                free(type);
                body = type = NULL;
                oci_document_done(&doc);
                r = registry_get_manifest(j->registry, want, &body, &len, &type, j->digest, &j->error);
                if (r >= 0)
                        r = oci_document_parse(body, len, type, &doc, &j->error);
                if (r >= 0 && doc.kind != OCI_KIND_MANIFEST)
                        r = error_set(&j->error, -EINVAL, "%s: the index entry for linux/amd64 is not a manifest.", j->source);
        }
        if (r < 0) {
                j->r = r;
                return;
        }
        j->manifest = doc;
        doc = (OciDocument){};
}

static void resolve_run(void *data) {
        ContainerJob *j = data;

        if (j->import)
                resolve_import(j);
        else
                resolve_pull(j);
        for (size_t i = 0; j->r >= 0 && !j->docker_save && i < j->manifest.n_entries; i++)
                if (oci_layer_type_check(j->manifest.entries[i].media_type) < 0)
                        j->r = error_set(&j->error, -EOPNOTSUPP, "Layer %zu of %s has media type %s, which diskd does "
                                    "not unpack (tar and tar+gzip only).", i, j->source,
                                    j->manifest.entries[i].media_type);
}

/* ---- phase 2: fetch, verify, unpack, mkfs ---- */

/* A layer as an open file positioned at 0, checked against its digest:
 * fetched into the staging directory, or found in the archive. */
static int layer_open(ContainerJob *j, size_t i, int *ret_fd, const char **ret_what) {
        _cleanup_close_ int fd = -EBADF;
        char rel[128];
        int r;

        if (j->docker_save) {
                *ret_what = j->save.layers[i];
                r = open_in(j->unpack_root, j->save.layers[i], &fd);
                if (r < 0)
                        return error_set(&j->error, -EINVAL, "%s names layer %s, which is not in the archive.", j->source,
                                    j->save.layers[i]);
        } else if (j->import) {
                *ret_what = j->manifest.entries[i].digest;
                blob_rel(j->manifest.entries[i].digest, rel);
                r = open_in(j->unpack_root, rel, &fd);
                if (r < 0)
                        return error_set(&j->error, -EINVAL, "The OCI layout %s has no blob %s.", j->source,
                                    j->manifest.entries[i].digest);
                r = verify_fd(fd, j->manifest.entries[i].digest);
                if (r < 0)
                        return error_set(&j->error, r, "Blob %s in %s does not match its digest; nothing was kept.",
                                    j->manifest.entries[i].digest, j->source);
        } else {
                _cleanup_free_ char *p = path_join(j->staging, "layer");
                *ret_what = j->manifest.entries[i].digest;
                if (!p)
                        return -ENOMEM;
                (void) unlink(p);
                fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0)
                        return negative_errno();
                (void) unlink(p); /* only the fd holds it: nothing to clean after a crash */
                r = registry_get_blob(j->registry, &j->manifest.entries[i], fd, j->limits.max_bytes, &j->error);
                if (r < 0)
                        return r;
        }
        if (lseek(fd, 0, SEEK_SET) < 0)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int config_check(ContainerJob *j, OciConfig *ret) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r;

        if (j->docker_save) {
                _cleanup_free_ char *p = path_join(j->unpack_root, j->save.config);
                r = p ? read_small_file(AT_FDCWD, p, &text, &len) : -ENOMEM;
                if (r < 0)
                        return error_set(&j->error, r, "Cannot read %s in %s: %s.", j->save.config, j->source, strerror(-r));
        } else if (j->import) {
                r = layout_read_blob(j, j->manifest.config.digest, &text, &len);
                if (r < 0)
                        return r;
        } else {
                _cleanup_close_ int fd = -EBADF;
                _cleanup_free_ char *p = path_join(j->staging, "config");
                if (!p)
                        return -ENOMEM;
                fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0)
                        return negative_errno();
                r = registry_get_blob(j->registry, &j->manifest.config, fd, OCI_DOCUMENT_MAX, &j->error);
                if (r < 0)
                        return r;
                r = read_small_file(AT_FDCWD, p, &text, &len);
                if (r < 0)
                        return r;
        }
        r = oci_config_parse(text, len, ret, &j->error);
        if (r < 0)
                return r;
        if (!streq(ret->os, "linux") || !streq(ret->architecture, "amd64"))
                return error_set(&j->error, -EINVAL, "%s is a %s/%s image; this host runs linux/amd64.", j->source, ret->os,
                            ret->architecture);
        return 0;
}

static void unpack_run(void *data) {
        ContainerJob *j = data;
        _cleanup_(oci_config_done) OciConfig config = {};
        _cleanup_free_ char *rootfs = path_join(j->staging, "rootfs"), *output = NULL;
        _cleanup_close_ int root = -EBADF;
        size_t n_layers = j->docker_save ? j->save.n_layers : j->manifest.n_entries;

        if (!rootfs) {
                j->r = -ENOMEM;
                return;
        }
        j->r = config_check(j, &config);
        if (j->r < 0)
                return;
        j->r = oci_run_config_to_json(&config.run, &j->run_config);
        if (j->r < 0)
                return;
        if (j->docker_save && config.n_diff_ids != n_layers) {
                j->r = error_set(&j->error, -EINVAL, "%s lists %zu layers but its config %zu.", j->source, n_layers,
                            config.n_diff_ids);
                return;
        }
        if (mkdir(rootfs, 0755) < 0 || (root = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                j->r = error_set(&j->error, negative_errno(), "Cannot create the unpack directory %s: %m.", rootfs);
                return;
        }
        for (size_t i = 0; i < n_layers; i++) {
                _cleanup_close_ int fd = -EBADF;
                const char *what = NULL;

                uint64_t t0 = monotonic_usec();
                j->r = layer_open(j, i, &fd, &what);
                if (j->r < 0)
                        return;
                uint64_t t1 = monotonic_usec();
                j->fetch_usec += t1 - t0;
                /* docker save layers are plain tars: their digest is the
                 * config's diff_id. */
                if (j->docker_save && (j->r = verify_fd(fd, config.diff_ids[i])) < 0) {
                        j->r = error_set(&j->error, j->r, "Layer %s in %s does not match diff_id %s; nothing was kept.",
                                    what, j->source, config.diff_ids[i]);
                        return;
                }
                if (j->docker_save && lseek(fd, 0, SEEK_SET) < 0) {
                        j->r = negative_errno();
                        return;
                }
                j->r = tar_unpack_layer_fd(root, fd, &j->limits, &j->stats, &j->error);
                j->unpack_usec += monotonic_usec() - t1;
                if (j->r < 0) {
                        char *inner = TAKE_PTR(j->error);
                        j->r = error_set(&j->error, j->r, "Layer %zu (%s) of %s refused: %s", i, what, j->source,
                                    inner ? inner : strerror(-j->r));
                        free(inner);
                        return;
                }
        }
        uint64_t t2 = monotonic_usec();
        {
                _cleanup_free_ char *side = path_join(j->staging, "data");
                j->r = side ? ext4_image_from_staging(rootfs, side, j->image_path, &output) : -ENOMEM;
        }
        j->mkfs_usec = monotonic_usec() - t2;
        if (j->r < 0) {
                j->r = error_set(&j->error, j->r, "Making the ext4 image of the unpacked tree failed: %s",
                            output ? output : strerror(-j->r));
                return;
        }
        /* No sha256 of the ext4 file: hashing ~100 MB would cost as much as
         * the whole fetch. The image is named by its manifest digest, which
         * is what the base image record carries. */
        j->r = image_probe(j->image_path, &j->probe);
        snprintf(j->file_digest, sizeof(j->file_digest), "%s", j->digest);
}

/* ---- the loop's side ---- */

/* Hands the job's outcome to the callers that joined it: on success each
 * one's ref is pointed at the image, and it hears the record as it is now
 * (with that ref); on failure it hears the same error. */
static void waiters_finish(Manager *m, ContainerJob *j, int r) {
        ContainerWaiter *list = TAKE_PTR(j->waiters);

        for (ContainerWaiter *w = list; w; w = w->next) {
                _cleanup_(container_record_done) ContainerRecord c = {};
                _cleanup_free_ char *error = NULL;
                int k = r;

                if (k >= 0 && w->ref && !streq(w->ref, j->ref)) {
                        k = store_ref_set(m->store, w->ref, j->digest);
                        if (k < 0)
                                (void) error_set(&error, k, "Failed to record ref %s: %s.", w->ref, strerror(-k));
                }
                if (k >= 0) {
                        k = store_container_get(m->store, j->digest, &c);
                        if (k < 0)
                                (void) error_set(&error, k, "Cannot read the record of image %s: %s.", j->digest,
                                                 strerror(-k));
                }
                if (k < 0 && r >= 0)
                        log_warning("%s", error);
                w->done(k, k >= 0 ? &c : NULL,
                        (ContainerOutcome){ .coalesced = true },
                        k < 0 ? (error ?: j->error) : NULL, w->userdata);
        }
        waiters_free(list);
}

static void job_finish(Manager *m, ContainerJob *j, int r, const ContainerRecord *c, bool cached) {
        uint64_t blobs = j->registry ? registry_blobs_fetched(j->registry) : 0;

        job_unlink(m, j);
        if (r < 0 && !j->error)
                (void) error_set(&j->error, r, "%s %s failed: %s.", j->import ? "Importing" : "Pulling", j->source,
                            strerror(-r));
        if (r < 0)
                log_warning("%s", j->error);
        /* The staging tree goes before the reply: once the caller hears
         * back, nothing of the call is left on disk. */
        if (j->staging) {
                (void) rm_rf_at(AT_FDCWD, j->staging);
                free(j->staging);
                j->staging = NULL;
        }
        j->done(r, c, (ContainerOutcome){ .cached = cached, .blobs = blobs }, j->error, j->userdata);
        waiters_finish(m, j, r);
        job_free(j);
}

static void finish_with_record(Manager *m, ContainerJob *j, bool cached) {
        _cleanup_(container_record_done) ContainerRecord c = {};
        int r;

        r = store_container_get(m->store, j->digest, &c);
        if (r < 0)
                (void) error_set(&j->error, r, "Cannot read the record of image %s: %s.", j->digest, strerror(-r));
        job_finish(m, j, r, r >= 0 ? &c : NULL, cached);
}

static void unpack_complete(Manager *m, void *data, bool cancelled) {
        ContainerJob *j = data;
        int r = j->r;

        if (cancelled) {
                /* Shutting down: the intent stays, the next start rolls back. */
                (void) error_set(&j->error, -ECANCELED, "diskd is shutting down; pull or import again.");
                return job_finish(m, j, -ECANCELED, NULL, false);
        }
        if (r >= 0) {
                ImageRecord i = {
                        .name = j->image_name,
                        .path = j->image_path,
                        .format = j->probe.format,
                        .digest = j->file_digest,
                        .virtual_size = j->probe.virtual_size,
                        .file_size = j->probe.file_size,
                        .created = (int64_t) time(NULL),
                };
                ContainerRecord c = {
                        .digest = j->digest,
                        .image = j->image_name,
                        .source = j->source,
                        .content_bytes = j->stats.bytes,
                        .layers = j->docker_save ? j->save.n_layers : j->manifest.n_entries,
                        .created = i.created,
                        .config = j->run_config,
                };
                r = store_container_commit(m->store, &i, &c, j->ref, j->intent);
                if (r < 0)
                        (void) error_set(&j->error, r, "Failed to record image %s: %s.", j->digest, strerror(-r));
        }
        if (r < 0) {
                (void) unlink(j->image_path);
                (void) store_intent_remove(m->store, j->intent);
                return job_finish(m, j, r, NULL, false);
        }
        log_info("%s %s as %s (%s): %" PRIu64 " entries, %" PRIu64 " bytes, %" PRIu64 " whiteouts, %" PRIu64
                 " opaque directories, %" PRIu64 " device nodes/fifos skipped; fetch %" PRIu64 " ms, unpack %" PRIu64
                 " ms, mkfs %" PRIu64 " ms.",
                 j->import ? "Imported" : "Pulled", j->source, j->image_name, j->digest, j->stats.entries,
                 j->stats.bytes, j->stats.whiteouts, j->stats.opaque_dirs, j->stats.skipped_devices,
                 j->fetch_usec / 1000, j->unpack_usec / 1000, j->mkfs_usec / 1000);
        finish_with_record(m, j, false);
}

/* The same image (by digest) is being unpacked by another job: j and the
 * callers that joined j wait for that job instead of unpacking it again. */
static void job_join_unpack(Manager *m, ContainerJob *j, ContainerJob *o) {
        ContainerWaiter *w = calloc(1, sizeof(*w)), **tail;

        if (!w || !(w->ref = strdup(j->ref))) {
                free(w);
                return job_finish(m, j, -ENOMEM, NULL, false);
        }
        w->done = j->done;
        w->userdata = j->userdata;
        /* j's own waiters asked for j's ref: that is what they get listed by. */
        for (ContainerWaiter *k = j->waiters; k; k = k->next)
                if (!k->ref && !(k->ref = strdup(j->ref))) {
                        free(w->ref);
                        free(w);
                        return job_finish(m, j, -ENOMEM, NULL, false);
                }
        w->next = TAKE_PTR(j->waiters);
        for (tail = &o->waiters; *tail; tail = &(*tail)->next)
                ;
        *tail = w;
        log_info("%s is image %s, which another call is unpacking: waiting for it.", j->source, j->digest);
        job_unlink(m, j);
        job_free(j);
}

static void resolve_complete(Manager *m, void *data, bool cancelled) {
        _cleanup_(container_record_done) ContainerRecord existing = {};
        _cleanup_free_ char *file = NULL;
        ContainerJob *j = data;
        int r = j->r;

        if (cancelled) {
                (void) error_set(&j->error, -ECANCELED, "diskd is shutting down; pull or import again.");
                return job_finish(m, j, -ECANCELED, NULL, false);
        }
        if (r < 0)
                return job_finish(m, j, r, NULL, false);
        j->resolved = true;
        if (!j->ref) {
                j->ref = strdup(!isempty(j->name) ? j->name : j->digest);
                if (!j->ref)
                        return job_finish(m, j, -ENOMEM, NULL, false);
        }
        r = store_container_get(m->store, j->digest, &existing);
        if (r >= 0) {
                /* Unpacked already: only the ref moves. */
                r = store_ref_set(m->store, j->ref, j->digest);
                if (r < 0) {
                        (void) error_set(&j->error, r, "Failed to record ref %s: %s.", j->ref, strerror(-r));
                        return job_finish(m, j, r, NULL, false);
                }
                log_info("%s is image %s, unpacked already.", j->source, j->digest);
                return finish_with_record(m, j, true);
        }
        if (r != -ENOENT)
                return job_finish(m, j, r, NULL, false);
        for (ContainerJob *o = m->container_jobs; o; o = o->next)
                if (o != j && o->resolved && o->intent > 0 && streq(o->digest, j->digest))
                        return job_join_unpack(m, j, o);
        if (asprintf(&j->image_name, IMAGE_PREFIX "%.32s", j->digest + 7) < 0 ||
            asprintf(&file, "%s.raw", j->image_name) < 0 || !(j->image_path = path_join(m->pool->images_dir, file)))
                return job_finish(m, j, -ENOMEM, NULL, false);
        r = store_intent_add(m->store, "add-image", j->image_name, j->image_path, &j->intent);
        if (r < 0) {
                (void) error_set(&j->error, r, "Cannot record the intent to add image %s: %s.", j->digest, strerror(-r));
                return job_finish(m, j, r, NULL, false);
        }
        (void) unlink(j->image_path); /* a leftover of a crash before recovery could run */
        r = work_start(m, unpack_run, unpack_complete, j);
        if (r < 0) {
                (void) store_intent_remove(m->store, j->intent);
                return job_finish(m, j, r, NULL, false);
        }
}

static int job_start(Manager *m, ContainerJob **jp, char **ret_error) {
        ContainerJob *j = *jp;
        int r;

        j->manager = m;
        j->limits = (TarLimits){
                .max_bytes = m->config.max_image_bytes,
                .max_entries = m->config.max_image_entries,
                .max_header = 1 << 20,
        };
        r = staging_new(m, &j->staging);
        if (r < 0)
                return error_set(ret_error, r, "Cannot create an unpack directory in %s: %s.", m->state_dir, strerror(-r));
        j->next = m->container_jobs;
        m->container_jobs = j;
        r = work_start(m, resolve_run, resolve_complete, j);
        if (r < 0) {
                job_unlink(m, j);
                return error_set(ret_error, r, "Cannot start: %s.", strerror(-r));
        }
        *jp = NULL;
        return 0;
}

int container_pull_async(Manager *m, const char *ref, ContainerDone done, void *userdata, char **ret_error) {
        _cleanup_(job_freep) ContainerJob *j = NULL;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        r = oci_ref_parse(ref, &j->oci, ret_error);
        if (r < 0)
                return r;
        r = oci_ref_format(&j->oci, &j->ref);
        if (r < 0)
                return r;
        j->source = strdup(j->ref);
        if (!j->source)
                return -ENOMEM;
        j->done = done;
        j->userdata = userdata;
        /* The same reference in flight: wait for it rather than fetch it twice. */
        for (ContainerJob *o = m->container_jobs; o; o = o->next)
                if (!o->import && streq(o->source, j->source)) {
                        ContainerWaiter *w = calloc(1, sizeof(*w)), **tail;
                        if (!w)
                                return -ENOMEM;
                        *w = (ContainerWaiter){ .done = done, .userdata = userdata };
                        for (tail = &o->waiters; *tail; tail = &(*tail)->next)
                                ;
                        *tail = w;
                        log_debug("%s is being pulled already: waiting for that pull.", j->source);
                        return 0;
                }
        /* By digest and known: no need to ask the registry. */
        if (j->oci.digest[0]) {
                _cleanup_free_ char *digest = NULL;
                _cleanup_(container_record_done) ContainerRecord c = {};
                if (store_ref_resolve(m->store, j->ref, &digest) >= 0 && store_container_get(m->store, digest, &c) >= 0) {
                        done(0, &c, (ContainerOutcome){ .cached = true }, NULL, userdata);
                        return 0;
                }
        }
        return job_start(m, &j, ret_error);
}

int container_import_async(Manager *m, const char *path, const char *name, ContainerDone done, void *userdata,
                           char **ret_error) {
        _cleanup_(job_freep) ContainerJob *j = NULL;
        _cleanup_free_ char *real = NULL;

        if (isempty(path) || path[0] != '/')
                return error_set(ret_error, -EINVAL, "The path to import must be absolute.");
        real = realpath(path, NULL);
        if (!real)
                return error_set(ret_error, negative_errno(), "Cannot open %s: %m.", path);
        if (!source_allowed(m, real))
                return error_set(ret_error, -EPERM, "%s is outside the directories diskd may read sources from "
                            "(image_source_dirs in disk.conf).", path);
        if (!isempty(name) && (strlen(name) > 255 || strpbrk(name, " \t\n\"'\\")))
                return error_set(ret_error, -EINVAL, "Invalid image name '%.*s'.", 64, name);
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->import = true;
        j->source = TAKE_PTR(real);
        j->name = strdup(name ? name : "");
        if (!j->name)
                return -ENOMEM;
        j->done = done;
        j->userdata = userdata;
        return job_start(m, &j, ret_error);
}

int container_list(Manager *m, ContainerRecord **ret, size_t *ret_n, char **ret_error) {
        int r = store_container_list(m->store, ret, ret_n);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read image records: %s.", strerror(-r));
        return 0;
}

int container_gc(Manager *m, unsigned *ret_collected, char **ret_error) {
        ContainerRecord *list = NULL;
        unsigned collected = 0;
        size_t n = 0;
        int r;

        (void) store_container_prune(m->store);
        r = store_container_unreferenced(m->store, &list, &n);
        if (r < 0)
                return error_set(ret_error, r, "Cannot read image records: %s.", strerror(-r));
        for (size_t i = 0; i < n; i++) {
                int64_t intent;
                bool busy = false;

                for (ContainerJob *j = m->container_jobs; j; j = j->next)
                        busy = busy || (j->resolved && streq(j->digest, list[i].digest));
                if (busy)
                        continue; /* a pull is pointing a ref at it right now */
                r = store_container_remove_with_intent(m->store, &list[i], &intent);
                if (r < 0) {
                        log_warning_errno(r, "Failed to remove the record of image %s: %m; retrying at the next "
                                          "collection.", list[i].digest);
                        continue;
                }
                if (!isempty(list[i].path) && unlink(list[i].path) < 0 && errno != ENOENT) {
                        log_warning_errno(negative_errno(), "Failed to remove %s: %m; retrying at restart.",
                                          list[i].path);
                        continue;
                }
                (void) store_intent_remove(m->store, intent);
                log_info("Collected image %s (%s), which nothing refers to.", list[i].digest, list[i].image);
                collected++;
        }
        container_records_free(list, n);
        if (ret_collected)
                *ret_collected = collected;
        return 0;
}

int container_delete(Manager *m, const char *ref, unsigned *ret_collected, char **ret_error) {
        _cleanup_free_ char *key = NULL;
        OciRef parsed;
        int r;

        if (isempty(ref) || strlen(ref) > 1024)
                return error_set(ret_error, -EINVAL, "Give an image reference or digest.");
        /* Pulled images are listed by their normalized reference. */
        if (!oci_digest_is_valid(ref) && oci_ref_parse(ref, &parsed, NULL) >= 0) {
                r = oci_ref_format(&parsed, &key);
                if (r < 0)
                        return r;
        }
        r = store_ref_remove(m->store, key ? key : ref);
        if (r == -ENOENT && key)
                r = store_ref_remove(m->store, ref);
        if (r == -ENOENT)
                return error_set(ret_error, -ENOENT, "No image '%s'; see 'nsc images list'.", ref);
        if (r < 0)
                return error_set(ret_error, r, "Failed to remove ref '%s': %s.", ref, strerror(-r));
        log_info("Removed image ref '%s'.", ref);
        return container_gc(m, ret_collected, ret_error);
}

int container_recover(Manager *m) {
        _cleanup_free_ char *dir = path_join(m->state_dir, "unpack");
        int r;

        if (!dir)
                return -ENOMEM;
        /* Staging trees of pulls a crash or a restart interrupted. */
        r = rm_rf_at(AT_FDCWD, dir);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Failed to clear %s: %m, ignoring.", dir);
        else if (r == 0)
                log_debug("Cleared the unpack directory %s.", dir);
        return container_gc(m, NULL, NULL);
}
