/* SPDX-License-Identifier: MIT */
#include "daemon.h"
#include "disk-manager.h"
#include "log.h"

int main(int argc, char **argv) {
        _cleanup_(daemon_args_done) DaemonArgs args = {};
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        log_setup("hostmesh-diskd");
        r = daemon_parse_args(argc, argv, "disk", "hostmesh disk: instance disks from a pool, sized by the shape rule.", &args);
        if (r != 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        r = daemon_block_signals();
        if (r < 0)
                return log_error_errno(r, "Failed to block signals: %m"), EXIT_FAILURE;
        r = manager_new(&args, &m);
        if (r < 0)
                return EXIT_FAILURE;
        if (args.check_config) {
                manager_print_config(m, stdout);
                return EXIT_SUCCESS;
        }
        r = manager_start(m);
        if (r < 0)
                return EXIT_FAILURE;
        r = manager_run(m);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_FAILURE;
        return r;
}
