/* SPDX-License-Identifier: MIT */
/* Images pulled from inside the instance, through the host (see
 * init-pull.h). Static, libc only, like the rest of hostmesh-init. */

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init-pull.h"
#include "init-util.h"

#define PULL_CLIENTS_MAX (PULL_POLL_MAX - 1)
#define PULL_MOUNTS_DIR "/run/hostmesh/pulls"
/* diskd's images are at most this big (vmmd refuses larger files too). */
#define PULL_FILE_MAX (64ULL << 30)
#define DOCKER_CLI "/usr/bin/docker"
#define DOCKER_ENGINE_SOCKET "/run/hostmesh/docker/engine.sock"

typedef enum PullState {
        PULL_FREE,
        PULL_READING,    /* reading the proxy's request line */
        PULL_FETCHING,   /* asked the host; DATA frames go to the file */
        PULL_IMPORTING,  /* tar | docker import runs */
} PullState;

typedef struct Pull {
        PullState state;
        int client_fd;
        char line[PULL_REQUEST_MAX];
        size_t line_len;
        uint32_t id;
        char ref[256];
        int file_fd;
        char file[128], mnt[128];
        int write_error;     /* errno of the first failed write; the rest are dropped */
        uint64_t bytes;
        pid_t import_pid;
        uint64_t start_usec;
} Pull;

static Pull pulls[PULL_CLIENTS_MAX];
static int listen_fd = -1;
static PullSendFunc send_frame;
static uint32_t next_id = 1;

void pull_set_sender(PullSendFunc send) {
        send_frame = send;
}

int pull_listen(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (listen_fd >= 0)
                return 0;
        if (!send_frame)
                return -ENOTCONN;
        (void) mkdir_p("/run/hostmesh/docker", 0700);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        strcpy(sa.sun_path, PULL_SOCKET);
        (void) unlink(PULL_SOCKET);
        /* Root only: the proxies run as root; the containers do not see
         * this directory (each gets its own socket bind-mounted). */
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || chmod(PULL_SOCKET, 0600) < 0 || listen(fd, 8) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++)
                pulls[i] = (Pull){ .client_fd = -1, .file_fd = -1 };
        listen_fd = fd;
        return 0;
}

/* The proxy's answer: "<status> <message>\n", then the connection ends. */
static void pull_answer(Pull *p, AgentPullStatus status, const char *message) {
        char line[1200];
        int n;

        if (p->client_fd >= 0) {
                n = snprintf(line, sizeof(line), "%u %.1024s\n", (unsigned) status, message ? message : "");
                for (char *c = line; c < line + n - 1; c++)
                        if (*c == '\n' || *c == '\r')
                                *c = ' ';
                (void) send(p->client_fd, line, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
                close(p->client_fd);
        }
        if (p->file_fd >= 0)
                close(p->file_fd);
        if (p->file[0])
                (void) unlink(p->file);
        *p = (Pull){ .client_fd = -1, .file_fd = -1 };
}

static unsigned pulls_fetching(void) {
        unsigned n = 0;
        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++)
                n += pulls[i].state == PULL_FETCHING;
        return n;
}

/* A whole request line: check it, then ask the host. */
static void pull_start(Pull *p) {
        struct stat st_disk, st_mnt;
        AgentBuffer b = {};
        int r;

        p->line[p->line_len] = 0;
        if (p->line_len == 0 || p->line_len > 255 || !agent_image_ref_valid(p->line))
                return pull_answer(p, AGENT_PULL_INVALID, "not a valid image reference");
        if (pulls_fetching() >= AGENT_IMAGE_PULLS_MAX)
                return pull_answer(p, AGENT_PULL_BUSY, "too many pulls in progress in this instance; try again");
        strcpy(p->ref, p->line);
        p->id = next_id++;
        if (next_id == 0)
                next_id = 1;
        /* Next to dockerd's data: the instance disk when there is one,
         * else the guest's memory. */
        bool on_disk = stat("/mnt/disk", &st_disk) == 0 && stat("/mnt", &st_mnt) == 0 && st_disk.st_dev != st_mnt.st_dev;
        const char *dir = on_disk ? "/mnt/disk/hostmesh-pulls" : "/var/lib/hostmesh-pulls";
        (void) mkdir_p(dir, 0700);
        snprintf(p->file, sizeof(p->file), "%s/%u.img", dir, (unsigned) p->id);
        p->file_fd = open(p->file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (p->file_fd < 0) {
                say("pull: cannot create %s: %m", p->file);
                p->file[0] = 0;
                return pull_answer(p, AGENT_PULL_FAILED, "the instance cannot store the image");
        }
        r = agent_image_pull_encode(&b, p->id, p->ref);
        if (r >= 0)
                r = send_frame(&b);
        else
                agent_buffer_done(&b);
        if (r < 0)
                return pull_answer(p, AGENT_PULL_UNAVAILABLE, "the host cannot be asked");
        p->state = PULL_FETCHING;
        p->start_usec = now_usec(CLOCK_MONOTONIC);
}

size_t pull_poll_fds(struct pollfd *p) {
        size_t n = 0;

        if (listen_fd < 0)
                return 0;
        p[n++] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++)
                p[n++] = (struct pollfd){ .fd = pulls[i].state == PULL_READING ? pulls[i].client_fd : -1,
                                          .events = POLLIN };
        return n;
}

void pull_on_poll(const struct pollfd *p, size_t n) {
        if (n == 0)
                return;
        for (size_t i = 0; i + 1 < n && i < PULL_CLIENTS_MAX; i++) {
                Pull *q = &pulls[i];
                ssize_t k;

                if (q->state != PULL_READING || p[i + 1].fd != q->client_fd || !p[i + 1].revents)
                        continue;
                k = read(q->client_fd, q->line + q->line_len, sizeof(q->line) - 1 - q->line_len);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (k <= 0) {
                        pull_answer(q, AGENT_PULL_INVALID, "no request");
                        continue;
                }
                q->line_len += (size_t) k;
                char *nl = memchr(q->line, '\n', q->line_len);
                if (nl) {
                        q->line_len = (size_t) (nl - q->line);
                        pull_start(q);
                } else if (q->line_len >= sizeof(q->line) - 1)
                        pull_answer(q, AGENT_PULL_INVALID, "request too long");
        }
        if (p[0].revents & POLLIN)
                for (;;) {
                        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                        struct ucred cred;
                        socklen_t len = sizeof(cred);
                        Pull *slot = NULL;

                        if (fd < 0)
                                break;
                        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
                                close(fd);
                                continue;
                        }
                        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++)
                                if (pulls[i].state == PULL_FREE) {
                                        slot = &pulls[i];
                                        break;
                                }
                        if (!slot) {
                                static const char busy[] = "5 too many pulls in progress in this instance; try again\n";
                                (void) send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                                close(fd);
                                continue;
                        }
                        *slot = (Pull){ .state = PULL_READING, .client_fd = fd, .file_fd = -1 };
                }
}

static Pull *pull_by_id(uint32_t id) {
        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++)
                if (pulls[i].state == PULL_FETCHING && pulls[i].id == id)
                        return &pulls[i];
        return NULL;
}

/* Attaches the image file to a free loop device (read-only, freed by the
 * kernel when unmounted) and mounts its ext4 read-only on dir. */
static int loop_mount(const char *file, const char *dir) {
        struct loop_config cfg = { .info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR };
        char dev[32];
        int ctl, n, lfd = -1, ffd = -1, r = 0;

        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return -errno;
        n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
                r = -errno;
                goto out;
        }
        snprintf(dev, sizeof(dev), "/dev/loop%d", n);
        lfd = open(dev, O_RDONLY | O_CLOEXEC);
        ffd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (lfd < 0 || ffd < 0) {
                r = -errno;
                goto out;
        }
        cfg.fd = (uint32_t) ffd;
        if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
                r = -errno;
                goto out;
        }
        if (mount(dev, dir, "ext4", MS_RDONLY | MS_NOATIME | MS_NODEV | MS_NOSUID, "noload") < 0) {
                r = -errno;
                (void) ioctl(lfd, LOOP_CLR_FD, 0);
        }
out:
        if (ffd >= 0)
                close(ffd);
        if (lfd >= 0)
                close(lfd);
        close(ctl);
        return r;
}

static void pull_import(Pull *p, const AgentImageEnd *e) {
        static const char script[] =
                "d=$1; shift; /bin/tar -C \"$d\" -c . | " DOCKER_CLI " -H unix://" DOCKER_ENGINE_SOCKET " import \"$@\" >/dev/null";
        char *argv[8 + 2 * AGENT_IMAGE_CHANGES_MAX];
        char *const envp[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", NULL };
        size_t n = 0;
        int r;

        if (ftruncate(p->file_fd, (off_t) e->size) < 0 || fsync(p->file_fd) < 0) {
                say("pull: cannot finish %s: %m", p->file);
                return pull_answer(p, AGENT_PULL_FAILED, "no room in the instance for the image");
        }
        close(p->file_fd);
        p->file_fd = -1;
        snprintf(p->mnt, sizeof(p->mnt), PULL_MOUNTS_DIR "/%u", (unsigned) p->id);
        r = mkdir_p(p->mnt, 0700);
        if (r >= 0)
                r = loop_mount(p->file, p->mnt);
        if (r < 0) {
                say("pull: cannot mount the image of %s: %s", p->ref, strerror(-r));
                p->mnt[0] = 0;
                return pull_answer(p, AGENT_PULL_FAILED, "the instance could not mount the image it received");
        }
        /* The loop device holds the file now. */
        (void) unlink(p->file);
        p->file[0] = 0;
        argv[n++] = "sh";
        argv[n++] = "-c";
        argv[n++] = (char *) script;
        argv[n++] = "sh";
        argv[n++] = p->mnt;
        for (char **c = e->changes; c && *c; c++) {
                argv[n++] = "--change";
                argv[n++] = *c;
        }
        argv[n++] = "-";
        argv[n++] = p->ref;
        argv[n] = NULL;
        p->import_pid = spawn_logged("/run/dockerd.log", "/bin/sh", argv, envp);
        if (p->import_pid < 0) {
                (void) umount2(p->mnt, MNT_DETACH);
                return pull_answer(p, AGENT_PULL_FAILED, "the instance could not start the import");
        }
        p->state = PULL_IMPORTING;
}

void pull_host_gone(void) {
        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++)
                if (pulls[i].state == PULL_FETCHING) {
                        say("pull: %s: the host went away before answering", pulls[i].ref);
                        pull_answer(&pulls[i], AGENT_PULL_UNAVAILABLE,
                                    "the host's vmm went away during the pull (it restarts on its own); pull again");
                }
}

void pull_on_frame(const AgentFrame *f) {
        Pull *p = pull_by_id(f->id);

        if (!p)
                return; /* a pull whose proxy went away */
        if (f->type == AGENT_IMAGE_DATA) {
                const uint8_t *data;
                uint64_t offset;
                size_t size;

                if (p->write_error || agent_image_data_decode(f, &offset, &data, &size) < 0)
                        return;
                if (offset > PULL_FILE_MAX || size > PULL_FILE_MAX - offset) {
                        p->write_error = EFBIG;
                        return;
                }
                while (size > 0) {
                        ssize_t k = pwrite(p->file_fd, data, size, (off_t) offset);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0) {
                                p->write_error = k < 0 ? errno : EIO;
                                return;
                        }
                        data += k;
                        offset += (uint64_t) k;
                        size -= (size_t) k;
                        p->bytes += (uint64_t) k;
                }
                return;
        }
        if (f->type != AGENT_IMAGE_END)
                return;
        AgentImageEnd e = {};
        if (agent_image_end_decode(f, &e) < 0)
                return pull_answer(p, AGENT_PULL_FAILED, "the host's answer was malformed");
        if (e.status != AGENT_PULL_OK)
                pull_answer(p, (AgentPullStatus) e.status, e.message);
        else if (p->write_error || e.size > PULL_FILE_MAX) {
                char why[256];
                snprintf(why, sizeof(why), "no room in the instance for the image (%s)",
                         strerror(p->write_error ? p->write_error : EFBIG));
                pull_answer(p, AGENT_PULL_FAILED, why);
        } else {
                say("pull: %s received (%llu bytes in %llu ms), importing", p->ref, (unsigned long long) p->bytes,
                    (unsigned long long) ((now_usec(CLOCK_MONOTONIC) - p->start_usec) / 1000));
                pull_import(p, &e);
        }
        agent_image_end_done(&e);
}

void pull_child_exited(pid_t pid, int status) {
        for (size_t i = 0; i < PULL_CLIENTS_MAX; i++) {
                Pull *p = &pulls[i];

                if (p->state != PULL_IMPORTING || p->import_pid != pid)
                        continue;
                (void) umount2(p->mnt, MNT_DETACH);
                (void) rmdir(p->mnt);
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                        say("pull: %s in dockerd after %llu ms", p->ref,
                            (unsigned long long) ((now_usec(CLOCK_MONOTONIC) - p->start_usec) / 1000));
                        pull_answer(p, AGENT_PULL_OK, "");
                } else {
                        char why[160];
                        snprintf(why, sizeof(why),
                                 "importing the image into dockerd failed (exit %d); see /run/dockerd.log in the instance",
                                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
                        pull_answer(p, AGENT_PULL_FAILED, why);
                }
                return;
        }
}
