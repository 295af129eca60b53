/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "disk-exec.h"
#include "macro.h"

extern char **environ;

#define OUTPUT_MAX 4096

int disk_exec(char *const argv[], char **ret_output) {
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        sigset_t none;
        _cleanup_close_ int rd = -EBADF;
        int pipefd[2], status, r;
        char buf[OUTPUT_MAX + 1];
        size_t len = 0;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return negative_errno();
        rd = pipefd[0];

        r = posix_spawn_file_actions_init(&actions);
        if (r != 0) {
                safe_close(pipefd[1]);
                return -r;
        }
        /* The child gets stdout and stderr on the pipe (dup2 clears
         * O_CLOEXEC on the copies) and nothing on stdin. */
        (void) posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        (void) posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
        (void) posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
        /* The daemon blocks SIGTERM & co. for signalfd; the tool must not
         * inherit that mask. */
        (void) posix_spawnattr_init(&attr);
        sigemptyset(&none);
        (void) posix_spawnattr_setsigmask(&attr, &none);
        (void) posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
        r = posix_spawnp(&pid, argv[0], &actions, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
        safe_close(pipefd[1]);
        if (r != 0)
                return -r;

        for (;;) {
                char tmp[1024];
                ssize_t n = read(rd, tmp, sizeof(tmp));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                size_t k = MIN((size_t) n, OUTPUT_MAX - len);
                memcpy(buf + len, tmp, k);
                len += k;
        }
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
                len--;
        buf[len] = '\0';

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        if (ret_output) {
                *ret_output = strdup(buf);
                if (!*ret_output)
                        return -ENOMEM;
        }
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}
