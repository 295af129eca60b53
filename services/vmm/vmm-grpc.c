/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <inttypes.h>
#include <time.h>

#include "hostmesh/vmm/v1/vmm.pb-c.h"
#include "log.h"
#include "macro.h"
#include "namespace/cloud/compute/v1beta/compute.pb-c.h"
#include "vmm-accel.h"
#include "vmm-cgroup.h"
#include "vmm-grpc.h"
#include "vmm-log.h"
#include "vmm-manager.h"
#include "vmm-net.h"
#include "agent-protocol.h"

#define LABELS_MAX 64
#define LABEL_MAX 256
#define PURPOSE_MAX 1024
#define ARG_MAX_BYTES (32 * 1024)

typedef Namespace__Cloud__Compute__V1beta__InstanceMetadata InstanceMetadata;
typedef Namespace__Cloud__Compute__V1beta__InstanceShape InstanceShape;
typedef Namespace__Stdlib__Label Label;
typedef Google__Protobuf__Timestamp Timestamp;

/* Everything one InstanceMetadata points to, so it can live on the stack
 * (or in an array for ListInstances) without allocations. */
typedef struct MetadataStorage {
        InstanceMetadata md;
        InstanceShape shape;
        Timestamp created, deadline, destroyed;
        Label labels[LABELS_MAX];
        Label *label_ptrs[LABELS_MAX];
} MetadataStorage;

static void timestamp_set(Timestamp *t, uint64_t usec) {
        *t = (Timestamp) GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        t->seconds = (int64_t) (usec / USEC_PER_SEC);
        t->nanos = (int32_t) (usec % USEC_PER_SEC) * 1000;
}

static uint64_t timestamp_to_usec(const Timestamp *t) {
        if (!t || t->seconds < 0 || t->nanos < 0 || t->nanos >= 1000000000)
                return 0;
        return (uint64_t) t->seconds * USEC_PER_SEC + (uint64_t) t->nanos / 1000;
}

static const Namespace__Cloud__Compute__V1beta__InstanceMetadata__Status state_to_status[_INSTANCE_STATE_MAX] = {
        [INSTANCE_PENDING] = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__PENDING,
        [INSTANCE_CREATING] = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__CREATING,
        [INSTANCE_RUNNING] = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__RUNNING,
        [INSTANCE_DESTROYING] = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__DESTROYING,
        [INSTANCE_DESTROYED] = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__DESTROYED,
        [INSTANCE_ERROR] = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__ERROR,
};

static void metadata_fill(MetadataStorage *s, Instance *i) {
        s->md = (InstanceMetadata) NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__INIT;
        s->shape = (InstanceShape) NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_SHAPE__INIT;
        s->shape.virtual_cpu = (int32_t) i->shape.vcpu;
        s->shape.memory_megabytes = (int32_t) i->shape.memory_gb * 1024;
        s->shape.machine_arch = (char *) "amd64";
        s->shape.os = (char *) "linux";
        s->md.instance_id = i->id;
        timestamp_set(&s->created, i->created_usec);
        s->md.created_at = &s->created;
        timestamp_set(&s->deadline, i->deadline_usec);
        s->md.deadline = &s->deadline;
        if (i->destroyed_usec) {
                timestamp_set(&s->destroyed, i->destroyed_usec);
                s->md.destroyed_at = &s->destroyed;
        }
        s->md.documented_purpose = i->purpose ?: (char *) "";
        s->md.shape = &s->shape;
        s->md.status = state_to_status[i->state];
        s->md.creator_id = i->creator ?: (char *) "";
        for (size_t k = 0; k < i->n_labels && k < LABELS_MAX; k++) {
                s->labels[k] = (Label) NAMESPACE__STDLIB__LABEL__INIT;
                s->labels[k].name = i->label_names[k];
                s->labels[k].value = i->label_values[k];
                s->label_ptrs[k] = &s->labels[k];
        }
        s->md.n_labels = MIN(i->n_labels, (size_t) LABELS_MAX);
        s->md.labels = s->label_ptrs;
}

static void fail_with(RpcCall *c, int r, char *error, const char *fallback) {
        rpc_call_fail_errno(c, r, "%s", error ?: fallback);
        free(error);
}


typedef Namespace__Cloud__Compute__V1beta__AllocatedContainer__ExportedContainerPort ExportedPort;

static const char *instance_export_address(const Instance *i) {
        return i->manager->config.export_address;
}

static int reply_describe(RpcCall *c, Instance *i) {
        Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__DESCRIBE_INSTANCE_RESPONSE__INIT;
        MetadataStorage *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
        metadata_fill(s, i);
        resp.metadata = &s->md;
        Namespace__Cloud__Compute__V1beta__AllocatedContainer ac[CONTAINERS_PER_INSTANCE_MAX], *acp[CONTAINERS_PER_INSTANCE_MAX];
        ExportedPort ep[CONTAINERS_PER_INSTANCE_MAX][CONTAINER_PORTS_MAX], *epp[CONTAINERS_PER_INSTANCE_MAX][CONTAINER_PORTS_MAX];
        char endpoints[CONTAINERS_PER_INSTANCE_MAX][CONTAINER_PORTS_MAX][INET_ADDRSTRLEN + 8];
        for (size_t k = 0; k < i->n_containers && k < CONTAINERS_PER_INSTANCE_MAX; k++) {
                const VmmContainer *vc = &i->containers[k];
                ac[k] = (Namespace__Cloud__Compute__V1beta__AllocatedContainer)
                        NAMESPACE__CLOUD__COMPUTE__V1BETA__ALLOCATED_CONTAINER__INIT;
                ac[k].id = vc->id;
                ac[k].name = vc->name;
                /* Ports given back (the instance is gone) are not listed. */
                for (size_t l = 0; l < vc->n_ports; l++) {
                        size_t n = ac[k].n_exported_port;
                        if (vc->ports[l].host_port == 0)
                                continue;
                        ep[k][n] = (ExportedPort) NAMESPACE__CLOUD__COMPUTE__V1BETA__ALLOCATED_CONTAINER__EXPORTED_CONTAINER_PORT__INIT;
                        ep[k][n].proto = (Namespace__Cloud__Compute__V1beta__ContainerPort__Proto) vc->ports[l].proto;
                        ep[k][n].container_port = vc->ports[l].container_port;
                        ep[k][n].exported_port = vc->ports[l].host_port;
                        snprintf(endpoints[k][n], sizeof(endpoints[k][n]), "%s:%u", instance_export_address(i),
                                 vc->ports[l].host_port);
                        ep[k][n].endpoint = endpoints[k][n];
                        epp[k][n] = &ep[k][n];
                        ac[k].n_exported_port++;
                }
                ac[k].exported_port = epp[k];
                acp[k] = &ac[k];
        }
        resp.n_containers = MIN(i->n_containers, (size_t) CONTAINERS_PER_INSTANCE_MAX);
        resp.containers = acp;
        r = rpc_call_reply(c, &resp.base);
        free(s);
        return r;
}

/* ---- ComputeService ---------------------------------------------------- */

static bool label_part_is_valid(const char *s) {
        if (!s || strlen(s) > LABEL_MAX)
                return false;
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20)
                        return false;
        return true;
}

/* A tenant id goes into token subjects ("<tenant>/<id>"): letters,
 * digits, '.', '_', '-'. */
static bool tenant_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
                      *p == '_' || *p == '-'))
                        return false;
        return true;
}

/* Who is calling, as far as instances go. A caller acting for a tenant (a
 * bearer token the gateway verified: x-hostmesh-subject and
 * x-hostmesh-tenant) sees and touches only that tenant's instances. Local
 * callers (unix peers the gateway let in, other hostmesh daemons) run the
 * host and see every instance; theirs get [vmm] tenant. The gateway's
 * metadata is believed only when our own peer is root or our uid. */
typedef struct CallerScope {
        const char *tenant;       /* NULL: a local caller, not confined */
        const char *subject;      /* the bearer token's subject, when there is one */
} CallerScope;

static bool scope_or_fail(RpcCall *c, CallerScope *ret) {
        const RpcPeer *peer = rpc_call_peer(c);
        const char *t, *sub;

        *ret = (CallerScope){};
        if (!peer->known || (peer->uid != 0 && peer->uid != getuid()))
                return true;
        t = rpc_call_metadata(c, "x-hostmesh-tenant");
        sub = rpc_call_metadata(c, "x-hostmesh-subject");
        if (!t && !sub)
                return true;
        if (!t) {
                rpc_call_fail(c, RPC_PERMISSION_DENIED, "%s: the caller's token (%.256s) names no tenant, and instances "
                              "belong to tenants; use a token with a tenant_id.", rpc_call_method(c), sub);
                return false;
        }
        if (!tenant_is_valid(t)) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "The caller's tenant id is not usable (letters, digits, '.', '_', "
                              "'-'; at most 64).");
                return false;
        }
        *ret = (CallerScope){ .tenant = t, .subject = sub };
        return true;
}

static bool scope_allows(const CallerScope *scope, Instance *i) {
        return !scope->tenant || streq_ptr(i->tenant, scope->tenant);
}

/* The instance a request names, if the caller may act on it. */
static Instance *find_or_fail(Manager *m, RpcCall *c, const char *id) {
        CallerScope scope;
        Instance *i;

        if (!scope_or_fail(c, &scope))
                return NULL;
        if (isempty(id)) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "instance_id is required.");
                return NULL;
        }
        i = manager_find(m, id);
        if (!i) {
                rpc_call_fail(c, RPC_NOT_FOUND, "No instance %.64s; `nsc list` shows the instances.", id);
                return NULL;
        }
        if (!scope_allows(&scope, i)) {
                rpc_call_fail(c, RPC_PERMISSION_DENIED, "%s: instance %s belongs to another tenant; the caller acts "
                              "for tenant %s.", rpc_call_method(c), i->id, scope.tenant);
                return NULL;
        }
        return i;
}

/* ContainerRequest.export_ports of containers[k]. The containers of an
 * instance share the guest's ports (a BRIDGE container's is forwarded from
 * the guest's port of the same number), so a port is refused when any
 * container before it (list[0..k-1], already parsed) exports it too. */
static int parse_export_ports(RpcCall *c, const VmmContainer *list, size_t k,
                              const Namespace__Cloud__Compute__V1beta__ContainerRequest *cr) {
        if (cr->n_export_ports > CONTAINER_PORTS_MAX) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu].export_ports: at most %d per container.", k,
                              CONTAINER_PORTS_MAX);
                return -EINVAL;
        }
        for (size_t l = 0; l < cr->n_export_ports; l++) {
                const Namespace__Cloud__Compute__V1beta__ContainerPort *p = cr->export_ports[l];

                /* HTTP/1.1 passes through a TCP forward unchanged; routing
                 * by match rules would need an HTTP proxy hostmesh lacks. */
                if (p->proto != NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_PORT__PROTO__TCP &&
                    p->proto != NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_PORT__PROTO__HTTP) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu].export_ports[%zu].proto: TCP or HTTP.",
                                      k, l);
                        return -EINVAL;
                }
                if (p->container_port < 1 || p->container_port > 65535) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "containers[%zu].export_ports[%zu].container_port: 1 to 65535, not %d.", k, l,
                                      (int) p->container_port);
                        return -EINVAL;
                }
                if (p->n_http_match_rule > 0) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "containers[%zu].export_ports[%zu].http_match_rule is not supported here: ports "
                                      "are forwarded as TCP.", k, l);
                        return -EINVAL;
                }
                if (p->name && strlen(p->name) > 63) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu].export_ports[%zu].name: at most 63 bytes.",
                                      k, l);
                        return -EINVAL;
                }
                for (size_t o = 0; o < l; o++)
                        if (cr->export_ports[o]->container_port == p->container_port) {
                                rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                              "containers[%zu].export_ports[%zu].container_port %d is exported twice.",
                                              k, l, (int) p->container_port);
                                return -EINVAL;
                        }
                for (size_t o = 0; o < k; o++)
                        for (size_t q = 0; q < list[o].n_ports; q++)
                                if (list[o].ports[q].container_port == p->container_port) {
                                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                                      "containers[%zu].export_ports[%zu].container_port %d is exported "
                                                      "by containers[%zu] too (they share the guest's ports).",
                                                      k, l, (int) p->container_port, o);
                                        return -EINVAL;
                                }
        }
        return 0;
}

/* CreateInstanceRequest.containers, checked field by field; what hostmesh
 * does not implement is refused by name, never ignored. */
static int parse_containers(RpcCall *c, const Namespace__Cloud__Compute__V1beta__CreateInstanceRequest *req,
                            VmmContainer **ret) {
        VmmContainer *list;
        int r;

        if (req->n_containers > CONTAINERS_PER_INSTANCE_MAX) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers: at most %d per instance.",
                              CONTAINERS_PER_INSTANCE_MAX);
                return -EINVAL;
        }
        list = calloc(req->n_containers, sizeof(*list));
        if (!list)
                return rpc_call_fail_errno(c, -ENOMEM, "Out of memory"), -ENOMEM;
        for (size_t k = 0; k < req->n_containers; k++) {
                const Namespace__Cloud__Compute__V1beta__ContainerRequest *cr = req->containers[k];
                _cleanup_(strv_freep) char **env = NULL;
                const char *unsupported = NULL;
                char name[32];
                size_t n_env = 0, total = 0;
                uint32_t network;

                if (!isempty(cr->nsc_state_path))
                        unsupported = "nsc_state_path";
                else if (cr->experimental.len > 0)
                        unsupported = "experimental";
                else if (cr->n_volumes > 0)
                        unsupported = "volumes";
                else if (cr->workload_type != 0)
                        unsupported = "workload_type";
                if (unsupported) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu].%s is not supported here.", k,
                                      unsupported);
                        goto fail;
                }
                if (cr->privileged) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "containers[%zu].privileged is refused: privileged containers are not allowed "
                                      "on this host.", k);
                        goto fail;
                }
                /* Unnamed: "main", then "c1", "c2", ... */
                if (k == 0)
                        snprintf(name, sizeof(name), "main");
                else
                        snprintf(name, sizeof(name), "c%zu", k);
                const char *cname = isempty(cr->name) ? name : cr->name;
                if (!agent_container_name_valid(cname)) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "containers[%zu].name: 1 to %d of [A-Za-z0-9._-], not starting with '.' or '-'.",
                                      k, AGENT_CONTAINER_NAME_MAX);
                        goto fail;
                }
                for (size_t l = 0; l < k; l++)
                        if (streq(list[l].name, cname)) {
                                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu].name %s is used twice.", k,
                                              cname);
                                goto fail;
                        }
                if (isempty(cr->image_ref) || strlen(cr->image_ref) > 1024) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "containers[%zu].image_ref is required (HOST[:PORT]/REPOSITORY[:TAG]).", k);
                        goto fail;
                }
                switch (cr->network) {
                case NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_REQUEST__NETWORK__NETWORK_UNKNOWN:
                case NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_REQUEST__NETWORK__BRIDGE:
                        network = AGENT_NETWORK_BRIDGE;
                        break;
                case NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_REQUEST__NETWORK__HOST:
                        network = AGENT_NETWORK_HOST;
                        break;
                default:
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu].network: BRIDGE or HOST.", k);
                        goto fail;
                }
                if (cr->n_args > AGENT_ARGS_MAX || cr->n_environment + cr->n_env_vars > AGENT_ARGS_MAX) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu]: at most %d args and %d variables.",
                                      k, AGENT_ARGS_MAX, AGENT_ARGS_MAX);
                        goto fail;
                }
                env = calloc(cr->n_environment + cr->n_env_vars + 1, sizeof(char *));
                if (!env) {
                        rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
                        goto fail;
                }
                for (size_t l = 0; l < cr->n_environment + cr->n_env_vars; l++) {
                        const char *nm, *val;
                        if (l < cr->n_environment) {
                                nm = cr->environment[l]->key;
                                val = cr->environment[l]->value;
                        } else {
                                const Namespace__Cloud__Compute__V1beta__EnvironmentVariable *v =
                                        cr->env_vars[l - cr->n_environment];
                                if (!isempty(v->from_secret_id)) {
                                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                                      "containers[%zu].env_vars: secrets are not supported here.", k);
                                        goto fail;
                                }
                                nm = v->name;
                                val = v->value;
                        }
                        if (isempty(nm) || strchr(nm, '=')) {
                                rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                              "containers[%zu]: a variable name without '=' is required.", k);
                                goto fail;
                        }
                        if (asprintf(&env[n_env], "%s=%s", nm, val ?: "") < 0) {
                                env[n_env] = NULL;
                                rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
                                goto fail;
                        }
                        total += strlen(env[n_env++]) + 4;
                }
                for (size_t l = 0; l < cr->n_args; l++)
                        total += strlen(cr->args[l]) + 4;
                if (total + strlen(cr->image_ref) > 30 * 1024) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "containers[%zu]: args and environment exceed 30 KiB.", k);
                        goto fail;
                }
                /* Docker in the container: the guest's proxy serves its
                 * socket there; the path goes on ctr's command line. */
                if (!isempty(cr->docker_sock_path) && !agent_docker_sock_path_valid(cr->docker_sock_path)) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "containers[%zu].docker_sock_path: an absolute path of at most 255 bytes of "
                                      "[A-Za-z0-9._/-], without empty, '.' or '..' components.", k);
                        goto fail;
                }
                if (parse_export_ports(c, list, k, cr) < 0)
                        goto fail;
                r = vmm_container_init(&list[k], cname, cr->image_ref, cr->args, cr->n_args, env, network);
                if (r >= 0 && !isempty(cr->docker_sock_path) &&
                    !(list[k].docker_sock_path = strdup(cr->docker_sock_path)))
                        r = -ENOMEM;
                if (r < 0) {
                        rpc_call_fail_errno(c, r, "Cannot set up the container");
                        goto fail;
                }
                for (size_t l = 0; l < cr->n_export_ports; l++)
                        list[k].ports[list[k].n_ports++] = (VmmPort){
                                .container_port = (uint16_t) cr->export_ports[l]->container_port,
                                .proto = (uint32_t) cr->export_ports[l]->proto,
                        };
        }
        *ret = list;
        return 0;
fail:
        vmm_container_free_all(list, req->n_containers);
        return -EINVAL;
}

static void handle_create(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__CreateInstanceRequest *req = (const void *) request;
        Manager *m = userdata;
        char *names[LABELS_MAX], *values[LABELS_MAX];
        char creator[300] = "";
        const RpcPeer *peer = rpc_call_peer(c);
        CallerScope scope;
        char *error = NULL;
        Instance *i;
        int r;

        if (!scope_or_fail(c, &scope))
                return;

        if (!req->shape || req->shape->virtual_cpu <= 0 || req->shape->memory_megabytes <= 0 ||
            req->shape->memory_megabytes % 1024 != 0) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                              "shape must give virtual_cpu and memory_megabytes (a multiple of 1024); valid shapes: %s",
                              shape_valid_help());
                return;
        }
        if (!isempty(req->shape->machine_arch) && !streq(req->shape->machine_arch, "amd64") &&
            !streq(req->shape->machine_arch, "x86_64")) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "machine_arch %.32s is not available here; use amd64.",
                              req->shape->machine_arch);
                return;
        }
        if (req->n_labels > LABELS_MAX) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "At most %d labels.", LABELS_MAX);
                return;
        }
        for (size_t k = 0; k < req->n_labels; k++) {
                if (isempty(req->labels[k]->name) || !label_part_is_valid(req->labels[k]->name) ||
                    !label_part_is_valid(req->labels[k]->value)) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT,
                                      "Label %zu: names must be non-empty, names and values at most %d printable bytes.",
                                      k, LABEL_MAX);
                        return;
                }
                names[k] = req->labels[k]->name;
                values[k] = req->labels[k]->value;
        }
        if (req->documented_purpose && strlen(req->documented_purpose) > PURPOSE_MAX) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "documented_purpose is longer than %d bytes.", PURPOSE_MAX);
                return;
        }
        if (scope.subject)
                snprintf(creator, sizeof(creator), "%.256s", scope.subject);
        else if (peer->known)
                snprintf(creator, sizeof(creator), "uid:%u", (unsigned) peer->uid);

        VmmContainer *containers = NULL;
        size_t n_containers = req->n_containers;
        if (n_containers > 0) {
                r = parse_containers(c, req, &containers);
                if (r < 0)
                        return;
        }

        CreateParams p = {
                .containers = &containers,
                .n_containers = n_containers,
                .shape = { .vcpu = (unsigned) req->shape->virtual_cpu,
                           .memory_gb = (unsigned) (req->shape->memory_megabytes / 1024) },
                .deadline_usec = timestamp_to_usec(req->deadline),
                .purpose = req->documented_purpose,
                .label_names = names,
                .label_values = values,
                .n_labels = req->n_labels,
                .creator = creator,
                .tenant = scope.tenant,
        };
        if (req->deadline && p.deadline_usec == 0) {
                vmm_container_free_all(containers, n_containers);
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "deadline is not a valid timestamp.");
                return;
        }
        r = manager_create_instance(m, &p, &i, &error);
        vmm_container_free_all(containers, n_containers); /* NULL when the instance took them */
        if (r < 0)
                return fail_with(c, r, error, "Cannot create the instance");
        reply_describe(c, i);
}

static void handle_wait(RpcCall *c, const ProtobufCMessage *request, void *userdata, bool stream) {
        const Namespace__Cloud__Compute__V1beta__WaitInstanceRequest *req = (const void *) request;
        Manager *m = userdata;
        Instance *i = find_or_fail(m, c, req->instance_id);
        const VmmContainer *container = NULL;

        if (!i)
                return;
        if (!isempty(req->container_id)) {
                container = vmm_container_find(i, req->container_id);
                if (!container) {
                        rpc_call_fail(c, RPC_NOT_FOUND, "Instance %s has no container %.64s.", i->id,
                                      req->container_id);
                        return;
                }
        }
        manager_add_waiter(m, i, c, stream, req->destroyed_ok, container);
}

static void handle_wait_stream(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        handle_wait(c, request, userdata, true);
}

static void handle_wait_sync(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        handle_wait(c, request, userdata, false);
}

int vmm_grpc_send_wait(RpcCall *c, Instance *i, bool stream, const VmmContainer *container) {
        Namespace__Cloud__Compute__V1beta__WaitInstanceResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__WAIT_INSTANCE_RESPONSE__INIT;
        MetadataStorage *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        metadata_fill(s, i);
        resp.metadata = &s->md;
        if (container)
                resp.container_status = container->status ?: (char *) "";
        r = stream ? rpc_call_send(c, &resp.base) : rpc_call_reply(c, &resp.base);
        free(s);
        return r;
}

static void handle_describe(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__DescribeInstanceRequest *req = (const void *) request;
        Instance *i = find_or_fail(userdata, c, req->instance_id);

        if (i)
                reply_describe(c, i);
}

static bool labels_match(Instance *i, Namespace__Stdlib__LabelFilterEntry *const *filters, size_t n) {
        for (size_t k = 0; k < n; k++) {
                const char *value = NULL;
                for (size_t l = 0; l < i->n_labels; l++)
                        if (streq(i->label_names[l], filters[k]->name ?: ""))
                                value = i->label_values[l];
                switch (filters[k]->op) {
                case NAMESPACE__STDLIB__LABEL_FILTER_ENTRY__LABEL_FILTER_OP__EQUAL:
                        if (!value || !streq(value, filters[k]->value ?: ""))
                                return false;
                        break;
                case NAMESPACE__STDLIB__LABEL_FILTER_ENTRY__LABEL_FILTER_OP__NOT_EQUAL:
                        if (value && streq(value, filters[k]->value ?: ""))
                                return false;
                        break;
                case NAMESPACE__STDLIB__LABEL_FILTER_ENTRY__LABEL_FILTER_OP__EXIST:
                        if (!value)
                                return false;
                        break;
                default:
                        break;
                }
        }
        return true;
}

static void handle_list(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__ListInstancesRequest *req = (const void *) request;
        Namespace__Cloud__Compute__V1beta__ListInstancesResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__LIST_INSTANCES_RESPONSE__INIT;
        Manager *m = userdata;
        _cleanup_free_ MetadataStorage *s = NULL;
        _cleanup_free_ InstanceMetadata **list = NULL;
        uint64_t not_older = timestamp_to_usec(req->not_older_than);
        size_t n = 0, max = req->max_entries > 0 ? (size_t) req->max_entries : SIZE_MAX;
        CallerScope scope;

        if (!scope_or_fail(c, &scope))
                return;
        for (size_t k = 0; k < req->n_label_filter; k++)
                if (req->label_filter[k]->op == NAMESPACE__STDLIB__LABEL_FILTER_ENTRY__LABEL_FILTER_OP__UNKNOWN) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "label_filter %zu has no op (EQUAL, NOT_EQUAL, EXIST).", k);
                        return;
                }
        s = calloc(m->n_instances + 1, sizeof(*s));
        list = calloc(m->n_instances + 1, sizeof(*list));
        if (!s || !list) {
                rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
                return;
        }
        for (size_t k = 0; k < m->n_instances && n < max; k++) {
                Instance *i = m->instances[k];

                if (!scope_allows(&scope, i))
                        continue;
                if (!req->include_complete_runs && instance_state_is_final(i->state))
                        continue;
                if (not_older && i->created_usec < not_older)
                        continue;
                if (!labels_match(i, req->label_filter, req->n_label_filter))
                        continue;
                metadata_fill(&s[n], i);
                list[n] = &s[n].md;
                n++;
        }
        resp.n_instances = n;
        resp.instances = list;
        rpc_call_reply(c, &resp.base);
}

static void handle_destroy(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__DestroyInstanceRequest *req = (const void *) request;
        Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
        Manager *m = userdata;
        Instance *i = find_or_fail(m, c, req->instance_id);
        int r;

        if (!i)
                return;
        if (req->reason && strlen(req->reason) > PURPOSE_MAX) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "reason is longer than %d bytes.", PURPOSE_MAX);
                return;
        }
        r = manager_destroy_instance(m, i, isempty(req->reason) ? "destroyed on request" : req->reason);
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Cannot destroy instance %s", i->id);
                return;
        }
        rpc_call_reply(c, &empty.base);
}

static void handle_extend(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__ExtendInstanceRequest *req = (const void *) request;
        Namespace__Cloud__Compute__V1beta__ExtendInstanceResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__EXTEND_INSTANCE_RESPONSE__INIT;
        Manager *m = userdata;
        Instance *i = find_or_fail(m, c, req->instance_id);
        char *error = NULL;
        uint64_t deadline;
        struct timespec ts;
        Timestamp t;
        int r;

        if (!i)
                return;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t now = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        if (req->new_deadline) {
                deadline = timestamp_to_usec(req->new_deadline);
        } else if (req->extend_by) {
                if (req->extend_by->seconds < 0 || req->extend_by->seconds > 366LL * 86400) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "extend_by must be between 0 and a year.");
                        return;
                }
                deadline = i->deadline_usec + (uint64_t) req->extend_by->seconds * USEC_PER_SEC;
        } else if (req->ensure_minimum) {
                if (req->ensure_minimum->seconds < 0 || req->ensure_minimum->seconds > 366LL * 86400) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "ensure_minimum must be between 0 and a year.");
                        return;
                }
                deadline = MAX(i->deadline_usec, now + (uint64_t) req->ensure_minimum->seconds * USEC_PER_SEC);
        } else {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "Give new_deadline, extend_by or ensure_minimum.");
                return;
        }
        r = manager_extend_instance(m, i, deadline, &error);
        if (r < 0)
                return fail_with(c, r, error, "Cannot extend the instance");
        timestamp_set(&t, i->deadline_usec);
        resp.new_deadline = &t;
        rpc_call_reply(c, &resp.base);
}

/* ---- CommandService ---------------------------------------------------- */

static void handle_run(RpcCall *c, const ProtobufCMessage *request, void *userdata, bool sync) {
        const Namespace__Cloud__Compute__V1beta__RunCommandRequest *req = (const void *) request;
        Manager *m = userdata;
        Instance *i = find_or_fail(m, c, req->instance_id);
        _cleanup_free_ char **argv = NULL, **env = NULL;
        char *error = NULL;
        size_t total = 0;
        int r;

        if (!i)
                return;
        if (!isempty(req->target_container_name) &&
            (!req->command || req->command->n_command == 0) ) {
                /* No command: attach to the container's main task. */
                r = manager_exec_container(m, i, c, sync, req->target_container_name, NULL, NULL, NULL, &error);
                if (r < 0)
                        fail_with(c, r, error, "Cannot attach to the container");
                return;
        }
        if (!req->command || req->command->n_command == 0 || isempty(req->command->command[0])) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "command.command must name the program to run.");
                return;
        }
        if (req->command->n_command > AGENT_ARGS_MAX || req->command->n_env_vars > AGENT_ARGS_MAX) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "At most %d arguments and %d variables.", AGENT_ARGS_MAX,
                              AGENT_ARGS_MAX);
                return;
        }
        argv = calloc(req->command->n_command + 1, sizeof(char *));
        env = calloc(req->command->n_env_vars + 1, sizeof(char *));
        if (!argv || !env) {
                rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
                return;
        }
        for (size_t k = 0; k < req->command->n_command; k++) {
                argv[k] = req->command->command[k];
                total += strlen(argv[k]) + 4;
        }
        for (size_t k = 0; k < req->command->n_env_vars; k++) {
                const Namespace__Cloud__Compute__V1beta__EnvironmentVariable *v = req->command->env_vars[k];
                if (isempty(v->name) || strchr(v->name, '=')) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "env_vars[%zu]: a name without '=' is required.", k);
                        goto out;
                }
                if (!isempty(v->from_secret_id)) {
                        rpc_call_fail(c, RPC_INVALID_ARGUMENT, "env_vars[%zu]: secrets are not supported here.", k);
                        goto out;
                }
                if (asprintf(&env[k], "%s=%s", v->name, v->value ?: "") < 0) {
                        rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
                        goto out;
                }
                total += strlen(env[k]) + 4;
        }
        if (total > ARG_MAX_BYTES) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "The command and its environment exceed 32 KiB.");
                goto out;
        }
        if (!isempty(req->target_container_name))
                r = manager_exec_container(m, i, c, sync, req->target_container_name, argv, env,
                                           isempty(req->command->cwd) ? NULL : req->command->cwd, &error);
        else
                r = manager_exec(m, i, c, sync, argv, env, isempty(req->command->cwd) ? NULL : req->command->cwd,
                                 &error);
        if (r < 0)
                fail_with(c, r, error, "Cannot run the command");
out:
        for (size_t k = 0; k < req->command->n_env_vars; k++)
                free(env[k]);
}

static void handle_run_stream(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        handle_run(c, request, userdata, false);
}

static void handle_run_sync(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        handle_run(c, request, userdata, true);
}

int vmm_grpc_send_output(RpcCall *c, int stream, const void *data, size_t size) {
        Namespace__Cloud__Compute__V1beta__RunCommandResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_RESPONSE__INIT;

        resp.stream = stream == 1 ? NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_RESPONSE__STREAM__STDOUT
                                  : NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_RESPONSE__STREAM__STDERR;
        resp.data.data = (uint8_t *) data;
        resp.data.len = size;
        return rpc_call_send(c, &resp.base);
}

int vmm_grpc_send_exit(RpcCall *c, int32_t code) {
        Namespace__Cloud__Compute__V1beta__RunCommandResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_RESPONSE__INIT;
        Namespace__Cloud__Compute__V1beta__RunCommandResponse__ExitStatus st =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_RESPONSE__EXIT_STATUS__INIT;
        int r;

        st.exit_code = code;
        resp.exit_status = &st;
        r = rpc_call_send(c, &resp.base);
        if (r < 0)
                return r;
        return rpc_call_finish(c, RPC_OK, NULL);
}

int vmm_grpc_reply_sync(RpcCall *c, const void *out, size_t out_size, const void *err, size_t err_size, int32_t code) {
        Namespace__Cloud__Compute__V1beta__RunCommandSyncResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_SYNC_RESPONSE__INIT;

        resp.stdout.data = (uint8_t *) out;
        resp.stdout.len = out_size;
        resp.stderr.data = (uint8_t *) err;
        resp.stderr.len = err_size;
        resp.exit_code = code;
        return rpc_call_reply(c, &resp.base);
}

/* ---- ObservabilityService ---------------------------------------------- */

int vmm_grpc_send_log_line(RpcCall *c, uint64_t usec, const char *stream, const char *line) {
        Namespace__Cloud__Compute__V1beta__LogBlock block = NAMESPACE__CLOUD__COMPUTE__V1BETA__LOG_BLOCK__INIT;
        Namespace__Cloud__Compute__V1beta__LogBlock__Line l = NAMESPACE__CLOUD__COMPUTE__V1BETA__LOG_BLOCK__LINE__INIT;
        Namespace__Cloud__Compute__V1beta__LogBlock__Line *lines[1] = { &l };
        Timestamp t;

        timestamp_set(&t, usec);
        l.timestamp = &t;
        l.content = (char *) line;
        l.stream = (char *) stream;
        block.n_lines = 1;
        block.lines = lines;
        return rpc_call_send(c, &block.base);
}

/* A replay goes out in blocks of many lines (LogBlock is repeated for
 * this): the whole stored log (up to log_max) is queued at once, and as one
 * message per line it would cost ~20 times its size in the send queue. */
#define REPLAY_BLOCK_BYTES (64U * 1024U)
#define REPLAY_BLOCK_LINES 1024U

typedef struct ReplayBlock {
        RpcCall *call;
        size_t n, bytes;
        int r;                    /* first send error; the rest is dropped */
        uint64_t usec[REPLAY_BLOCK_LINES];
        char *stream[REPLAY_BLOCK_LINES];
        char *content[REPLAY_BLOCK_LINES];
} ReplayBlock;

static void replay_block_flush(ReplayBlock *b) {
        Namespace__Cloud__Compute__V1beta__LogBlock block = NAMESPACE__CLOUD__COMPUTE__V1BETA__LOG_BLOCK__INIT;
        _cleanup_free_ Namespace__Cloud__Compute__V1beta__LogBlock__Line *lines = NULL;
        _cleanup_free_ Namespace__Cloud__Compute__V1beta__LogBlock__Line **ptrs = NULL;
        _cleanup_free_ Timestamp *times = NULL;

        if (b->n > 0 && b->r >= 0) {
                lines = calloc(b->n, sizeof(*lines));
                ptrs = calloc(b->n, sizeof(*ptrs));
                times = calloc(b->n, sizeof(*times));
                if (!lines || !ptrs || !times)
                        b->r = -ENOMEM;
                for (size_t k = 0; k < b->n && b->r >= 0; k++) {
                        lines[k] = (Namespace__Cloud__Compute__V1beta__LogBlock__Line)
                                NAMESPACE__CLOUD__COMPUTE__V1BETA__LOG_BLOCK__LINE__INIT;
                        timestamp_set(&times[k], b->usec[k]);
                        lines[k].timestamp = &times[k];
                        lines[k].content = b->content[k];
                        lines[k].stream = b->stream[k];
                        ptrs[k] = &lines[k];
                }
                if (b->r >= 0) {
                        block.n_lines = b->n;
                        block.lines = ptrs;
                        b->r = rpc_call_send(b->call, &block.base);
                }
        }
        for (size_t k = 0; k < b->n; k++) {
                free(b->stream[k]);
                free(b->content[k]);
        }
        b->n = b->bytes = 0;
}

static void replay_line(uint64_t usec, const char *stream, const char *line, void *userdata) {
        ReplayBlock *b = userdata;
        char *s, *l;

        if (b->r < 0)
                return;
        s = strdup(stream);
        l = strdup(line);
        if (!s || !l) {
                free(s);
                free(l);
                b->r = -ENOMEM;
                return;
        }
        b->usec[b->n] = usec;
        b->stream[b->n] = s;
        b->content[b->n] = l;
        b->n++;
        b->bytes += strlen(line) + 32;
        if (b->n == REPLAY_BLOCK_LINES || b->bytes >= REPLAY_BLOCK_BYTES)
                replay_block_flush(b);
}

int vmm_grpc_send_log_replay(RpcCall *c, const char *dir) {
        _cleanup_free_ ReplayBlock *b = calloc(1, sizeof(*b));
        int r;

        if (!b)
                return -ENOMEM;
        b->call = c;
        r = instance_log_replay(dir, replay_line, b);
        replay_block_flush(b);
        return r < 0 ? r : b->r;
}

static void handle_logs(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__StreamInstanceLogsRequest *req = (const void *) request;
        Manager *m = userdata;
        Instance *i = find_or_fail(m, c, req->instance_id);

        if (!i)
                return;
        if (req->follow) {
                manager_follow_logs(m, i, c);
                return;
        }
        if (i->log)
                instance_log_flush(i->log);
        (void) vmm_grpc_send_log_replay(c, i->dir);
        rpc_call_finish(c, RPC_OK, NULL);
}

/* FetchInstanceLogs: the stored lines of the listed instances, oldest
 * first per instance, a page at a time. The cursor is the number of
 * matching lines already returned, as text: pages are stable as long as
 * the logs only grow (a rotation may shift them; lines are never
 * invented). */
#define FETCH_LINES_DEFAULT 1000U
#define FETCH_LINES_MAX 10000U
#define FETCH_INSTANCES_MAX 64U

typedef Namespace__Cloud__Compute__V1beta__LogLine LogLine;

typedef struct Fetch {
        const char *instance_id;
        uint64_t after_usec, before_usec;     /* 0: open */
        uint64_t skip;                        /* lines before this page */
        uint64_t seen;                        /* matching lines so far */
        size_t n, max;
        LogLine **lines;
        bool more;
        int r;
} Fetch;

static uint64_t timestamp_usec(const Timestamp *t) {
        if (!t || t->seconds < 0)
                return 0;
        return (uint64_t) t->seconds * USEC_PER_SEC + (uint64_t) (t->nanos > 0 ? t->nanos : 0) / 1000;
}

static void log_line_free(LogLine *l) {
        if (!l)
                return;
        free(l->timestamp);
        free(l->content);
        free(l->stream);
        if (l->labels) {
                free(l->labels[0]->value);
                free(l->labels[0]);
                free(l->labels);
        }
        free(l);
}

static void fetch_line(uint64_t usec, const char *stream, const char *line, void *userdata) {
        Fetch *f = userdata;
        Namespace__Cloud__Compute__V1beta__LogLine__LabelsEntry *label;
        LogLine *l;

        if (f->r < 0 || (f->after_usec && usec <= f->after_usec) || (f->before_usec && usec >= f->before_usec))
                return;
        if (f->seen++ < f->skip)
                return;
        if (f->n == f->max) {
                f->more = true;
                return;
        }
        l = calloc(1, sizeof(*l));
        label = calloc(1, sizeof(*label));
        if (l) {
                namespace__cloud__compute__v1beta__log_line__init(l);
                l->timestamp = malloc(sizeof(Timestamp));
                l->content = strdup(line);
                l->stream = strdup(stream);
                l->labels = calloc(1, sizeof(*l->labels));
        }
        if (!l || !label || !l->timestamp || !l->content || !l->stream || !l->labels) {
                free(label);
                log_line_free(l);
                f->r = -ENOMEM;
                return;
        }
        namespace__cloud__compute__v1beta__log_line__labels_entry__init(label);
        label->key = (char *) "instance_id";
        label->value = strdup(f->instance_id);
        l->labels[0] = label;
        l->n_labels = 1;
        timestamp_set(l->timestamp, usec);
        if (!label->value) {
                log_line_free(l);
                f->r = -ENOMEM;
                return;
        }
        f->lines[f->n++] = l;
}

static void handle_fetch_logs(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__FetchInstanceLogsRequest *req = (const void *) request;
        Namespace__Cloud__Compute__V1beta__FetchInstanceLogsResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__FETCH_INSTANCE_LOGS_RESPONSE__INIT;
        const Namespace__Stdlib__StringMatcher *ids = req->match_instance_ids;
        Manager *m = userdata;
        Instance *found[FETCH_INSTANCES_MAX];
        char cursor[32] = "";
        Fetch f = {};

        if (!ids || ids->n_values == 0)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "match_instance_ids must list the instances "
                                            "(op IS_ANY_OF, values = their ids).");
        if (ids->op == NAMESPACE__STDLIB__STRING_MATCHER__OPERATOR__IS_NOT)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "match_instance_ids.op IS_NOT is not supported: "
                                            "list the instances with IS_ANY_OF.");
        if (ids->n_values > FETCH_INSTANCES_MAX)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "match_instance_ids: at most %u instances per "
                                            "call, not %zu.", FETCH_INSTANCES_MAX, ids->n_values);
        if (req->lines_per_page < 0 || (uint32_t) req->lines_per_page > FETCH_LINES_MAX)
                return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "lines_per_page must be 0 to %u, not %d.",
                                            FETCH_LINES_MAX, req->lines_per_page);
        if (req->pagination_cursor.len > 0) {
                char *end;
                if (req->pagination_cursor.len >= sizeof(cursor))
                        return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "pagination_cursor is not one of ours.");
                memcpy(cursor, req->pagination_cursor.data, req->pagination_cursor.len);
                errno = 0;
                f.skip = strtoull(cursor, &end, 10);
                if (*end || errno || cursor[0] < '0' || cursor[0] > '9')
                        return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "pagination_cursor is not one of ours.");
        }
        /* Every instance is checked (exists, the caller's tenant) before any line goes out. */
        for (size_t k = 0; k < ids->n_values; k++) {
                found[k] = find_or_fail(m, c, ids->values[k]);
                if (!found[k])
                        return;
        }
        if (req->timestamp_range) {
                f.after_usec = timestamp_usec(req->timestamp_range->after);
                f.before_usec = timestamp_usec(req->timestamp_range->before);
        }
        f.max = req->lines_per_page > 0 ? (size_t) req->lines_per_page : FETCH_LINES_DEFAULT;
        f.lines = calloc(f.max, sizeof(LogLine *));
        if (!f.lines)
                return (void) rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED, "Out of memory.");
        for (size_t k = 0; k < ids->n_values && f.r >= 0 && !f.more; k++) {
                if (found[k]->log)
                        instance_log_flush(found[k]->log);
                f.instance_id = found[k]->id;
                int r = instance_log_replay(found[k]->dir, fetch_line, &f);
                if (r < 0 && r != -ENOENT && f.r >= 0)
                        f.r = r;
        }
        if (f.r < 0)
                rpc_call_fail(c, RPC_INTERNAL, "Failed to read the logs: %s.", strerror(-f.r));
        else {
                if (f.more)
                        snprintf(cursor, sizeof(cursor), "%" PRIu64, f.skip + f.n);
                else
                        cursor[0] = 0;
                resp.pagination_cursor = (ProtobufCBinaryData){ .len = strlen(cursor), .data = (uint8_t *) cursor };
                resp.n_log_line = f.n;
                resp.log_line = f.lines;
                rpc_call_reply(c, &resp.base);
        }
        for (size_t k = 0; k < f.n; k++)
                log_line_free(f.lines[k]);
        free(f.lines);
}

/* GetInstanceMetrics: what the VM's cgroup accounts now, as one sample
 * (vmmd keeps no history; the time window is accepted and the sample is
 * the latest one). Timestamps are Unix milliseconds. CPU is the CPU time
 * used so far (µs), MEMORY the bytes charged now. */
static void handle_metrics(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__GetInstanceMetricsRequest *req = (const void *) request;
        Namespace__Cloud__Compute__V1beta__GetInstanceMetricsResponse resp =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__GET_INSTANCE_METRICS_RESPONSE__INIT;
        Namespace__Stdlib__TimeSeries ts = NAMESPACE__STDLIB__TIME_SERIES__INIT;
        Namespace__Stdlib__TimeSeries *series[1] = { &ts };
        Namespace__Stdlib__TimeSeries__Integers values[2];
        Namespace__Stdlib__TimeSeries__IntegersEntry entries[2], *entry_ptrs[2];
        int64_t samples[2], now_ms;
        bool want_cpu = req->n_metric_resource == 0, want_mem = req->n_metric_resource == 0;
        Manager *m = userdata;
        VmmCgroupUsage u;
        struct timespec now;
        Instance *i;
        int r;

        for (size_t k = 0; k < req->n_metric_resource; k++)
                switch (req->metric_resource[k]) {
                case NAMESPACE__CLOUD__COMPUTE__V1BETA__GET_INSTANCE_METRICS_REQUEST__METRIC_RESOURCE__CPU:
                        want_cpu = true;
                        break;
                case NAMESPACE__CLOUD__COMPUTE__V1BETA__GET_INSTANCE_METRICS_REQUEST__METRIC_RESOURCE__MEMORY:
                        want_mem = true;
                        break;
                default:
                        return (void) rpc_call_fail(c, RPC_INVALID_ARGUMENT, "metric_resource %d is not measured "
                                                    "here: CPU and MEMORY are.", (int) req->metric_resource[k]);
                }
        i = find_or_fail(m, c, req->instance_id);
        if (!i)
                return;
        if (!instance_state_is_active(i->state) || isempty(i->cgroup))
                return (void) rpc_call_fail(c, RPC_FAILED_PRECONDITION, "Instance %s has no metrics: %s.", i->id,
                                            !instance_state_is_active(i->state) ? "it is not running"
                                                                                : "vmmd runs it without a cgroup");
        r = vmm_cgroup_usage(i->cgroup, &u);
        if (r < 0)
                return (void) rpc_call_fail(c, RPC_UNAVAILABLE, "Cannot read the cgroup of %s: %s.", i->id,
                                            strerror(-r));
        clock_gettime(CLOCK_REALTIME, &now);
        now_ms = (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
        ts.n_timestamps = 1;
        ts.timestamps = &now_ms;
        if (want_cpu && u.has_cpu) {
                samples[ts.n_integers] = (int64_t) u.cpu_usec;
                values[ts.n_integers] = (Namespace__Stdlib__TimeSeries__Integers) NAMESPACE__STDLIB__TIME_SERIES__INTEGERS__INIT;
                entries[ts.n_integers] = (Namespace__Stdlib__TimeSeries__IntegersEntry) NAMESPACE__STDLIB__TIME_SERIES__INTEGERS_ENTRY__INIT;
                entries[ts.n_integers].key = (char *) "cpu_usage_usec";
                ts.n_integers++;
        }
        if (want_mem) {
                samples[ts.n_integers] = (int64_t) u.memory_bytes;
                values[ts.n_integers] = (Namespace__Stdlib__TimeSeries__Integers) NAMESPACE__STDLIB__TIME_SERIES__INTEGERS__INIT;
                entries[ts.n_integers] = (Namespace__Stdlib__TimeSeries__IntegersEntry) NAMESPACE__STDLIB__TIME_SERIES__INTEGERS_ENTRY__INIT;
                entries[ts.n_integers].key = (char *) "memory_usage_bytes";
                ts.n_integers++;
        }
        for (size_t k = 0; k < ts.n_integers; k++) {
                values[k].n_values = 1;
                values[k].values = &samples[k];
                entries[k].value = &values[k];
                entry_ptrs[k] = &entries[k];
        }
        ts.integers = entry_ptrs;
        resp.n_time_series = 1;
        resp.time_series = series;
        rpc_call_reply(c, &resp.base);
}

/* ---- hostmesh.vmm.v1.Vmm ------------------------------------------------- */

static void handle_details(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Hostmesh__Vmm__V1__GetInstanceDetailsRequest *req = (const void *) request;
        Hostmesh__Vmm__V1__InstanceDetails d = HOSTMESH__VMM__V1__INSTANCE_DETAILS__INIT;
        Manager *m = userdata;
        Instance *i = find_or_fail(m, c, req->instance_id);
        _cleanup_free_ char *tail = NULL;
        char shape[16], mac_text[18] = "", gateway[INET_ADDRSTRLEN] = "";
        uint8_t mac[6];

        if (!i)
                return;
        if (i->log)
                instance_log_flush(i->log);
        tail = instance_log_tail(i->dir, "console", 20);
        d.instance_id = i->id;
        d.state = (char *) instance_state_to_string(i->state);
        d.reason = i->reason ?: (char *) "";
        d.machine_type = (char *) shape_to_string(&i->shape, shape, sizeof(shape));
        d.qemu_pid = i->pid > 0 ? (uint32_t) i->pid : 0;
        d.machine = i->machine ?: (char *) "";
        d.accelerator = i->accel ?: (char *) "";
        d.guest_kernel_usec = i->guest_kernel_usec;
        d.guest_init_usec = i->guest_init_usec;
        d.create_to_running_usec = i->ready_usec;
        d.boot_qemu_usec = i->boot_qemu_usec;
        d.guest_mounts_usec = i->guest_phase_usec[AGENT_PHASE_MOUNTS];
        d.guest_modules_usec = i->guest_phase_usec[AGENT_PHASE_MODULES];
        d.guest_network_usec = i->guest_phase_usec[AGENT_PHASE_NETWORK];
        d.guest_port_usec = i->guest_phase_usec[AGENT_PHASE_PORT];
        d.ready_to_first_command_usec = i->first_command_usec;
        d.boot_phases_known = i->guest_phases_known;
        d.guest_kernel = i->guest_kernel ?: (char *) "";
        d.disk_id = i->disk_id ?: (char *) "";
        d.disk_path = i->disk_path ?: (char *) "";
        d.disk_bytes = i->disk_bytes;
        d.has_token = i->token_subject != NULL;
        d.cgroup = i->cgroup ?: (char *) "";
        d.console_tail = tail ?: (char *) "";
        d.vmmd_cost_usec = i->vmmd_cost_usec;
        d.address = i->address && i->tap ? i->address : (char *) "";
        d.dns_name = i->dns_name ?: (char *) "";
        d.tap = i->tap ?: (char *) "";
        if (i->tap) {
                vmm_net_mac(i, mac);
                snprintf(mac_text, sizeof(mac_text), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                         mac[4], mac[5]);
                if (inet_ntop(AF_INET, &m->net_gateway, gateway, sizeof(gateway)))
                        d.gateway = gateway;
        }
        d.mac = mac_text;
        d.tenant = i->tenant ?: (char *) "";
        d.accelerator_reason = i->accel_reason ?: (char *) "";
        d.events = i->events;
        d.n_events = i->n_events;
        /* Containers: at most CONTAINERS_PER_INSTANCE_MAX, on the stack. */
        Hostmesh__Vmm__V1__ContainerDetails cd[CONTAINERS_PER_INSTANCE_MAX], *cdp[CONTAINERS_PER_INSTANCE_MAX];
        for (size_t k = 0; k < i->n_containers && k < CONTAINERS_PER_INSTANCE_MAX; k++) {
                const VmmContainer *vc = &i->containers[k];
                cd[k] = (Hostmesh__Vmm__V1__ContainerDetails) HOSTMESH__VMM__V1__CONTAINER_DETAILS__INIT;
                cd[k].id = vc->id;
                cd[k].name = vc->name;
                cd[k].image_ref = vc->image_ref;
                cd[k].status = vc->status ?: (char *) "";
                cd[k].docker_sock_path = vc->docker_sock_path ?: (char *) "";
                cdp[k] = &cd[k];
                d.n_containers = k + 1;
        }
        d.containers = cdp;
        rpc_call_reply(c, &d.base);
}

static void handle_capacity(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        Hostmesh__Vmm__V1__Capacity cap = HOSTMESH__VMM__V1__CAPACITY__INIT;
        Manager *m = userdata;

        (void) request;
        cap.vcpus_total = m->capacity_vcpus;
        cap.accelerator_mode = (char *) accel_mode_to_string(m->accel_mode);
        if (m->accel && accel_decided(m->accel)) {
                cap.accelerator = accel_use_kvm(m->accel) ? (char *) "kvm" : (char *) "tcg";
                cap.accelerator_reason = (char *) accel_reason(m->accel);
                cap.accelerator_probe_usec = accel_probe_usec(m->accel);
        } else {
                cap.accelerator = (char *) "";
                cap.accelerator_reason = m->accel ? (char *) "the KVM probe is running"
                                                  : (char *) "not probed yet: QEMU is not installed (qemu-system-x86)";
        }
        cap.memory_bytes_total = m->capacity_memory;
        for (size_t k = 0; k < m->n_instances; k++) {
                Instance *i = m->instances[k];
                if (!instance_state_is_active(i->state) && i->state != INSTANCE_DESTROYING)
                        continue;
                cap.instances++;
                cap.vcpus_used += i->shape.vcpu;
                cap.memory_bytes_used += (uint64_t) i->shape.memory_gb << 30;
        }
        rpc_call_reply(c, &cap.base);
}

#define COMPUTE "/namespace.cloud.compute.v1beta.ComputeService/"
#define COMMAND "/namespace.cloud.compute.v1beta.CommandService/"
#define OBSERVABILITY "/namespace.cloud.compute.v1beta.ObservabilityService/"
#define D(x) &namespace__cloud__compute__v1beta__##x##__descriptor

int vmm_grpc_register(Manager *m) {
        static const RpcMethod methods[] = {
                { COMPUTE "CreateInstance", RPC_UNARY, D(create_instance_request), D(describe_instance_response),
                  handle_create },
                { COMPUTE "WaitInstance", RPC_SERVER_STREAMING, D(wait_instance_request), D(wait_instance_response),
                  handle_wait_stream },
                { COMPUTE "WaitInstanceSync", RPC_UNARY, D(wait_instance_request), D(wait_instance_response),
                  handle_wait_sync },
                { COMPUTE "DescribeInstance", RPC_UNARY, D(describe_instance_request), D(describe_instance_response),
                  handle_describe },
                { COMPUTE "ListInstances", RPC_UNARY, D(list_instances_request), D(list_instances_response),
                  handle_list },
                { COMPUTE "DestroyInstance", RPC_UNARY, D(destroy_instance_request),
                  &google__protobuf__empty__descriptor, handle_destroy },
                { COMPUTE "ExtendInstance", RPC_UNARY, D(extend_instance_request), D(extend_instance_response),
                  handle_extend },
                { COMPUTE "GetInstanceMetrics", RPC_UNARY, D(get_instance_metrics_request),
                  D(get_instance_metrics_response), handle_metrics },
                { COMMAND "RunCommand", RPC_SERVER_STREAMING, D(run_command_request), D(run_command_response),
                  handle_run_stream },
                { COMMAND "RunCommandSync", RPC_UNARY, D(run_command_request), D(run_command_sync_response),
                  handle_run_sync },
                { OBSERVABILITY "StreamInstanceLogs", RPC_SERVER_STREAMING, D(stream_instance_logs_request),
                  D(log_block), handle_logs },
                { OBSERVABILITY "FetchInstanceLogs", RPC_UNARY, D(fetch_instance_logs_request),
                  D(fetch_instance_logs_response), handle_fetch_logs },
                { "/hostmesh.vmm.v1.Vmm/GetInstanceDetails", RPC_UNARY,
                  &hostmesh__vmm__v1__get_instance_details_request__descriptor,
                  &hostmesh__vmm__v1__instance_details__descriptor, handle_details },
                { "/hostmesh.vmm.v1.Vmm/GetCapacity", RPC_UNARY, &google__protobuf__empty__descriptor,
                  &hostmesh__vmm__v1__capacity__descriptor, handle_capacity },
        };

        return rpc_server_add_methods(m->server, methods, ELEMENTSOF(methods), m);
}
