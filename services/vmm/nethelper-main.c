/* SPDX-License-Identifier: MIT */
/* hostmesh-vmm-nethelper: the privileged half of vmmd's networking. vmmd
 * starts it with one end of a socketpair as fd 3; it serves requests on it
 * and exits when vmmd closes its end. It reads no configuration and opens
 * no files but /dev/net/tun and the sysctls it sets. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "vmm-nethelper.h"

#define NETHELPER_FD 3

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
        /* If vmmd dies without closing (it cannot, but be sure), go too. */
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        (void) signal(SIGPIPE, SIG_IGN);

        r = nethelper_serve(NETHELPER_FD);
        if (r < 0) {
                fprintf(stderr, "hostmesh-vmm-nethelper: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}
