/* SPDX-License-Identifier: MIT */
/* Containers in the guest (see init-containers.h). Static, libc only, like
 * the rest of hostmesh-init; diagnostics go to the console. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init-containers.h"
#include "init-pull.h"
#include "init-user.h"
#include "init-util.h"

#define SYSTEM_MOUNT "/run/hostmesh/system"
#define CONTAINERS_DIR "/run/hostmesh/containers"
#define CONTAINERD_SOCKET "/run/containerd/containerd.sock"
#define CONTAINERD_WAIT_USEC (60ULL * 1000000ULL)
#define CONTAINERS_MAX 16
#define CTR "/usr/bin/ctr"
/* The OCI runtime of the guest's containers, ours (namespace "default") and
 * dockerd's ("moby"): crun does in C what runc does in Go, and each of
 * create, start and delete is a new process. Under TCG a Go start costs
 * hundreds of milliseconds; see guest/README.md. */
#define OCI_RUNTIME "/usr/bin/crun"
#define TASKS_DIR "/run/containerd/io.containerd.runtime.v2.task/default"
#define PREVIOUS_TASK_WAIT_USEC (15 * 1000 * 1000ULL)
/* Docker in the guest: one dockerd for the instance, on the guest's
 * containerd (its containers in namespace "moby"), reached by nothing but
 * the per-container proxies; each proxy listens on DOCKER_DIR/<id>.sock,
 * which is bind-mounted into its container. */
#define DOCKER_DIR "/run/hostmesh/docker"
#define DOCKER_ENGINE_SOCKET DOCKER_DIR "/engine.sock"
#define DOCKER_PROXY "/hostmesh/dockerproxy-guest"
#define DOCKER_CLI "/usr/bin/docker"
#define DOCKER_WAIT_USEC (120ULL * 1000000ULL)
#define IMAGES_DIR "/run/hostmesh/images"
#define GUEST_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* 10.89.0.0/24 inside the guest: the instance pool is 10.x on the host side
 * too, but the bridge never leaves the guest (its traffic is masqueraded to
 * eth0's address). */
#define BRIDGE_CONFLIST                                                                            \
        "{\"cniVersion\":\"1.0.0\",\"name\":\"hostmesh\",\"plugins\":[{\"type\":\"bridge\","        \
        "\"bridge\":\"hm-br0\",\"isGateway\":true,\"ipMasq\":true,\"ipam\":{\"type\":\"host-local\"," \
        "\"ranges\":[[{\"subnet\":\"10.89.0.0/24\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"}]}}]}\n"

/* Exported ports of BRIDGE containers: host-local (the CNI IPAM plugin)
 * records each address it leases as a file named for the address in this
 * directory, holding the container's id ("default-<id>", as ctr names it
 * to CNI) on its first line. An inotify watch on it tells hostmesh-init
 * the container's address as soon as it is leased, before the bridge
 * plugin has finished and long before the task runs; the guest's port is
 * then forwarded to the container's by a DNAT rule (iptables-nft, from the
 * system disk, as CNI's masquerade already is). */
#define CNI_LEASES_DIR "/var/lib/cni/networks/hostmesh"
#define IPTABLES_RESTORE "/usr/sbin/iptables-restore"
#define PORTS_CHAIN "HOSTMESH-PORTS"
#define PORTS_LOG "/run/hostmesh-ports.log"

typedef struct Container {
        char id[AGENT_CONTAINER_NAME_MAX + 1];
        char name[AGENT_CONTAINER_NAME_MAX + 1];
        uint16_t ports[AGENT_PORTS_MAX];  /* BRIDGE only: to forward from the guest's eth0 */
        uint32_t n_ports;
        bool forwarded;
        /* Its Docker proxy, when it asked for Docker: the listening socket
         * is init's (so a restarted proxy serves the same socket file the
         * container has bind-mounted), the process is supervised. */
        bool proxy_listening;
        int proxy_fd;
        pid_t proxy_pid;
        unsigned proxy_restarts;
        bool pulls;                 /* its proxy answers pulls (the host can) */
        char root[256];
} Container;

static char *xasprintf(const char *format, ...) __attribute__((format(printf, 1, 2)));

static Container containers[CONTAINERS_MAX];
static bool system_ready;
static pid_t containerd_pid, modules_pid, dockerd_pid;
static char nameserver[64], domain[256];
static int leases_fd = -1;
static bool ports_chain_made;

bool containers_requested(void) {
        char buf[4096];

        if (read_text("/proc/cmdline", buf, sizeof(buf)) <= 0)
                return false;
        for (char *w = strtok(buf, " \n"); w; w = strtok(NULL, " \n"))
                if (strcmp(w, "hostmesh.containers=1") == 0)
                        return true;
        return false;
}

/* The block device whose virtio-blk serial is serial ("vdb"), from sysfs:
 * without udev there is no /dev/disk/by-id. */
int containers_find_disk(const char *serial, char *ret, size_t size) {
        char name[48];
        int r = sysfs_find_by_attr("/sys/block", "vd", "serial", serial, name, sizeof(name));

        if (r < 0)
                return r;
        snprintf(ret, size, "/dev/%s", name);
        return 0;
}

/* Loads the modules the system disk lists, in its order. Modules built
 * into the kernel are not on the list; one that does not load (another
 * kernel) is logged and skipped. */
static void load_container_modules(void) {
        char buf[4096];

        if (read_text(SYSTEM_MOUNT "/hostmesh/modules/modules.order", buf, sizeof(buf)) <= 0)
                return;
        for (char *name = strtok(buf, "\n"); name; name = strtok(NULL, "\n")) {
                char path[300];
                int mfd;

                if (strchr(name, '/'))
                        continue;
                snprintf(path, sizeof(path), SYSTEM_MOUNT "/hostmesh/modules/%s", name);
                mfd = open(path, O_RDONLY | O_CLOEXEC);
                if (mfd < 0)
                        continue;
                if (syscall(SYS_finit_module, mfd, "", 0) < 0 && errno != EEXIST)
                        say("containers: loading %s failed: %m, ignoring", name);
                close(mfd);
        }
}

/* The system disk's /usr, /lib and /lib64 over the initramfs's (which has
 * none of them but /lib/modules, no longer needed once modules are in). */
static int bind_system(void) {
        static const char *const dirs[] = { "usr", "lib", "lib64", "opt" };

        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                char from[128], to[64];
                struct stat st;

                snprintf(from, sizeof(from), SYSTEM_MOUNT "/%s", dirs[i]);
                snprintf(to, sizeof(to), "/%s", dirs[i]);
                if (stat(from, &st) < 0)
                        continue;
                (void) mkdir(to, 0755);
                if (mount(from, to, NULL, MS_BIND | MS_REC, NULL) < 0)
                        return -errno;
        }
        /* Files iptables and the CNI plugins read from /etc. */
        static const char *const etc[] = { "protocols", "services", "ethertypes" };
        for (size_t i = 0; i < sizeof(etc) / sizeof(etc[0]); i++) {
                char from[128], to[64];
                snprintf(from, sizeof(from), SYSTEM_MOUNT "/etc/%s", etc[i]);
                snprintf(to, sizeof(to), "/etc/%s", etc[i]);
                if (access(from, F_OK) == 0)
                        (void) symlink(from, to);
        }
        return 0;
}

/* What a container instance needs of containerd: tasks, containers and
 * (for Docker later) the overlayfs snapshotter. The CRI plugin and the
 * snapshotters for other file systems cost seconds of start-up under TCG. */
#define CONTAINERD_CONFIG                                                                               \
        "version = 2\n"                                                                                   \
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", "       \
        "\"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", "                 \
        "\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.tracing.processor.v1.otlp\", "              \
        "\"io.containerd.internal.v1.tracing\", \"io.containerd.internal.v1.opt\"]\n"

static pid_t start_containerd(void) {
        /* The shim finds runc (/usr/sbin) and itself through PATH. */
        char *const envp[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };
        char *const argv[] = { "containerd", "--config", "/etc/containerd/config.toml", "--log-level", "warn", NULL };

        return spawn_logged("/run/containerd.log", "/usr/bin/containerd", argv, envp);
}

void containers_setup(const char *ns, const char *search, bool modular) {
        char dev[64];
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r;

        snprintf(nameserver, sizeof(nameserver), "%s", ns ?: "");
        snprintf(domain, sizeof(domain), "%s", search ?: "");

        /* containerd owns the cgroup tree: v2 only. */
        (void) mkdir("/sys/fs/cgroup", 0755);
        if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "nsdelegate") < 0 &&
            errno != EBUSY) {
                say("containers: mounting cgroup2 failed: %m");
                return;
        }
        r = containers_find_disk(CONTAINERS_SYSTEM_SERIAL, dev, sizeof(dev));
        if (r < 0) {
                say("containers: no system disk (serial %s): %s", CONTAINERS_SYSTEM_SERIAL, strerror(-r));
                return;
        }
        (void) mkdir_p(SYSTEM_MOUNT, 0755);
        if (mount(dev, SYSTEM_MOUNT, "ext4", MS_RDONLY | MS_NOATIME, "noload") < 0) {
                say("containers: mounting the system disk %s failed: %m", dev);
                return;
        }
        uint64_t t1 = now_usec(CLOCK_MONOTONIC);
        /* The modules (netfilter, bridge) matter to bridge networking only:
         * a child loads them while containerd starts. A kernel with
         * everything built in (our own) has none to load, and the system
         * disk's modules are Debian's. */
        if (modular) {
                modules_pid = fork();
                if (modules_pid == 0) {
                        load_container_modules();
                        _exit(0);
                }
                if (modules_pid < 0) {
                        modules_pid = 0;
                        load_container_modules();
                }
        }
        uint64_t t2 = now_usec(CLOCK_MONOTONIC);
        r = bind_system();
        if (r < 0) {
                say("containers: binding the system disk's directories failed: %s", strerror(-r));
                return;
        }
        (void) mkdir_p("/var/lib", 0755);
        (void) mkdir_p("/etc/cni/net.d", 0755);
        (void) mkdir_p("/etc/containerd", 0755);
        r = write_text("/etc/containerd/config.toml", CONTAINERD_CONFIG);
        if (r < 0)
                say("containers: cannot write containerd's configuration: %s", strerror(-r));
        r = write_text("/etc/cni/net.d/10-hostmesh.conflist", BRIDGE_CONFLIST);
        if (r < 0)
                say("containers: cannot write the CNI configuration: %s", strerror(-r));
        (void) write_text("/proc/sys/net/ipv4/ip_forward", "1\n");
        /* ctr run --net-host bind-mounts the guest's resolv.conf and hosts:
         * they must exist, even without a network. */
        if (access("/etc/resolv.conf", F_OK) < 0)
                (void) write_text("/etc/resolv.conf", "");
        containerd_pid = start_containerd();
        if (containerd_pid < 0) {
                say("containers: cannot start containerd: %m");
                return;
        }
        system_ready = true;
        say("containers: system disk %s mounted in %llu us, module loader %llu us, containerd started (pid %d)", dev,
            (unsigned long long) (t1 - t0), (unsigned long long) (t2 - t1), (int) containerd_pid);
}

static bool socket_answers(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok;

        if (fd < 0)
                return false;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        ok = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
        close(fd);
        return ok;
}

static bool containerd_up(void) {
        return socket_answers(CONTAINERD_SOCKET);
}

/* Waits until path accepts connections, or pid exits, or the time is up:
 * 0, -ECHILD, -ETIMEDOUT. */
static int wait_socket(const char *path, pid_t pid, uint64_t timeout_usec) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + timeout_usec;

        while (!socket_answers(path)) {
                if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid)
                        return -ECHILD;
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        return -ETIMEDOUT;
                nanosleep(&(struct timespec){ .tv_nsec = 20 * 1000 * 1000 }, NULL);
        }
        return 0;
}

/* Runs argv (absolute path) with its output in log and waits for it: its
 * exit status, or a negative errno. Only while a container is prepared,
 * like the other waits there. */
static int run_and_wait(char *const *argv, const char *log_path) {
        char *const envp[] = { GUEST_PATH, "HOME=/root", NULL };
        pid_t pid = spawn_logged(log_path, argv[0], argv, envp);
        int status;

        if (pid < 0)
                return (int) pid;
        if (waitpid(pid, &status, 0) != pid)
                return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* dockerd on the guest's containerd. Its data goes on the instance disk
 * when there is one (a RAM-backed root is small), else in the guest's
 * tmpfs root; the storage driver is dockerd's own pick (overlay2 on both).
 * DOCKER_RAMDISK: the guest's root is the initramfs, which pivot_root(2)
 * refuses, so its containers are started without it (as ours are, with
 * ctr --no-pivot); the micro-VM is the isolation boundary. cgroups: v2,
 * cgroupfs (there is no systemd), under /sys/fs/cgroup/docker. Its
 * runtime is crun too (see OCI_RUNTIME). */
static pid_t start_dockerd(void) {
        struct stat st_disk, st_mnt;
        bool on_disk = stat("/mnt/disk", &st_disk) == 0 && stat("/mnt", &st_mnt) == 0 && st_disk.st_dev != st_mnt.st_dev;
        pid_t pid;

        (void) mkdir_p(DOCKER_DIR, 0700);
        char *const envp[] = { GUEST_PATH, "DOCKER_RAMDISK=1", "HOME=/root", NULL };
        char *const argv[] = { "dockerd", "--host=unix://" DOCKER_ENGINE_SOCKET, "--containerd=" CONTAINERD_SOCKET,
                               on_disk ? "--data-root=/mnt/disk/docker" : "--data-root=/var/lib/docker",
                               "--exec-root=/run/docker", "--pidfile=/run/docker.pid",
                               "--exec-opt=native.cgroupdriver=cgroupfs", "--add-runtime=crun=" OCI_RUNTIME,
                               "--default-runtime=crun", "--log-level=warn", NULL };
        pid = spawn_logged("/run/dockerd.log", "/usr/sbin/dockerd", argv, envp);
        if (pid > 0)
                say("containers: dockerd started (pid %d, data on %s)", (int) pid,
                    on_disk ? "the instance disk" : "the guest's memory");
        return pid;
}

/* dockerd is supervised: when it exits (killed, crashed), it is started
 * again, at most DOCKERD_RESTARTS_MAX times per instance; the proxies
 * answer 502 "The Docker engine is not reachable." meanwhile. */
#define DOCKERD_RESTARTS_MAX 10

static pid_t spawn_docker_proxy(const Container *c);

/* A Docker proxy is supervised the same way, per container: it serves the
 * same listening socket again, with the records it kept. */
#define PROXY_RESTARTS_MAX 10

static void proxy_exited(Container *c, int status) {
        c->proxy_pid = 0;
        if (c->proxy_restarts >= PROXY_RESTARTS_MAX) {
                say("containers: the Docker proxy of %s exited (status %d) for the %u. time; not starting it again",
                    c->id, status, c->proxy_restarts + 1);
                return;
        }
        c->proxy_restarts++;
        say("containers: the Docker proxy of %s exited (status %d); starting it again", c->id, status);
        pid_t pid = spawn_docker_proxy(c);
        c->proxy_pid = pid > 0 ? pid : 0;
}

void containers_child_exited(pid_t pid, int status) {
        static unsigned restarts;

        if (pid <= 0)
                return;
        for (size_t i = 0; i < CONTAINERS_MAX; i++)
                if (containers[i].proxy_pid == pid) {
                        proxy_exited(&containers[i], status);
                        return;
                }
        if (pid != dockerd_pid)
                return;
        dockerd_pid = 0;
        if (restarts >= DOCKERD_RESTARTS_MAX) {
                say("containers: dockerd exited (status %d) for the %u. time; not starting it again", status,
                    restarts + 1);
                return;
        }
        restarts++;
        say("containers: dockerd exited (status %d); starting it again", status);
        dockerd_pid = start_dockerd();
        if (dockerd_pid < 0)
                dockerd_pid = 0;
}

/* The instance's dockerd, started by the first container that asks for
 * Docker and awaited by every one (a container's command may use
 * docker.sock as soon as it starts). 0 or a negative errno with *ret_error. */
static int ensure_dockerd(char **ret_error) {
        static bool logged;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r;

        if (dockerd_pid > 0 && waitpid(dockerd_pid, NULL, WNOHANG) == dockerd_pid)
                dockerd_pid = 0;
        if (dockerd_pid <= 0) {
                dockerd_pid = start_dockerd();
                if (dockerd_pid < 0) {
                        r = -errno;
                        dockerd_pid = 0;
                        *ret_error = xasprintf("cannot start dockerd: %s", strerror(-r));
                        return r;
                }
        }
        r = wait_socket(DOCKER_ENGINE_SOCKET, dockerd_pid, DOCKER_WAIT_USEC);
        if (r < 0) {
                if (r == -ECHILD)
                        dockerd_pid = 0;
                *ret_error = xasprintf("dockerd did not start (%s); see /run/dockerd.log in the guest",
                                       r == -ETIMEDOUT ? "no answer in 120 s" : "it exited");
                return r;
        }
        if (!logged) {
                logged = true;
                say("containers: dockerd answered after %llu us more", (unsigned long long) (now_usec(CLOCK_MONOTONIC) - t0));
        }
        return 0;
}

/* The image a Docker container was created with, into the instance's
 * dockerd under the reference it was asked by: its read-only disk (the
 * unpacked image diskd made, attached by vmmd) is mounted and imported
 * as one layer. Images thus never reach the guest over the network. Done
 * once per reference (dockerd keeps it on the instance disk). */
static int import_image(const char *id, const char *serial, const char *ref, char **ret_error) {
        char dev[64], dir[256], script[1024];
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r;

        r = containers_find_disk(serial, dev, sizeof(dev));
        if (r < 0) {
                *ret_error = xasprintf("no image disk with serial %s", serial);
                return r;
        }
        snprintf(dir, sizeof(dir), IMAGES_DIR "/%s", id);
        r = mkdir_p(dir, 0755);
        if (r < 0) {
                *ret_error = xasprintf("cannot create %s: %s", dir, strerror(-r));
                return r;
        }
        if (mount(dev, dir, "ext4", MS_RDONLY | MS_NOATIME | MS_NODEV | MS_NOSUID, "noload") < 0 && errno != EBUSY) {
                r = -errno;
                *ret_error = xasprintf("cannot mount the image disk %s: %s", dev, strerror(errno));
                return r;
        }
        /* ref and dir are checked ([A-Za-z0-9._/:@-], no quote can occur). */
        snprintf(script, sizeof(script),
                 DOCKER_CLI " -H unix://" DOCKER_ENGINE_SOCKET " image inspect '%s' >/dev/null 2>&1 && exit 0; "
                 "/bin/tar -C '%s' -c . | " DOCKER_CLI " -H unix://" DOCKER_ENGINE_SOCKET " import - '%s' >/dev/null",
                 ref, dir, ref);
        char *const argv[] = { "/bin/sh", "-c", script, NULL };
        r = run_and_wait(argv, "/run/dockerd.log");
        (void) umount2(dir, MNT_DETACH);
        if (r != 0) {
                *ret_error = xasprintf("importing image %s into dockerd failed (exit %d); see /run/dockerd.log", ref, r);
                return r < 0 ? r : -EIO;
        }
        say("containers: image %s in dockerd after %llu us", ref, (unsigned long long) (now_usec(CLOCK_MONOTONIC) - t0));
        return 0;
}

/* A listening socket at path, accessible to every user (the container's
 * processes run as any; where the socket is bind-mounted is the access
 * control). The fd, or a negative errno. */
static int listen_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        strcpy(sa.sun_path, path);
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || chmod(path, 0666) < 0 || listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* Starts (or starts again) the proxy of c on its socket, with its records
 * kept in DOCKER_DIR/<id>.json (what the container made through Docker
 * stays its own when the proxy restarts). */
static pid_t spawn_docker_proxy(const Container *c) {
        char log_path[256], state[256], listen[256];

        snprintf(log_path, sizeof(log_path), DOCKER_DIR "/%s.log", c->id);
        snprintf(state, sizeof(state), "--state=" DOCKER_DIR "/%s.json", c->id);
        snprintf(listen, sizeof(listen), "--listen=" DOCKER_DIR "/%s.sock", c->id);
        char *const envp[] = { GUEST_PATH, NULL };
        /* With --pull-socket the proxy answers docker pull through us (and
         * the host); without it, pulls are refused as before. */
        char *const argv[] = { "dockerproxy-guest", "--engine", DOCKER_ENGINE_SOCKET, listen, "--listen-fd=3",
                               "--root", (char *) c->root, "--id", (char *) c->id, state,
                               c->pulls ? "--pull-socket" : NULL, PULL_SOCKET, NULL };
        return spawn_logged_fd(log_path, DOCKER_PROXY, argv, envp, c->proxy_fd);
}

/* The container's own proxy, listening on DOCKER_DIR/<id>.sock before its
 * container starts (the socket file is bind-mounted into it). */
static int start_docker_proxy(Container *c, const char *id, const char *root, bool pulls, char *sock, size_t size,
                              char **ret_error) {
        pid_t pid;
        int r;

        snprintf(sock, size, DOCKER_DIR "/%s.sock", id);
        if (c->proxy_listening && strcmp(c->id, id) == 0) {
                if (c->proxy_pid > 0)
                        return 0; /* started for this container already */
        } else if (c->proxy_listening) {
                /* The slot of a container whose set-up failed after its
                 * proxy started: that proxy goes. */
                if (c->proxy_pid > 0)
                        (void) kill(c->proxy_pid, SIGTERM);
                c->proxy_pid = 0;
                close(c->proxy_fd);
                c->proxy_listening = false;
        }
        snprintf(c->id, sizeof(c->id), "%s", id);
        snprintf(c->root, sizeof(c->root), "%s", root);
        c->proxy_restarts = 0;
        c->pulls = pulls;
        if (!c->proxy_listening) {
                r = listen_unix(sock);
                if (r < 0) {
                        *ret_error = xasprintf("cannot listen on %s for the Docker proxy: %s", sock, strerror(-r));
                        return r;
                }
                c->proxy_fd = r;
                c->proxy_listening = true;
        }
        pid = spawn_docker_proxy(c);
        if (pid < 0) {
                r = (int) pid;
                *ret_error = xasprintf("cannot start the Docker proxy: %s", strerror(-r));
                return r;
        }
        c->proxy_pid = pid;
        say("containers: Docker proxy of %s started (pid %d)", id, (int) pid);
        return 0;
}

/* containerd takes a second or more to start under TCG; the first
 * container waits for its socket. */
static int wait_containerd(void) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + CONTAINERD_WAIT_USEC, t0 = now_usec(CLOCK_MONOTONIC);
        static bool logged;

        while (!containerd_up()) {
                if (containerd_pid > 0 && waitpid(containerd_pid, NULL, WNOHANG) == containerd_pid)
                        return -ECHILD;
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        return -ETIMEDOUT;
                nanosleep(&(struct timespec){ .tv_nsec = 20 * 1000 * 1000 }, NULL);
        }
        if (!logged) {
                logged = true;
                say("containers: containerd answered after %llu us more", (unsigned long long) (now_usec(CLOCK_MONOTONIC) - t0));
        }
        return 0;
}

static char *xasprintf(const char *format, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *format, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, format);
        if (vasprintf(&s, format, ap) < 0)
                s = NULL;
        va_end(ap);
        return s;
}

void containers_strv_free(char **l) {
        if (!l)
                return;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
}

/* The container's resolver and hosts: the guest's (dnsd, reached through
 * eth0 with host networking and through the bridge's NAT otherwise). The
 * root is the container's own copy-on-write disk: writing there changes
 * nothing of the image. A symlink at etc or at the file is not followed. */
static void write_container_etc(const char *root, const char *hostname) {
        char path[512], text[1024];
        int dfd, r;

        snprintf(path, sizeof(path), "%s/etc", root);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return;
        dfd = open(path, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0) {
                say("containers: %s is not a directory, leaving the container's resolver alone", path);
                return;
        }
        if (nameserver[0]) {
                snprintf(text, sizeof(text), "nameserver %s\n%s%s%s", nameserver, domain[0] ? "search " : "", domain,
                         domain[0] ? "\n" : "");
                (void) unlinkat(dfd, "resolv.conf", 0);
                int fd = openat(dfd, "resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
                r = fd < 0 ? -errno : 0;
                if (fd >= 0) {
                        if (write(fd, text, strlen(text)) < 0)
                                r = -errno;
                        close(fd);
                }
                if (r < 0)
                        say("containers: cannot write %s/resolv.conf: %s", path, strerror(-r));
        }
        snprintf(text, sizeof(text), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n",
                 hostname);
        (void) unlinkat(dfd, "hosts", 0);
        int fd = openat(dfd, "hosts", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0) {
                (void) !write(fd, text, strlen(text));
                close(fd);
        }
        close(dfd);
}

/* ctr names the lease each `ctr run` holds "<nanoseconds of the wall
 * clock>-<suffix>", and the suffix comes from an unseeded generator: the
 * same in every ctr process. Under TCG the guest's clock moves in 4 ms
 * jiffies, so two containers started together can pick one lease name and
 * the second fails ("lease ... already exists"). A container's ctr is
 * therefore started only once the containers before it have their task,
 * which comes well after their lease. Bounded: a container that fails to
 * start leaves no task, and the next one goes on after the wait. */
static bool has_task(const char *id) {
        struct stat st;
        int dfd = open(TASKS_DIR, O_DIRECTORY | O_CLOEXEC);
        bool found;

        if (dfd < 0)
                return false;
        found = fstatat(dfd, id, &st, AT_SYMLINK_NOFOLLOW) >= 0;
        close(dfd);
        return found;
}

static void wait_previous_tasks(void) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + PREVIOUS_TASK_WAIT_USEC;

        for (size_t i = 0; i < CONTAINERS_MAX; i++) {
                if (!containers[i].name[0])
                        continue;
                while (!has_task(containers[i].id)) {
                        if (now_usec(CLOCK_MONOTONIC) > deadline) {
                                say("containers: %s has no task yet; starting the next one all the same",
                                    containers[i].name);
                                return;
                        }
                        nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
                }
        }
}

/* The image config's part of `ctr run`'s flags that vmmd did not already
 * fold into argv and env: the working directory, and for a user other than
 * root this very binary as the helper that switches to it (init-user.h).
 * Returns the new count. */
static size_t image_config_flags(const AgentContainer *c, char **argv, size_t n) {
        if (c->cwd)
                argv[n++] = xasprintf("--cwd=%s", c->cwd);
        if (c->user)
                argv[n++] = strdup("--mount=type=bind,src=/init,dst=" USER_HELPER_PATH ",options=rbind:ro");
        return n;
}

/* What goes before the container's command: the user helper, if any. */
static size_t image_config_command(const AgentContainer *c, char **argv, size_t n) {
        if (c->user) {
                bool has_home = false;
                for (size_t i = 0; c->env[i]; i++)
                        if (strncmp(c->env[i], "HOME=", 5) == 0)
                                has_home = true;
                argv[n++] = strdup(USER_HELPER_PATH);
                argv[n++] = xasprintf("--user=%s", c->user);
                /* runc set HOME for root, the user it started; the image's
                 * user gets its own unless the image or request set one. */
                if (!has_home)
                        argv[n++] = strdup("--home");
                argv[n++] = strdup("--");
        }
        return n;
}

/* ---- exported ports ---------------------------------------------------- */

int containers_ports_fd(void) {
        return leases_fd;
}

static int watch_leases(void) {
        int fd, r;

        if (leases_fd >= 0)
                return 0;
        r = mkdir_p(CNI_LEASES_DIR, 0755);
        if (r < 0)
                return r;
        fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (inotify_add_watch(fd, CNI_LEASES_DIR, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        leases_fd = fd;
        return 0;
}

/* The DNAT rules of one container, in one iptables-restore transaction
 * (with the chain and its jumps the first time). */
static int forward_ports(Container *c, const char *address) {
        char path[128], rules[4096];
        size_t n = 0;
        int r;

#define RULE(...) n += (size_t) snprintf(rules + n, n < sizeof(rules) ? sizeof(rules) - n : 0, __VA_ARGS__)
        RULE("*nat\n");
        if (!ports_chain_made)
                RULE(":" PORTS_CHAIN " - [0:0]\n-A PREROUTING -i eth0 -j " PORTS_CHAIN "\n");
        for (uint32_t i = 0; i < c->n_ports; i++)
                RULE("-A " PORTS_CHAIN " -p tcp --dport %u -j DNAT --to-destination %s:%u\n", c->ports[i], address,
                     c->ports[i]);
        RULE("COMMIT\n");
        /* dockerd, when the instance has Docker, sets FORWARD's policy to
         * DROP: let the forwarded connections (both ways) through. */
        if (!ports_chain_made)
                RULE("*filter\n-I FORWARD -m conntrack --ctstate DNAT -j ACCEPT\nCOMMIT\n");
#undef RULE
        if (n >= sizeof(rules))
                return -E2BIG;
        snprintf(path, sizeof(path), "/run/hostmesh/ports-%s.rules", c->id);
        r = write_text(path, rules);
        if (r < 0)
                return r;
        char *argv[] = { IPTABLES_RESTORE, "--noflush", path, NULL };
        r = run_and_wait(argv, PORTS_LOG);
        if (r != 0)
                return r < 0 ? r : -EIO;
        ports_chain_made = true;
        return 0;
}

void containers_ports_event(void) {
        char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        DIR *d;
        struct dirent *de;

        /* Which file changed does not matter: every lease is looked at. */
        while (read(leases_fd, events, sizeof(events)) > 0)
                ;
        d = opendir(CNI_LEASES_DIR);
        if (!d)
                return;
        while ((de = readdir(d))) {
                struct in_addr a;
                char path[300], line[256];

                if (inet_pton(AF_INET, de->d_name, &a) != 1)
                        continue; /* "lock", "last_reserved_ip.0" */
                snprintf(path, sizeof(path), CNI_LEASES_DIR "/%s", de->d_name);
                if (read_text(path, line, sizeof(line)) <= 0)
                        continue;
                line[strcspn(line, "\r\n")] = 0;
                for (size_t i = 0; i < CONTAINERS_MAX; i++) {
                        Container *c = &containers[i];
                        size_t nl = strlen(line), ni = strlen(c->id);

                        if (!c->name[0] || c->n_ports == 0 || c->forwarded)
                                continue;
                        /* "default-<id>": the namespace, '-', the id. */
                        if (!(nl > ni && line[nl - ni - 1] == '-' && strcmp(line + nl - ni, c->id) == 0) &&
                            strcmp(line, c->id) != 0)
                                continue;
                        c->forwarded = true;
                        int r = forward_ports(c, de->d_name);
                        if (r < 0)
                                say("containers: cannot forward the ports of %s to %s: %s (see " PORTS_LOG ")",
                                    c->name, de->d_name, strerror(-r));
                        else
                                say("containers: %u port(s) of the guest forwarded to %s (%s)", c->n_ports, c->name,
                                    de->d_name);
                }
        }
        closedir(d);
}

static Container *container_find(const char *name) {
        for (size_t i = 0; i < CONTAINERS_MAX; i++)
                if (containers[i].name[0] && strcmp(containers[i].name, name) == 0)
                        return &containers[i];
        return NULL;
}

int containers_prepare(const AgentFrame *f, char ***ret_argv, char **ret_error) {
        AgentContainer c = {};
        Container *slot = NULL;
        char dev[64], root[256];
        char **argv = NULL;
        size_t n = 0, argc, envc;
        int r;

        *ret_error = NULL;
        r = agent_container_decode(f, &c);
        if (r < 0) {
                *ret_error = xasprintf("malformed CONTAINER frame: %s", strerror(-r));
                return r;
        }
        if (container_find(c.name)) {
                *ret_error = xasprintf("a container named %s exists already", c.name);
                r = -EEXIST;
                goto out;
        }
        for (size_t i = 0; i < CONTAINERS_MAX; i++)
                if (!containers[i].name[0]) {
                        slot = &containers[i];
                        break;
                }
        if (!slot) {
                *ret_error = xasprintf("at most %d containers per instance", CONTAINERS_MAX);
                r = -E2BIG;
                goto out;
        }
        if (!system_ready) {
                *ret_error = xasprintf("the guest system disk is not set up (see the console)");
                r = -ENXIO;
                goto out;
        }
        r = containers_find_disk(c.serial, dev, sizeof(dev));
        if (r < 0) {
                *ret_error = xasprintf("no disk with serial %s for container %s", c.serial, c.name);
                goto out;
        }
        snprintf(root, sizeof(root), CONTAINERS_DIR "/%s/rootfs", c.id);
        r = mkdir_p(root, 0755);
        if (r < 0) {
                *ret_error = xasprintf("cannot create %s: %s", root, strerror(-r));
                goto out;
        }
        if (mount(dev, root, "ext4", MS_NOATIME, NULL) < 0 && errno != EBUSY) {
                r = -errno;
                *ret_error = xasprintf("cannot mount %s on %s: %s", dev, root, strerror(errno));
                goto out;
        }
        write_container_etc(root, c.name);
        if (modules_pid > 0 && c.network == AGENT_NETWORK_BRIDGE) {
                /* The bridge needs them; a host-network container does not
                 * wait. PID 1 may have reaped the loader already (ECHILD). */
                uint64_t tm = now_usec(CLOCK_MONOTONIC);
                (void) waitpid(modules_pid, NULL, 0);
                modules_pid = 0;
                say("containers: container modules loaded (waited %llu us)", (unsigned long long) (now_usec(CLOCK_MONOTONIC) - tm));
        }
        r = wait_containerd();
        if (r < 0) {
                *ret_error = xasprintf("containerd did not start (%s); see /run/containerd.log in the guest",
                                       r == -ETIMEDOUT ? "no answer in 60 s" : "it exited");
                goto out;
        }
        char docker_sock[256] = "";
        if (c.docker_sock_path) {
                r = ensure_dockerd(ret_error);
                if (r < 0)
                        goto out;
                if (c.image_serial && c.image_ref) {
                        r = import_image(c.id, c.image_serial, c.image_ref, ret_error);
                        if (r < 0)
                                goto out;
                }
                /* Pulls only from a host that answers them (an older vmmd
                 * would end the channel at a frame it does not know). */
                bool pulls = false;
                if (c.features & AGENT_FEATURE_IMAGE_PULL) {
                        r = pull_listen();
                        if (r < 0)
                                say("containers: cannot listen on %s, pulls stay refused: %s", PULL_SOCKET, strerror(-r));
                        pulls = r >= 0;
                }
                r = start_docker_proxy(slot, c.id, root, pulls, docker_sock, sizeof(docker_sock), ret_error);
                if (r < 0)
                        goto out;
        }
        if (c.network == AGENT_NETWORK_BRIDGE && c.n_ports > 0) {
                /* Before ctr runs: its address lease must not be missed. */
                r = watch_leases();
                if (r < 0) {
                        *ret_error = xasprintf("cannot watch CNI's address leases in %s: %s", CNI_LEASES_DIR,
                                               strerror(-r));
                        goto out;
                }
        }
        wait_previous_tasks();

        argc = 0;
        while (c.argv[argc])
                argc++;
        envc = 0;
        while (c.env[envc])
                envc++;
        argv = calloc(argc + envc + 24, sizeof(char *));
        if (!argv) {
                r = -ENOMEM;
                goto out;
        }
        argv[n++] = strdup(CTR);
        argv[n++] = strdup("--namespace=default");
        argv[n++] = strdup("run");
        argv[n++] = strdup("--rootfs");
        /* The guest's root is the initramfs (rootfs), which pivot_root(2)
         * refuses: the runtime moves the container's root and chroots instead.
         * The micro-VM, not this, is the isolation boundary. */
        argv[n++] = strdup("--no-pivot");
        argv[n++] = strdup("--runc-binary=" OCI_RUNTIME);
        argv[n++] = strdup(c.network == AGENT_NETWORK_HOST ? "--net-host" : "--cni");
        /* Without an image config (ctr run --rootfs), nothing sets PATH:
         * the usual one first, the request's variables after (and over it). */
        argv[n++] = strdup("--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        for (size_t i = 0; i < envc; i++)
                argv[n++] = xasprintf("--env=%s", c.env[i]);
        n = image_config_flags(&c, argv, n);
        /* Its own proxy's socket where it asked for docker.sock (the path
         * is checked: no ',' or ':' can split ctr's option). */
        if (docker_sock[0])
                argv[n++] = xasprintf("--mount=type=bind,src=%s,dst=%s,options=rbind:rw", docker_sock,
                                      c.docker_sock_path);
        argv[n++] = strdup("--");
        argv[n++] = strdup(root);
        argv[n++] = strdup(c.id);
        n = image_config_command(&c, argv, n);
        for (size_t i = 0; i < argc; i++)
                argv[n++] = strdup(c.argv[i]);
        for (size_t i = 0; i < n; i++)
                if (!argv[i]) {
                        containers_strv_free(argv);
                        r = -ENOMEM;
                        goto out;
                }
        snprintf(slot->id, sizeof(slot->id), "%s", c.id);
        snprintf(slot->name, sizeof(slot->name), "%s", c.name);
        /* HOST: the ports are the guest's own; nothing to forward. */
        if (c.network == AGENT_NETWORK_BRIDGE) {
                memcpy(slot->ports, c.ports, sizeof(slot->ports));
                slot->n_ports = c.n_ports;
        }
        *ret_argv = argv;
        r = 0;
out:
        agent_container_done(&c);
        return r;
}

int containers_exec_argv(const char *name, uint32_t exec_id, char *const *argv, char *const *env, const char *cwd,
                         char ***ret_argv) {
        Container *c = container_find(name);
        size_t argc = 0, envc = 0, n = 0;
        char **l;

        if (!c)
                return -ENOENT;
        while (argv[argc])
                argc++;
        while (env && env[envc])
                envc++;
        l = calloc(argc + envc + 12, sizeof(char *));
        if (!l)
                return -ENOMEM;
        l[n++] = strdup(CTR);
        l[n++] = strdup("--namespace=default");
        l[n++] = strdup("tasks");
        l[n++] = strdup("exec");
        l[n++] = xasprintf("--exec-id=hm-%u", exec_id);
        if (cwd)
                l[n++] = xasprintf("--cwd=%s", cwd);
        l[n++] = strdup("--");
        l[n++] = strdup(c->id);
        /* ctr's exec takes no environment: env(1) inside the container sets it. */
        if (envc > 0) {
                l[n++] = strdup("env");
                for (size_t i = 0; i < envc; i++)
                        l[n++] = strdup(env[i]);
        }
        for (size_t i = 0; i < argc; i++)
                l[n++] = strdup(argv[i]);
        for (size_t i = 0; i < n; i++)
                if (!l[i]) {
                        containers_strv_free(l);
                        return -ENOMEM;
                }
        *ret_argv = l;
        return 0;
}
