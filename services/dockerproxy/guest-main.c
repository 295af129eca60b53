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
 * The records of what the container made are kept in --state (written
 * whole on every change, renamed into place), so that a proxy started
 * again by hostmesh-init (which owns the listening socket, passed as
 * --listen-fd, so the file bind-mounted into the container stays the one
 * served) still lets the container use what it made. */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "dockerproxy-owned.h"
#include "fs-util.h"
#include "dockerproxy-proxy.h"
#include "dockerproxy-translate.h"
#include "log.h"
#include "macro.h"

typedef struct GuestProxy {
        DockerPolicy policy;   /* deny by default: every allow_* false */
        DockerCaller caller;
        OwnedSet *owned;
        const char *state;     /* NULL: records in memory only */
} GuestProxy;

/* The records, from the state file a previous run of this proxy wrote
 * (none yet: nothing owned). */
static int guest_load(GuestProxy *g) {
        json_error_t error;
        json_t *j;
        int r;

        if (!g->state)
                return 0;
        j = json_load_file(g->state, 0, &error);
        if (!j) {
                if (access(g->state, F_OK) < 0 && errno == ENOENT)
                        return 0;
                return log_error_errno(-EBADMSG, "Cannot read the records in %s: %s (line %d); the container starts "
                                       "over owning nothing it made before", g->state, error.text, error.line);
        }
        r = owned_set_from_json(g->owned, j);
        json_decref(j);
        if (r < 0)
                return log_error_errno(r, "Cannot read the records in %s: %m", g->state);
        log_info("Records of container %s read from %s.", g->caller.id, g->state);
        return 0;
}

static int guest_save(GuestProxy *g) {
        json_t *j;
        char *text;
        int r;

        if (!g->state)
                return 0;
        j = owned_set_to_json(g->owned);
        text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!text)
                return -ENOMEM;
        r = write_file_atomic(g->state, text, strlen(text), 0600);
        free(text);
        return r;
}

/* One caller per process, so no ancestors: what it made is its own. */
static void guest_on_record(void *userdata, const DockerCaller *caller, OwnedKind kind, const char *id, bool add) {
        GuestProxy *g = userdata;
        int r;

        (void) caller;
        if (!add)
                r = owned_set_remove(g->owned, kind, id);
        else {
                r = owned_set_add(g->owned, kind, id);
                if (r < 0) {
                        log_warning_errno(r, "Cannot record %s %s for container %s, it will not be able to use it: %m",
                                          owned_kind_to_string(kind), id, g->caller.id);
                        return;
                }
        }
        if (r < 0)
                return;
        r = guest_save(g);
        if (r < 0)
                log_warning_errno(r, "Cannot write the records of container %s to %s (a restarted proxy will not "
                                     "know of %s %s): %m", g->caller.id, g->state, owned_kind_to_string(kind), id);
}

static void usage(FILE *f) {
        fprintf(f, "usage: hostmesh-dockerproxy-guest --engine SOCKET --listen SOCKET [--listen-fd FD] --root DIR --id ID\n"
                   "                                  [--state FILE] [--pull-socket SOCKET]\n"
                   "Serves one container's Docker socket in front of the guest's dockerd.\n"
                   "  --listen-fd FD        serve this listening socket (bound at SOCKET) rather than binding SOCKET\n"
                   "  --state FILE          keep the records of what the container made in FILE\n"
                   "  --pull-socket SOCKET  answer pulls through hostmesh-init on SOCKET (and the host's diskd)\n");
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "engine", required_argument, NULL, 'e' },
                { "listen", required_argument, NULL, 'l' },
                { "root", required_argument, NULL, 'r' },
                { "id", required_argument, NULL, 'i' },
                { "listen-fd", required_argument, NULL, 'f' },
                { "state", required_argument, NULL, 's' },
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
        int c, r, listen_fd = -1;

        log_setup("hostmesh-dockerproxy-guest");
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'e': engine = optarg; break;
                case 'l': listen = optarg; break;
                case 'r': root = optarg; break;
                case 'i': id = optarg; break;
                case 's': g.state = optarg; break;
                case 'f': {
                        char *end;
                        long v = strtol(optarg, &end, 10);
                        if (*optarg == '\0' || *end || v < 3 || v > 1024) {
                                fprintf(stderr, "--listen-fd: not a file descriptor number: %s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        listen_fd = (int) v;
                        break;
                }
                case 'p': pull_socket = optarg; break;
                case 'h': usage(stdout); return EXIT_SUCCESS;
                default: usage(stderr); return EXIT_FAILURE;
                }
        if (optind != argc || !engine || !listen || !root || !id || root[0] != '/' || listen[0] != '/' ||
            engine[0] != '/' || (g.state && g.state[0] != '/') || (pull_socket && pull_socket[0] != '/')) {
                usage(stderr);
                return EXIT_FAILURE;
        }

        g.policy.pull_via_host = pull_socket != NULL;
        r = owned_set_new(&g.owned);
        if (r < 0)
                return log_error_errno(r, "Out of memory"), EXIT_FAILURE;
        g.caller = (DockerCaller){ .id = id, .root = root, .policy = &g.policy, .owned = g.owned };
        /* Unreadable records: the container starts over owning nothing
         * (it can use less, never more); the error is in the log. */
        (void) guest_load(&g);

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
        r = proxy_new(&ctx, &g.caller, listen, listen_fd, &proxy);
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
