/* SPDX-License-Identifier: MIT */
/* hostmesh-dockerproxy-guest: the Docker proxy for one container inside an
 * instance. hostmesh-init starts one per container that asked for Docker;
 * it serves that container's socket (bind-mounted into it as its
 * docker.sock) in front of the guest's dockerd, with the same framing,
 * policy, bind translation and ownership code as hostmesh-dockerproxyd
 * (dockerproxy_engine). Identity is which socket: every connection on it
 * is that container, whose root is --root (the guest's mount of its root
 * file system), so `-v /mydata:/x` reaches dockerd as <root>/mydata.
 *
 * The records of what the container made live in this process's memory:
 * the instance, and this process, end with the container's instance. */

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>

#include "dockerproxy-owned.h"
#include "dockerproxy-proxy.h"
#include "dockerproxy-translate.h"
#include "log.h"
#include "macro.h"

typedef struct GuestProxy {
        DockerPolicy policy;   /* deny by default: every allow_* false */
        DockerCaller caller;
        OwnedSet *owned;
} GuestProxy;

/* One caller per process, so no ancestors: what it made is its own. */
static void guest_on_record(void *userdata, const DockerCaller *caller, OwnedKind kind, const char *id, bool add) {
        GuestProxy *g = userdata;
        int r;

        (void) caller;
        if (!add) {
                (void) owned_set_remove(g->owned, kind, id);
                return;
        }
        r = owned_set_add(g->owned, kind, id);
        if (r < 0)
                log_warning_errno(r, "Cannot record %s %s for container %s, it will not be able to use it: %m",
                                  owned_kind_to_string(kind), id, g->caller.id);
}

static void usage(FILE *f) {
        fprintf(f, "usage: hostmesh-dockerproxy-guest --engine SOCKET --listen SOCKET --root DIR --id ID [--pull-socket SOCKET]\n"
                   "Serves one container's Docker socket in front of the guest's dockerd.\n");
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "engine", required_argument, NULL, 'e' },
                { "listen", required_argument, NULL, 'l' },
                { "root", required_argument, NULL, 'r' },
                { "id", required_argument, NULL, 'i' },
                { "pull-socket", required_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(proxy_freep) Proxy *proxy = NULL;
        const char *engine = NULL, *listen = NULL, *root = NULL, *id = NULL, *pull_socket = NULL;
        /* Deny by default; and no pulls over the network: images reach an
         * instance only from the host (the ones it was created with are in
         * dockerd; with --pull-socket, others come through hostmesh-init
         * and the host's diskd). */
        GuestProxy g = { .policy.refuse_pull = true };
        sigset_t ss;
        int c, r;

        log_setup("hostmesh-dockerproxy-guest");
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'e': engine = optarg; break;
                case 'l': listen = optarg; break;
                case 'r': root = optarg; break;
                case 'i': id = optarg; break;
                case 'p': pull_socket = optarg; break;
                case 'h': usage(stdout); return EXIT_SUCCESS;
                default: usage(stderr); return EXIT_FAILURE;
                }
        if (optind != argc || !engine || !listen || !root || !id || root[0] != '/' || listen[0] != '/' ||
            engine[0] != '/' || (pull_socket && pull_socket[0] != '/')) {
                usage(stderr);
                return EXIT_FAILURE;
        }

        g.policy.pull_via_host = pull_socket != NULL;
        r = owned_set_new(&g.owned);
        if (r < 0)
                return log_error_errno(r, "Out of memory"), EXIT_FAILURE;
        g.caller = (DockerCaller){ .id = id, .root = root, .policy = &g.policy, .owned = g.owned };

        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        /* A client gone mid-write must not end the proxy. */
        signal(SIGPIPE, SIG_IGN);

        r = sd_event_new(&event);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %m"), EXIT_FAILURE;
        (void) sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
        (void) sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);

        ProxyContext ctx = {
                .event = event,
                .upstream = engine,
                .on_record = guest_on_record,
                .userdata = &g,
                .pull_socket = pull_socket,
        };
        r = proxy_new(&ctx, &g.caller, listen, -1, &proxy);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on %s for container %s: %m", listen, id), EXIT_FAILURE;
        log_info("Serving container %s on %s (root %s, engine %s).", id, listen, root, engine);

        r = sd_event_loop(event);
        proxy = proxy_free(proxy);
        owned_set_free(g.owned);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_FAILURE;
        return EXIT_SUCCESS;
}
