/* SPDX-License-Identifier: MIT */
/* nsc docker: per-container Docker sockets served by dockerproxyd. */
#include <getopt.h>
#include <stdio.h>

#include "hostmesh/dockerproxy/v1/dockerproxy.pb-c.h"
#include "nsc.h"

#define DP_METHOD(m) "/hostmesh.dockerproxy.v1.DockerProxy/" m

static json_t *registration_to_json(const Hostmesh__Dockerproxy__V1__Registration *r) {
        json_t *caps = json_array(), *anc = json_array(), *pol;
        const Hostmesh__Dockerproxy__V1__Policy *p = r->policy;

        for (size_t i = 0; p && i < p->n_cap_add_allow; i++)
                json_array_append_new(caps, json_string(p->cap_add_allow[i]));
        for (size_t i = 0; i < r->n_ancestors; i++)
                json_array_append_new(anc, json_string(r->ancestors[i]));
        pol = json_pack("{s:b,s:o,s:b,s:b,s:b,s:b,s:b,s:b,s:b}",
                        "allow_privileged", p && p->allow_privileged, "cap_add_allow", caps,
                        "allow_devices", p && p->allow_devices, "allow_host_namespaces", p && p->allow_host_namespaces,
                        "allow_host_network", p && p->allow_host_network, "allow_unconfined", p && p->allow_unconfined,
                        "allow_sysctls", p && p->allow_sysctls, "allow_privileged_exec", p && p->allow_privileged_exec,
                        "see_all_containers", p && p->see_all_containers);
        return json_pack("{s:s,s:s,s:s,s:o,s:o}", "container_id", r->container_id, "root", r->root, "socket_path",
                         r->socket_path, "ancestors", anc, "policy", pol);
}

static int verb_register(Nsc *n, int argc, char **argv);
static int verb_unregister(Nsc *n, int argc, char **argv);
static int verb_list(Nsc *n, int argc, char **argv);

NSC_COMMAND(docker_register, .name = "docker register",
            .usage = "--container ID [--root PATH] [--allow-privileged] [--allow-devices] [--allow-host-namespaces] "
                     "[--allow-host-network] [--allow-unconfined] [--allow-sysctls] [--allow-privileged-exec] "
                     "[--see-all-containers] [--cap-add-allow CAP]...",
            .summary = "Give a container its own Docker socket (prints the socket path)", .run = verb_register);
NSC_COMMAND(docker_unregister, .name = "docker unregister", .usage = "ID",
            .summary = "Close a container's Docker socket", .run = verb_unregister);
NSC_COMMAND(docker_list, .name = "docker list", .usage = "",
            .summary = "List containers with a Docker socket", .run = verb_list);

static int verb_register(Nsc *n, int argc, char **argv) {
        enum {
                ARG_ROOT = 0x100,
                ARG_PRIV,
                ARG_DEV,
                ARG_NS,
                ARG_NET,
                ARG_UNCONF,
                ARG_SYSCTL,
                ARG_PEXEC,
                ARG_SEEALL,
                ARG_CAP,
        };
        static const struct option options[] = {
                { "container", required_argument, NULL, 'c' },
                { "output", required_argument, NULL, 'o' },
                { "root", required_argument, NULL, ARG_ROOT },
                { "allow-privileged", no_argument, NULL, ARG_PRIV },
                { "allow-devices", no_argument, NULL, ARG_DEV },
                { "allow-host-namespaces", no_argument, NULL, ARG_NS },
                { "allow-host-network", no_argument, NULL, ARG_NET },
                { "allow-unconfined", no_argument, NULL, ARG_UNCONF },
                { "allow-sysctls", no_argument, NULL, ARG_SYSCTL },
                { "allow-privileged-exec", no_argument, NULL, ARG_PEXEC },
                { "see-all-containers", no_argument, NULL, ARG_SEEALL },
                { "cap-add-allow", required_argument, NULL, ARG_CAP },
                {},
        };
        Hostmesh__Dockerproxy__V1__RegisterContainerRequest req = HOSTMESH__DOCKERPROXY__V1__REGISTER_CONTAINER_REQUEST__INIT;
        Hostmesh__Dockerproxy__V1__Policy pol = HOSTMESH__DOCKERPROXY__V1__POLICY__INIT;
        Hostmesh__Dockerproxy__V1__RegisterContainerResponse *resp = NULL;
        _cleanup_free_ char **caps = NULL;
        size_t n_caps = 0;
        int c, r;

        req.container_id = (char *) "";
        req.root = (char *) "";
        req.policy = &pol;
        optind = 0;
        while ((c = getopt_long(argc, argv, "c:o:", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        req.container_id = optarg;
                        break;
                case 'o':
                        break; /* handled by nsc */
                case ARG_ROOT:
                        req.root = optarg;
                        break;
                case ARG_PRIV:
                        pol.allow_privileged = true;
                        break;
                case ARG_DEV:
                        pol.allow_devices = true;
                        break;
                case ARG_NS:
                        pol.allow_host_namespaces = true;
                        break;
                case ARG_NET:
                        pol.allow_host_network = true;
                        break;
                case ARG_UNCONF:
                        pol.allow_unconfined = true;
                        break;
                case ARG_SYSCTL:
                        pol.allow_sysctls = true;
                        break;
                case ARG_PEXEC:
                        pol.allow_privileged_exec = true;
                        break;
                case ARG_SEEALL:
                        pol.see_all_containers = true;
                        break;
                case ARG_CAP: {
                        char **t = realloc(caps, (n_caps + 1) * sizeof(char *));
                        if (!t)
                                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
                        caps = t;
                        caps[n_caps++] = optarg;
                        break;
                }
                default:
                        return nsc_usage(n, &nsc_command_docker_register, "Unknown option.");
                }
        }
        if (optind < argc)
                return nsc_usage(n, &nsc_command_docker_register, "Unexpected argument '%s'.", argv[optind]);
        if (isempty(req.container_id))
                return nsc_usage(n, &nsc_command_docker_register, "--container ID is required.");
        pol.cap_add_allow = caps;
        pol.n_cap_add_allow = n_caps;

        r = nsc_call(n, DP_METHOD("RegisterContainer"), &req.base,
                     &hostmesh__dockerproxy__v1__register_container_response__descriptor, (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *j = json_pack("{s:s}", "socket_path", resp->socket_path);
                if (resp->registration)
                        json_object_set_new(j, "registration", registration_to_json(resp->registration));
                nsc_print_json(j);
        } else
                printf("%s\n", resp->socket_path);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_unregister(Nsc *n, int argc, char **argv) {
        Hostmesh__Dockerproxy__V1__UnregisterContainerRequest req = HOSTMESH__DOCKERPROXY__V1__UNREGISTER_CONTAINER_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        int r;

        if (argc != 2 || argv[1][0] == '-')
                return nsc_usage(n, &nsc_command_docker_unregister, "Expected exactly one container ID.");
        req.container_id = argv[1];
        r = nsc_call(n, DP_METHOD("UnregisterContainer"), &req.base,
                     &hostmesh__dockerproxy__v1__unregister_container_response__descriptor, &resp);
        if (r != 0)
                return r;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (n->json)
                nsc_print_json(json_pack("{s:s}", "unregistered", argv[1]));
        return NSC_EXIT_OK;
}

static int verb_list(Nsc *n, int argc, char **argv) {
        Hostmesh__Dockerproxy__V1__ListContainersRequest req = HOSTMESH__DOCKERPROXY__V1__LIST_CONTAINERS_REQUEST__INIT;
        Hostmesh__Dockerproxy__V1__ListContainersResponse *resp = NULL;
        int r;

        (void) argv;

        if (argc != 1)
                return nsc_usage(n, &nsc_command_docker_list, "No arguments expected.");
        r = nsc_call(n, DP_METHOD("ListContainers"), &req.base,
                     &hostmesh__dockerproxy__v1__list_containers_response__descriptor, (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *a = json_array();
                for (size_t i = 0; i < resp->n_registrations; i++)
                        json_array_append_new(a, registration_to_json(resp->registrations[i]));
                nsc_print_json(json_pack("{s:o}", "containers", a));
        } else {
                printf("%-24s %-40s %s\n", "CONTAINER", "SOCKET", "ROOT");
                for (size_t i = 0; i < resp->n_registrations; i++)
                        printf("%-24s %-40s %s\n", resp->registrations[i]->container_id,
                               resp->registrations[i]->socket_path, resp->registrations[i]->root);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}
