/* SPDX-License-Identifier: MIT */
/* Both halves of the network helper: the client vmmd uses and the server
 * loop the privileged helper runs. One request, one reply, in fixed-size
 * SOCK_SEQPACKET messages; nftables batches travel in a sealed memfd and tap
 * fds come back with SCM_RIGHTS. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/neighbour.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include "macro.h"
#include "vmm-nethelper.h"
#include "vmm-nft.h"

/* Hard caps: the helper trusts nothing vmmd sends. A full table with a few
 * thousand instances is a few MiB at most. */
#define NETHELPER_BATCH_MAX (64u * 1024 * 1024)
#define NETHELPER_TAPS_MAX 4096u
#define NETHELPER_MESSAGE_MAX 256
/* Replies from the kernel: one dump part or a run of ACKs. */
#define NETLINK_BUFFER_SIZE (64 * 1024)
#define NETLINK_ACK_TRUESIZE 2048

enum {
        REQUEST_SETUP_BRIDGE = 1,
        REQUEST_CREATE_TAP,
        REQUEST_DELETE_TAP,
        REQUEST_LIST_TAPS,
        REQUEST_APPLY,
};

/* The same layout for every request; unused fields are zero. Both ends are
 * the same build, so host byte order and the compiler's layout are shared. */
typedef struct Request {
        uint32_t type;
        uint32_t length;            /* sizeof(Request) */
        char bridge[IFNAMSIZ];      /* NUL-terminated */
        char tap[IFNAMSIZ];         /* NUL-terminated */
        uint8_t mac[6];
        uint8_t padding[2];
        uint32_t address;           /* network byte order */
        uint32_t prefixlen;
        uint32_t batch_size;        /* apply: bytes in the memfd passed along */
} Request;

typedef struct Reply {
        uint32_t type;              /* the request's */
        uint32_t length;            /* sizeof(Reply) + n_names * IFNAMSIZ */
        int32_t error;              /* 0 or a negative errno */
        uint32_t n_names;           /* list_taps: names follow, IFNAMSIZ bytes each */
        char message[NETHELPER_MESSAGE_MAX];
} Reply;

#define REPLY_MAX (sizeof(Reply) + NETHELPER_TAPS_MAX * IFNAMSIZ)

struct NetHelper {
        int fd;
        pid_t pid;
};

static bool ifname_valid(const char *s, size_t max) {
        size_t n = strnlen(s, max);

        if (n == 0 || n >= IFNAMSIZ || n == max)
                return false;
        for (const char *c = s; *c; c++)
                if (*c <= ' ' || *c >= 0x7f || *c == '/' || *c == ':')
                        return false;
        return true;
}

/* Sends data with at most one fd. */
static int send_with_fd(int sock, const void *data, size_t size, int fd) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = (void *) data, .iov_len = size };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (fd >= 0) {
                struct cmsghdr *c;

                mh.msg_control = control.buf;
                mh.msg_controllen = sizeof(control.buf);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        do
                n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        if ((size_t) n != size)
                return -EIO;
        return 0;
}

/* Receives one message and at most one fd (*ret_fd, -EBADF when none).
 * More fds than one, or a truncated message, is -EBADMSG. Returns the size;
 * 0 is end of file. */
static ssize_t recv_with_fd(int sock, void *data, size_t size, int *ret_fd) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * 4)];
        } control = {};
        struct iovec iov = { .iov_base = data, .iov_len = size };
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
        };
        int fd = -EBADF, extra = 0;
        ssize_t n;

        do
                n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
                        int f;

                        memcpy(&f, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
                        if (fd < 0)
                                fd = f;
                        else {
                                safe_close(f);
                                extra++;
                        }
                }
        }
        if (extra > 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                safe_close(fd);
                return -EBADMSG;
        }
        *ret_fd = fd;
        return n;
}

/* Client. */

int nethelper_new_from_fd(int fd, NetHelper **ret) {
        NetHelper *h;

        if (fd < 0)
                return -EBADF;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->fd = fd;
        h->pid = 0;
        *ret = h;
        return 0;
}

int nethelper_spawn(const char *path, NetHelper **ret) {
        char *argv[] = { (char *) path, NULL };
        char *envp[] = { NULL };
        _cleanup_close_ int ours = -EBADF, theirs = -EBADF;
        posix_spawn_file_actions_t fa;
        int pair[2], r;
        NetHelper *h;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return negative_errno();
        ours = pair[0];
        theirs = pair[1];
        /* dup2() onto itself would keep O_CLOEXEC: make sure it is not 3. */
        if (theirs == 3) {
                int f = fcntl(theirs, F_DUPFD_CLOEXEC, 4);

                if (f < 0)
                        return negative_errno();
                safe_close(theirs);
                theirs = f;
        }

        r = posix_spawn_file_actions_init(&fa);
        if (r != 0)
                return -r;
        r = posix_spawn_file_actions_adddup2(&fa, theirs, 3);
        if (r == 0)
                /* No environment: the helper reads no configuration. */
                r = posix_spawn(&pid, path, &fa, NULL, argv, envp);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0)
                return -r;

        h = calloc(1, sizeof(*h));
        if (!h) {
                /* Closing our end makes the helper exit; reap it. */
                ours = safe_close(ours);
                (void) waitpid(pid, NULL, 0);
                return -ENOMEM;
        }
        h->fd = TAKE_FD(ours);
        h->pid = pid;
        *ret = h;
        return 0;
}

NetHelper *nethelper_free(NetHelper *h) {
        if (!h)
                return NULL;
        safe_close(h->fd);
        if (h->pid > 0)
                while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        free(h);
        return NULL;
}

pid_t nethelper_pid(const NetHelper *h) {
        return h->pid;
}

static int set_name(char dst[static IFNAMSIZ], const char *src) {
        if (!src || !ifname_valid(src, IFNAMSIZ + 1))
                return -EINVAL;
        memset(dst, 0, IFNAMSIZ);
        memcpy(dst, src, strlen(src));
        return 0;
}

/* One round trip. *ret_reply is allocated (REPLY_MAX bytes) and checked:
 * type, lengths and a NUL-terminated message. */
static int call(NetHelper *h, Request *req, int send_fd, Reply **ret_reply, int *ret_fd, char **ret_error) {
        _cleanup_free_ Reply *rep = NULL;
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;
        int r;

        if (ret_error)
                *ret_error = NULL;
        req->length = sizeof(*req);
        r = send_with_fd(h->fd, req, sizeof(*req), send_fd);
        if (r == -EPIPE || r == -ECONNRESET)
                goto gone;
        if (r < 0)
                return r;

        rep = calloc(1, REPLY_MAX);
        if (!rep)
                return -ENOMEM;
        n = recv_with_fd(h->fd, rep, REPLY_MAX, &fd);
        if (n == 0 || n == -ECONNRESET)
                goto gone;
        if (n < 0)
                return (int) n;
        if ((size_t) n < sizeof(Reply) || rep->length != (size_t) n || rep->type != req->type)
                return -EBADMSG;
        if (rep->n_names > NETHELPER_TAPS_MAX || rep->length != sizeof(Reply) + rep->n_names * IFNAMSIZ)
                return -EBADMSG;
        if (rep->error > 0 || rep->error < -4095)
                return -EBADMSG;
        rep->message[sizeof(rep->message) - 1] = '\0';
        if (rep->error < 0) {
                if (ret_error && rep->message[0]) {
                        *ret_error = strdup(rep->message);
                        if (!*ret_error)
                                return -ENOMEM;
                }
                return rep->error;
        }
        if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        else if (fd >= 0)
                return -EBADMSG; /* An fd we did not ask for. */
        if (ret_reply)
                *ret_reply = TAKE_PTR(rep);
        return 0;

gone:
        /* vmmd dropped CAP_NET_ADMIN after starting the helper, so it
         * cannot start another one: only a restart of vmmd brings it back. */
        if (ret_error)
                *ret_error = strdup("the network helper (hostmesh-vmm-nethelper) exited; restart vmmd "
                                    "(systemctl restart hostmesh-vmm) and see its log for why");
        return -ECONNRESET;
}

/* A request naming a bridge and, when not NULL, a tap. */
static int request_for(uint32_t type, const char *bridge, const char *tap, struct in_addr address, Request *ret) {
        int r;

        *ret = (Request){ .type = type, .address = address.s_addr };
        r = set_name(ret->bridge, bridge);
        if (r >= 0 && tap)
                r = set_name(ret->tap, tap);
        return r;
}

int nethelper_setup_bridge(NetHelper *h, const char *bridge, struct in_addr address, unsigned prefixlen,
                           char **ret_error) {
        Request req;
        int r;

        r = request_for(REQUEST_SETUP_BRIDGE, bridge, NULL, address, &req);
        if (r < 0)
                return r;
        req.prefixlen = prefixlen;
        return call(h, &req, -EBADF, NULL, NULL, ret_error);
}

int nethelper_create_tap(NetHelper *h, const char *bridge, const char *tap, const uint8_t mac[6],
                         struct in_addr guest, int *ret_fd, char **ret_error) {
        Request req;
        int fd = -EBADF, r;

        r = request_for(REQUEST_CREATE_TAP, bridge, tap, guest, &req);
        if (r < 0)
                return r;
        memcpy(req.mac, mac, 6);
        r = call(h, &req, -EBADF, NULL, &fd, ret_error);
        if (r < 0)
                return r;
        if (fd < 0)
                return -EBADMSG;
        *ret_fd = fd;
        return 0;
}

int nethelper_delete_tap(NetHelper *h, const char *bridge, const char *tap, struct in_addr guest,
                         char **ret_error) {
        Request req;
        int r;

        r = request_for(REQUEST_DELETE_TAP, bridge, tap, guest, &req);
        if (r < 0)
                return r;
        return call(h, &req, -EBADF, NULL, NULL, ret_error);
}

int nethelper_list_taps(NetHelper *h, const char *bridge, char ***ret, char **ret_error) {
        Request req;
        _cleanup_free_ Reply *rep = NULL;
        _cleanup_(strv_freep) char **names = NULL;
        const char *p;
        int r;

        r = request_for(REQUEST_LIST_TAPS, bridge, NULL, (struct in_addr){}, &req);
        if (r < 0)
                return r;
        r = call(h, &req, -EBADF, &rep, NULL, ret_error);
        if (r < 0)
                return r;
        names = calloc(rep->n_names + 1, sizeof(char *));
        if (!names)
                return -ENOMEM;
        p = (const char *) (rep + 1);
        for (uint32_t k = 0; k < rep->n_names; k++, p += IFNAMSIZ) {
                if (!ifname_valid(p, IFNAMSIZ))
                        return -EBADMSG;
                names[k] = strdup(p);
                if (!names[k])
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(names);
        return 0;
}

int nethelper_apply(NetHelper *h, const void *batch, size_t size, char **ret_error) {
        Request req = { .type = REQUEST_APPLY };
        _cleanup_close_ int fd = -EBADF;
        const char *p = batch;
        size_t done = 0;

        if (!batch || size == 0 || size > NETHELPER_BATCH_MAX)
                return -EINVAL;
        /* A sealed memfd rather than the socket: a full table is far larger
         * than a socket buffer, and once sealed it cannot change under the
         * helper's check. */
        fd = memfd_create("hostmesh-nft-batch", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return negative_errno();
        while (done < size) {
                ssize_t n = write(fd, p + done, size - done);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                done += (size_t) n;
        }
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
                return negative_errno();
        req.batch_size = (uint32_t) size;
        return call(h, &req, fd, NULL, NULL, ret_error);
}

/* Server. */

typedef struct Server {
        struct mnl_socket *rtnl;
        uint32_t rtnl_portid;
        uint32_t seq;
        struct mnl_socket *nf;
        uint32_t nf_portid;
        int nf_sndbuf, nf_rcvbuf;
        char *buf;                  /* NETLINK_BUFFER_SIZE, for replies */
} Server;

_printf_(3, 4) static int fail(Reply *rep, int r, const char *fmt, ...) {
        size_t n;
        va_list ap;

        /* "<what failed>: <strerror>", cut to fit. */
        va_start(ap, fmt);
        (void) vsnprintf(rep->message, sizeof(rep->message), fmt, ap);
        va_end(ap);
        n = strlen(rep->message);
        (void) snprintf(rep->message + n, sizeof(rep->message) - n, ": %s", strerror(-r));
        return r;
}

static struct nlmsghdr *rtnl_msg(Server *s, uint16_t type, uint16_t flags, void *family_header, size_t size) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(s->buf);
        void *p;

        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | flags;
        nlh->nlmsg_seq = ++s->seq;
        p = mnl_nlmsg_put_extra_header(nlh, size);
        memcpy(p, family_header, size);
        return nlh;
}

/* Sends a request and reads until its ACK, or until the end of a dump;
 * cb (if any) sees every reply message. */
static int rtnl_talk(Server *s, struct nlmsghdr *nlh, mnl_cb_t cb, void *data) {
        uint32_t seq = nlh->nlmsg_seq;
        int r;

        /* NLM_F_DUMP shares bits with NLM_F_CREATE/NLM_F_EXCL: only a GET
         * is a dump. Dumps end with NLMSG_DONE; everything else is ACKed. */
        if (nlh->nlmsg_type != RTM_GETLINK || (nlh->nlmsg_flags & NLM_F_DUMP) != NLM_F_DUMP)
                nlh->nlmsg_flags |= NLM_F_ACK;
        if (mnl_socket_sendto(s->rtnl, nlh, nlh->nlmsg_len) < 0)
                return negative_errno();
        for (;;) {
                ssize_t n = mnl_socket_recvfrom(s->rtnl, s->buf, NETLINK_BUFFER_SIZE);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                r = mnl_cb_run(s->buf, (size_t) n, seq, s->rtnl_portid, cb, data);
                if (r == MNL_CB_STOP)
                        return 0;
                if (r == MNL_CB_ERROR)
                        return negative_errno();
        }
}

typedef struct LinkInfo {
        unsigned ifindex;
        unsigned master;
        char name[IFNAMSIZ];
        char kind[32];
} LinkInfo;

static void parse_link(const struct nlmsghdr *nlh, LinkInfo *info) {
        const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        const struct nlattr *a;

        *info = (LinkInfo) { .ifindex = (unsigned) ifi->ifi_index };
        mnl_attr_for_each(a, nlh, sizeof(*ifi)) {
                switch (mnl_attr_get_type(a)) {
                case IFLA_IFNAME:
                        if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                                snprintf(info->name, sizeof(info->name), "%s", mnl_attr_get_str(a));
                        break;
                case IFLA_MASTER:
                        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
                                info->master = mnl_attr_get_u32(a);
                        break;
                case IFLA_LINKINFO: {
                        const struct nlattr *i;

                        mnl_attr_for_each_nested(i, a)
                                if (mnl_attr_get_type(i) == IFLA_INFO_KIND &&
                                    mnl_attr_validate(i, MNL_TYPE_NUL_STRING) >= 0)
                                        snprintf(info->kind, sizeof(info->kind), "%s", mnl_attr_get_str(i));
                        break;
                }
                }
        }
}

static int link_cb(const struct nlmsghdr *nlh, void *data) {
        if (nlh->nlmsg_type == RTM_NEWLINK && mnl_nlmsg_get_payload_len(nlh) >= sizeof(struct ifinfomsg))
                parse_link(nlh, data);
        return MNL_CB_OK;
}

/* -ENODEV when there is no such link. */
static int link_get(Server *s, const char *name, LinkInfo *ret) {
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        struct nlmsghdr *nlh = rtnl_msg(s, RTM_GETLINK, 0, &ifi, sizeof(ifi));
        int r;

        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        *ret = (LinkInfo) {};
        r = rtnl_talk(s, nlh, link_cb, ret);
        if (r < 0)
                return r;
        return ret->ifindex > 0 ? 0 : -ENODEV;
}

static int link_set_up(Server *s, unsigned ifindex, unsigned master) {
        struct ifinfomsg ifi = {
                .ifi_family = AF_UNSPEC, .ifi_index = (int) ifindex, .ifi_flags = IFF_UP, .ifi_change = IFF_UP,
        };
        struct nlmsghdr *nlh = rtnl_msg(s, RTM_NEWLINK, 0, &ifi, sizeof(ifi));

        if (master > 0)
                mnl_attr_put_u32(nlh, IFLA_MASTER, master);
        return rtnl_talk(s, nlh, NULL, NULL);
}

/* Writes a sysctl unless it has the value already (a sandbox may make
 * /proc/sys read-only where an administrator set it beforehand). */
static int write_sysctl(const char *path, const char *value) {
        _cleanup_close_ int fd = -EBADF;
        size_t n = strlen(value);
        char now[32];
        ssize_t k;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                k = read(fd, now, sizeof(now) - 1);
                if (k == (ssize_t) n && memcmp(now, value, n) == 0)
                        return 0;
                fd = safe_close(fd);
        }
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (write(fd, value, n) != (ssize_t) n)
                return negative_errno();
        return 0;
}

static int serve_setup_bridge(Server *s, const Request *req, Reply *rep) {
        struct ifaddrmsg ifa = { .ifa_family = AF_INET };
        char path[128];
        struct nlmsghdr *nlh;
        LinkInfo br;
        int r;

        if (req->prefixlen < 8 || req->prefixlen > 30)
                return fail(rep, -EINVAL, "Bad prefix length %u", req->prefixlen);

        r = link_get(s, req->bridge, &br);
        if (r == -ENODEV) {
                struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
                struct nlattr *info;
                uint8_t mac[6];

                /* A MAC of its own: otherwise the bridge takes the lowest of
                 * its ports' and changes it as taps come and go, which
                 * flushes the neighbour table (permanent entries too) and
                 * leaves guests with a stale gateway MAC. Locally
                 * administered, unicast. */
                if (getrandom(mac, sizeof(mac), 0) != sizeof(mac))
                        return fail(rep, -EIO, "Failed to pick a MAC for %s", req->bridge);
                mac[0] = (uint8_t) ((mac[0] & 0xfe) | 0x02);
                nlh = rtnl_msg(s, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof(ifi));
                mnl_attr_put_strz(nlh, IFLA_IFNAME, req->bridge);
                mnl_attr_put(nlh, IFLA_ADDRESS, sizeof(mac), mac);
                info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
                mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
                mnl_attr_nest_end(nlh, info);
                r = rtnl_talk(s, nlh, NULL, NULL);
                if (r < 0 && r != -EEXIST)
                        return fail(rep, r, "Failed to create bridge %s", req->bridge);
                r = link_get(s, req->bridge, &br);
        }
        if (r < 0)
                return fail(rep, r, "Failed to look up bridge %s", req->bridge);
        if (!streq(br.kind, "bridge"))
                return fail(rep, -EEXIST, "%s exists and is not a bridge", req->bridge);

        ifa.ifa_prefixlen = (unsigned char) req->prefixlen;
        ifa.ifa_scope = RT_SCOPE_UNIVERSE;
        ifa.ifa_index = br.ifindex;
        nlh = rtnl_msg(s, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &ifa, sizeof(ifa));
        mnl_attr_put_u32(nlh, IFA_LOCAL, req->address);
        mnl_attr_put_u32(nlh, IFA_ADDRESS, req->address);
        r = rtnl_talk(s, nlh, NULL, NULL);
        if (r < 0)
                return fail(rep, r, "Failed to set the address of %s", req->bridge);

        r = link_set_up(s, br.ifindex, 0);
        if (r < 0)
                return fail(rep, r, "Failed to bring %s up", req->bridge);

        r = write_sysctl("/proc/sys/net/ipv4/ip_forward", "1\n");
        if (r < 0)
                return fail(rep, r, "IPv4 forwarding is off and cannot be turned on here; set net.ipv4.ip_forward = 1 "
                            "(sysctl.d)");
        /* Guests reach each other through the host (the bridge ports are
         * isolated); a redirect would tell them to go direct, which cannot
         * work. Guests refuse redirects anyway (hostmesh-init), so a
         * read-only /proc/sys here is not an error. */
        snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/send_redirects", req->bridge);
        (void) write_sysctl(path, "0\n");
        return 0;
}

static int neigh_change(Server *s, uint16_t type, unsigned bridge, uint32_t address, const uint8_t *mac) {
        struct ndmsg ndm = {
                .ndm_family = AF_INET, .ndm_ifindex = (int) bridge, .ndm_state = NUD_PERMANENT,
        };
        struct nlmsghdr *nlh;

        nlh = rtnl_msg(s, type, type == RTM_NEWNEIGH ? NLM_F_CREATE | NLM_F_REPLACE : 0, &ndm, sizeof(ndm));
        mnl_attr_put_u32(nlh, NDA_DST, address);
        if (mac)
                mnl_attr_put(nlh, NDA_LLADDR, 6, mac);
        return rtnl_talk(s, nlh, NULL, NULL);
}

/* Bridge port, isolation, up, neighbour entry: everything after the tap
 * exists. */
static int tap_attach(Server *s, const Request *req, Reply *rep, const LinkInfo *br) {
        struct ifinfomsg ifi = { .ifi_family = AF_BRIDGE };
        struct nlmsghdr *nlh;
        struct nlattr *prot;
        LinkInfo tap;
        int r;

        r = link_get(s, req->tap, &tap);
        if (r < 0)
                return fail(rep, r, "Failed to look up tap %s", req->tap);
        r = link_set_up(s, tap.ifindex, br->ifindex);
        if (r < 0)
                return fail(rep, r, "Failed to add tap %s to %s", req->tap, req->bridge);

        /* Isolated ports cannot talk to each other on the bridge: guest to
         * guest goes through the host's forward chain. */
        ifi.ifi_index = (int) tap.ifindex;
        nlh = rtnl_msg(s, RTM_SETLINK, 0, &ifi, sizeof(ifi));
        prot = mnl_attr_nest_start(nlh, IFLA_PROTINFO);
        mnl_attr_put_u8(nlh, IFLA_BRPORT_ISOLATED, 1);
        mnl_attr_nest_end(nlh, prot);
        r = rtnl_talk(s, nlh, NULL, NULL);
        if (r < 0)
                return fail(rep, r, "Failed to isolate bridge port %s", req->tap);

        r = neigh_change(s, RTM_NEWNEIGH, br->ifindex, req->address, req->mac);
        if (r < 0)
                return fail(rep, r, "Failed to add the neighbour entry for %s", req->tap);
        return 0;
}

static int serve_create_tap(Server *s, const Request *req, Reply *rep, int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        struct ifreq ifr = {};
        LinkInfo br, existing;
        bool created;
        int r;

        if ((req->mac[0] & 1) || !memcmp(req->mac, (const uint8_t[6]) {}, 6))
                return fail(rep, -EINVAL, "Bad MAC address for %s", req->tap);
        r = link_get(s, req->bridge, &br);
        if (r < 0)
                return fail(rep, r, "Failed to look up bridge %s", req->bridge);
        if (!streq(br.kind, "bridge"))
                return fail(rep, -ENOTTY, "%s is not a bridge", req->bridge);
        r = link_get(s, req->tap, &existing);
        if (r < 0 && r != -ENODEV)
                return fail(rep, r, "Failed to look up tap %s", req->tap);
        created = r == -ENODEV;

        /* TUNSETIFF on an existing persistent tap of that name attaches to
         * it (and refuses a link of another kind). */
        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return fail(rep, negative_errno(), "Failed to open /dev/net/tun");
        memcpy(ifr.ifr_name, req->tap, IFNAMSIZ);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
                if (errno == EBUSY)
                        return fail(rep, -EBUSY, "Tap %s is in use", req->tap);
                return fail(rep, negative_errno(), "Failed to create tap %s", req->tap);
        }
        if (ioctl(fd, TUNSETPERSIST, 1) < 0)
                return fail(rep, negative_errno(), "Failed to make tap %s persistent", req->tap);

        r = tap_attach(s, req, rep, &br);
        if (r < 0) {
                /* A tap we created goes away with our fd; one that was
                 * there before stays as it was found. */
                if (created)
                        (void) ioctl(fd, TUNSETPERSIST, 0);
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int serve_delete_tap(Server *s, const Request *req, Reply *rep) {
        LinkInfo tap, br;
        int r;

        r = link_get(s, req->tap, &tap);
        if (r < 0 && r != -ENODEV)
                return fail(rep, r, "Failed to look up tap %s", req->tap);
        if (r >= 0) {
                struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = (int) tap.ifindex };

                /* Only taps: vmmd may not delete the host's other links. */
                if (!streq(tap.kind, "tun"))
                        return fail(rep, -EPERM, "%s is not a tap", req->tap);
                r = rtnl_talk(s, rtnl_msg(s, RTM_DELLINK, 0, &ifi, sizeof(ifi)), NULL, NULL);
                if (r < 0 && r != -ENODEV)
                        return fail(rep, r, "Failed to delete tap %s", req->tap);
        }

        r = link_get(s, req->bridge, &br);
        if (r == -ENODEV)
                return 0;
        if (r < 0)
                return fail(rep, r, "Failed to look up bridge %s", req->bridge);
        r = neigh_change(s, RTM_DELNEIGH, br.ifindex, req->address, NULL);
        if (r < 0 && r != -ENOENT)
                return fail(rep, r, "Failed to delete the neighbour entry of %s", req->tap);
        return 0;
}

typedef struct TapList {
        unsigned bridge;
        char *names;                /* IFNAMSIZ each */
        uint32_t n;
        bool overflow;
} TapList;

static int tap_list_cb(const struct nlmsghdr *nlh, void *data) {
        TapList *l = data;
        LinkInfo info;

        if (nlh->nlmsg_type != RTM_NEWLINK || mnl_nlmsg_get_payload_len(nlh) < sizeof(struct ifinfomsg))
                return MNL_CB_OK;
        parse_link(nlh, &info);
        if (info.master != l->bridge || !streq(info.kind, "tun") || !info.name[0])
                return MNL_CB_OK;
        if (l->n >= NETHELPER_TAPS_MAX) {
                l->overflow = true;
                return MNL_CB_OK;
        }
        memcpy(l->names + (size_t) l->n * IFNAMSIZ, info.name, IFNAMSIZ);
        l->n++;
        return MNL_CB_OK;
}

static int serve_list_taps(Server *s, const Request *req, Reply *rep) {
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        TapList l = { .names = (char *) (rep + 1) };
        LinkInfo br;
        int r;

        r = link_get(s, req->bridge, &br);
        if (r == -ENODEV)
                return 0; /* No bridge, no taps on it. */
        if (r < 0)
                return fail(rep, r, "Failed to look up bridge %s", req->bridge);
        l.bridge = br.ifindex;
        r = rtnl_talk(s, rtnl_msg(s, RTM_GETLINK, NLM_F_DUMP, &ifi, sizeof(ifi)), tap_list_cb, &l);
        if (r < 0)
                return fail(rep, r, "Failed to list the links");
        if (l.overflow)
                return fail(rep, -E2BIG, "More than %u taps on %s", NETHELPER_TAPS_MAX, req->bridge);
        rep->n_names = l.n;
        return 0;
}

static const char *nft_message_name(uint16_t type) {
        static const char *const names[] = {
                [NFT_MSG_NEWTABLE] = "new table",  [NFT_MSG_DELTABLE] = "delete table",
                [NFT_MSG_NEWCHAIN] = "new chain",  [NFT_MSG_DELCHAIN] = "delete chain",
                [NFT_MSG_NEWRULE] = "new rule",    [NFT_MSG_DELRULE] = "delete rule",
                [NFT_MSG_NEWSET] = "new set",      [NFT_MSG_DELSET] = "delete set",
                [NFT_MSG_NEWSETELEM] = "new element", [NFT_MSG_DELSETELEM] = "delete element",
        };
        uint16_t m = NFNL_MSG_TYPE(type);

        if (type == NFNL_MSG_BATCH_BEGIN)
                return "batch begin";
        if (m < ELEMENTSOF(names) && names[m])
                return names[m];
        return "message";
}

static int nf_open(Server *s) {
        int one = 1;

        if (s->nf)
                return 0;
        s->nf = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
        if (!s->nf)
                return negative_errno();
        if (mnl_socket_bind(s->nf, 0, MNL_SOCKET_AUTOPID) < 0)
                return negative_errno();
        s->nf_portid = mnl_socket_get_portid(s->nf);
        /* Errors carry only the failed message's header, plus the kernel's
         * explanation when it has one. */
        (void) mnl_socket_setsockopt(s->nf, NETLINK_CAP_ACK, &one, sizeof(one));
        (void) mnl_socket_setsockopt(s->nf, NETLINK_EXT_ACK, &one, sizeof(one));
        return 0;
}

/* Index and type of the batch message with this sequence number. */
static void find_message(const char *batch, size_t size, uint32_t seq, unsigned *ret_index, uint16_t *ret_type) {
        const struct nlmsghdr *nlh = (const struct nlmsghdr *) batch;
        int len = (int) size;
        unsigned k = 0;

        *ret_index = 0;
        *ret_type = 0;
        for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len), k++)
                if (nlh->nlmsg_seq == seq) {
                        *ret_index = k;
                        *ret_type = nlh->nlmsg_type;
                        return;
                }
}

static int serve_apply(Server *s, const Request *req, int fd, Reply *rep) {
        const unsigned want_seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
        _cleanup_free_ char *batch = NULL;
        const struct nlmsghdr *nlh;
        unsigned expected = 0, acked = 0;
        int seals, r, len, first_error = 0;
        uint32_t failed_seq = 0;
        char ext[128] = "";
        struct stat st;
        size_t done = 0;

        if (fd < 0)
                return fail(rep, -EBADMSG, "Apply without a batch");
        seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0 || ((unsigned) seals & want_seals) != want_seals)
                return fail(rep, -EPERM, "The batch is not in a sealed memfd");
        if (fstat(fd, &st) < 0)
                return fail(rep, negative_errno(), "Failed to stat the batch");
        if (req->batch_size == 0 || req->batch_size > NETHELPER_BATCH_MAX || st.st_size != (off_t) req->batch_size)
                return fail(rep, -EBADMSG, "Bad batch size %u", req->batch_size);

        /* Copied once, then checked and sent from the copy. */
        batch = malloc(req->batch_size);
        if (!batch)
                return fail(rep, -ENOMEM, "Failed to read the batch");
        while (done < req->batch_size) {
                ssize_t n = pread(fd, batch + done, req->batch_size - done, (off_t) done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return fail(rep, n < 0 ? negative_errno() : -EIO, "Failed to read the batch");
                done += (size_t) n;
        }

        r = nft_batch_check_scope(batch, req->batch_size);
        if (r < 0)
                return fail(rep, r, r == -EPERM ? "The batch touches more than table inet " NFT_TABLE_NAME :
                                                  "The batch is malformed");

        r = nf_open(s);
        if (r < 0)
                return fail(rep, r, "Failed to open a netfilter socket");
        nlh = (const struct nlmsghdr *) batch;
        len = (int) req->batch_size;
        for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len))
                if (nlh->nlmsg_flags & NLM_F_ACK)
                        expected++;

        /* The batch is one transaction and must go in one datagram. The
         * kernel processes it within sendmsg(), so every ACK is queued by
         * the time it returns: the receive buffer must hold them all, and
         * each ACK is its own skb (NETLINK_ACK_TRUESIZE is a generous
         * bound for one, headers and accounting included). */
        {
                int sndbuf = (int) req->batch_size + 65536;
                int rcvbuf = (int) MIN((size_t) expected * NETLINK_ACK_TRUESIZE + 262144, (size_t) INT32_MAX / 2);

                if (sndbuf > s->nf_sndbuf) {
                        if (setsockopt(mnl_socket_get_fd(s->nf), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf,
                                       sizeof(sndbuf)) < 0)
                                return fail(rep, negative_errno(), "Failed to size the netfilter socket");
                        s->nf_sndbuf = sndbuf;
                }
                if (rcvbuf > s->nf_rcvbuf) {
                        if (setsockopt(mnl_socket_get_fd(s->nf), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
                                       sizeof(rcvbuf)) < 0)
                                return fail(rep, negative_errno(), "Failed to size the netfilter socket");
                        s->nf_rcvbuf = rcvbuf;
                }
        }

        if (mnl_socket_sendto(s->nf, batch, req->batch_size) < 0)
                return fail(rep, negative_errno(), "Failed to send the batch");

        while (acked < expected) {
                ssize_t n = recv(mnl_socket_get_fd(s->nf), s->buf, NETLINK_BUFFER_SIZE, MSG_DONTWAIT);
                const struct nlmsghdr *m;
                int left;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n < 0)
                        return fail(rep, negative_errno(), "Failed to read the batch's acknowledgements");
                m = (const struct nlmsghdr *) s->buf;
                left = (int) n;
                for (; mnl_nlmsg_ok(m, left); m = mnl_nlmsg_next(m, &left)) {
                        const struct nlmsgerr *e;
                        const struct nlattr *a;
                        size_t off;

                        if (m->nlmsg_type != NLMSG_ERROR || mnl_nlmsg_get_payload_len(m) < sizeof(*e))
                                continue;
                        e = mnl_nlmsg_get_payload(m);
                        acked++;
                        if (e->error == 0 || first_error != 0)
                                continue;
                        first_error = e->error < 0 && e->error > -4096 ? e->error : -EIO;
                        failed_seq = m->nlmsg_seq;
                        if (!(m->nlmsg_flags & NLM_F_ACK_TLVS))
                                continue;
                        off = sizeof(*e);
                        if (!(m->nlmsg_flags & NLM_F_CAPPED))
                                off += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
                        if (off > mnl_nlmsg_get_payload_len(m))
                                continue;
                        mnl_attr_for_each(a, m, off)
                                if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG &&
                                    mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                                        snprintf(ext, sizeof(ext), ", %s", mnl_attr_get_str(a));
                }
        }
        if (first_error < 0) {
                unsigned index;
                uint16_t type;

                find_message(batch, req->batch_size, failed_seq, &index, &type);
                return fail(rep, first_error, "nftables refused the batch (message %u, %s%s)", index,
                            nft_message_name(type), ext);
        }
        if (acked < expected)
                return fail(rep, -EIO, "nftables acknowledged %u of %u messages", acked, expected);
        return 0;
}

static bool request_valid(const Request *req, ssize_t n) {
        if (n != (ssize_t) sizeof(*req) || req->length != sizeof(*req))
                return false;
        switch (req->type) {
        case REQUEST_SETUP_BRIDGE:
        case REQUEST_LIST_TAPS:
        case REQUEST_APPLY:
                break;
        case REQUEST_CREATE_TAP:
        case REQUEST_DELETE_TAP:
                if (!ifname_valid(req->tap, IFNAMSIZ))
                        return false;
                break;
        default:
                return false;
        }
        return req->type == REQUEST_APPLY || ifname_valid(req->bridge, IFNAMSIZ);
}

static void server_done(Server *s) {
        if (s->rtnl)
                mnl_socket_close(s->rtnl);
        if (s->nf)
                mnl_socket_close(s->nf);
        free(s->buf);
}

int nethelper_serve(int fd) {
        _cleanup_free_ Reply *rep = NULL;
        Server s = {};
        int r = 0;

        rep = malloc(REPLY_MAX);
        s.buf = malloc(NETLINK_BUFFER_SIZE);
        if (!rep || !s.buf) {
                r = -ENOMEM;
                goto out;
        }
        s.rtnl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        if (!s.rtnl || mnl_socket_bind(s.rtnl, 0, MNL_SOCKET_AUTOPID) < 0) {
                r = negative_errno();
                goto out;
        }
        s.rtnl_portid = mnl_socket_get_portid(s.rtnl);

        for (;;) {
                _cleanup_close_ int in_fd = -EBADF, out_fd = -EBADF;
                Request req;
                ssize_t n;

                n = recv_with_fd(fd, &req, sizeof(req), &in_fd);
                if (n == 0)
                        break; /* vmmd closed its end: we are done. */
                memset(rep, 0, sizeof(*rep));
                if (n < 0 && n != -EBADMSG) {
                        r = (int) n;
                        break;
                }
                rep->type = n > 0 && (size_t) n >= sizeof(uint32_t) ? req.type : 0;
                if (n < 0 || !request_valid(&req, n))
                        rep->error = fail(rep, -EBADMSG, "Malformed request");
                else if (req.type != REQUEST_APPLY && in_fd >= 0)
                        rep->error = fail(rep, -EBADMSG, "Unexpected file descriptor");
                else
                        switch (req.type) {
                        case REQUEST_SETUP_BRIDGE:
                                rep->error = serve_setup_bridge(&s, &req, rep);
                                break;
                        case REQUEST_CREATE_TAP:
                                rep->error = serve_create_tap(&s, &req, rep, &out_fd);
                                break;
                        case REQUEST_DELETE_TAP:
                                rep->error = serve_delete_tap(&s, &req, rep);
                                break;
                        case REQUEST_LIST_TAPS:
                                rep->error = serve_list_taps(&s, &req, rep);
                                break;
                        case REQUEST_APPLY:
                                rep->error = serve_apply(&s, &req, in_fd, rep);
                                break;
                        }
                if (rep->error < 0)
                        rep->n_names = 0;
                rep->length = (uint32_t) (sizeof(Reply) + rep->n_names * IFNAMSIZ);
                r = send_with_fd(fd, rep, rep->length, rep->error < 0 ? -EBADF : out_fd);
                if (r < 0)
                        break;
        }
out:
        server_done(&s);
        return r;
}
