/* SPDX-License-Identifier: MIT */
#include "dockerproxy-grpc.h"
#include "dockerproxy-manager.h"
#include "hostmesh/dockerproxy/v1/dockerproxy.pb-c.h"
#include "log.h"

typedef Hostmesh__Dockerproxy__V1__Registration PbRegistration;
typedef Hostmesh__Dockerproxy__V1__Policy PbPolicy;

/* Fills `out` (and its policy) pointing into `r`; nothing to free but the
 * policy struct, which the caller provides. */
static void registration_to_pb(const Registration *r, PbRegistration *out, PbPolicy *pol) {
        size_t n = 0;

        *pol = (PbPolicy) HOSTMESH__DOCKERPROXY__V1__POLICY__INIT;
        pol->allow_privileged = r->policy.allow_privileged;
        pol->allow_devices = r->policy.allow_devices;
        pol->allow_host_namespaces = r->policy.allow_host_namespaces;
        pol->allow_host_network = r->policy.allow_host_network;
        pol->allow_unconfined = r->policy.allow_unconfined;
        pol->allow_sysctls = r->policy.allow_sysctls;
        pol->allow_privileged_exec = r->policy.allow_privileged_exec;
        pol->see_all_containers = r->policy.see_all_containers;
        while (r->policy.cap_add_allow && r->policy.cap_add_allow[n])
                n++;
        pol->n_cap_add_allow = n;
        pol->cap_add_allow = r->policy.cap_add_allow;

        *out = (PbRegistration) HOSTMESH__DOCKERPROXY__V1__REGISTRATION__INIT;
        out->container_id = r->id;
        out->root = r->root;
        out->socket_path = r->socket_path;
        out->policy = pol;
        n = 0;
        while (r->ancestors && r->ancestors[n])
                n++;
        out->n_ancestors = n;
        out->ancestors = r->ancestors;
}

static void handle_register(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Dockerproxy__V1__RegisterContainerRequest *req = (const void *) msg;
        Hostmesh__Dockerproxy__V1__RegisterContainerResponse resp = HOSTMESH__DOCKERPROXY__V1__REGISTER_CONTAINER_RESPONSE__INIT;
        _cleanup_free_ char *error = NULL;
        _cleanup_free_ char **caps = NULL;
        Manager *m = userdata;
        DockerPolicy policy = {};
        PbRegistration pr;
        PbPolicy pp;
        Registration *reg;
        int r;

        if (req->policy) {
                const PbPolicy *p = req->policy;
                if (p->n_cap_add_allow > 64) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "policy.cap_add_allow has more than 64 entries.");
                        return;
                }
                caps = calloc(p->n_cap_add_allow + 1, sizeof(char *));
                if (!caps) {
                        rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
                        return;
                }
                if (p->n_cap_add_allow > 0)
                        memcpy(caps, p->cap_add_allow, p->n_cap_add_allow * sizeof(char *));
                policy = (DockerPolicy){
                        .allow_privileged = p->allow_privileged,
                        .cap_add_allow = caps,
                        .allow_devices = p->allow_devices,
                        .allow_host_namespaces = p->allow_host_namespaces,
                        .allow_host_network = p->allow_host_network,
                        .allow_unconfined = p->allow_unconfined,
                        .allow_sysctls = p->allow_sysctls,
                        .allow_privileged_exec = p->allow_privileged_exec,
                        .see_all_containers = p->see_all_containers,
                };
        }
        r = manager_register(m, req->container_id, req->root, &policy, &reg, &error);
        if (r < 0) {
                if (error)
                        rpc_call_fail_errno(c, r, "%s", error);
                else
                        rpc_call_fail_errno(c, r, "Registering container %s failed: %s.", req->container_id, strerror(-r));
                return;
        }
        registration_to_pb(reg, &pr, &pp);
        resp.socket_path = reg->socket_path;
        resp.registration = &pr;
        rpc_call_reply(c, &resp.base);
}

static void handle_unregister(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Dockerproxy__V1__UnregisterContainerRequest *req = (const void *) msg;
        Hostmesh__Dockerproxy__V1__UnregisterContainerResponse resp = HOSTMESH__DOCKERPROXY__V1__UNREGISTER_CONTAINER_RESPONSE__INIT;
        Manager *m = userdata;
        int r;

        if (!registration_id_is_valid(req->container_id)) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "container_id must be 1-%u characters of [A-Za-z0-9._-].",
                              REGISTRATION_ID_MAX);
                return;
        }
        r = manager_unregister(m, req->container_id);
        if (r == -ENOENT) {
                rpc_call_fail(c, RPC_NOT_FOUND, "Container %s is not registered; see `nsc docker list`.", req->container_id);
                return;
        }
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Unregistered %s, but saving the state failed: %s.", req->container_id,
                                    strerror(-r));
                return;
        }
        rpc_call_reply(c, &resp.base);
}

static void handle_list(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Dockerproxy__V1__ListContainersResponse resp = HOSTMESH__DOCKERPROXY__V1__LIST_CONTAINERS_RESPONSE__INIT;
        _cleanup_free_ PbRegistration *regs = NULL;
        _cleanup_free_ PbRegistration **ptrs = NULL;
        _cleanup_free_ PbPolicy *pols = NULL;
        Manager *m = userdata;

        (void) msg;
        regs = calloc(m->n_regs + 1, sizeof(*regs));
        ptrs = calloc(m->n_regs + 1, sizeof(*ptrs));
        pols = calloc(m->n_regs + 1, sizeof(*pols));
        if (!regs || !ptrs || !pols) {
                rpc_call_fail_errno(c, -ENOMEM, "Out of memory.");
                return;
        }
        for (size_t i = 0; i < m->n_regs; i++) {
                registration_to_pb(m->regs[i], &regs[i], &pols[i]);
                ptrs[i] = &regs[i];
        }
        resp.n_registrations = m->n_regs;
        resp.registrations = ptrs;
        rpc_call_reply(c, &resp.base);
}

static const RpcMethod methods[] = {
        { "/hostmesh.dockerproxy.v1.DockerProxy/RegisterContainer", RPC_UNARY,
          &hostmesh__dockerproxy__v1__register_container_request__descriptor,
          &hostmesh__dockerproxy__v1__register_container_response__descriptor, handle_register },
        { "/hostmesh.dockerproxy.v1.DockerProxy/UnregisterContainer", RPC_UNARY,
          &hostmesh__dockerproxy__v1__unregister_container_request__descriptor,
          &hostmesh__dockerproxy__v1__unregister_container_response__descriptor, handle_unregister },
        { "/hostmesh.dockerproxy.v1.DockerProxy/ListContainers", RPC_UNARY,
          &hostmesh__dockerproxy__v1__list_containers_request__descriptor,
          &hostmesh__dockerproxy__v1__list_containers_response__descriptor, handle_list },
};

int dockerproxy_grpc_register(Manager *m) {
        return rpc_server_add_methods(m->server, methods, ELEMENTSOF(methods), m);
}
