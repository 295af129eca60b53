/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <ftw.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "disk-exec.h"
#include "disk-image.h"
#include "disk-qcow2.h"
#include "macro.h"

#define IN_SET_COPY_FALLBACK(e) ((e) == EXDEV || (e) == ENOSYS || (e) == EOPNOTSUPP || (e) == EINVAL)

int image_probe(const char *path, ImageProbe *ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        ImageProbe p = {};
        struct stat st;
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        /* The largest cluster qcow2 allows is 2 MiB; the header and its
         * extensions live in the first cluster. */
        buf = malloc(2 << 20);
        if (!buf)
                return -ENOMEM;
        n = pread(fd, buf, 2 << 20, 0);
        if (n < 0)
                return negative_errno();
        p.file_size = (uint64_t) st.st_size;
        if (qcow2_has_magic(buf, (size_t) n)) {
                Qcow2Info info;
                int r = qcow2_parse_header(buf, (size_t) n, &info);
                if (r < 0)
                        return r;
                if (info.backing_file[0])
                        return -EXDEV;
                snprintf(p.format, sizeof(p.format), "qcow2");
                p.virtual_size = info.size;
        } else {
                snprintf(p.format, sizeof(p.format), "raw");
                p.virtual_size = p.file_size;
        }
        *ret = p;
        return 0;
}

int image_digest(const char *path, char ret[IMAGE_DIGEST_MAX]) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        EVP_MD_CTX *ctx;
        int r = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        buf = malloc(1 << 20);
        ctx = EVP_MD_CTX_new();
        if (!buf || !ctx) {
                EVP_MD_CTX_free(ctx);
                return -ENOMEM;
        }
        if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
                r = -EIO;
        while (r == 0) {
                ssize_t n = read(fd, buf, 1 << 20);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        break;
                }
                if (n == 0)
                        break;
                if (EVP_DigestUpdate(ctx, buf, (size_t) n) != 1)
                        r = -EIO;
        }
        if (r == 0 && EVP_DigestFinal_ex(ctx, md, &md_len) != 1)
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        if (r < 0)
                return r;
        memcpy(ret, "sha256:", 7);
        for (unsigned i = 0; i < md_len; i++)
                snprintf(ret + 7 + 2 * i, 3, "%02x", md[i]);
        return 0;
}

/* Plain read/write copy of [off, end): for when copy_file_range() cannot
 * cross filesystems (EXDEV on kernels since 5.19). */
static int copy_range_rw(int in, int out, off_t off, off_t end) {
        _cleanup_free_ uint8_t *buf = malloc(1 << 20);

        if (!buf)
                return -ENOMEM;
        while (off < end) {
                ssize_t n = pread(in, buf, (size_t) MIN((off_t) (1 << 20), end - off), off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                for (ssize_t w = 0; w < n;) {
                        ssize_t k = pwrite(out, buf + w, (size_t) (n - w), off + w);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                return negative_errno();
                        }
                        w += k;
                }
                off += n;
        }
        return 0;
}

/* Copies the data regions of src (SEEK_DATA/SEEK_HOLE) and leaves the
 * holes as holes. */
static int copy_sparse(int in, int out, uint64_t size) {
        bool use_rw = false;
        off_t pos = 0;

        while ((uint64_t) pos < size) {
                off_t data = lseek(in, pos, SEEK_DATA), hole;
                if (data < 0) {
                        if (errno == ENXIO)
                                break; /* only a hole is left */
                        return negative_errno();
                }
                hole = lseek(in, data, SEEK_HOLE);
                if (hole < 0)
                        return negative_errno();
                for (off_t o = data; o < hole;) {
                        off_t oi = o, oo = o;
                        ssize_t n;

                        if (use_rw) {
                                int r = copy_range_rw(in, out, o, hole);
                                if (r < 0)
                                        return r;
                                break;
                        }
                        n = copy_file_range(in, &oi, out, &oo, (size_t) (hole - o), 0);
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (IN_SET_COPY_FALLBACK(errno)) {
                                        use_rw = true;
                                        continue;
                                }
                                return negative_errno();
                        }
                        if (n == 0)
                                return -EIO;
                        o += n;
                }
                pos = hole;
        }
        if (ftruncate(out, (off_t) size) < 0)
                return negative_errno();
        return 0;
}

int image_copy(const char *src, const char *dst) {
        _cleanup_close_ int in = -EBADF, out = -EBADF;
        struct stat st;
        int r;

        in = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (in < 0)
                return negative_errno();
        if (fstat(in, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        out = open(dst, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (out < 0)
                return negative_errno();
        if (ioctl(out, FICLONE, in) == 0)
                r = 0;
        else
                r = copy_sparse(in, out, (uint64_t) st.st_size);
        if (r == 0 && fsync(out) < 0)
                r = negative_errno();
        if (r < 0)
                (void) unlink(dst);
        return r;
}

static __thread uint64_t tree_bytes; /* nftw() has no userdata; jobs run on threads */
static __thread uint64_t tree_entries;

static int tree_account(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) path;
        (void) flag;
        (void) ftw;
        tree_bytes += ((uint64_t) st->st_size + 4095) & ~4095ULL;
        tree_entries++;
        return 0;
}

int image_make_ext4(const char *dir, const char *dst, uint64_t size, char **ret_output) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        if (stat(dir, &st) < 0)
                return negative_errno();
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (size == 0) {
                /* Content rounded to blocks, an inode and a bit per entry, half
                 * again for ext4's metadata and headroom; 64 MiB at least. */
                tree_bytes = tree_entries = 0;
                if (nftw(dir, tree_account, 64, FTW_PHYS) < 0)
                        return negative_errno();
                size = (tree_bytes + tree_entries * 512) * 3 / 2 + (16ULL << 20);
                size = MAX(size, 64ULL << 20);
                size = (size + (1ULL << 20) - 1) & ~((1ULL << 20) - 1);
        }
        fd = open(dst, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return negative_errno();
        if (ftruncate(fd, (off_t) size) < 0) {
                r = negative_errno();
                goto fail;
        }
        fd = safe_close(fd);

        char *argv[] = { (char *) "mkfs.ext4", (char *) "-q", (char *) "-F", (char *) "-m", (char *) "0",
                         (char *) "-d", (char *) dir, (char *) dst, NULL };
        r = disk_exec(argv, ret_output);
        if (r < 0)
                goto fail;
        return 0;
fail:
        (void) unlink(dst);
        return r;
}
