/* SPDX-License-Identifier: MIT */
/* hostmesh-vmm-nethelper: the privileged half of vmmd's networking. vmmd
 * starts it with one end of a socketpair as fd 3; it serves requests on it
 * and exits when vmmd closes its end. It reads no configuration and opens
 * no files but /dev/net/tun and the sysctls it sets. */
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm-nethelper.h"

#define NETHELPER_FD 3

/* Keeps CAP_NET_ADMIN and nothing else (when it has it at all): the helper
 * runs as root under the unit, and root's other powers are not its job. */
static int keep_only_net_admin(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[2] = {};
        uint32_t keep = 1U << CAP_NET_ADMIN;

        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        d[0].effective &= keep;
        d[0].permitted &= keep;
        d[0].inheritable = 0;
        d[1].effective = d[1].permitted = d[1].inheritable = 0;
        (void) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        if (syscall(SYS_capset, &h, d) < 0)
                return -errno;
        return 0;
}

int main(int argc, char *argv[]) {
        struct stat st;
        int type = 0, r;
        socklen_t len = sizeof(type);

        (void) argv;
        if (argc != 1) {
                fprintf(stderr, "hostmesh-vmm-nethelper takes no arguments; vmmd starts it.\n");
                return 2;
        }
        if (fstat(NETHELPER_FD, &st) < 0 || !S_ISSOCK(st.st_mode) ||
            getsockopt(NETHELPER_FD, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET) {
                fprintf(stderr, "hostmesh-vmm-nethelper: fd %d is not vmmd's socket.\n", NETHELPER_FD);
                return 2;
        }
        /* vmmd blocks the signals it handles through its event loop, and a
         * spawned child inherits the mask: unblock them, or the death
         * signal below would never arrive. */
        sigset_t none;
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        /* If vmmd dies without closing (it cannot, but be sure), go too. */
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        (void) signal(SIGPIPE, SIG_IGN);
        r = keep_only_net_admin();
        if (r < 0) {
                fprintf(stderr, "hostmesh-vmm-nethelper: cannot drop capabilities: %s\n", strerror(-r));
                return 1;
        }

        r = nethelper_serve(NETHELPER_FD);
        if (r < 0) {
                fprintf(stderr, "hostmesh-vmm-nethelper: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}
