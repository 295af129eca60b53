/* SPDX-License-Identifier: MIT */
/* Tar layers, read and applied without trusting a byte of them. The reader
 * follows POSIX.1-2001 (ustar and pax) and the GNU long-name records; the
 * unpacker follows the OCI image spec's layer rules (image-spec
 * layer.md: "Whiteouts" and "Opaque Whiteout"). */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <zlib.h>

#include "disk-tar.h"
#include "error-util.h"
#include "macro.h"

#define ZBUF (128 * 1024)
#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

/* ---- header and PAX parsing ---- */

/* A numeric field: octal digits, space or NUL terminated, or base-256 (GNU
 * and star, for sizes of 8 GiB and more) when the first byte has its high
 * bit set. */
static int parse_number(const uint8_t *f, size_t len, uint64_t *ret) {
        uint64_t v = 0;
        size_t i = 0;

        if (f[0] & 0x80) {
                if (f[0] != 0x80)
                        return -EBADMSG; /* negative, or more than 63 bits */
                for (i = 1; i < len; i++) {
                        if (v >> 55)
                                return -EBADMSG;
                        v = (v << 8) | f[i];
                }
                *ret = v;
                return 0;
        }
        while (i < len && f[i] == ' ')
                i++;
        for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
                if (v >> 60)
                        return -EBADMSG;
                v = (v << 3) | (uint64_t) (f[i] - '0');
        }
        for (; i < len; i++)
                if (f[i] != ' ' && f[i] != '\0')
                        return -EBADMSG;
        *ret = v;
        return 0;
}

static void copy_field(char *dst, const uint8_t *src, size_t len) {
        size_t n = strnlen((const char *) src, len);
        memcpy(dst, src, n);
        dst[n] = '\0';
}

int tar_header_parse(const uint8_t block[TAR_BLOCK], TarHeader *ret) {
        uint64_t chksum, mode, uid, gid, size, mtime;
        uint64_t sum = 0;
        int64_t ssum = 0;
        bool zero = true;
        TarHeader h = {};

        for (size_t i = 0; i < TAR_BLOCK; i++)
                if (block[i]) {
                        zero = false;
                        break;
                }
        if (zero)
                return 1;
        /* The checksum counts its own field as eight spaces; some old tars
         * summed signed chars, so either sum is accepted. */
        for (size_t i = 0; i < TAR_BLOCK; i++) {
                uint8_t b = (i >= 148 && i < 156) ? ' ' : block[i];
                sum += b;
                ssum += (int8_t) b;
        }
        if (parse_number(block + 148, 8, &chksum) < 0 || (chksum != sum && (int64_t) chksum != ssum))
                return -EBADMSG;
        if (parse_number(block + 100, 8, &mode) < 0 || parse_number(block + 108, 8, &uid) < 0 ||
            parse_number(block + 116, 8, &gid) < 0 || parse_number(block + 124, 12, &size) < 0 ||
            parse_number(block + 136, 12, &mtime) < 0)
                return -EBADMSG;
        if (uid > UINT32_MAX || gid > UINT32_MAX || size > (UINT64_C(1) << 62))
                return -EBADMSG;
        h.mode = (uint32_t) (mode & 07777);
        h.uid = (uint32_t) uid;
        h.gid = (uint32_t) gid;
        h.size = size;
        h.mtime = (int64_t) MIN(mtime, (uint64_t) INT64_MAX);
        h.type = block[156] ? (char) block[156] : '0';
        /* POSIX ustar ("ustar\0" "00") splits long names into prefix "/" name;
         * GNU ("ustar  \0") keeps other fields where the prefix would be. */
        if (memcmp(block + 257, "ustar\0", 6) == 0 && block[345]) {
                char prefix[156];
                copy_field(prefix, block + 345, 155);
                copy_field(h.name + strlen(prefix) + 1, block, 100);
                memcpy(h.name, prefix, strlen(prefix));
                h.name[strlen(prefix)] = '/';
        } else
                copy_field(h.name, block, 100);
        copy_field(h.linkname, block + 157, 100);
        *ret = h;
        return 0;
}

void tar_pax_done(TarPax *p) {
        free(p->path);
        free(p->linkpath);
        *p = (TarPax){};
}

static int parse_decimal(const char *s, size_t n, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EBADMSG;
                if (v > (max - (uint64_t) (s[i] - '0')) / 10)
                        return -EBADMSG;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

int tar_pax_parse(const char *data, size_t n, TarPax *ret) {
        TarPax p = {};
        size_t pos = 0;
        int r = 0;

        while (pos < n && r == 0) {
                const char *rec = data + pos, *sp, *eq, *val;
                size_t digits, key_len, val_len;
                uint64_t len, v = 0;

                if (data[pos] == '\0')
                        break; /* padding some writers leave */
                sp = memchr(rec, ' ', MIN(n - pos, (size_t) 20));
                if (!sp) {
                        r = -EBADMSG;
                        break;
                }
                digits = (size_t) (sp - rec);
                if (parse_decimal(rec, digits, n - pos, &len) < 0 || len < digits + 4) {
                        r = -EBADMSG;
                        break;
                }
                if (rec[len - 1] != '\n') {
                        r = -EBADMSG;
                        break;
                }
                eq = memchr(sp + 1, '=', (size_t) (rec + len - 1 - (sp + 1)));
                if (!eq || eq == sp + 1) {
                        r = -EBADMSG;
                        break;
                }
                key_len = (size_t) (eq - (sp + 1));
                val = eq + 1;
                val_len = (size_t) (rec + len - 1 - val);
#define KEY(k) (key_len == strlen(k) && memcmp(sp + 1, k, key_len) == 0)
                if (KEY("path") || KEY("linkpath")) {
                        char **dst = KEY("path") ? &p.path : &p.linkpath;
                        if (val_len >= TAR_PATH_MAX) {
                                r = -ENAMETOOLONG;
                                break;
                        }
                        if (memchr(val, '\0', val_len)) {
                                r = -EBADMSG;
                                break;
                        }
                        free(*dst);
                        *dst = val_len ? strndup(val, val_len) : NULL;
                        if (val_len && !*dst)
                                r = -ENOMEM;
                } else if (KEY("size")) {
                        r = parse_decimal(val, val_len, UINT64_C(1) << 62, &p.size);
                        p.have_size = true;
                } else if (KEY("uid") || KEY("gid")) {
                        r = parse_decimal(val, val_len, UINT32_MAX, &v);
                        if (KEY("uid")) {
                                p.uid = (uint32_t) v;
                                p.have_uid = true;
                        } else {
                                p.gid = (uint32_t) v;
                                p.have_gid = true;
                        }
                } else if (KEY("mtime")) {
                        /* Seconds with an optional fraction; the fraction is dropped. */
                        const char *dot = memchr(val, '.', val_len);
                        size_t int_len = dot ? (size_t) (dot - val) : val_len;
                        bool neg = int_len > 0 && val[0] == '-';
                        r = parse_decimal(val + neg, int_len - neg, INT64_MAX, &v);
                        p.mtime = neg ? -(int64_t) v : (int64_t) v;
                        p.have_mtime = true;
                }
#undef KEY
                pos += len;
        }
        if (r < 0) {
                tar_pax_done(&p);
                return r;
        }
        *ret = p;
        return 0;
}

/* ---- the reader ---- */

struct TarReader {
        TarReadFn read;
        void *userdata;
        TarLimits limits;
        bool gzip, in_eof, z_end;
        z_stream z;
        uint8_t *in;                /* compressed input */
        size_t in_len, in_pos;
        uint64_t left, pad;         /* the current entry's unread data and padding */
        char *long_name, *long_link;
        TarPax pax;
        bool have_pax;
};

static int fill_input(TarReader *r) {
        ssize_t n;

        if (r->in_eof)
                return 0;
        do
                n = r->read(r->userdata, r->in, ZBUF);
        while (n == -EINTR);
        if (n < 0)
                return (int) n;
        if (n == 0)
                r->in_eof = true;
        r->in_len = (size_t) n;
        r->in_pos = 0;
        return (int) MIN(n, 1);
}

/* Decompressed (or plain) bytes: short only at the end. */
static ssize_t read_some(TarReader *r, uint8_t *buf, size_t n) {
        size_t got = 0;
        int k;

        while (got < n) {
                if (r->in_pos == r->in_len) {
                        k = fill_input(r);
                        if (k < 0)
                                return k;
                        if (k == 0 && !r->gzip)
                                break;
                }
                if (!r->gzip) {
                        size_t c = MIN(n - got, r->in_len - r->in_pos);
                        memcpy(buf + got, r->in + r->in_pos, c);
                        r->in_pos += c;
                        got += c;
                        continue;
                }
                if (r->z_end) {
                        /* RFC 1952 §2.2: a gzip file is a series of members. */
                        if (r->in_pos == r->in_len && r->in_eof)
                                break;
                        if (r->in_pos == r->in_len)
                                continue;
                        if (inflateReset(&r->z) != Z_OK)
                                return -EBADMSG;
                        r->z_end = false;
                }
                r->z.next_in = r->in + r->in_pos;
                r->z.avail_in = (uInt) (r->in_len - r->in_pos);
                r->z.next_out = buf + got;
                r->z.avail_out = (uInt) (n - got);
                k = inflate(&r->z, Z_NO_FLUSH);
                if (k == Z_STREAM_END)
                        r->z_end = true;
                else if (k == Z_BUF_ERROR) {
                        if (r->in_eof)
                                return -EBADMSG; /* truncated gzip */
                } else if (k != Z_OK)
                        return -EBADMSG;
                got = (size_t) (r->z.next_out - buf);
                r->in_pos = (size_t) (r->z.next_in - r->in);
        }
        return (ssize_t) got;
}

static int read_exact(TarReader *r, void *buf, size_t n) {
        ssize_t k = read_some(r, buf, n);
        if (k < 0)
                return (int) k;
        return (size_t) k == n ? 0 : -EPIPE;
}

static int skip(TarReader *r, uint64_t n) {
        uint8_t buf[8192];

        while (n > 0) {
                size_t c = (size_t) MIN(n, (uint64_t) sizeof(buf));
                int k = read_exact(r, buf, c);
                if (k < 0)
                        return k;
                n -= c;
        }
        return 0;
}

int tar_reader_new(TarReadFn read, void *userdata, const TarLimits *limits, TarReader **ret) {
        TarReader *r;
        int k;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->read = read;
        r->userdata = userdata;
        r->limits = limits ? *limits : TAR_LIMITS_DEFAULT;
        r->in = malloc(ZBUF);
        if (!r->in) {
                free(r);
                return -ENOMEM;
        }
        k = fill_input(r);
        if (k < 0) {
                tar_reader_free(r);
                return k;
        }
        if (r->in_len >= 2 && r->in[0] == 0x1f && r->in[1] == 0x8b) {
                if (inflateInit2(&r->z, 16 + MAX_WBITS) != Z_OK) {
                        free(r->in);
                        free(r);
                        return -ENOMEM;
                }
                r->gzip = true;
        }
        *ret = r;
        return 0;
}

TarReader *tar_reader_free(TarReader *r) {
        if (!r)
                return NULL;
        if (r->gzip)
                inflateEnd(&r->z);
        free(r->in);
        free(r->long_name);
        free(r->long_link);
        tar_pax_done(&r->pax);
        free(r);
        return NULL;
}

/* A GNU 'L'/'K' record or a PAX header: its data, bounded. */
static int read_record(TarReader *r, const TarHeader *h, size_t max, char **ret, char **ret_error) {
        _cleanup_free_ char *buf = NULL;
        int k;

        if (h->size > max)
                return error_set(ret_error, -E2BIG, "Tar entry '%s': a %s record of %" PRIu64 " bytes, more than %zu allowed.",
                            h->name, h->type == 'x' || h->type == 'g' ? "PAX header" : "GNU long name", h->size, max);
        buf = malloc(h->size + 1);
        if (!buf)
                return -ENOMEM;
        k = read_exact(r, buf, h->size);
        if (k >= 0)
                k = skip(r, (TAR_BLOCK - h->size % TAR_BLOCK) % TAR_BLOCK);
        if (k < 0)
                return error_set(ret_error, k == -EPIPE ? -EBADMSG : k, "Tar archive is truncated in entry '%s'.", h->name);
        buf[h->size] = '\0';
        *ret = TAKE_PTR(buf);
        return 0;
}

static void reset_pending(TarReader *r) {
        free(r->long_name);
        free(r->long_link);
        r->long_name = r->long_link = NULL;
        tar_pax_done(&r->pax);
        r->have_pax = false;
}

int tar_reader_next(TarReader *r, TarEntry *ret, char **ret_error) {
        uint8_t block[TAR_BLOCK];
        TarHeader h;
        int k;

        k = skip(r, r->left + r->pad);
        if (k < 0)
                return error_set(ret_error, k == -EPIPE ? -EBADMSG : k, "Tar archive is truncated (%s).",
                            k == -EPIPE ? "data ends inside an entry" : strerror(-k));
        r->left = r->pad = 0;
        for (;;) {
                ssize_t n = read_some(r, block, TAR_BLOCK);
                if (n < 0)
                        return error_set(ret_error, (int) n == -EBADMSG ? -EBADMSG : (int) n, "Layer is not valid %s: %s.",
                                    r->gzip ? "gzip" : "tar", strerror((int) -n));
                if (n == 0)
                        return 0; /* no end marker: tolerated, every entry was whole */
                if (n != TAR_BLOCK)
                        return error_set(ret_error, -EBADMSG, "Tar archive is truncated (a partial header block).");
                k = tar_header_parse(block, &h);
                if (k == 1) {
                        reset_pending(r);
                        return 0;
                }
                if (k < 0)
                        return error_set(ret_error, -EBADMSG, "Tar archive has a corrupt header (bad checksum or number).");
                if (h.type == 'x' || h.type == 'g') {
                        _cleanup_free_ char *data = NULL;
                        k = read_record(r, &h, r->limits.max_header, &data, ret_error);
                        if (k < 0)
                                return k;
                        if (h.type == 'g')
                                continue; /* global defaults: nothing here uses them */
                        tar_pax_done(&r->pax);
                        k = tar_pax_parse(data, h.size, &r->pax);
                        if (k < 0)
                                return error_set(ret_error, k == -ENAMETOOLONG ? -EINVAL : -EBADMSG,
                                            "Tar entry '%s': %s PAX header.", h.name,
                                            k == -ENAMETOOLONG ? "a path longer than 4095 bytes in its" : "a malformed");
                        r->have_pax = true;
                        continue;
                }
                if (h.type == 'L' || h.type == 'K') {
                        char *data = NULL;
                        k = read_record(r, &h, TAR_PATH_MAX - 1, &data, ret_error);
                        if (k < 0)
                                return k;
                        if (h.type == 'L') {
                                free(r->long_name);
                                r->long_name = data;
                        } else {
                                free(r->long_link);
                                r->long_link = data;
                        }
                        continue;
                }
                break;
        }

        TarEntry e = {
                .type = h.type,
                .mode = h.mode,
                .uid = r->pax.have_uid ? r->pax.uid : h.uid,
                .gid = r->pax.have_gid ? r->pax.gid : h.gid,
                .size = r->pax.have_size ? r->pax.size : h.size,
                .mtime = r->pax.have_mtime ? r->pax.mtime : h.mtime,
        };
        snprintf(e.path, sizeof(e.path), "%s", r->pax.path ? r->pax.path : r->long_name ? r->long_name : h.name);
        snprintf(e.link, sizeof(e.link), "%s",
                 r->pax.linkpath ? r->pax.linkpath : r->long_link ? r->long_link : h.linkname);
        reset_pending(r);
        if (e.type == '7')
                e.type = '0'; /* contiguous file: a regular file everywhere that matters */
        if (e.type == '0' && e.path[0] && e.path[strlen(e.path) - 1] == '/')
                e.type = '5'; /* pre-POSIX tars mark directories with a trailing slash */
        if (!strchr("0123456", e.type))
                return error_set(ret_error, -EINVAL, "Tar entry '%s': unsupported entry type '%c'.", e.path,
                            e.type >= 0x20 && e.type < 0x7f ? e.type : '?');
        /* Header-only types carry no data whatever their size field says. */
        if (e.type != '0')
                e.size = 0;
        r->left = e.size;
        r->pad = (TAR_BLOCK - e.size % TAR_BLOCK) % TAR_BLOCK;
        *ret = e;
        return 1;
}

ssize_t tar_reader_read_data(TarReader *r, void *buf, size_t n) {
        ssize_t k;

        n = (size_t) MIN((uint64_t) n, r->left);
        if (n == 0)
                return 0;
        k = read_some(r, buf, n);
        if (k < 0)
                return k;
        if ((size_t) k != n)
                return -EPIPE;
        r->left -= (uint64_t) k;
        return k;
}

/* ---- the unpacker ---- */

static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

int rm_rf_at(int dir_fd, const char *name) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int fd, r = 0;

        if (unlinkat(dir_fd, name, 0) == 0)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return negative_errno();
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return negative_errno();
        }
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                int k = rm_rf_at(dirfd(d), de->d_name);
                if (k < 0 && k != -ENOENT && r == 0)
                        r = k;
        }
        if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && r == 0)
                r = negative_errno();
        return r;
}

/* Cleans a path: "./a//b/" → "a/b"; "" for the root. Refuses absolute paths
 * and "..". */
static int path_normalize(const char *in, char out[TAR_PATH_MAX], const char **ret_why) {
        size_t o = 0;

        if (in[0] == '/') {
                *ret_why = "an absolute path";
                return -EINVAL;
        }
        for (const char *p = in; *p;) {
                const char *end = strchrnul(p, '/');
                size_t len = (size_t) (end - p);

                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        *ret_why = "a '..' component";
                        return -EINVAL;
                }
                if (len > 0 && !(len == 1 && p[0] == '.')) {
                        if (o + len + 2 > TAR_PATH_MAX) {
                                *ret_why = "a path that is too long";
                                return -EINVAL;
                        }
                        if (o > 0)
                                out[o++] = '/';
                        memcpy(out + o, p, len);
                        o += len;
                }
                p = *end ? end + 1 : end;
        }
        out[o] = '\0';
        return 0;
}

typedef struct Layer {
        int root_fd;
        const TarLimits *limits;
        TarStats *stats;
        char **paths;               /* what this layer made, for opaque directories */
        size_t n_paths, cap_paths;
        char **error;
} Layer;

static int layer_remember(Layer *l, const char *path) {
        if (l->n_paths == l->cap_paths) {
                size_t cap = l->cap_paths ? l->cap_paths * 2 : 256;
                char **t = realloc(l->paths, cap * sizeof(char *));
                if (!t)
                        return -ENOMEM;
                l->paths = t;
                l->cap_paths = cap;
        }
        l->paths[l->n_paths] = strdup(path);
        if (!l->paths[l->n_paths])
                return -ENOMEM;
        l->n_paths++;
        return 0;
}

/* True when this layer made `path` or something below it. */
static bool layer_made(Layer *l, const char *path) {
        size_t len = strlen(path);
        for (size_t i = 0; i < l->n_paths; i++)
                if (strncmp(l->paths[i], path, len) == 0 && (l->paths[i][len] == '\0' || l->paths[i][len] == '/'))
                        return true;
        return false;
}

/* Opens the directory holding `path`'s last component, walking from the
 * root one component at a time without following symlinks. With `create`
 * missing directories are made (archives need not list every parent).
 * Returns the fd; *ret_name points into path. */
static int open_parent(Layer *l, const char *entry, char *path, bool create, const char **ret_name) {
        _cleanup_close_ int fd = -EBADF;
        char *p = path, *slash;

        fd = openat(l->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        while ((slash = strchr(p, '/'))) {
                int next;

                *slash = '\0';
                next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0 && errno == ENOENT && create) {
                        if (mkdirat(fd, p, 0755) < 0 && errno != EEXIST) {
                                *slash = '/';
                                return error_set(l->error, negative_errno(), "Tar entry '%s': cannot create %s: %m.", entry, path);
                        }
                        next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                }
                if (next < 0) {
                        int e = errno;
                        struct stat st;
                        bool link = fstatat(fd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
                        *slash = '/';
                        if (e == ENOENT && !create)
                                return -ENOENT;
                        if (link || e == ELOOP) {
                                *slash = '\0';
                                (void) error_set(l->error, -EINVAL,
                                            "Tar entry '%s': '%s' is a symlink; refusing to write through it.", entry, path);
                                *slash = '/';
                                return -EINVAL;
                        }
                        *slash = '\0';
                        (void) error_set(l->error, e == ENOTDIR ? -EINVAL : -e, "Tar entry '%s': '%s' %s.", entry, path,
                                    e == ENOTDIR ? "is not a directory" : strerror(e));
                        *slash = '/';
                        return e == ENOTDIR ? -EINVAL : -e;
                }
                *slash = '/';
                safe_close(fd);
                fd = next;
                p = slash + 1;
        }
        *ret_name = p;
        return TAKE_FD(fd);
}

/* Makes room for a new entry: whatever is at `name` goes, unless it is a
 * directory and a directory is wanted. */
static int clear_for(int dir_fd, const char *name, bool want_dir, bool *ret_is_dir) {
        struct stat st;

        *ret_is_dir = false;
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        if (S_ISDIR(st.st_mode) && want_dir) {
                *ret_is_dir = true;
                return 0;
        }
        return S_ISDIR(st.st_mode) ? rm_rf_at(dir_fd, name) : (unlinkat(dir_fd, name, 0) < 0 ? negative_errno() : 0);
}

static void set_meta(int dir_fd, const char *name, const TarEntry *e) {
        struct timespec ts[2] = { { .tv_sec = e->mtime }, { .tv_sec = e->mtime } };

        /* Ownership is kept when diskd may set it (as root); the image is
         * meant to be seen with the archive's owners. */
        if (geteuid() == 0)
                (void) fchownat(dir_fd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW);
        if (e->type != '2')
                (void) fchmodat(dir_fd, name, e->mode, 0);
        (void) utimensat(dir_fd, name, ts, AT_SYMLINK_NOFOLLOW);
}

static int write_file(Layer *l, TarReader *rd, int dir_fd, const char *name, const TarEntry *e) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t left = e->size;

        fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return error_set(l->error, negative_errno(), "Tar entry '%s': cannot create it: %m.", e->path);
        buf = malloc(ZBUF);
        if (!buf)
                return -ENOMEM;
        while (left > 0) {
                ssize_t n = tar_reader_read_data(rd, buf, ZBUF);
                if (n < 0)
                        return error_set(l->error, n == -EPIPE ? -EBADMSG : (int) n, "Tar entry '%s': %s.", e->path,
                                    n == -EPIPE ? "the archive ends inside its data" : strerror((int) -n));
                for (ssize_t w = 0; w < n;) {
                        ssize_t k = write(fd, buf + w, (size_t) (n - w));
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                return error_set(l->error, negative_errno(), "Tar entry '%s': write failed: %m.", e->path);
                        }
                        w += k;
                }
                left -= (uint64_t) n;
        }
        return 0;
}

static int apply_entry(Layer *l, TarReader *rd, const TarEntry *e) {
        _cleanup_close_ int dir_fd = -EBADF;
        char path[TAR_PATH_MAX];
        const char *why = NULL, *name;
        bool is_dir;
        int r;

        if (++l->stats->entries > l->limits->max_entries)
                return error_set(l->error, -E2BIG, "Tar entry '%s': the image has more than %" PRIu64 " entries "
                            "(max_image_entries in disk.conf).", e->path, l->limits->max_entries);
        r = path_normalize(e->path, path, &why);
        if (r < 0)
                return error_set(l->error, -EINVAL, "Tar entry '%s': refusing %s.", e->path, why);
        if (path[0] == '\0')
                return 0; /* the root itself: it stays as diskd made it */

        name = strrchr(path, '/');
        name = name ? name + 1 : path;
        if (strncmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0) {
                bool opaque = streq(name, WHITEOUT_OPAQUE);
                const char *target = opaque ? NULL : name + strlen(WHITEOUT_PREFIX);

                if (!opaque && (!*target || streq(target, ".") || streq(target, "..")))
                        return error_set(l->error, -EINVAL, "Tar entry '%s': a whiteout without a name.", e->path);
                dir_fd = open_parent(l, e->path, path, /* create= */ false, &name);
                if (dir_fd == -ENOENT)
                        return 0; /* nothing below to hide */
                if (dir_fd < 0)
                        return dir_fd;
                if (!opaque) {
                        r = rm_rf_at(dir_fd, target);
                        if (r < 0 && r != -ENOENT)
                                return error_set(l->error, r, "Tar entry '%s': cannot remove '%s': %s.", e->path, target,
                                            strerror(-r));
                        l->stats->whiteouts++;
                        return 0;
                }
                /* Opaque: hide every lower entry of the directory, keep what
                 * this layer put there. */
                _cleanup_(closedirp) DIR *d = NULL;
                struct dirent *de;
                size_t plen = (size_t) (name - path); /* "dir/" including the slash, 0 at the root */
                int fd = dup(dir_fd);
                if (fd < 0 || !(d = fdopendir(fd))) {
                        safe_close(fd);
                        return error_set(l->error, negative_errno(), "Tar entry '%s': cannot read its directory: %m.",
                                    e->path);
                }
                while ((de = readdir(d))) {
                        char child[TAR_PATH_MAX];
                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        if (plen + strlen(de->d_name) + 1 > sizeof(child))
                                continue;
                        memcpy(child, path, plen);
                        strcpy(child + plen, de->d_name);
                        if (layer_made(l, child))
                                continue;
                        r = rm_rf_at(dir_fd, de->d_name);
                        if (r < 0 && r != -ENOENT)
                                return error_set(l->error, r, "Tar entry '%s': cannot empty the directory: %s.", e->path,
                                            strerror(-r));
                }
                l->stats->opaque_dirs++;
                return 0;
        }

        if (e->type == '3' || e->type == '4' || e->type == '6') {
                l->stats->skipped_devices++;
                return 0;
        }
        if (e->type == '0' && l->stats->bytes + e->size > l->limits->max_bytes)
                return error_set(l->error, -E2BIG, "Tar entry '%s': the image unpacks to more than %" PRIu64 " bytes "
                            "(max_image_bytes in disk.conf).", e->path, l->limits->max_bytes);

        r = layer_remember(l, path);
        if (r < 0)
                return r;
        dir_fd = open_parent(l, e->path, path, /* create= */ true, &name);
        if (dir_fd < 0)
                return dir_fd;
        r = clear_for(dir_fd, name, /* want_dir= */ e->type == '5', &is_dir);
        if (r < 0)
                return error_set(l->error, r, "Tar entry '%s': cannot replace what is there: %s.", e->path, strerror(-r));

        switch (e->type) {
        case '5':
                if (!is_dir && mkdirat(dir_fd, name, 0755) < 0)
                        return error_set(l->error, negative_errno(), "Tar entry '%s': cannot create it: %m.", e->path);
                break;
        case '0':
                r = write_file(l, rd, dir_fd, name, e);
                if (r < 0)
                        return r;
                l->stats->bytes += e->size;
                break;
        case '2':
                if (!e->link[0])
                        return error_set(l->error, -EINVAL, "Tar entry '%s': a symlink with an empty target.", e->path);
                if (symlinkat(e->link, dir_fd, name) < 0)
                        return error_set(l->error, negative_errno(), "Tar entry '%s': cannot create it: %m.", e->path);
                break;
        case '1': {
                _cleanup_close_ int link_dir = -EBADF;
                char target[TAR_PATH_MAX];
                const char *link_name;
                struct stat st;

                r = path_normalize(e->link, target, &why);
                if (r < 0 || !target[0])
                        return error_set(l->error, -EINVAL, "Tar entry '%s': refusing a hard link to '%s', outside the tree.",
                                    e->path, e->link);
                link_dir = open_parent(l, e->path, target, /* create= */ false, &link_name);
                if (link_dir < 0 && link_dir != -ENOENT)
                        return link_dir; /* through a symlink: open_parent said so */
                if (link_dir < 0 || fstatat(link_dir, link_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return error_set(l->error, -EINVAL, "Tar entry '%s': refusing a hard link to '%s', which is not in "
                                    "the tree.", e->path, e->link);
                if (S_ISDIR(st.st_mode))
                        return error_set(l->error, -EINVAL, "Tar entry '%s': refusing a hard link to directory '%s'.",
                                    e->path, e->link);
                /* linkat without AT_SYMLINK_FOLLOW links a symlink itself. */
                if (linkat(link_dir, link_name, dir_fd, name, 0) < 0)
                        return error_set(l->error, negative_errno(), "Tar entry '%s': cannot link it: %m.", e->path);
                return 0; /* the link shares its target's metadata */
        }
        }
        set_meta(dir_fd, name, e);
        return 0;
}

int tar_unpack_layer(int root_fd, TarReadFn read, void *userdata, const TarLimits *limits, TarStats *stats,
                     char **ret_error) {
        TarLimits lim = limits ? *limits : TAR_LIMITS_DEFAULT;
        TarReader *rd = NULL;
        Layer l = { .root_fd = root_fd, .limits = &lim, .stats = stats, .error = ret_error };
        TarEntry *e;
        int r;

        e = malloc(sizeof(*e));
        if (!e)
                return -ENOMEM;
        r = tar_reader_new(read, userdata, &lim, &rd);
        if (r < 0) {
                free(e);
                return error_set(ret_error, r, "Cannot read the layer: %s.", strerror(-r));
        }
        while ((r = tar_reader_next(rd, e, ret_error)) > 0) {
                r = apply_entry(&l, rd, e);
                if (r < 0)
                        break;
        }
        for (size_t i = 0; i < l.n_paths; i++)
                free(l.paths[i]);
        free(l.paths);
        free(e);
        tar_reader_free(rd);
        return r < 0 ? r : 0;
}

static ssize_t fd_read(void *userdata, void *buf, size_t n) {
        ssize_t k = read(*(int *) userdata, buf, n);
        return k < 0 ? negative_errno() : k;
}

int tar_unpack_layer_fd(int root_fd, int fd, const TarLimits *limits, TarStats *stats, char **ret_error) {
        return tar_unpack_layer(root_fd, fd_read, &fd, limits, stats, ret_error);
}
