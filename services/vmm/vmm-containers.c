/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>

#include "hostmesh/disk/v1/disk.pb-c.h"
#include "error-util.h"
#include "log.h"
#include "macro.h"
#include "vmm-agent.h"
#include "vmm-compose.h"
#include "vmm-containers.h"
#include "vmm-grpc.h"
#include "vmm-manager.h"
#include "vmm-ports.h"

/* A pull fetches and unpacks layers: minutes for a big image on a slow
 * registry, never the 10 s of the other backend calls. */
#define PULL_TIMEOUT_USEC (10 * 60 * USEC_PER_SEC)
#define DISK_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* The container's writable root: a copy-on-write disk of this virtual size
 * over the image (the ext4 inside is the image's own size). */
#define CONTAINER_DISK_BYTES (1ULL << 30)

/* n: the entries of l, or SIZE_MAX when it is NULL-terminated. */
static char **strv_copy(char *const *l, size_t n) {
        char **c;

        if (n == SIZE_MAX)
                for (n = 0; l && l[n];)
                        n++;
        c = calloc(n + 1, sizeof(char *));
        if (!c)
                return NULL;
        for (size_t k = 0; k < n; k++)
                if (!(c[k] = strdup(l[k]))) {
                        strv_free(c);
                        return NULL;
                }
        return c;
}

VmmContainer *vmm_container_free_all(VmmContainer *c, size_t n) {
        for (size_t k = 0; c && k < n; k++) {
                free(c[k].id);
                free(c[k].name);
                free(c[k].image_ref);
                strv_free(c[k].argv);
                strv_free(c[k].env);
                free(c[k].cwd);
                free(c[k].user);
                free(c[k].image);
                free(c[k].docker_sock_path);
                free(c[k].image_path);
                free(c[k].disk_id);
                free(c[k].disk_path);
                free(c[k].disk_format);
                free(c[k].status);
                free(c[k].pending);
                for (size_t l = 0; l < c[k].n_ports; l++)
                        c[k].ports[l].forward = port_forward_free(c[k].ports[l].forward);
        }
        free(c);
        return NULL;
}

int vmm_container_init(VmmContainer *c, const char *name, const char *image_ref, char *const *argv, size_t n_argv,
                       char *const *env, uint32_t network) {
        uint8_t raw[8];
        char id[18];

        *c = (VmmContainer){ .network = network };
        if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
                return -EIO;
        id[0] = 'c';
        for (size_t k = 0; k < sizeof(raw); k++)
                snprintf(id + 1 + 2 * k, 3, "%02x", raw[k]);
        /* "hm-" + 17 characters: within virtio-blk's 20 bytes. */
        snprintf(c->serial, sizeof(c->serial), "hm-%s", id);
        snprintf(c->image_serial, sizeof(c->image_serial), "hi-%s", id);
        c->id = strdup(id);
        c->name = strdup(name);
        c->image_ref = strdup(image_ref);
        c->argv = strv_copy(argv, n_argv);
        c->env = strv_copy(env, SIZE_MAX);
        c->status = strdup("pending");
        if (!c->id || !c->name || !c->image_ref || !c->argv || !c->env || !c->status)
                return -ENOMEM;
        return 0;
}

VmmContainer *vmm_container_find(Instance *i, const char *name_or_id) {
        for (size_t k = 0; k < i->n_containers; k++)
                if (streq(i->containers[k].name, name_or_id) || streq(i->containers[k].id, name_or_id))
                        return &i->containers[k];
        return NULL;
}

VmmContainer *vmm_container_by_exec(Instance *i, uint32_t exec_id) {
        for (size_t k = 0; k < i->n_containers; k++)
                if (i->containers[k].exec_id != 0 && i->containers[k].exec_id == exec_id)
                        return &i->containers[k];
        return NULL;
}

static void set_status(VmmContainer *c, const char *status) {
        char *s = strdup(status);
        if (!s)
                return;
        free(c->status);
        c->status = s;
}

/* ---- the image's config ------------------------------------------------------ */

/* Whether env entry a ("NAME=…") sets the variable entry b sets. */
static bool env_same_name(const char *a, const char *b) {
        size_t n = strcspn(a, "=");
        return strncmp(a, b, n) == 0 && b[n] == '=';
}

static bool user_is_root(const char *user) {
        return isempty(user) || streq(user, "0") || streq(user, "root") || streq(user, "0:0") ||
               streq(user, "root:root");
}

int vmm_container_resolve_process(VmmContainer *c, size_t index, const Hostmesh__Disk__V1__ImageConfig *config,
                                  char **ret_error) {
        char *const none[] = { NULL };
        char *const *entrypoint = config ? config->entrypoint : none, *const *cmd = config ? config->cmd : none,
                    *const *image_env = config ? config->env : none;
        size_t n_entrypoint = config ? config->n_entrypoint : 0, n_cmd = config ? config->n_cmd : 0,
               n_image_env = config ? config->n_env : 0, n_args = strv_length(c->argv),
               n_req_env = strv_length(c->env);
        /* image-spec config.md: Cmd is the default arguments to the
         * entrypoint, replaced by the arguments given at run time. */
        char *const *tail = n_args > 0 ? c->argv : cmd;
        size_t n_tail = n_args > 0 ? n_args : n_cmd, total = 0, n_env = 0;
        _cleanup_(strv_freep) char **argv = NULL, **env = NULL;
        _cleanup_free_ char *cwd = NULL, *user = NULL;

        if (n_entrypoint + n_tail == 0)
                return error_set(ret_error, -EINVAL,
                                 "containers[%zu].args: image %s sets no Entrypoint or Cmd; give the command to run.",
                                 index, c->image_ref);
        if (n_entrypoint + n_tail > AGENT_ARGS_MAX || n_image_env + n_req_env > AGENT_ARGS_MAX)
                return error_set(ret_error, -EINVAL,
                                 "containers[%zu].args: with image %s's config, more than %d args or variables.", index,
                                 c->image_ref, AGENT_ARGS_MAX);
        argv = calloc(n_entrypoint + n_tail + 1, sizeof(char *));
        env = calloc(n_image_env + n_req_env + 1, sizeof(char *));
        if (!argv || !env)
                return -ENOMEM;
        for (size_t k = 0; k < n_entrypoint + n_tail; k++) {
                const char *a = k < n_entrypoint ? entrypoint[k] : tail[k - n_entrypoint];
                if (!(argv[k] = strdup(a ?: "")))
                        return -ENOMEM;
                total += strlen(argv[k]) + 4;
        }
        /* The image's variables, each replaced by the request's of the same
         * name, then the request's others in their order. diskd checked
         * the image's are NAME=VALUE; trust nothing from a sibling all the
         * same and skip what is not. */
        for (size_t k = 0; k < n_image_env; k++) {
                const char *e = image_env[k];
                if (!e || e[0] == '=' || !strchr(e, '='))
                        continue;
                for (size_t l = 0; l < n_req_env; l++)
                        if (env_same_name(c->env[l], e)) {
                                e = NULL;
                                break;
                        }
                if (e && !(env[n_env++] = strdup(e)))
                        return -ENOMEM;
        }
        for (size_t l = 0; l < n_req_env; l++)
                if (!(env[n_env++] = strdup(c->env[l])))
                        return -ENOMEM;
        for (size_t k = 0; k < n_env; k++)
                total += strlen(env[k]) + 4;
        if (config && !isempty(config->working_dir)) {
                if (config->working_dir[0] != '/' || strlen(config->working_dir) > 4096)
                        return error_set(ret_error, -EINVAL, "containers[%zu]: image %s has a WorkingDir that is not an "
                                         "absolute path.", index, c->image_ref);
                cwd = strdup(config->working_dir);
                if (!cwd)
                        return -ENOMEM;
                total += strlen(cwd) + 4;
        }
        if (config && !user_is_root(config->user)) {
                if (!agent_user_valid(config->user))
                        return error_set(ret_error, -EINVAL, "containers[%zu]: image %s has a User the guest does not "
                                         "take (name, uid, name:group or uid:gid).", index, c->image_ref);
                user = strdup(config->user);
                if (!user)
                        return -ENOMEM;
                total += strlen(user) + 4;
        }
        /* What goes to the guest must fit one agent frame. */
        if (total > 30 * 1024)
                return error_set(ret_error, -EINVAL, "containers[%zu]: the command and environment with image %s's "
                                 "config exceed 30 KiB.", index, c->image_ref);
        strv_free(c->argv);
        strv_free(c->env);
        free(c->cwd);
        c->argv = TAKE_PTR(argv);
        c->env = TAKE_PTR(env);
        c->cwd = TAKE_PTR(cwd);
        free(c->user);
        c->user = TAKE_PTR(user);
        return 0;
}

/* ---- create: pull, then a disk --------------------------------------------- */

typedef struct ContainerOp {
        Instance *instance;
        size_t index;
} ContainerOp;

static void container_fail(Instance *i, VmmContainer *c, const char *what, int r, const RpcStatus *status) {
        _cleanup_free_ char *reason = NULL;

        const char *hint = !status                         ? "; is diskd running?"
                           : status->code == RPC_NOT_FOUND       ? "; check the repository and tag"
                           : status->code == RPC_UNAVAILABLE     ? "; is the registry up?"
                                                                 : "";
        const char *msg = status && status->message ? status->message : strerror(-r);
        size_t len = strlen(msg);
        if (*hint && len > 0 && msg[len - 1] == '.')
                len--; /* diskd's sentence goes on with the hint */
        if (asprintf(&reason, "Container %s: %s %s failed: %.*s%s", c->name, what, c->image_ref, (int) len, msg,
                     hint) < 0)
                reason = NULL;
        /* The reason keeps diskd's words: NOT_FOUND names the missing tag,
         * UNAVAILABLE the registry that does not answer. */
        if (status && status->code == RPC_NOT_FOUND)
                i->containers_error = RPC_NOT_FOUND;
        else if (status && status->code == RPC_INVALID_ARGUMENT)
                i->containers_error = RPC_INVALID_ARGUMENT;
        else if (!i->containers_error)
                /* Not UNAVAILABLE: that would read as vmmd being away. */
                i->containers_error = RPC_FAILED_PRECONDITION;
        set_status(c, "failed");
        manager_instance_fail(i, reason ?: what);
}

static void on_container_disk(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        ContainerOp *op = userdata;
        Instance *i = op->instance;
        VmmContainer *c = &i->containers[op->index];
        const Hostmesh__Disk__V1__CreateDiskResponse *resp = (const void *) response;

        free(op);
        i->pending_ops--;
        if (r >= 0 && (isempty(resp->disk_id) || isempty(resp->path) || resp->path[0] != '/' ||
                       strlen(resp->disk_id) > 128 || strlen(resp->path) > 4096 ||
                       (!isempty(resp->format) && !streq(resp->format, "raw") && !streq(resp->format, "qcow2"))))
                r = -EBADMSG;
        if (r < 0)
                container_fail(i, c, "a disk for", r, status);
        else if (i->state != INSTANCE_CREATING)
                compose_delete_disk(i->manager, i->id, resp->disk_id);
        else {
                c->disk_id = strdup(resp->disk_id);
                c->disk_path = strdup(resp->path);
                c->disk_format = strdup(isempty(resp->format) ? "raw" : resp->format);
                if (!c->disk_id || !c->disk_path || !c->disk_format)
                        manager_instance_fail(i, "Out of memory");
                else
                        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: container %s: disk %s over %s.",
                                   i->id, c->name, c->disk_id, c->image);
        }
        manager_instance_continue(i);
}

static void start_pull(Manager *m, Instance *i, size_t k);

static void on_image_pulled(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        ContainerOp *op = userdata;
        Instance *i = op->instance;
        Manager *m = i->manager;
        size_t op_index = op->index;
        VmmContainer *c = &i->containers[op_index];
        const Hostmesh__Disk__V1__PullImageResponse *resp = (const void *) response;
        Hostmesh__Disk__V1__CreateDiskRequest req = HOSTMESH__DISK__V1__CREATE_DISK_REQUEST__INIT;

        i->pending_ops--;
        if (r >= 0 && (!resp->image || isempty(resp->image->image) || strlen(resp->image->image) > 128))
                r = -EBADMSG;
        if (r < 0) {
                free(op);
                container_fail(i, c, "pulling", r, status);
                return manager_instance_continue(i);
        }
        if (i->state != INSTANCE_CREATING) {
                free(op);
                return manager_instance_continue(i);
        }
        c->image = strdup(resp->image->image);
        /* Docker: its image goes to the guest's dockerd from this file
         * (read-only). diskd's answer is checked like any other input. */
        if (c->docker_sock_path && !isempty(resp->image->path) && resp->image->path[0] == '/' &&
            strlen(resp->image->path) < 4096 && !strchr(resp->image->path, ','))
                c->image_path = strdup(resp->image->path);
        if (!c->image || (c->docker_sock_path && !isempty(resp->image->path) && !c->image_path)) {
                free(op);
                manager_instance_fail(i, "Out of memory");
                return manager_instance_continue(i);
        }
        instance_add_event(i, "container %s: image %s (%s%s%s)", c->name, c->image_ref,
                           resp->image->digest ?: "", resp->cached ? ", cached" : "",
                           resp->coalesced ? ", joined a pull in flight" : "");
        {
                _cleanup_free_ char *error = NULL;
                r = vmm_container_resolve_process(c, op_index, resp->image->config, &error);
                if (r < 0) {
                        free(op);
                        i->containers_error = RPC_INVALID_ARGUMENT;
                        set_status(c, "failed");
                        manager_instance_fail(i, error ?: "Out of memory");
                        return manager_instance_continue(i);
                }
        }
        /* diskd keeps one disk per owner: a container's is "<instance>.<container id>". */
        _cleanup_free_ char *owner = NULL;
        if (asprintf(&owner, "%s.%s", i->id, c->id) < 0) {
                free(op);
                manager_instance_fail(i, "Out of memory");
                return manager_instance_continue(i);
        }
        req.instance_id = owner;
        req.size_bytes = CONTAINER_DISK_BYTES;
        req.base_image = c->image;
        r = compose_backend_client(m, m->disk_socket, &m->disk_client);
        if (r >= 0)
                r = rpc_client_call_async(m->disk_client, "/hostmesh.disk.v1.Disk/CreateDisk", NULL, &req.base,
                                          &hostmesh__disk__v1__create_disk_response__descriptor, DISK_TIMEOUT_USEC,
                                          on_container_disk, op);
        if (r < 0) {
                free(op);
                container_fail(i, c, "a disk for", r, NULL);
                return manager_instance_continue(i);
        }
        i->pending_ops++;
}

/* Pulls one container's image. Every container's pull is asked at once:
 * diskd makes two pulls of one image share a single fetch and unpack. */
static void start_pull(Manager *m, Instance *i, size_t k) {
        Hostmesh__Disk__V1__PullImageRequest req = HOSTMESH__DISK__V1__PULL_IMAGE_REQUEST__INIT;
        VmmContainer *c = &i->containers[k];
        ContainerOp *op;
        int r;

        op = calloc(1, sizeof(*op));
        if (!op)
                return manager_instance_fail(i, "Out of memory");
        *op = (ContainerOp){ .instance = i, .index = k };
        req.ref = c->image_ref;
        r = compose_backend_client(m, m->disk_socket, &m->disk_client);
        if (r >= 0)
                r = rpc_client_call_async(m->disk_client, "/hostmesh.disk.v1.Disk/PullImage", NULL, &req.base,
                                          &hostmesh__disk__v1__pull_image_response__descriptor, PULL_TIMEOUT_USEC,
                                          on_image_pulled, op);
        if (r < 0) {
                free(op);
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "Container %s: diskd is not usable at %s (%s); containers need diskd", c->name,
                             m->disk_socket, strerror(-r)) < 0)
                        reason = NULL;
                i->containers_error = RPC_FAILED_PRECONDITION;
                return manager_instance_fail(i, reason ?: "Containers need diskd");
        }
        i->pending_ops++;
}

void vmm_containers_prepare(Manager *m, Instance *i) {
        for (size_t k = 0; k < i->n_containers && i->state == INSTANCE_CREATING; k++)
                start_pull(m, i, k);
}

void vmm_containers_release(Manager *m, Instance *i) {
        for (size_t k = 0; k < i->n_containers; k++) {
                VmmContainer *c = &i->containers[k];
                if (!c->disk_id)
                        continue;
                compose_delete_disk(m, i->id, c->disk_id);
                free(c->disk_id);
                c->disk_id = NULL;
        }
}

/* ---- in the guest ------------------------------------------------------------ */

void vmm_containers_start(Instance *i) {
        for (size_t k = 0; k < i->n_containers; k++) {
                VmmContainer *c = &i->containers[k];
                AgentContainer a = {
                        .id = c->id, .name = c->name, .serial = c->serial, .network = c->network,
                        .argv = c->argv, .env = c->env, .cwd = c->cwd, .user = c->user,
                        .docker_sock_path = c->docker_sock_path,
                        /* Images named inside come through vmm-pull.c. */
                        .features = c->docker_sock_path ? AGENT_FEATURE_IMAGE_PULL : 0,
                };
                for (size_t l = 0; l < c->n_ports; l++)
                        a.ports[a.n_ports++] = c->ports[l].container_port;
                /* The image goes to the guest's dockerd under the reference
                 * the container was asked with, when dockerd can name it so. */
                if (c->docker_sock_path && c->image_path && agent_image_ref_valid(c->image_ref)) {
                        a.image_serial = c->image_serial;
                        a.image_ref = c->image_ref;
                }
                AgentBuffer b = {};
                int r;

                if (c->exec_id != 0)
                        continue;
                c->exec_id = i->next_exec_id++;
                r = agent_container_encode(&b, c->exec_id, &a);
                if (r >= 0)
                        r = agent_conn_send(i->agent, &b);
                agent_buffer_done(&b);
                if (r < 0) {
                        log_struct(LOG_ERR, r, FIELDS(i->log_field), "Instance %s: cannot start container %s: %m",
                                   i->id, c->name);
                        set_status(c, "failed: cannot send it to the guest");
                        c->exited = true;
                        c->exit_code = 125;
                        continue;
                }
                set_status(c, "starting");
        }
}

void vmm_container_on_output(VmmContainer *c, AgentFrameType stream, const uint8_t *data, size_t size) {
        uint8_t *n;

        if (c->pending_size + 5 + size > CONTAINER_OUTPUT_MAX) {
                c->pending_truncated = true;
                return;
        }
        n = realloc(c->pending, c->pending_size + 5 + size);
        if (!n)
                return;
        n[c->pending_size] = stream == AGENT_STDOUT ? 1 : 2;
        uint32_t len = (uint32_t) size;
        memcpy(n + c->pending_size + 1, &len, 4);
        memcpy(n + c->pending_size + 5, data, size);
        c->pending = n;
        c->pending_size += 5 + size;
}

void vmm_container_on_exit(Instance *i, VmmContainer *c, int32_t code) {
        char s[32];

        c->exited = true;
        c->exit_code = code;
        if (!c->status || strncmp(c->status, "failed", 6) != 0) {
                snprintf(s, sizeof(s), "exited %" PRId32, code);
                set_status(c, s);
        }
        instance_add_event(i, "container %s exited with %" PRId32, c->name, code);
}

void vmm_container_on_state(Instance *i, VmmContainer *c, const char *state) {
        set_status(c, state);
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: container %s is %s.", i->id, c->name, state);
}

int vmm_container_replay(VmmContainer *c, RpcCall *call) {
        size_t off = 0;

        while (off + 5 <= c->pending_size) {
                uint32_t len;
                memcpy(&len, c->pending + off + 1, 4);
                int r = vmm_grpc_send_output(call, c->pending[off], c->pending + off + 5, len);
                if (r < 0)
                        return r;
                off += 5 + len;
        }
        if (c->pending_truncated) {
                static const char note[] = "hostmesh: the container's output before this attach was cut at 1 MiB\n";
                (void) vmm_grpc_send_output(call, 2, note, sizeof(note) - 1);
        }
        free(c->pending);
        c->pending = NULL;
        c->pending_size = 0;
        return 0;
}

/* ---- exported ports ---------------------------------------------------------- */

size_t vmm_containers_count_ports(const Instance *i) {
        size_t n = 0;

        for (size_t k = 0; k < i->n_containers; k++)
                n += i->containers[k].n_ports;
        return n;
}

int vmm_containers_allocate_ports(Manager *m, Instance *i, char **ret_error) {
        for (size_t k = 0; k < i->n_containers; k++)
                for (size_t l = 0; l < i->containers[k].n_ports; l++) {
                        VmmPort *p = &i->containers[k].ports[l];
                        int r = port_pool_allocate(m->export_pool, &p->host_port);
                        if (r < 0) {
                                p->host_port = 0;
                                vmm_containers_close_ports(m, i, /* release= */ true);
                                if (asprintf(ret_error, "No host port left for containers[%zu].export_ports[%zu]: "
                                             "[vmm] export_ports = %s is used up; destroy instances or widen it",
                                             k, l, m->config.export_ports) < 0)
                                        *ret_error = NULL;
                                return r;
                        }
                }
        return 0;
}

/* Listens on p->host_port; a port some other program holds is swapped for
 * another of the range (not at a restart: the port was told already). */
static int open_port(Manager *m, Instance *i, VmmContainer *c, VmmPort *p, struct in_addr target, bool restart) {
        uint16_t busy[16];
        size_t n_busy = 0;
        int r;

        for (;;) {
                r = port_forward_new(m->event, m->export_addr, p->host_port, target, p->container_port, &p->forward);
                if (r != -EADDRINUSE || restart || n_busy == ELEMENTSOF(busy))
                        break;
                log_struct(LOG_WARNING, r, FIELDS(i->log_field),
                           "Instance %s: host port %u for container %s is taken by another program, trying another.",
                           i->id, p->host_port, c->name);
                busy[n_busy++] = p->host_port; /* kept out of the range until we are done */
                r = port_pool_allocate(m->export_pool, &p->host_port);
                if (r < 0) {
                        p->host_port = 0;
                        break;
                }
        }
        for (size_t b = 0; b < n_busy; b++)
                port_pool_release(m->export_pool, busy[b]);
        return r;
}

int vmm_containers_open_ports(Manager *m, Instance *i, bool restart) {
        struct in_addr target;
        int r = 0;

        if (vmm_containers_count_ports(i) == 0)
                return 0;
        if (!i->address || inet_pton(AF_INET, i->address, &target) != 1 || !m->export_pool)
                return -ENETUNREACH;
        for (size_t k = 0; k < i->n_containers; k++) {
                VmmContainer *c = &i->containers[k];
                for (size_t l = 0; l < c->n_ports; l++) {
                        VmmPort *p = &c->ports[l];
                        if (p->forward || p->host_port == 0)
                                continue;
                        if (restart) {
                                int q = port_pool_reserve(m->export_pool, p->host_port);
                                if (q < 0) {
                                        log_struct(LOG_WARNING, q, FIELDS(i->log_field),
                                                   "Instance %s: stored host port %u of container %s is outside "
                                                   "[vmm] export_ports or taken twice: %m, not forwarding it",
                                                   i->id, p->host_port, c->name);
                                        r = r ?: q;
                                        continue;
                                }
                        }
                        int q = open_port(m, i, c, p, target, restart);
                        if (q < 0) {
                                log_struct(LOG_ERR, q, FIELDS(i->log_field),
                                           "Instance %s: cannot listen on %s:%u for container %s port %u: %m", i->id,
                                           m->config.export_address, p->host_port, c->name, p->container_port);
                                r = r ?: q;
                                continue;
                        }
                        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: %s:%u forwards to %s:%u (container %s).",
                                   i->id, m->config.export_address, p->host_port, i->address, p->container_port,
                                   c->name);
                }
        }
        return r;
}

void vmm_containers_close_ports(Manager *m, Instance *i, bool release) {
        for (size_t k = 0; k < i->n_containers; k++)
                for (size_t l = 0; l < i->containers[k].n_ports; l++) {
                        VmmPort *p = &i->containers[k].ports[l];
                        p->forward = port_forward_free(p->forward);
                        if (release && p->host_port != 0) {
                                port_pool_release(m->export_pool, p->host_port);
                                p->host_port = 0;
                        }
                }
}

/* ---- persistence ------------------------------------------------------------ */

char *vmm_containers_to_json(const Instance *i) {
        json_t *a = json_array();
        char *s;

        if (!a)
                return NULL;
        for (size_t k = 0; k < i->n_containers; k++) {
                const VmmContainer *c = &i->containers[k];
                json_t *ports = json_array();
                for (size_t l = 0; ports && l < c->n_ports; l++)
                        json_array_append_new(ports, json_pack("{s:I, s:I, s:I}", "container_port",
                                                               (json_int_t) c->ports[l].container_port, "host_port",
                                                               (json_int_t) c->ports[l].host_port, "proto",
                                                               (json_int_t) c->ports[l].proto));
                json_array_append_new(
                        a, json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:I, s:I, s:s?, s:b, s:I, s:s?, s:s?, s:o*}",
                                     "id", c->id, "name", c->name, "image_ref", c->image_ref, "image", c->image,
                                     "disk_id", c->disk_id, "disk_path", c->disk_path, "disk_format", c->disk_format,
                                     "serial", c->serial, "network", (json_int_t) c->network, "exec_id",
                                     (json_int_t) c->exec_id, "status", c->status, "exited", c->exited, "exit_code",
                                     (json_int_t) c->exit_code, "docker_sock_path", c->docker_sock_path,
                                     "image_path", c->image_path, "ports", ports));
        }
        s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        return s;
}

static int dup_field(json_t *o, const char *key, char **ret) {
        json_t *v = json_object_get(o, key);

        *ret = NULL;
        if (!json_is_string(v))
                return 0;
        *ret = strdup(json_string_value(v));
        return *ret ? 0 : -ENOMEM;
}

int vmm_containers_from_json(Instance *i, const char *text) {
        json_t *a = text ? json_loads(text, 0, NULL) : NULL, *o;
        size_t k, n;
        int r = 0;

        if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > CONTAINERS_PER_INSTANCE_MAX) {
                json_decref(a);
                return 0;
        }
        n = json_array_size(a);
        i->containers = calloc(n, sizeof(VmmContainer));
        if (!i->containers) {
                json_decref(a);
                return -ENOMEM;
        }
        json_array_foreach(a, k, o) {
                VmmContainer *c = &i->containers[i->n_containers];
                const char *serial = json_string_value(json_object_get(o, "serial"));

                i->n_containers++;
                r = r ?: dup_field(o, "id", &c->id);
                r = r ?: dup_field(o, "name", &c->name);
                r = r ?: dup_field(o, "image_ref", &c->image_ref);
                r = r ?: dup_field(o, "image", &c->image);
                r = r ?: dup_field(o, "disk_id", &c->disk_id);
                r = r ?: dup_field(o, "disk_path", &c->disk_path);
                r = r ?: dup_field(o, "disk_format", &c->disk_format);
                r = r ?: dup_field(o, "status", &c->status);
                r = r ?: dup_field(o, "docker_sock_path", &c->docker_sock_path);
                r = r ?: dup_field(o, "image_path", &c->image_path);
                if (r < 0)
                        break;
                if (!c->id || !c->name || !c->image_ref) {
                        r = -EBADMSG;
                        break;
                }
                snprintf(c->serial, sizeof(c->serial), "%s", serial ?: "");
                c->network = (uint32_t) json_integer_value(json_object_get(o, "network"));
                c->exec_id = (uint32_t) json_integer_value(json_object_get(o, "exec_id"));
                /* Commands after a restart must not take a main task's id. */
                if (c->exec_id >= i->next_exec_id)
                        i->next_exec_id = c->exec_id + 1;
                c->exited = json_is_true(json_object_get(o, "exited"));
                c->exit_code = (int32_t) json_integer_value(json_object_get(o, "exit_code"));
                json_t *ports = json_object_get(o, "ports"), *po;
                size_t l;
                json_array_foreach(ports, l, po) {
                        json_int_t cp = json_integer_value(json_object_get(po, "container_port")),
                                   hp = json_integer_value(json_object_get(po, "host_port")),
                                   proto = json_integer_value(json_object_get(po, "proto"));
                        /* What is stored is checked like a request. */
                        if (c->n_ports >= CONTAINER_PORTS_MAX || cp < 1 || cp > 65535 || hp < 0 || hp > 65535 ||
                            proto < 0 || proto > 2)
                                continue;
                        c->ports[c->n_ports++] = (VmmPort){ .container_port = (uint16_t) cp,
                                                            .host_port = (uint16_t) hp, .proto = (uint32_t) proto };
                }
                c->argv = calloc(1, sizeof(char *));
                c->env = calloc(1, sizeof(char *));
                if (!c->argv || !c->env) {
                        r = -ENOMEM;
                        break;
                }
        }
        json_decref(a);
        return r;
}
