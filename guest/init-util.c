/* SPDX-License-Identifier: MIT */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init-util.h"

void say(const char *format, ...) {
        char buf[512];
        va_list ap;
        int saved = errno, n;

        n = snprintf(buf, sizeof(buf), "hostmesh-init: ");
        va_start(ap, format);
        errno = saved;
        n += vsnprintf(buf + n, sizeof(buf) - n, format, ap);
        va_end(ap);
        if (n >= (int) sizeof(buf) - 1)
                n = sizeof(buf) - 2;
        buf[n++] = '\n';
        (void) !write(STDERR_FILENO, buf, n);
        errno = saved;
}

uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

ssize_t read_text(const char *path, char *buf, size_t size) {
        ssize_t n;
        int fd;

        if (size == 0)
                return -EINVAL;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                n = -errno;
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        return n;
}

int write_text(const char *path, const char *text) {
        size_t n = strlen(text);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        ssize_t k;

        if (fd < 0)
                return -errno;
        k = write(fd, text, n);
        if (k < 0)
                k = -errno;
        close(fd);
        return k < 0 ? (int) k : (size_t) k == n ? 0 : -EIO;
}

int mkdir_p(const char *path, mode_t mode) {
        char buf[512];

        if (strlen(path) >= sizeof(buf))
                return -ENAMETOOLONG;
        strcpy(buf, path);
        for (char *p = buf + 1; *p; p++)
                if (*p == '/') {
                        *p = 0;
                        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                                return -errno;
                        *p = '/';
                }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int sysfs_find_by_attr(const char *dir, const char *prefix, const char *attr, const char *value, char *ret,
                       size_t size) {
        DIR *d = opendir(dir);
        struct dirent *de;
        int r = -ENODEV;

        if (!d)
                return -ENODEV;
        while ((de = readdir(d))) {
                char path[300], line[128];

                if (de->d_name[0] == '.' || strncmp(de->d_name, prefix, strlen(prefix)) != 0 ||
                    strlen(de->d_name) > 64)
                        continue;
                snprintf(path, sizeof(path), "%s/%s/%s", dir, de->d_name, attr);
                if (read_text(path, line, sizeof(line)) <= 0)
                        continue;
                line[strcspn(line, "\n")] = 0;
                if (strcmp(line, value) == 0) {
                        snprintf(ret, size, "%s", de->d_name);
                        r = 0;
                        break;
                }
        }
        closedir(d);
        return r;
}

pid_t spawn_logged(const char *log_path, const char *path, char *const argv[], char *const envp[]) {
        return spawn_logged_fd(log_path, path, argv, envp, -1);
}

pid_t spawn_logged_fd(const char *log_path, const char *path, char *const argv[], char *const envp[], int pass_fd) {
        pid_t pid = fork();

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                sigset_t ss;
                int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

                sigemptyset(&ss);
                sigprocmask(SIG_SETMASK, &ss, NULL);
                setsid();
                if (log >= 0) {
                        dup2(log, STDOUT_FILENO);
                        dup2(log, STDERR_FILENO);
                }
                /* dup2 clears close-on-exec; the same fd number needs it cleared by hand. */
                if (pass_fd >= 0 && (pass_fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(pass_fd, 3)) < 0)
                        _exit(127);
                execve(path, argv, envp);
                _exit(127);
        }
        return pid;
}
