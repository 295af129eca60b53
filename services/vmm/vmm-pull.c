/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "hostmesh/disk/v1/disk.pb-c.h"
#include "log.h"
#include "macro.h"
#include "vmm-agent.h"
#include "vmm-compose.h"
#include "vmm-manager.h"
#include "vmm-pull.h"

/* As at create: a pull may fetch and unpack layers for minutes. */
#define PULL_TIMEOUT_USEC (10 * 60 * USEC_PER_SEC)
/* Bytes read from the image per DATA burst. */
#define PULL_READ_BYTES (64 * 1024)
/* diskd's images are at most max_image_bytes of files (16 GiB by default)
 * in an ext4 with its own overhead: a file above this is not one of its. */
#define PULL_FILE_MAX (64ULL << 30)
#define PULL_MESSAGE_MAX 1024

struct VmmPull {
        Instance *instance;
        VmmPull *next;
        uint32_t id;
        char *ref;
        bool asking;       /* diskd's PullImage in flight */
        bool orphaned;     /* the channel went away while asking: drop the answer */
        int fd;            /* the image file while streaming, else -1 */
        uint64_t offset, size, sent;
        char **changes;
        uint64_t start_usec;
};

static VmmPull *pull_free(VmmPull *p) {
        if (!p)
                return NULL;
        free(p->ref);
        safe_close(p->fd);
        strv_free(p->changes);
        free(p);
        return NULL;
}

static void pull_unlink(Instance *i, VmmPull *p) {
        for (VmmPull **q = &i->pulls; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        return;
                }
}

static void send_end(Instance *i, uint32_t id, AgentPullStatus status, const char *message, uint64_t size,
                     char **changes) {
        AgentImageEnd e = { .status = status, .message = (char *) message, .size = size, .changes = changes };
        AgentBuffer b = {};
        int r;

        r = agent_image_end_encode(&b, id, &e);
        if (r == -EMSGSIZE || (r == -EINVAL && status == AGENT_PULL_OK)) {
                /* The config does not fit one frame: say so instead. */
                agent_buffer_done(&b);
                e = (AgentImageEnd){ .status = AGENT_PULL_FAILED,
                                     .message = "the image's config (Entrypoint, Cmd, Env, ...) is too large to pass "
                                                "to the instance" };
                r = agent_image_end_encode(&b, id, &e);
        }
        if (r >= 0)
                r = agent_conn_send(i->agent, &b);
        agent_buffer_done(&b);
        if (r < 0)
                log_struct(LOG_WARNING, r, FIELDS(i->log_field),
                           "Instance %s: cannot answer image pull %" PRIu32 ", ignoring: %m", i->id, id);
}

static void pull_fail(Instance *i, VmmPull *p, AgentPullStatus status, const char *message) {
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: pull of %s from inside failed (%s): %s", i->id,
                   p->ref, agent_pull_status_to_string(status), message);
        send_end(i, p->id, status, message, 0, NULL);
        pull_unlink(i, p);
        pull_free(p);
}

/* Queues the next pieces of every streaming pull until the channel holds
 * VMM_PULL_QUEUE_BYTES; a pull whose data is all out gets its END. Holes
 * of the sparse ext4 file are skipped (the guest's file stays sparse). */
static void pull_pump(Instance *i) {
        static uint8_t buf[PULL_READ_BYTES];

        for (VmmPull *p = i->pulls, *next; p; p = next) {
                next = p->next;
                if (p->fd < 0)
                        continue;
                while (i->agent && agent_conn_queued(i->agent) < VMM_PULL_QUEUE_BYTES) {
                        AgentBuffer b = {};
                        off_t data, hole;
                        ssize_t n;
                        int r;

                        data = p->offset < p->size ? lseek(p->fd, (off_t) p->offset, SEEK_DATA) : -1;
                        if (data < 0 || (uint64_t) data >= p->size) {
                                if (data < 0 && p->offset < p->size && errno != ENXIO) {
                                        log_struct(LOG_ERR, -errno, FIELDS(i->log_field),
                                                   "Instance %s: reading image %s failed: %m", i->id, p->ref);
                                        pull_fail(i, p, AGENT_PULL_FAILED, "the host could not read the image");
                                        break;
                                }
                                log_struct(LOG_INFO, 0, FIELDS(i->log_field),
                                           "Instance %s: image %s pulled from inside: %" PRIu64 " of %" PRIu64
                                           " bytes sent in %" PRIu64 " ms.", i->id, p->ref, p->sent, p->size,
                                           (monotonic_usec() - p->start_usec) / 1000);
                                instance_add_event(i, "image %s pulled from inside (%" PRIu64 " bytes)", p->ref,
                                                   p->sent);
                                send_end(i, p->id, AGENT_PULL_OK, "", p->size, p->changes);
                                pull_unlink(i, p);
                                pull_free(p);
                                break;
                        }
                        hole = lseek(p->fd, data, SEEK_HOLE);
                        if (hole < 0 || hole <= data)
                                hole = (off_t) p->size;
                        n = pread(p->fd, buf, (size_t) MIN((uint64_t) (hole - data), (uint64_t) sizeof(buf)), data);
                        if (n <= 0) {
                                log_struct(LOG_ERR, n < 0 ? -errno : -EIO, FIELDS(i->log_field),
                                           "Instance %s: reading image %s failed: %m", i->id, p->ref);
                                pull_fail(i, p, AGENT_PULL_FAILED, "the host could not read the image");
                                break;
                        }
                        r = agent_image_data_encode(&b, p->id, (uint64_t) data, buf, (size_t) n);
                        if (r >= 0)
                                r = agent_conn_send(i->agent, &b);
                        agent_buffer_done(&b);
                        if (r < 0) {
                                /* The channel is gone or overfull: the guest hears nothing more. */
                                log_struct(LOG_WARNING, r, FIELDS(i->log_field),
                                           "Instance %s: sending image %s to the guest failed: %m", i->id, p->ref);
                                pull_unlink(i, p);
                                pull_free(p);
                                break;
                        }
                        p->offset = (uint64_t) data + (uint64_t) n;
                        p->sent += (uint64_t) n;
                }
        }
}

void vmm_pull_on_writable(Instance *i) {
        pull_pump(i);
}

static AgentPullStatus status_from_rpc(const RpcStatus *status) {
        if (!status)
                return AGENT_PULL_UNAVAILABLE;
        switch (status->code) {
        case RPC_NOT_FOUND:         return AGENT_PULL_NOT_FOUND;
        case RPC_INVALID_ARGUMENT:  return AGENT_PULL_INVALID;
        case RPC_PERMISSION_DENIED: return AGENT_PULL_DENIED;
        case RPC_UNAVAILABLE:
        case RPC_DEADLINE_EXCEEDED: return AGENT_PULL_UNAVAILABLE;
        default:                    return AGENT_PULL_FAILED;
        }
}

static void on_pulled(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        VmmPull *p = userdata;
        Instance *i = p->instance;
        const Hostmesh__Disk__V1__PullImageResponse *resp = (const void *) response;
        _cleanup_free_ char *message = NULL;
        struct stat st;

        i->pending_ops--;
        p->asking = false;
        if (p->orphaned || i->state != INSTANCE_RUNNING || !i->agent) {
                /* An orphan left the list already (vmm_pull_release_all). */
                if (!p->orphaned)
                        pull_unlink(i, p);
                pull_free(p);
                return manager_instance_continue(i);
        }
        if (r < 0) {
                const char *why = status && !isempty(status->message) ? status->message : NULL;
                if (!why && asprintf(&message, "diskd is not reachable (%s)", strerror(-r)) < 0)
                        message = NULL;
                /* diskd's words, bounded: the guest shows them to a person. */
                if (why && asprintf(&message, "%.*s", PULL_MESSAGE_MAX, why) < 0)
                        message = NULL;
                return pull_fail(i, p, status_from_rpc(why ? status : NULL), message ?: "the pull failed");
        }
        /* diskd's answer is checked like any other input: an absolute path
         * to a regular file of sane size, opened without following a link. */
        if (!resp->image || isempty(resp->image->path) || resp->image->path[0] != '/' ||
            strlen(resp->image->path) >= 4096) {
                log_struct(LOG_ERR, 0, FIELDS(i->log_field), "Instance %s: diskd named no image file for %s.", i->id,
                           p->ref);
                return pull_fail(i, p, AGENT_PULL_FAILED, "the host's disk service named no image file");
        }
        r = vmm_pull_config_changes(resp->image->config, &p->changes);
        if (r < 0)
                return pull_fail(i, p, AGENT_PULL_FAILED,
                                 "the image's config has a value that cannot be passed on (a newline in it)");
        p->fd = open(resp->image->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (p->fd < 0 || fstat(p->fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t) st.st_size > PULL_FILE_MAX) {
                log_struct(LOG_ERR, p->fd < 0 ? -errno : 0, FIELDS(i->log_field),
                           "Instance %s: image file %s of %s is not usable: %m", i->id, resp->image->path, p->ref);
                p->fd = safe_close(p->fd);
                return pull_fail(i, p, AGENT_PULL_FAILED, "the host could not open the image");
        }
        p->size = (uint64_t) st.st_size;
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: streaming image %s (%s%s) to the guest.", i->id,
                   p->ref, resp->image->digest ?: "", resp->cached ? ", cached" : "");
        pull_pump(i);
}

static bool instance_has_docker(const Instance *i) {
        for (size_t k = 0; k < i->n_containers; k++)
                if (i->containers[k].docker_sock_path)
                        return true;
        return false;
}

void vmm_pull_request(Instance *i, uint32_t id, const char *ref) {
        Hostmesh__Disk__V1__PullImageRequest req = HOSTMESH__DISK__V1__PULL_IMAGE_REQUEST__INIT;
        Manager *m = i->manager;
        unsigned n = 0;
        VmmPull *p;
        int r;

        if (!ref) {
                send_end(i, id, AGENT_PULL_INVALID, "not a valid image reference", 0, NULL);
                return;
        }
        /* Only a guest that runs Docker for a container has a use for it. */
        if (!instance_has_docker(i) || i->state != INSTANCE_RUNNING) {
                log_struct(LOG_WARNING, 0, FIELDS(i->log_field),
                           "Instance %s: the guest asked for image %s without Docker enabled, refused.", i->id, ref);
                send_end(i, id, AGENT_PULL_DENIED, "pulling images needs a container with Docker enabled", 0, NULL);
                return;
        }
        for (p = i->pulls; p; p = p->next) {
                if (p->id == id && !p->orphaned) {
                        send_end(i, id, AGENT_PULL_BUSY, "a pull with this id is in progress", 0, NULL);
                        return;
                }
                n += !p->orphaned;
        }
        if (n >= AGENT_IMAGE_PULLS_MAX) {
                send_end(i, id, AGENT_PULL_BUSY, "too many pulls in progress in this instance; try again", 0, NULL);
                return;
        }
        p = calloc(1, sizeof(*p));
        if (!p || !(p->ref = strdup(ref))) {
                free(p);
                send_end(i, id, AGENT_PULL_FAILED, "out of memory on the host", 0, NULL);
                return;
        }
        p->instance = i;
        p->id = id;
        p->fd = -EBADF;
        p->start_usec = monotonic_usec();
        req.ref = p->ref;
        r = compose_backend_client(m, m->disk_socket, &m->disk_client);
        if (r >= 0)
                r = rpc_client_call_async(m->disk_client, "/hostmesh.disk.v1.Disk/PullImage", NULL, &req.base,
                                          &hostmesh__disk__v1__pull_image_response__descriptor, PULL_TIMEOUT_USEC,
                                          on_pulled, p);
        if (r < 0) {
                log_struct(LOG_WARNING, r, FIELDS(i->log_field), "Instance %s: cannot ask diskd for %s: %m", i->id, ref);
                send_end(i, id, AGENT_PULL_UNAVAILABLE, "the host's disk service is not reachable", 0, NULL);
                pull_free(p);
                return;
        }
        p->asking = true;
        i->pending_ops++;
        p->next = i->pulls;
        i->pulls = p;
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: the guest pulls image %s.", i->id, ref);
}

void vmm_pull_release_all(Instance *i) {
        VmmPull *p = i->pulls;

        i->pulls = NULL;
        while (p) {
                VmmPull *next = p->next;
                /* The diskd call holds it until its answer, which drops it. */
                if (p->asking) {
                        p->orphaned = true;
                        p->next = NULL;
                } else
                        pull_free(p);
                p = next;
        }
}

/* Dockerfile's ENV value: double quotes, with \, " and $ escaped so that
 * the builder's quote removal and variable expansion give back the value. */
static char *env_instruction(const char *entry) {
        const char *eq = strchr(entry, '=');
        size_t n = strlen(entry);
        char *s, *q;

        if (!eq || eq == entry)
                return NULL;
        s = malloc(4 + n * 2 + 8);
        if (!s)
                return NULL;
        q = s + sprintf(s, "ENV %.*s=\"", (int) (eq - entry), entry);
        for (const char *c = eq + 1; *c; c++) {
                if (*c == '\\' || *c == '"' || *c == '$')
                        *q++ = '\\';
                *q++ = *c;
        }
        *q++ = '"';
        *q = 0;
        return s;
}

static char *exec_form(const char *keyword, char **args, size_t n) {
        json_t *a = json_array();
        char *dump = NULL, *s = NULL;

        for (size_t k = 0; a && k < n; k++)
                if (json_array_append_new(a, json_string(args[k])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        dump = a ? json_dumps(a, JSON_COMPACT) : NULL;
        json_decref(a);
        if (dump && asprintf(&s, "%s %s", keyword, dump) < 0)
                s = NULL;
        free(dump);
        return s;
}

int vmm_pull_config_changes(const Hostmesh__Disk__V1__ImageConfig *config, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t n = 0, max;

        max = 4 + (config ? config->n_env : 0);
        l = calloc(max + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        if (!config) {
                *ret = TAKE_PTR(l);
                return 0;
        }
        /* A newline would end the instruction: refused rather than mangled. */
        for (size_t k = 0; k < config->n_env; k++)
                if (strpbrk(config->env[k], "\n\r"))
                        return -EINVAL;
        for (size_t k = 0; k < config->n_entrypoint; k++)
                if (strpbrk(config->entrypoint[k], "\n\r"))
                        return -EINVAL;
        for (size_t k = 0; k < config->n_cmd; k++)
                if (strpbrk(config->cmd[k], "\n\r"))
                        return -EINVAL;
        if (config->n_entrypoint > 0 && !(l[n++] = exec_form("ENTRYPOINT", config->entrypoint, config->n_entrypoint)))
                return -ENOMEM;
        if (config->n_cmd > 0 && !(l[n++] = exec_form("CMD", config->cmd, config->n_cmd)))
                return -ENOMEM;
        for (size_t k = 0; k < config->n_env; k++)
                if (!(l[n++] = env_instruction(config->env[k])))
                        return strchr(config->env[k], '=') ? -ENOMEM : -EINVAL;
        /* diskd checked both: an absolute path, and a user of
         * [A-Za-z0-9._:-]; nothing the builder would expand or split. */
        if (!isempty(config->working_dir)) {
                if (strpbrk(config->working_dir, "\n\r$\\\"'") || asprintf(&l[n], "WORKDIR %s", config->working_dir) < 0)
                        return l[n] = NULL, -EINVAL;
                n++;
        }
        if (!isempty(config->user)) {
                if (!agent_user_valid(config->user) || asprintf(&l[n], "USER %s", config->user) < 0)
                        return l[n] = NULL, -EINVAL;
                n++;
        }
        *ret = TAKE_PTR(l);
        return 0;
}
