/* SPDX-License-Identifier: MIT */
#include "dns-grpc.h"
#include "dns-manager.h"

/* Health is served by the rpc runtime; the dns API comes with its issue. */
int dns_grpc_register(Manager *m) {
        (void) m;
        return 0;
}
