/* SPDX-License-Identifier: MIT */
/* hostmesh-init: PID 1 inside the guest.
 *
 * It does the least an instance needs, as fast as it can: the API file
 * systems, the virtio modules, the hostname, the network, the agent port to
 * vmmd, the instance disk. Then it says READY (with its own start-up time)
 * and serves vmmd: the instance token, commands (argv, env, cwd; stdout and
 * stderr streamed back separately; the exit code), power-off. As PID 1 it
 * also reaps every orphan.
 *
 * Kernel command line keys (set by vmmd):
 *   hostmesh.hostname=NAME   hostname
 *   hostmesh.disk=DEV        block device to mount on /mnt/disk (ext4); serial:S finds it by serial
 *   hostmesh.containers=1    set up containers (init-containers.c)
 *   hostmesh.ip=A.B.C.D      address of eth0 (as a /32); with it, all of:
 *   hostmesh.gw=A.B.C.D      gateway, reached on-link (the host's bridge)
 *   hostmesh.dns=A.B.C.D     nameserver for /etc/resolv.conf
 *   hostmesh.domain=NAME     search domain for /etc/resolv.conf
 *
 * Static, libc only; diagnostics go to /dev/console, which vmmd keeps as
 * the instance's console log. */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent-protocol.h"
#include "init-containers.h"
#include "init-pull.h"
#include "init-user.h"
#include "init-util.h"

#define COMMANDS_MAX 64
#define TOKEN_PATH "/run/nsc/token.json"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef struct Command {
        bool used;
        bool warmup;        /* init's own (see warm_up): no frames, no id */
        uint32_t id;
        pid_t pid;          /* 0 once reaped */
        int out_fd, err_fd; /* -1 once at EOF */
        int status;         /* exit code once reaped */
} Command;

static void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ __attribute__((cleanup(freep)))

static Command commands[COMMANDS_MAX];
static int port_fd = -1;
static char cmdline_hostname[65];
static char cmdline_disk[64];
static char cmdline_ip[16], cmdline_gw[16], cmdline_dns[16], cmdline_domain[254];
static bool cmdline_poweroff_reset; /* hostmesh.poweroff=reset: no ACPI to power off with */
static uint64_t t_virtio_net; /* loading virtio_net, waiting for its dependencies included */

typedef struct ApiMount {
        const char *what, *where, *type;
        unsigned long flags;
        const char *options;
} ApiMount;

static void mount_list(const ApiMount *mounts, size_t n) {
        for (size_t i = 0; i < n; i++) {
                (void) mkdir(mounts[i].where, 0755);
                if (mount(mounts[i].what, mounts[i].where, mounts[i].type, mounts[i].flags, mounts[i].options) < 0 &&
                    errno != EBUSY)
                        say("mounting %s failed: %m, ignoring", mounts[i].where);
        }
}

/* What opening the agent port needs: its device node. */
static void mount_dev(void) {
        static const ApiMount mounts[] = {
                { "devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755" },
        };

        mount_list(mounts, sizeof(mounts) / sizeof(mounts[0]));
}

/* /proc and /sys: the console, the command line, the module loader and a
 * port found by its name need them. On the kernel of our own they wait
 * until READY is out. */
static bool api_mounted;

static void mount_api_filesystems(void) {
        static const ApiMount mounts[] = {
                { "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
                { "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
        };

        if (api_mounted)
                return;
        api_mounted = true;
        mount_list(mounts, sizeof(mounts) / sizeof(mounts[0]));
}

static void mount_runtime_filesystems(void) {
        static const ApiMount mounts[] = {
                { "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755" },
                { "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620" },
        };

        mount_list(mounts, sizeof(mounts) / sizeof(mounts[0]));
        (void) mkdir("/run/nsc", 0755);
}

static void setup_console(void) {
        int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);

        if (fd < 0)
                return;
        for (int i = 0; i < 3; i++)
                (void) dup2(fd, i);
        if (fd > 2)
                close(fd);
}

static void cmdline_key(const char *word, const char *key, char *value, size_t size) {
        size_t k = strlen(key);

        if (strncmp(word, key, k) == 0 && word[k] == '=' && strlen(word + k + 1) < size)
                strcpy(value, word + k + 1);
}

/* Picks hostmesh.* keys out of /proc/cmdline. */
static void parse_cmdline(void) {
        char buf[4096];

        if (read_text("/proc/cmdline", buf, sizeof(buf)) <= 0)
                return;
        for (char *w = strtok(buf, " \n"); w; w = strtok(NULL, " \n")) {
                char poweroff[8] = "";
                cmdline_key(w, "hostmesh.poweroff", poweroff, sizeof(poweroff));
                if (poweroff[0])
                        cmdline_poweroff_reset = strcmp(poweroff, "reset") == 0;
                cmdline_key(w, "hostmesh.hostname", cmdline_hostname, sizeof(cmdline_hostname));
                cmdline_key(w, "hostmesh.disk", cmdline_disk, sizeof(cmdline_disk));
                cmdline_key(w, "hostmesh.ip", cmdline_ip, sizeof(cmdline_ip));
                cmdline_key(w, "hostmesh.gw", cmdline_gw, sizeof(cmdline_gw));
                cmdline_key(w, "hostmesh.dns", cmdline_dns, sizeof(cmdline_dns));
                cmdline_key(w, "hostmesh.domain", cmdline_domain, sizeof(cmdline_domain));
        }
}

/* /proc and /sys, the console, the command line, the hostname. */
static void early_setup(void) {
        static bool done;

        if (done)
                return;
        done = true;
        mount_api_filesystems();
        setup_console();
        parse_cmdline();
        if (cmdline_hostname[0])
                (void) sethostname(cmdline_hostname, strlen(cmdline_hostname));
}

static bool have_pci_devices(void) {
        DIR *d = opendir("/sys/bus/pci/devices");
        struct dirent *de;
        bool found = false;

        if (!d)
                return false;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        found = true;
                        break;
                }
        closedir(d);
        return found;
}

static bool name_in(const char *name, const char *const *list) {
        for (; *list; list++)
                if (strcmp(name, *list) == 0)
                        return true;
        return false;
}

/* The disk stack: virtio_blk, and ext4 with what it needs. */
static const char *const disk_modules[] = {
        "virtio_blk.ko", "crc16.ko", "crc32c_generic.ko", "mbcache.ko", "jbd2.ko", "ext4.ko", NULL,
};
/* The part of it that does not depend on virtio. */
static const char *const fs_modules[] = {
        "crc16.ko", "crc32c_generic.ko", "mbcache.ko", "jbd2.ko", "ext4.ko", NULL,
};
/* The network stack: virtio_net, and the failover pair it links against
 * (unused without a standby device, but virtio_net does not load without
 * them). */
static const char *const net_modules[] = { "failover.ko", "net_failover.ko", "virtio_net.ko", NULL };
static const char *const net_deps_modules[] = { "failover.ko", "net_failover.ko", NULL };

static void load_module(const char *name) {
        char path[256];
        int mfd;

        snprintf(path, sizeof(path), "/lib/modules/%s", name);
        mfd = open(path, O_RDONLY | O_CLOEXEC);
        if (mfd < 0) {
                say("cannot open %s: %m", path);
                return;
        }
        if (syscall(SYS_finit_module, mfd, "", 0) < 0 && errno != EEXIST)
                say("loading %s failed: %m", name);
        close(mfd);
}

/* Whether name is a whole line of modules.order ("failover.ko" is also
 * the end of "net_failover.ko"). */
static bool order_has(const char *order, const char *name) {
        size_t k = strlen(name);

        for (const char *p = order; (p = strstr(p, name)); p++)
                if ((p == order || p[-1] == '\n') && (p[k] == '\n' || p[k] == 0))
                        return true;
        return false;
}

static void load_listed(const char *order, const char *const *list) {
        for (size_t i = 0; list[i]; i++)
                if (order_has(order, list[i]))
                        load_module(list[i]);
}

/* Loads the modules listed in /lib/modules/modules.order (dependency order,
 * written by the image build), skipping the PCI transport on machines
 * without PCI (microvm), the disk stack when there is no disk and the
 * network stack when there is no network.
 *
 * Module loading is slow under TCG (ext4 alone takes most of a second) and
 * the guest has at least two vCPUs: what does not depend on virtio (the file
 * system modules, virtio_net's failover dependencies) is loaded by a second
 * process while this one loads the virtio stack. That helper loads the
 * failover pair first and then closes its end of a pipe: virtio_net waits
 * for that EOF, not for ext4. Returns the helper's pid, or 0. */
static pid_t load_modules(bool want_disk, bool want_net) {
        bool pci, helper_disk = false, helper_net = false;
        int net_deps[2] = { -1, -1 };
        char buf[1024];
        pid_t helper = 0;

        if (read_text("/lib/modules/modules.order", buf, sizeof(buf)) <= 0)
                return 0;
        pci = have_pci_devices();
        if (want_net && pipe2(net_deps, O_CLOEXEC) < 0)
                net_deps[0] = net_deps[1] = -1;
        if (want_disk || net_deps[0] >= 0) {
                helper = fork();
                if (helper == 0) {
                        if (net_deps[0] >= 0) {
                                close(net_deps[0]);
                                load_listed(buf, net_deps_modules);
                                close(net_deps[1]);
                        }
                        if (want_disk)
                                load_listed(buf, fs_modules);
                        _exit(0);
                }
                if (helper < 0)
                        helper = 0;
                helper_disk = helper > 0 && want_disk;
                helper_net = helper > 0 && net_deps[0] >= 0;
        }
        if (net_deps[1] >= 0)
                close(net_deps[1]);
        if (!helper_net && net_deps[0] >= 0) {
                close(net_deps[0]);
                net_deps[0] = -1;
        }

        for (char *name = strtok(buf, "\n"); name; name = strtok(NULL, "\n")) {
                if (!pci && strncmp(name, "virtio_pci", 10) == 0)
                        continue;
                if (!want_disk && name_in(name, disk_modules))
                        continue;
                if (!want_net && name_in(name, net_modules))
                        continue;
                if (helper_disk && name_in(name, fs_modules))
                        continue;
                if (helper_net && name_in(name, net_deps_modules))
                        continue;
                if (strcmp(name, "virtio_net.ko") == 0) {
                        uint64_t t = now_usec(CLOCK_MONOTONIC);
                        char c;

                        if (net_deps[0] >= 0) {
                                /* EOF once the helper has loaded the failover pair (or died). */
                                while (read(net_deps[0], &c, 1) < 0 && errno == EINTR)
                                        ;
                                close(net_deps[0]);
                                net_deps[0] = -1;
                        }
                        load_module(name);
                        t_virtio_net = now_usec(CLOCK_MONOTONIC) - t;
                        continue;
                }
                load_module(name);
        }
        if (net_deps[0] >= 0)
                close(net_deps[0]);
        return helper;
}

/* Whether the image carries modules to load: Debian's kernel needs its
 * virtio and ext4 modules, the kernel built for hostmesh has them built in
 * and its image has no modules.order at all. */
static bool have_modules(void) {
        struct stat st;

        return stat("/lib/modules/modules.order", &st) >= 0 && st.st_size > 0;
}

/* The one virtio-serial port node in /dev (vport<device>p<port>): its name
 * in ret. 0; -ENOENT when there is none yet, -EEXIST when there are several. */
static int find_only_port_node(char *ret, size_t size) {
        DIR *d = opendir("/dev");
        struct dirent *de;
        int r = -ENOENT;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (strncmp(de->d_name, "vport", 5) == 0) {
                        if (r == 0 || strlen(de->d_name) >= size) {
                                r = -EEXIST;
                                break;
                        }
                        strcpy(ret, de->d_name);
                        r = 0;
                }
        closedir(d);
        return r;
}

/* Opens the agent's virtio-serial port. Without udev there is no
 * /dev/virtio-ports/<name> link. vmmd gives the guest one virtio-serial
 * device with one port, the agent's: when /dev holds exactly one port node,
 * that is it, found without /sys (the fast path READY waits for). Otherwise
 * find the port by the name the host gave it in sysfs, and create the
 * device node from sysfs if devtmpfs has not yet. */
static int open_agent_port(void) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 10 * 1000000ULL;
        uint64_t by_name_after = now_usec(CLOCK_MONOTONIC) + 50 * 1000ULL;

        for (;;) {
                char port[65], path[300], dev[32];
                unsigned ma, mi;
                int fd = -ENODEV, r;

                r = find_only_port_node(port, sizeof(port));
                if (r == 0) {
                        snprintf(path, sizeof(path), "/dev/%s", port);
                        fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
                        if (fd >= 0)
                                return fd;
                }
                /* Several ports, or none for a while: by name. */
                if (r != -ENOENT || now_usec(CLOCK_MONOTONIC) > by_name_after)
                        mount_api_filesystems();
                if (api_mounted &&
                    sysfs_find_by_attr("/sys/class/virtio-ports", "", "name", AGENT_PORT_NAME, port,
                                       sizeof(port)) >= 0) {
                        snprintf(path, sizeof(path), "/dev/%s", port);
                        fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
                        if (fd < 0 && errno == ENOENT) {
                                char sys[300];

                                snprintf(sys, sizeof(sys), "/sys/class/virtio-ports/%s/dev", port);
                                if (read_text(sys, dev, sizeof(dev)) > 0 && sscanf(dev, "%u:%u", &ma, &mi) == 2)
                                        (void) mknod(path, S_IFCHR | 0600, makedev(ma, mi));
                                fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
                        }
                }
                if (fd >= 0)
                        return fd;
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        return -ENODEV;
                /* The port shows up when virtio_console has probed; no
                 * uevent listener is worth its set-up cost for this wait. */
                nanosleep(&(struct timespec){ .tv_nsec = 500 * 1000 }, NULL);
        }
}

/* Needs the file system modules: the module helper is done. */
static void mount_disk(void) {
        char dev[96];

        if (!cmdline_disk[0])
                return;
        if (strncmp(cmdline_disk, "serial:", 7) == 0) {
                if (containers_find_disk(cmdline_disk + 7, dev, sizeof(dev)) < 0) {
                        say("no disk with serial %s, running without the disk", cmdline_disk + 7);
                        return;
                }
        } else
                snprintf(dev, sizeof(dev), "/dev/%s", cmdline_disk);
        (void) mkdir("/mnt", 0755);
        (void) mkdir("/mnt/disk", 0755);
        if (mount(dev, "/mnt/disk", "ext4", MS_NOATIME, NULL) < 0)
                say("mounting %s on /mnt/disk failed: %m, running without the disk", dev);
}

static bool valid_domain(const char *s) {
        if (!*s || strlen(s) > 253 || *s == '.' || *s == '-')
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      *s == '-' || *s == '.'))
                        return false;
        return true;
}

static int set_ifflags_up(int sk, const char *ifname) {
        struct ifreq ifr = {};

        strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
        if (ioctl(sk, SIOCGIFFLAGS, &ifr) < 0)
                return -errno;
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sk, SIOCSIFFLAGS, &ifr) < 0)
                return -errno;
        return 0;
}

static int set_ifaddr(int sk, const char *ifname, unsigned long request, struct in_addr a) {
        struct ifreq ifr = {};
        struct sockaddr_in *sin = (struct sockaddr_in *) &ifr.ifr_addr;

        strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
        sin->sin_family = AF_INET;
        sin->sin_addr = a;
        if (ioctl(sk, request, &ifr) < 0)
                return -errno;
        return 0;
}

static int add_route(int sk, const char *ifname, struct in_addr dst, struct in_addr mask, struct in_addr gw,
                     unsigned short flags) {
        struct rtentry rt = {};

        *(struct sockaddr_in *) &rt.rt_dst = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr = dst };
        *(struct sockaddr_in *) &rt.rt_genmask = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr = mask };
        *(struct sockaddr_in *) &rt.rt_gateway = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr = gw };
        rt.rt_flags = RTF_UP | flags;
        rt.rt_dev = (char *) ifname;
        if (ioctl(sk, SIOCADDRT, &rt) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Waits for the interface virtio_net registers for the NIC. The probe runs
 * when the module loads, so the wait is normally none; the bound covers a slow probe and a
 * VM started without the NIC its command line announces. */
static int wait_for_link(const char *ifname, uint64_t timeout_usec) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + timeout_usec;

        while (if_nametoindex(ifname) == 0) {
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        return -ENODEV;
                nanosleep(&(struct timespec){ .tv_nsec = 500 * 1000 }, NULL);
        }
        return 0;
}

/* Configures eth0 from the hostmesh.ip/gw/dns/domain keys: the address as
 * a /32, an on-link route to the gateway and the default route through it.
 * Without a prefix route even the other instances on the bridge are reached
 * through the host, whose nftables ruleset decides (the bridge ports are
 * isolated). For the same reason ICMP redirects are refused: the host must
 * not be able to point the guest past itself. Sets *ret_step to what failed. */
static int setup_network(const char **ret_step, uint64_t *ret_wait_usec) {
        static const struct in_addr any = {}, host_mask = { .s_addr = 0xffffffffU };
        struct in_addr ip, gw, dns;
        char resolv[300 + sizeof(cmdline_domain)];
        uint64_t t;
        int sk, r;

        *ret_step = "parsing the command line keys";
        if (inet_pton(AF_INET, cmdline_ip, &ip) != 1 || inet_pton(AF_INET, cmdline_gw, &gw) != 1 ||
            inet_pton(AF_INET, cmdline_dns, &dns) != 1 || !valid_domain(cmdline_domain))
                return -EINVAL;

        *ret_step = "waiting for eth0";
        t = now_usec(CLOCK_MONOTONIC);
        r = wait_for_link("eth0", 5 * 1000000ULL);
        *ret_wait_usec = now_usec(CLOCK_MONOTONIC) - t;
        if (r < 0)
                return r;

        /* Without forwarding the kernel accepts a redirect when all or the
         * interface says so: both off, and default for any that comes later. */
        *ret_step = "turning ICMP redirects off";
        for (size_t i = 0; i < 3; i++) {
                static const char *const conf[] = { "all", "default", "eth0" };
                char path[64];

                snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/accept_redirects", conf[i]);
                r = write_text(path, "0\n");
                if (r < 0)
                        return r;
        }
        /* Instances have IPv4 only (the host drops IPv6 from their taps):
         * no link-local address, no solicitations on the bridge. */
        *ret_step = "turning IPv6 off on eth0";
        r = write_text("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1\n");
        if (r < 0 && r != -ENOENT)
                return r;

        sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sk < 0) {
                *ret_step = "opening a socket";
                return -errno;
        }
        /* The address before the link is up: SIOCSIFADDR alone would give it
         * the classful /8 and a prefix route with it, and a broadcast
         * address that a /32 does not have. */
        *ret_step = "setting the address of eth0";
        r = set_ifaddr(sk, "eth0", SIOCSIFADDR, ip);
        if (r >= 0)
                r = set_ifaddr(sk, "eth0", SIOCSIFNETMASK, host_mask);
        if (r >= 0)
                r = set_ifaddr(sk, "eth0", SIOCSIFBRDADDR, any);
        if (r >= 0) {
                *ret_step = "bringing eth0 up";
                r = set_ifflags_up(sk, "eth0");
        }
        if (r >= 0) {
                *ret_step = "adding the route to the gateway";
                r = add_route(sk, "eth0", gw, host_mask, any, RTF_HOST);
        }
        if (r >= 0) {
                *ret_step = "adding the default route";
                r = add_route(sk, "eth0", any, any, gw, RTF_GATEWAY);
        }
        close(sk);
        if (r < 0)
                return r;

        *ret_step = "writing /etc/resolv.conf";
        snprintf(resolv, sizeof(resolv), "nameserver %s\nsearch %s\n", cmdline_dns, cmdline_domain);
        return write_text("/etc/resolv.conf", resolv);
}

/* lo is wanted with or without a NIC (commands talk to local servers); the
 * kernel gives it 127.0.0.1/8 when it comes up. */
static void setup_loopback(void) {
        int sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int r = sk < 0 ? -errno : set_ifflags_up(sk, "lo");

        if (sk >= 0)
                close(sk);
        if (r < 0)
                say("cannot bring lo up: %s", strerror(-r));
}

static void write_hosts(bool networked) {
        char hosts[200 + sizeof(cmdline_hostname) * 2 + sizeof(cmdline_domain)];
        int n, r;

        n = snprintf(hosts, sizeof(hosts), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if (cmdline_hostname[0] && networked)
                snprintf(hosts + n, sizeof(hosts) - n, "%s\t%s.%s %s\n", cmdline_ip, cmdline_hostname, cmdline_domain,
                         cmdline_hostname);
        else if (cmdline_hostname[0])
                snprintf(hosts + n, sizeof(hosts) - n, "127.0.1.1\t%s\n", cmdline_hostname);
        r = write_text("/etc/hosts", hosts);
        if (r < 0)
                say("cannot write /etc/hosts: %s", strerror(-r));
}

/* Writes the whole buffer to the port, waiting while vmmd is away. */
static int port_write(const void *p, size_t n) {
        const uint8_t *b = p;

        while (n > 0) {
                ssize_t k = write(port_fd, b, n);
                if (k < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

static int send_buffer(AgentBuffer *b) {
        int r = port_write(b->data, b->size);
        agent_buffer_done(b);
        return r;
}

static int send_int(AgentFrameType type, uint32_t id, int32_t v) {
        AgentBuffer b = {};
        int r = agent_int_encode(&b, type, id, v);
        if (r < 0) {
                agent_buffer_done(&b);
                return r;
        }
        return send_buffer(&b);
}

static int write_token(const char *token) {
        char tmp[] = "/run/nsc/.token.XXXXXX";
        size_t n = strlen(token);
        char *json, *q;
        int fd, r = 0;

        if (n == 0) {
                (void) unlink(TOKEN_PATH);
                return 0;
        }
        /* JSON string escaping: the token is a JWT (base64url and dots), but
         * nothing from the host is trusted to be. */
        json = malloc(n * 6 + 32);
        if (!json)
                return -ENOMEM;
        q = json + sprintf(json, "{\"bearer_token\":\"");
        for (const unsigned char *c = (const unsigned char *) token; *c; c++) {
                if (*c == '"' || *c == '\\')
                        q += sprintf(q, "\\%c", *c);
                else if (*c < 0x20)
                        q += sprintf(q, "\\u%04x", *c);
                else
                        *q++ = (char) *c;
        }
        q += sprintf(q, "\"}\n");

        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0) {
                free(json);
                return -errno;
        }
        /* The token is the instance's credential (on the gateway too): only
         * root in the guest reads it, like any other secret. */
        if (fchmod(fd, 0600) < 0 || write(fd, json, q - json) != q - json || fsync(fd) < 0)
                r = -errno ? -errno : -EIO;
        close(fd);
        free(json);
        if (r == 0 && rename(tmp, TOKEN_PATH) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}

static Command *command_find(uint32_t id) {
        for (size_t i = 0; i < COMMANDS_MAX; i++)
                if (commands[i].used && !commands[i].warmup && commands[i].id == id)
                        return &commands[i];
        return NULL;
}

static void command_maybe_done(Command *c) {
        if (c->pid != 0 || c->out_fd >= 0 || c->err_fd >= 0)
                return;
        if (!c->warmup)
                (void) send_int(AGENT_EXIT, c->id, c->status);
        *c = (Command){};
}

/* Starts argv as command id, its output streamed; 0 or a negative errno.
 * With warmup, it is init's own (see warm_up): no id, no frames. */
static int spawn_command(uint32_t id, char *const *argv, char *const *env, const char *cwd, bool warmup) {
        static const char *const default_env[] = { "PATH=" DEFAULT_PATH, "HOME=/root", "TERM=dumb", NULL };
        int out[2] = { -1, -1 }, err[2] = { -1, -1 };
        Command *c = NULL;
        pid_t pid;
        int r;

        if (!warmup && command_find(id))
                return -EEXIST;
        for (size_t i = 0; i < COMMANDS_MAX; i++)
                if (!commands[i].used) {
                        c = &commands[i];
                        break;
                }
        if (!c)
                return -EBUSY;
        if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
                goto fail;

        pid = fork();
        if (pid < 0)
                goto fail;
        if (pid == 0) {
                sigset_t ss;
                int null;

                sigemptyset(&ss);
                sigprocmask(SIG_SETMASK, &ss, NULL);
                setsid();
                null = open("/dev/null", O_RDONLY);
                if (null >= 0)
                        dup2(null, STDIN_FILENO);
                dup2(out[1], STDOUT_FILENO);
                dup2(err[1], STDERR_FILENO);
                clearenv();
                for (size_t i = 0; default_env[i]; i++)
                        putenv((char *) default_env[i]);
                for (char *const *i = env; i && *i; i++)
                        putenv(*i);
                if (cwd && chdir(cwd) < 0) {
                        dprintf(STDERR_FILENO, "%s: cannot change directory to %s: %m\n", argv[0], cwd);
                        _exit(126);
                }
                execvp(argv[0], argv);
                /* As a shell does: 127 for a command that is not there,
                 * 126 for one that cannot be run. */
                r = errno;
                dprintf(STDERR_FILENO, "%s: %s\n", argv[0], r == ENOENT ? "command not found" : strerror(r));
                _exit(r == ENOENT ? 127 : 126);
        }
        close(out[1]);
        close(err[1]);
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        fcntl(err[0], F_SETFL, O_NONBLOCK);
        *c = (Command){ .used = true, .warmup = warmup, .id = id, .pid = pid, .out_fd = out[0], .err_fd = err[0] };
        return 0;

fail:
        r = -errno;
        for (int i = 0; i < 2; i++) {
                if (out[i] >= 0)
                        close(out[i]);
                if (err[i] >= 0)
                        close(err[i]);
        }
        return r;
}

/* Right after READY, init runs `true` the way a command runs (pipes, fork,
 * exec through PATH, the exit reaped and the pipes drained by the loop),
 * unseen by the host, while it sets up the rest: the child runs on the
 * other vCPU. Under TCG a guest's first command took 37 ms and the next 8:
 * the kernel's fork, exec and exit paths and busybox's start-up ran for the
 * first time and were translated. The host's first command finds them
 * translated now (READY to its exit 63 -> 48 ms, bench/vmm/RESULTS.md).
 * Measured worse and left out: the child bringing lo up too (16 ms under
 * TCG; the first command then waited for all of the child's work), and a
 * thread bringing lo up while init sets up the rest (58 ms). */
static void warm_up(void) {
        static char *const argv[] = { (char *) "true", NULL };

        (void) spawn_command(0, argv, NULL, NULL, true);
}

static void start_command(const AgentFrame *f) {
        AgentExec e = {};
        char **inside = NULL;
        int r;

        r = agent_exec_decode(f, &e);
        if (r < 0) {
                say("bad EXEC frame: %s", strerror(-r));
                (void) send_int(AGENT_EXIT, f->id, 126);
                return;
        }
        if (e.container) {
                r = containers_exec_argv(e.container, f->id, e.argv, e.env, e.cwd, &inside);
                if (r < 0) {
                        AgentBuffer b = {};
                        char msg[128];
                        snprintf(msg, sizeof(msg), "no container named %s in this instance\n", e.container);
                        size_t start = agent_frame_begin(&b, AGENT_STDERR, f->id);
                        agent_put_bytes(&b, msg, strlen(msg));
                        if (agent_frame_end(&b, start) == 0)
                                (void) send_buffer(&b);
                        else
                                agent_buffer_done(&b);
                        agent_exec_done(&e);
                        (void) send_int(AGENT_EXIT, f->id, 126);
                        return;
                }
                r = spawn_command(f->id, inside, NULL, NULL, false);
                containers_strv_free(inside);
        } else
                r = spawn_command(f->id, e.argv, e.env, e.cwd, false);
        agent_exec_done(&e);
        if (r < 0) {
                say("cannot start command %u: %s", f->id, strerror(-r));
                (void) send_int(AGENT_EXIT, f->id, 126);
        }
}

/* A container's main task runs as a command under the frame's id (ctr run);
 * a container that cannot start says why on its stderr and exits 125, as
 * docker run does. */
static void start_container(const AgentFrame *f) {
        _cleanup_free_ char *error = NULL;
        char **argv = NULL;
        AgentBuffer b = {};
        int r;

        r = containers_prepare(f, &argv, &error);
        if (r >= 0) {
                r = spawn_command(f->id, argv, NULL, NULL, false);
                containers_strv_free(argv);
                if (r < 0 && !error && asprintf(&error, "cannot run ctr: %s", strerror(-r)) < 0)
                        error = NULL;
        }
        if (r >= 0) {
                if (agent_string_encode(&b, AGENT_CONTAINER_STATE, f->id, "running") >= 0)
                        (void) send_buffer(&b);
                else
                        agent_buffer_done(&b);
                return;
        }
        say("container (command %u) failed: %s", f->id, error ?: strerror(-r));
        _cleanup_free_ char *state = NULL, *line = NULL;
        if (asprintf(&state, "failed: %s", error ?: strerror(-r)) >= 0 &&
            agent_string_encode(&b, AGENT_CONTAINER_STATE, f->id, state) >= 0)
                (void) send_buffer(&b);
        else
                agent_buffer_done(&b);
        if (asprintf(&line, "hostmesh: %s\n", error ?: strerror(-r)) >= 0) {
                size_t start = agent_frame_begin(&b, AGENT_STDERR, f->id);
                agent_put_bytes(&b, line, strlen(line));
                if (agent_frame_end(&b, start) == 0)
                        (void) send_buffer(&b);
                else
                        agent_buffer_done(&b);
        }
        (void) send_int(AGENT_EXIT, f->id, 125);
}

/* Forwards what a command wrote; returns false at EOF. */
static bool forward_output(Command *c, int *fd, AgentFrameType type) {
        static uint8_t buf[AGENT_PAYLOAD_MAX];
        ssize_t n = read(*fd, buf, sizeof(buf));

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return true;
        if (n <= 0) {
                close(*fd);
                *fd = -1;
                return false;
        }
        if (c->warmup)
                return true;
        AgentBuffer b = {};
        size_t start = agent_frame_begin(&b, type, c->id);
        agent_put_bytes(&b, buf, (size_t) n);
        if (agent_frame_end(&b, start) == 0)
                (void) send_buffer(&b);
        else
                agent_buffer_done(&b);
        return true;
}

static void reap_children(void) {
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);

                if (pid <= 0)
                        return;
                containers_child_exited(pid, status);
                pull_child_exited(pid, status);
                for (size_t i = 0; i < COMMANDS_MAX; i++) {
                        Command *c = &commands[i];

                        if (!c->used || c->pid != pid)
                                continue;
                        c->pid = 0;
                        c->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                }
        }
}

static void drain_and_finish(void) {
        for (size_t i = 0; i < COMMANDS_MAX; i++) {
                Command *c = &commands[i];

                if (!c->used || c->pid != 0)
                        continue;
                /* The child is gone: whatever is left in the pipes is all
                 * there will be (unless a grandchild holds them open). */
                command_maybe_done(c);
        }
}

static _Noreturn void power_off(void) {
        for (size_t i = 0; i < COMMANDS_MAX; i++)
                if (commands[i].used && commands[i].pid > 0)
                        kill(-commands[i].pid, SIGKILL);
        sync();
        if (cmdline_disk[0])
                (void) umount2("/mnt/disk", MNT_DETACH);
        /* Without ACPI (vmmd's microvm guests) there is no power-off: the
         * kernel would halt, and QEMU run on. vmmd runs QEMU with
         * -no-reboot, so a reset ends it, and says so on the command line. */
        if (!cmdline_poweroff_reset)
                reboot(RB_POWER_OFF);
        reboot(RB_AUTOBOOT);
        for (;;)
                pause();
}

static void handle_frame(const AgentFrame *f) {
        switch (f->type) {
        case AGENT_TOKEN: {
                char *token = NULL;
                int r = agent_string_decode(f, &token);

                if (r >= 0) {
                        r = write_token(token);
                        free(token);
                }
                if (r < 0)
                        say("cannot write %s: %s", TOKEN_PATH, strerror(-r));
                (void) send_int(AGENT_TOKEN_ACK, 0, r);
                break;
        }
        case AGENT_EXEC:
                start_command(f);
                break;
        case AGENT_CONTAINER:
                start_container(f);
                break;
        case AGENT_SIGNAL: {
                Command *c = command_find(f->id);
                int32_t sig;

                if (c && c->pid > 0 && agent_int_decode(f, &sig) >= 0 && sig > 0 && sig < 65)
                        kill(-c->pid, sig);
                break;
        }
        case AGENT_IMAGE_DATA:
        case AGENT_IMAGE_END:
                pull_on_frame(f);
                break;
        case AGENT_POWEROFF:
                power_off();
        default:
                say("unexpected %s frame from the host, ignoring", agent_frame_type_to_string(f->type));
        }
}

int main(int argc, char **argv) {
        static uint8_t in[AGENT_HEADER_SIZE + AGENT_PAYLOAD_MAX];
        uint64_t boot_usec = now_usec(CLOCK_BOOTTIME), start = now_usec(CLOCK_MONOTONIC);
        size_t in_size = 0;
        bool host_away = false;
        struct utsname u;
        AgentBuffer b = {};
        sigset_t ss;
        int sfd, r;

        /* Bind-mounted into a container to start its process as the image's user. */
        if (argc > 0 && strcmp(argv[0], USER_HELPER_PATH) == 0)
                return user_helper_main(argc, argv);
        if (getpid() != 1) {
                fprintf(stderr, "hostmesh-init must run as PID 1 inside a guest.\n");
                return 1;
        }
        uint64_t phase[_AGENT_PHASE_MAX] = {};
        char net_message[512] = "";
        /* Before READY only what opening the port needs: /dev. The module
         * loader of Debian's kernel needs the command line and /sys too. */
        mount_dev();
        bool modular = have_modules();
        if (modular)
                early_setup();
        phase[AGENT_PHASE_MOUNTS] = now_usec(CLOCK_MONOTONIC) - start;
        bool want_net = false, want_containers = false;
        if (modular) {
                want_net = cmdline_ip[0] != 0;
                want_containers = containers_requested();
        }
        uint64_t t_mods = now_usec(CLOCK_MONOTONIC);
        pid_t helper = modular ? load_modules(/* want_disk= */ cmdline_disk[0] != 0 || want_containers, want_net) : 0;
        t_mods = now_usec(CLOCK_MONOTONIC) - t_mods;
        phase[AGENT_PHASE_MODULES] = modular ? t_mods : 0;

        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        sfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);

        uint64_t t_port = now_usec(CLOCK_MONOTONIC);
        port_fd = open_agent_port();
        t_port = now_usec(CLOCK_MONOTONIC) - t_port;
        if (port_fd < 0) {
                early_setup();
                say("no agent port %s: %s; powering off", AGENT_PORT_NAME, strerror(-port_fd));
                power_off();
        }
        phase[AGENT_PHASE_PORT] = t_port;

        /* READY as soon as the port is open: the network, the instance disk
         * and the containers are set up right after it, before the first
         * frame from the host is read. The token and every command come
         * after all of it the same; the host learns that the guest is up
         * while the guest still works (the network phase in READY is 0 on
         * this path; the console line below has its time). */
        uname(&u);
        uint64_t init_usec = now_usec(CLOCK_MONOTONIC) - start;
        r = agent_ready_encode(&b, boot_usec, init_usec, u.release, phase);
        if (r >= 0)
                r = send_buffer(&b);
        warm_up();
        if (!modular) {
                early_setup();
                want_net = cmdline_ip[0] != 0;
                want_containers = containers_requested();
        }
        if (r < 0)
                say("cannot send READY: %s", strerror(-r));

        mount_runtime_filesystems();
        pull_set_sender(send_buffer);

        /* A network that does not come up is logged, not fatal: the instance
         * still runs commands, and vmmd keeps this console for whoever looks
         * into why. */
        uint64_t t_net_phase = now_usec(CLOCK_MONOTONIC);
        setup_loopback();
        bool networked = false;
        uint64_t t_net = 0;
        if (want_net) {
                uint64_t t_wait = 0;
                const char *step = NULL;

                t_net = now_usec(CLOCK_MONOTONIC);
                r = setup_network(&step, &t_wait);
                t_net = now_usec(CLOCK_MONOTONIC) - t_net;
                networked = r >= 0;
                if (r < 0)
                        say("network: %s failed: %s; running without network", step, strerror(-r));
                else
                        /* Said last: each byte on the serial console is a
                         * trap into QEMU, a few ms per line under TCG. */
                        snprintf(net_message, sizeof(net_message),
                            "network: eth0 %s/32 via %s, nameserver %s, search %s; up in %llu us "
                            "(virtio_net %llu us, configuration %llu us, eth0 wait %llu us)",
                            cmdline_ip, cmdline_gw, cmdline_dns, cmdline_domain,
                            (unsigned long long) (t_virtio_net + t_net), (unsigned long long) t_virtio_net,
                            (unsigned long long) t_net, (unsigned long long) t_wait);
        }
        write_hosts(networked);
        t_net_phase = now_usec(CLOCK_MONOTONIC) - t_net_phase;

        uint64_t t_disk = now_usec(CLOCK_MONOTONIC);
        if (helper > 0)
                (void) waitpid(helper, NULL, 0);
        mount_disk();
        t_disk = now_usec(CLOCK_MONOTONIC) - t_disk;
        /* The container frames come after READY: containerd starts while
         * vmmd sends them. */
        if (want_containers)
                containers_setup(networked ? cmdline_dns : NULL, cmdline_domain, modular);
        say("ready in %llu us (mounts %llu us, modules %llu us, port %llu us; kernel %llu us); "
            "after READY: network %llu us, disk %llu us",
            (unsigned long long) init_usec,
            (unsigned long long) phase[AGENT_PHASE_MOUNTS], (unsigned long long) phase[AGENT_PHASE_MODULES],
            (unsigned long long) phase[AGENT_PHASE_PORT], (unsigned long long) boot_usec,
            (unsigned long long) t_net_phase, (unsigned long long) t_disk);
        if (net_message[0])
                say("%s", net_message);

        for (;;) {
                struct pollfd p[3 + 2 * COMMANDS_MAX + PULL_POLL_MAX];
                Command *owner[3 + 2 * COMMANDS_MAX];
                size_t n = 0, n_pull;

                p[n] = (struct pollfd){ .fd = host_away ? -1 : port_fd, .events = POLLIN };
                owner[n++] = NULL;
                p[n] = (struct pollfd){ .fd = sfd, .events = POLLIN };
                owner[n++] = NULL;
                /* -1 (ignored by poll) until a container exports ports. */
                p[n] = (struct pollfd){ .fd = containers_ports_fd(), .events = POLLIN };
                owner[n++] = NULL;
                for (size_t i = 0; i < COMMANDS_MAX; i++) {
                        if (!commands[i].used)
                                continue;
                        if (commands[i].out_fd >= 0) {
                                p[n] = (struct pollfd){ .fd = commands[i].out_fd, .events = POLLIN };
                                owner[n++] = &commands[i];
                        }
                        if (commands[i].err_fd >= 0) {
                                p[n] = (struct pollfd){ .fd = commands[i].err_fd, .events = POLLIN };
                                owner[n++] = &commands[i];
                        }
                }
                /* The Docker proxies' pull requests, last. */
                n_pull = pull_poll_fds(p + n);
                /* While vmmd is away (restarting), the port reports a hang-up
                 * on every poll: look again every 50 ms instead of spinning. */
                if (poll(p, n + n_pull, host_away ? 50 : -1) < 0 && errno != EINTR)
                        continue;
                host_away = false;

                if (p[1].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        while (read(sfd, &si, sizeof(si)) == sizeof(si))
                                ;
                        reap_children();
                }
                if (p[2].revents & POLLIN)
                        containers_ports_event();
                for (size_t i = 3; i < n; i++) {
                        Command *c = owner[i];

                        if (!p[i].revents)
                                continue;
                        if (p[i].fd == c->out_fd)
                                (void) forward_output(c, &c->out_fd, AGENT_STDOUT);
                        else if (p[i].fd == c->err_fd)
                                (void) forward_output(c, &c->err_fd, AGENT_STDERR);
                }
                drain_and_finish();
                pull_on_poll(p + n, n_pull);

                if (p[0].revents & POLLIN) {
                        ssize_t k = read(port_fd, in + in_size, sizeof(in) - in_size);

                        if (k > 0)
                                in_size += (size_t) k;
                        else if (k == 0) {
                                host_away = true;
                                pull_host_gone();
                        }
                        for (;;) {
                                AgentFrame f;
                                size_t used;

                                r = agent_frame_decode(in, in_size, &f, &used);
                                if (r < 0) {
                                        /* A broken stream (vmmd restarted in the middle
                                         * of a frame): drop what we have and resync on
                                         * the next write from the host. */
                                        say("bad frame from the host (%s), dropping %zu bytes", strerror(-r), in_size);
                                        in_size = 0;
                                        break;
                                }
                                if (r == 0)
                                        break;
                                handle_frame(&f);
                                memmove(in, in + used, in_size - used);
                                in_size -= used;
                        }
                } else if (p[0].revents & (POLLHUP | POLLERR)) {
                        host_away = true;
                        pull_host_gone();
                }
        }
}
