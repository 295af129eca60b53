/* SPDX-License-Identifier: MIT */
/* An ext4 image from an unpacked container tree, faster than `mkfs.ext4 -d`
 * alone. mke2fs copies file data through libext2fs one 4 KiB block per
 * pwrite(2): ~50,000 system calls for a 50 MB image, the largest cost of a
 * first pull here (see bench/containers/RESULTS.md). So the data of large
 * regular files is set aside before mke2fs runs (the file in the tree is
 * replaced by a sparse one of the same size, owner, mode and times, which
 * mke2fs copies without data), and written afterwards: the blocks are
 * allocated with ext2fs_fallocate() and the data copied into them with one
 * pwrite(2) per contiguous run of up to 1 MiB. Everything else (directories,
 * symlinks, hard links, small files, metadata) stays mke2fs's work. */

#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "disk-ext4.h"
#include "disk-image.h"
#include "error-util.h"
#include "fs-util.h"
#include "macro.h"

/* Smaller files cost mke2fs few writes; setting them aside costs more. */
#define LARGE_FILE_BYTES (256 * 1024)
#define COPY_CHUNK (1024 * 1024)

typedef struct LargeFile {
        char *path;         /* inside the tree, without the leading '/' */
        uint64_t size;
} LargeFile;

/* nftw() has no user pointer; each pull runs on its own worker thread. */
static __thread struct {
        const char *root, *side;
        size_t root_len;
        LargeFile *files;
        size_t n, allocated;
        int r;
} walk;

static int side_path(const char *side, size_t k, char *buf, size_t size) {
        return snprintf(buf, size, "%s/%zu", side, k) < (int) size ? 0 : -ENAMETOOLONG;
}

/* Moves a large file's data aside and leaves a sparse stand-in. A file
 * that cannot be set aside (a read-only directory for an unprivileged
 * diskd, say) stays as it is, for mke2fs to copy. */
static int set_aside(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        char dest[4096];
        int fd;

        (void) ftw;
        if (flag != FTW_F || !S_ISREG(st->st_mode) || st->st_nlink != 1 || (uint64_t) st->st_size < LARGE_FILE_BYTES)
                return 0;
        if (walk.n == walk.allocated) {
                size_t a = walk.allocated ? walk.allocated * 2 : 64;
                LargeFile *t = realloc(walk.files, a * sizeof(*t));
                if (!t)
                        return walk.r = -ENOMEM, 1;
                walk.files = t;
                walk.allocated = a;
        }
        if (side_path(walk.side, walk.n, dest, sizeof(dest)) < 0)
                return 0;
        if (rename(path, dest) < 0)
                return 0;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        /* Owner before mode: chown clears set-id bits. */
        if (fd < 0 || ftruncate(fd, st->st_size) < 0 || fchown(fd, st->st_uid, st->st_gid) < 0 ||
            fchmod(fd, st->st_mode & 07777) < 0 ||
            futimens(fd, (const struct timespec[2]){ st->st_atim, st->st_mtim }) < 0) {
                if (fd >= 0)
                        close(fd);
                if (rename(dest, path) < 0)
                        return walk.r = negative_errno(), 1;
                return 0;
        }
        close(fd);
        walk.files[walk.n] = (LargeFile){ .path = strdup(path + walk.root_len + 1), .size = (uint64_t) st->st_size };
        if (!walk.files[walk.n].path)
                return walk.r = -ENOMEM, 1;
        walk.n++;
        return 0;
}

/* Writes the data of one set-aside file into its (sparse) inode. */
static int fill_file(ext2_filsys fs, int image_fd, int data_fd, const LargeFile *f, char *buf) {
        ext2_ino_t ino;
        blk64_t blocks = (f->size + fs->blocksize - 1) / fs->blocksize;
        errcode_t e;

        e = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, f->path, &ino);
        if (e)
                return -ENOENT;
        e = ext2fs_fallocate(fs, EXT2_FALLOCATE_FORCE_INIT, ino, NULL, ~0ULL, 0, blocks);
        if (e)
                return e == EXT2_ET_BLOCK_ALLOC_FAIL ? -ENOSPC : -EIO;
        for (blk64_t l = 0; l < blocks;) {
                blk64_t start, p, n = 1;
                int flags = 0;

                e = ext2fs_bmap2(fs, ino, NULL, NULL, 0, l, &flags, &start);
                if (e || start == 0)
                        return -EIO;
                /* The run of physically contiguous blocks from here. */
                while (l + n < blocks && n * fs->blocksize < COPY_CHUNK) {
                        e = ext2fs_bmap2(fs, ino, NULL, NULL, 0, l + n, &flags, &p);
                        if (e || p != start + n)
                                break;
                        n++;
                }
                uint64_t off = l * fs->blocksize, len = MIN(n * fs->blocksize, f->size - off);
                ssize_t k = pread(data_fd, buf, len, (off_t) off);
                if (k != (ssize_t) len)
                        return k < 0 ? negative_errno() : -EIO;
                k = pwrite(image_fd, buf, len, (off_t) (start * fs->blocksize));
                if (k != (ssize_t) len)
                        return k < 0 ? negative_errno() : -EIO;
                l += n;
        }
        return 0;
}

static int fill_files(const char *dst, const char *side, const LargeFile *files, size_t n, char **ret_error) {
        _cleanup_close_ int image_fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        ext2_filsys fs = NULL;
        errcode_t e;
        int r = 0;

        buf = malloc(COPY_CHUNK);
        image_fd = open(dst, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (!buf || image_fd < 0)
                return buf ? negative_errno() : -ENOMEM;
        e = ext2fs_open(dst, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
        if (e)
                return error_set(ret_error, -EIO, "libext2fs cannot open the new image (error %ld).", (long) e);
        e = ext2fs_read_bitmaps(fs);
        if (e)
                r = error_set(ret_error, -EIO, "libext2fs cannot read the new image's bitmaps (error %ld).", (long) e);
        for (size_t k = 0; r >= 0 && k < n; k++) {
                char path[4096];
                _cleanup_close_ int data_fd = -EBADF;

                r = side_path(side, k, path, sizeof(path));
                if (r >= 0 && (data_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
                        r = negative_errno();
                if (r >= 0)
                        r = fill_file(fs, image_fd, data_fd, &files[k], buf);
                if (r < 0)
                        (void) error_set(ret_error, r, "Cannot write /%s into the image: %s.", files[k].path,
                                         strerror(-r));
        }
        /* Bitmaps, group descriptors and the superblock go out here. */
        e = ext2fs_close_free(&fs);
        if (e && r >= 0)
                r = error_set(ret_error, -EIO, "libext2fs cannot close the new image (error %ld).", (long) e);
        if (r >= 0 && fsync(image_fd) < 0)
                r = error_set(ret_error, negative_errno(), "Cannot sync the new image: %m.");
        return r;
}

int ext4_image_from_staging(const char *tree, const char *side, const char *dst, char **ret_output) {
        LargeFile *files;
        size_t n;
        int r;

        if (mkdir(side, 0700) < 0)
                return negative_errno();
        walk.root = tree;
        walk.root_len = strlen(tree);
        walk.side = side;
        walk.files = NULL;
        walk.n = walk.allocated = 0;
        walk.r = 0;
        if (nftw(tree, set_aside, 64, FTW_PHYS | FTW_MOUNT) < 0 && walk.r == 0)
                walk.r = negative_errno();
        files = walk.files;
        n = walk.n;
        r = walk.r;
        walk.files = NULL;

        if (r >= 0)
                r = image_make_ext4(tree, dst, 0, ret_output);
        if (r >= 0 && n > 0) {
                r = fill_files(dst, side, files, n, ret_output);
                if (r < 0)
                        (void) unlink(dst);
        }
        for (size_t k = 0; k < n; k++)
                free(files[k].path);
        free(files);
        return r;
}
