/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "dockerproxy-grpc.h"
#include "dockerproxy-manager.h"
#include "fs-util.h"
#include "log.h"
#include "paths.h"

static const ConfigItem config_table[] = {
        DAEMON_RPC_CONFIG_ITEMS(DockerproxyConfig, rpc),
        CONFIG_ITEM("dockerproxy", "upstream", config_type_string, DockerproxyConfig, upstream,
                    "The Docker engine's API socket"),
        CONFIG_ITEM("dockerproxy", "socket_dir", config_type_string, DockerproxyConfig, socket_dir,
                    "Directory of the per-container sockets (default: <runtime dir>/dockerproxy)"),
        CONFIG_ITEM("dockerproxy", "max_connections", config_type_uint32, DockerproxyConfig, max_connections,
                    "Open connections allowed on one container's socket"),
        CONFIG_ITEM("dockerproxy", "engine_timeout", config_type_usec, DockerproxyConfig, engine_timeout_usec,
                    "How long registration waits for the engine"),
        CONFIG_ITEM("dockerproxy", "idle_timeout", config_type_usec, DockerproxyConfig, idle_timeout_usec,
                    "How long a client connection may wait between requests (or finish a request head)"),
};

int manager_new(const DaemonArgs *args, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->config.rpc = (RpcServerOptions){ .name = "dockerproxy" };
        m->config.upstream = strdup("/var/run/docker.sock");
        m->config.max_connections = 256;
        m->config.engine_timeout_usec = 5 * USEC_PER_SEC;
        m->config.idle_timeout_usec = 5 * 60 * USEC_PER_SEC;
        if (!m->config.upstream)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = daemon_load_config(args, config_table, ELEMENTSOF(config_table), &m->config);
        if (r < 0)
                return r;
        if (isempty(m->config.upstream) || m->config.upstream[0] != '/')
                return log_error_errno(-EINVAL, "[dockerproxy] upstream must be an absolute socket path.");
        if (!isempty(m->config.socket_dir) && m->config.socket_dir[0] != '/')
                return log_error_errno(-EINVAL, "[dockerproxy] socket_dir must be an absolute path.");
        if (m->config.max_connections == 0)
                return log_error_errno(-EINVAL, "[dockerproxy] max_connections must be at least 1.");
        if (m->config.idle_timeout_usec < USEC_PER_SEC)
                return log_error_errno(-EINVAL, "[dockerproxy] idle_timeout must be at least 1s.");

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_regs; i++)
                registration_free(m->regs[i]);
        free(m->regs);
        rpc_server_free(m->server);
        rpc_loop_free(m->rpc_loop);
        sd_event_unref(m->event);
        config_done(config_table, ELEMENTSOF(config_table), &m->config);
        free(m->state_dir);
        free(m->state_file);
        free(m->socket_dir);
        free(m);
        return NULL;
}

void manager_print_config(Manager *m, FILE *f) {
        config_print(config_table, ELEMENTSOF(config_table), &m->config, f);
}

Registration *manager_find(Manager *m, const char *id) {
        for (size_t i = 0; i < m->n_regs; i++)
                if (streq(m->regs[i]->id, id))
                        return m->regs[i];
        return NULL;
}

static int manager_save(Manager *m) {
        int r = registry_save(m->state_file, m->regs, m->n_regs);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", m->state_file);
        return 0;
}

static void manager_on_record(void *userdata, const DockerCaller *caller, OwnedKind kind, const char *id, bool add);

static char *fd_store_name(const Registration *reg) {
        char *n;
        return asprintf(&n, "dp-%s", reg->id) < 0 ? NULL : n;
}

/* Listens for a registration: on the socket systemd kept for us in its fd
 * store when there is one (same inode as the one bind-mounted into the
 * container), else on a new one, which then goes into the store. */
static int manager_listen(Manager *m, Registration *reg) {
        ProxyContext ctx = {
                .event = m->event,
                .upstream = m->config.upstream,
                .metrics = m->server ? rpc_server_metrics(m->server) : NULL,
                .max_connections = m->config.max_connections,
                .idle_timeout_usec = m->config.idle_timeout_usec,
                .on_record = manager_on_record,
                .userdata = m,
        };
        _cleanup_free_ char *name = fd_store_name(reg), *state = NULL;
        int fd = -EBADF, r;

        if (!name)
                return -ENOMEM;
        if (m->server) {
                fd = rpc_server_take_fd(m->server, name);
                if (fd < 0)
                        fd = -EBADF;
        }
        r = proxy_new(&ctx, &reg->caller, reg->socket_path, fd, &reg->proxy);
        if (r < 0)
                return r;
        if (fd < 0 && asprintf(&state, "FDSTORE=1\nFDNAME=%s", name) >= 0) {
                int lfd = proxy_listen_fd(reg->proxy);
                /* Without a notify socket (not under systemd) this does nothing. */
                (void) sd_pid_notify_with_fds(0, false, state, &lfd, 1);
        }
        return 0;
}

static void manager_forget_listener(Registration *reg) {
        _cleanup_free_ char *name = fd_store_name(reg), *state = NULL;

        if (name && asprintf(&state, "FDSTOREREMOVE=1\nFDNAME=%s", name) >= 0)
                (void) sd_pid_notify(0, false, state);
        proxy_unlink(reg->proxy);
}

_printf_(2, 3) static void set_error(char **ret_error, const char *fmt, ...) {
        va_list ap;

        if (!ret_error)
                return;
        free(*ret_error);
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
}

/* Asks the engine about a container: its full id and its root on the host
 * (when wanted). */
static int engine_describe(Manager *m, const char *id, char **ret_root, char **ret_full_id, char **ret_error) {
        _cleanup_free_ char *path = NULL, *body = NULL, *info = NULL, *mount_id_path = NULL, *mount_id = NULL;
        json_t *j = NULL, *gd;
        const char *driver, *full_id;
        unsigned status;
        size_t len;
        int r;

        if (asprintf(&path, "/containers/%s/json", id) < 0)
                return -ENOMEM;
        r = proxy_engine_get(m->config.upstream, path, m->config.engine_timeout_usec, &status, &body, &len);
        if (r < 0) {
                set_error(ret_error, "Cannot ask the Docker engine at %s about container %s: %s.", m->config.upstream, id,
                          strerror(-r));
                return r == -ENOENT ? -ECONNREFUSED : r;
        }
        if (status == 404) {
                set_error(ret_error, "The Docker engine knows no container %s.", id);
                return -ENOENT;
        }
        if (status != 200) {
                set_error(ret_error, "The Docker engine answered %u for container %s.", status, id);
                return -EIO;
        }
        r = docker_inspect_id(body, len, ret_full_id);
        if (r < 0 || !ret_root)
                return r;

        j = json_loadb(body, len, 0, NULL);
        gd = json_object_get(j, "GraphDriver");
        driver = json_string_value(json_object_get(gd, "Name"));
        full_id = json_string_value(json_object_get(j, "Id"));
        if (driver && streq(driver, "vfs") && full_id) {
                unsigned st2;
                size_t l2;
                json_t *ji;
                const char *data_root;

                r = proxy_engine_get(m->config.upstream, "/info", m->config.engine_timeout_usec, &st2, &info, &l2);
                ji = r >= 0 && st2 == 200 ? json_loadb(info, l2, 0, NULL) : NULL;
                data_root = json_string_value(json_object_get(ji, "DockerRootDir"));
                if (!data_root) {
                        json_decref(ji);
                        json_decref(j);
                        set_error(ret_error, "The Docker engine did not say where its data root is.");
                        return -EIO;
                }
                /* vfs keeps the container's layer under its mount id, which
                 * the layer store records per container. */
                if (asprintf(&mount_id_path, "%s/image/vfs/layerdb/mounts/%s/mount-id", data_root, full_id) < 0)
                        r = -ENOMEM;
                else if (read_full_file(mount_id_path, &mount_id, &l2, 256) >= 0 && filename_is_valid(mount_id, 128) > 0)
                        r = asprintf(ret_root, "%s/vfs/dir/%s", data_root, mount_id) < 0 ? -ENOMEM : 0;
                else
                        r = asprintf(ret_root, "%s/vfs/dir/%s", data_root, full_id) < 0 ? -ENOMEM : 0;
                json_decref(ji);
        } else {
                const char *merged = json_string_value(json_object_get(json_object_get(gd, "Data"), "MergedDir"));
                if (!merged) {
                        set_error(ret_error, "The engine reports no root directory for container %s (driver %s); pass the root explicitly.",
                                  id, driver ?: "unknown");
                        r = -ENOENT;
                } else
                        r = (*ret_root = strdup(merged)) ? 0 : -ENOMEM;
        }
        json_decref(j);
        return r;
}

/* Registrations whose records hold the container `full_id` (NULL: none). */
static int manager_owners_of(Manager *m, const char *full_id, char ***ret) {
        char **owners = calloc(m->n_regs + 1, sizeof(char *));
        size_t n = 0;

        if (!owners)
                return -ENOMEM;
        for (size_t i = 0; full_id && i < m->n_regs; i++)
                if (owned_set_has(m->regs[i]->owned, OWNED_CONTAINER, full_id) &&
                    !(owners[n++] = strdup(m->regs[i]->id))) {
                        strv_free(owners);
                        return -ENOMEM;
                }
        *ret = owners;
        return 0;
}

/* A request through `caller`'s socket made or removed something: made
 * things belong to the caller and its ancestors (who see their
 * descendants' containers); removed things leave every record. */
static void manager_on_record(void *userdata, const DockerCaller *caller, OwnedKind kind, const char *id, bool add) {
        Manager *m = userdata;
        Registration *reg = manager_find(m, caller->id);
        bool changed = false;
        int r;

        if (!reg)
                return;
        if (!add) {
                for (size_t i = 0; i < m->n_regs; i++)
                        changed = owned_set_remove(m->regs[i]->owned, kind, id) > 0 || changed;
        } else {
                r = owned_set_add(reg->owned, kind, id);
                if (r < 0)
                        log_warning_errno(r, "Cannot record %s %s for container %s, it will not be able to use it: %m",
                                          owned_kind_to_string(kind), id, reg->id);
                changed = r > 0;
                for (char **a = reg->ancestors; a && *a; a++) {
                        Registration *anc = manager_find(m, *a);
                        if (anc && owned_set_add(anc->owned, kind, id) > 0)
                                changed = true;
                }
        }
        if (changed)
                (void) manager_save(m);
}

int manager_register(Manager *m, const char *id, const char *root, const DockerPolicy *policy,
                     Registration **ret, char **ret_error) {
        _cleanup_(registration_freep) Registration *reg = NULL;
        _cleanup_free_ char *engine_root = NULL, *canon = NULL, *sock = NULL, *full_id = NULL;
        char **owners = NULL;
        struct stat st;
        size_t n_caps = 0;
        int r;

        if (!registration_id_is_valid(id)) {
                set_error(ret_error, "container_id must be 1-%u characters of [A-Za-z0-9._-].", REGISTRATION_ID_MAX);
                return -EINVAL;
        }
        if (!manager_find(m, id) && m->n_regs >= REGISTRATIONS_MAX) {
                set_error(ret_error, "Too many registered containers (%u).", REGISTRATIONS_MAX);
                return -ENOSPC;
        }
        if (!isempty(root)) {
                if (root[0] != '/') {
                        set_error(ret_error, "root must be an absolute path.");
                        return -EINVAL;
                }
                /* Ancestors come from the engine when it knows the container;
                 * an explicit root works without it. */
                (void) engine_describe(m, id, NULL, &full_id, NULL);
        } else {
                r = engine_describe(m, id, &engine_root, &full_id, ret_error);
                if (r < 0)
                        return r;
                root = engine_root;
        }
        /* Its ancestors are the registrations that made it, by their records. */
        r = manager_owners_of(m, full_id, &owners);
        if (r < 0)
                return r;

        canon = realpath(root, NULL);
        if (!canon || stat(canon, &st) < 0 || !S_ISDIR(st.st_mode)) {
                strv_free(owners);
                set_error(ret_error, "Root %s is not an existing directory.", root);
                return -ENOTDIR;
        }
        if (asprintf(&sock, "%s/%s.sock", m->socket_dir, id) < 0) {
                strv_free(owners);
                return -ENOMEM;
        }
        r = registration_new(id, canon, sock, &reg);
        if (r >= 0)
                r = registration_set_ancestors(reg, owners);
        strv_free(owners);
        if (r < 0)
                return r;
        {
                /* Keep the registration's own (allocated) list; copied below. */
                char **own_caps = reg->policy.cap_add_allow;
                reg->policy = *policy;
                reg->policy.cap_add_allow = own_caps;
        }
        while (policy->cap_add_allow && policy->cap_add_allow[n_caps])
                n_caps++;
        r = registration_set_cap_allow(reg, policy->cap_add_allow, n_caps);
        if (r < 0) {
                set_error(ret_error, "cap_add_allow entries must be capability names.");
                return r;
        }

        /* Re-registration replaces the old one (and its connections). */
        for (size_t i = 0; i < m->n_regs; i++)
                if (streq(m->regs[i]->id, id)) {
                        manager_forget_listener(m->regs[i]);
                        registration_free(m->regs[i]);
                        m->regs[i] = m->regs[--m->n_regs];
                        break;
                }
        r = manager_listen(m, reg);
        if (r < 0) {
                set_error(ret_error, "Cannot listen on %s: %s.", reg->socket_path, strerror(-r));
                return r;
        }
        {
                Registration **t = realloc(m->regs, (m->n_regs + 1) * sizeof(Registration *));
                if (!t)
                        return -ENOMEM;
                m->regs = t;
        }
        m->regs[m->n_regs++] = reg;
        {
                char field[160];
                snprintf(field, sizeof(field), "DOCKERPROXY_CONTAINER=%s", reg->id);
                log_struct(LOG_INFO, 0, FIELDS(field), "Registered container %s (root %s) on %s.", reg->id, reg->root,
                           reg->socket_path);
        }
        *ret = TAKE_PTR(reg);
        r = manager_save(m);
        return r < 0 ? r : 0;
}

int manager_unregister(Manager *m, const char *id) {
        for (size_t i = 0; i < m->n_regs; i++)
                if (streq(m->regs[i]->id, id)) {
                        manager_forget_listener(m->regs[i]);
                        registration_free(m->regs[i]);
                        m->regs[i] = m->regs[--m->n_regs];
                        log_info("Unregistered container %s.", id);
                        return manager_save(m);
                }
        return -ENOENT;
}

/* The ids of one kind the engine has now (GET `path`, a JSON array of
 * objects with `field`, or {"Volumes": [...]}). */
static int engine_list_ids(Manager *m, const char *path, const char *field, OwnedSet *into, OwnedKind kind) {
        _cleanup_free_ char *body = NULL;
        json_t *j, *a, *e;
        unsigned status;
        size_t len, i;
        int r;

        r = proxy_engine_get(m->config.upstream, path, m->config.engine_timeout_usec, &status, &body, &len);
        if (r < 0)
                return r;
        if (status != 200)
                return -EIO;
        j = json_loadb(body, len, 0, NULL);
        a = json_is_object(j) ? json_object_get(j, "Volumes") : j;
        if (!json_is_array(a)) {
                json_decref(j);
                return -EBADMSG;
        }
        json_array_foreach(a, i, e) {
                r = owned_set_add(into, kind, json_string_value(json_object_get(e, field)));
                if (r == -ENOMEM) {
                        json_decref(j);
                        return r;
                }
        }
        json_decref(j);
        return 0;
}

/* Records of things the engine no longer has (containers run with --rm,
 * removals done past the proxy) would only fill the caps: at start they
 * are dropped. Without an answer from the engine all are kept. Image
 * names are kept: they may come back with a pull. */
static void manager_reconcile_records(Manager *m) {
        static const struct {
                OwnedKind kind;
                const char *path, *field;
        } lists[] = {
                { OWNED_CONTAINER, "/containers/json?all=1", "Id" },
                { OWNED_VOLUME, "/volumes", "Name" },
                { OWNED_NETWORK, "/networks", "Id" },
        };
        size_t dropped = 0;

        if (m->n_regs == 0)
                return;
        for (size_t k = 0; k < ELEMENTSOF(lists); k++) {
                _cleanup_(owned_set_freep) OwnedSet *live = NULL;
                int r = owned_set_new(&live);
                if (r >= 0)
                        r = engine_list_ids(m, lists[k].path, lists[k].field, live, lists[k].kind);
                if (r < 0) {
                        log_warning_errno(r, "Cannot list %s from the engine, keeping their records: %m",
                                          owned_kind_to_string(lists[k].kind));
                        continue;
                }
                for (size_t i = 0; i < m->n_regs; i++) {
                        OwnedSet *o = m->regs[i]->owned;
                        for (size_t n = owned_set_size(o, lists[k].kind); n > 0; n--) {
                                const char *id = owned_set_get(o, lists[k].kind, n - 1);
                                if (!owned_set_has(live, lists[k].kind, id)) {
                                        owned_set_remove(o, lists[k].kind, id);
                                        dropped++;
                                }
                        }
                }
        }
        if (dropped > 0) {
                log_info("Dropped %zu record(s) of things the engine no longer has.", dropped);
                (void) manager_save(m);
        }
}

static int manager_restore(Manager *m) {
        Registration **regs = NULL;
        size_t n = 0;
        int r;

        r = registry_load(m->state_file, m->socket_dir, &regs, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to read registrations from %s: %m", m->state_file);
        m->regs = regs;
        for (size_t i = 0; i < n; i++) {
                r = manager_listen(m, regs[i]);
                if (r < 0)
                        log_warning_errno(r, "Cannot listen on %s for container %s, ignoring: %m", regs[i]->socket_path,
                                          regs[i]->id);
                m->n_regs++;
        }
        if (n > 0)
                log_info("Restored %zu registered container(s).", n);
        manager_reconcile_records(m);
        return 0;
}

int manager_start(Manager *m) {
        int r;

        m->state_dir = hostmesh_state_dir("dockerproxy");
        if (!m->state_dir)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->state_file = path_join(m->state_dir, "registrations.json");
        if (!isempty(m->config.socket_dir))
                m->socket_dir = strdup(m->config.socket_dir);
        else
                m->socket_dir = path_join(hostmesh_runtime_dir(), "dockerproxy");
        if (!m->state_file || !m->socket_dir)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = mkdir_p(m->state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", m->state_dir);
        /* World-searchable: sockets are bind-mounted into containers whose
         * users are not ours. */
        r = mkdir_p(m->socket_dir, 0755);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", m->socket_dir);

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        r = rpc_loop_new(m->event, &m->rpc_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to start the rpc loop: %m");
        r = rpc_server_new(m->rpc_loop, &m->config.rpc, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to create the rpc server: %m");
        r = dockerproxy_grpc_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register methods: %m");
        r = rpc_server_start(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to start serving: %m");
        /* After start: the fd store's sockets come with the listening one. */
        r = manager_restore(m);
        if (r < 0)
                return r;
        return 0;
}

int manager_run(Manager *m) {
        return sd_event_loop(m->event);
}
