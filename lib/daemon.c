/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <signal.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "paths.h"

int daemon_parse_args(int argc, char **argv, const char *part, const char *summary, DaemonArgs *ret) {
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'n' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        *ret = (DaemonArgs){ .part = part };
        optind = 0;
        while ((c = getopt_long(argc, argv, "c:nhV", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        free(ret->config_path);
                        ret->config_path = strdup(optarg);
                        if (!ret->config_path)
                                return -ENOMEM;
                        ret->config_explicit = true;
                        break;
                case 'n':
                        ret->check_config = true;
                        break;
                case 'h':
                        printf("%s [OPTIONS]\n\n%s\n\n"
                               "  -c --config PATH    Config file (default /etc/hostmesh/%s.conf,\n"
                               "                      or $HOSTMESH_CONFIG_DIR/%s.conf)\n"
                               "  -n --check-config   Validate the config, print it normalized, exit\n"
                               "  -h --help           Show this help\n"
                               "  -V --version        Show the version\n\n"
                               "Environment: HOSTMESH_RUNTIME_DIR (sockets), HOSTMESH_STATE_DIR (state),\n"
                               "HOSTMESH_LOG_LEVEL (debug|info|notice|warning|err).\n",
                               program_invocation_short_name, summary, part, part);
                        return 1;
                case 'V':
                        printf("%s %s\n", program_invocation_short_name, HOSTMESH_VERSION);
                        return 1;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument '%s'; see --help.\n", program_invocation_short_name,
                        argv[optind]);
                return -EINVAL;
        }
        if (!ret->config_path) {
                ret->config_path = hostmesh_config_path(part);
                if (!ret->config_path)
                        return -ENOMEM;
        }
        return 0;
}

void daemon_args_done(DaemonArgs *a) {
        a->config_path = (free(a->config_path), NULL);
}

int daemon_block_signals(void) {
        sigset_t ss;

        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigaddset(&ss, SIGCHLD);
        if (pthread_sigmask(SIG_BLOCK, &ss, NULL) != 0)
                return -EINVAL;
        /* A peer closing a socket must be an error return, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        return 0;
}

int daemon_load_config(const DaemonArgs *a, const ConfigItem *table, size_t n_items, void *cfg) {
        _cleanup_free_ char *error = NULL;
        int r;

        r = config_load(table, n_items, cfg, a->config_path, &error);
        if (r == -ENOENT && !a->config_explicit) {
                log_debug("No config file %s, using defaults.", a->config_path);
                return 0;
        }
        if (r == -ENOENT)
                return log_error_errno(r, "Config file %s does not exist.", a->config_path);
        if (r < 0)
                return log_error_errno(r, "Invalid config: %s", error ? error : a->config_path);
        return 0;
}
