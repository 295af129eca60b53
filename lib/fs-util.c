/* SPDX-License-Identifier: MIT */
/* File helpers shared by the daemons: atomic replacement of state files,
 * bounded reads, directory creation and path building. */

#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "macro.h"

static int write_all(int fd, const void *data, size_t len) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

static int fsync_parent_directory(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int fd = -EBADF;

        if (!copy)
                return -ENOMEM;
        fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
                return tmp = NULL, -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        /* mkostemp() creates 0600; give the file its final mode before the
         * rename makes it visible. */
        if (fchmod(fd, mode) < 0) {
                r = negative_errno();
                goto fail;
        }
        r = write_all(fd, data, len);
        if (r < 0)
                goto fail;
        if (fsync(fd) < 0) {
                r = negative_errno();
                goto fail;
        }
        if (rename(tmp, path) < 0) {
                r = negative_errno();
                goto fail;
        }
        return fsync_parent_directory(path);
fail:
        (void) unlink(tmp);
        return r;
}

int read_full_file(const char *path, char **ret, size_t *ret_len, size_t max_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, alloc = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();

        for (;;) {
                ssize_t n;

                if (alloc - len < 2) {
                        size_t want = alloc ? alloc * 2 : 4096;
                        char *p;
                        /* One byte beyond max_size tells "too big" from "exactly max". */
                        if (want > max_size + 2)
                                want = max_size + 2;
                        if (want <= alloc)
                                return -EFBIG;
                        p = realloc(buf, want);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        alloc = want;
                }
                n = read(fd, buf + len, alloc - len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > max_size)
                        return -EFBIG;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        if (ret_len)
                *ret_len = len;
        return 0;
}

int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);
        struct stat st;

        if (!p)
                return -ENOMEM;
        if (!*p)
                return -EINVAL;
        for (char *s = p + 1;; s++) {
                bool end = *s == '\0';
                if (*s != '/' && !end)
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0) {
                        if (errno != EEXIST)
                                return negative_errno();
                        if (stat(p, &st) < 0)
                                return negative_errno();
                        if (!S_ISDIR(st.st_mode))
                                return -ENOTDIR;
                }
                if (end)
                        break;
                *s = '/';
                while (s[1] == '/')
                        s++;
                if (s[1] == '\0')
                        break;
        }
        return 0;
}

char *path_join(const char *a, const char *b) {
        size_t la, lb;
        char *r;

        if (!a || !*a)
                return b ? strdup(b) : NULL;
        if (!b || !*b)
                return strdup(a);
        la = strlen(a);
        while (la > 1 && a[la - 1] == '/')
                la--;
        while (*b == '/')
                b++;
        lb = strlen(b);
        r = malloc(la + 1 + lb + 1);
        if (!r)
                return NULL;
        memcpy(r, a, la);
        if (a[la - 1] != '/')
                r[la++] = '/';
        memcpy(r + la, b, lb);
        r[la + lb] = '\0';
        return r;
}

int filename_is_valid(const char *name, size_t max_len) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n == 0 || n > max_len)
                return false;
        if (streq(name, ".") || streq(name, ".."))
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '_' || *p == '-'))
                        return false;
        return true;
}
