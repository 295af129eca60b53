/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "parse-util.h"
#include "fs-util.h"
#include "log.h"
#include "metrics.h"
#include "paths.h"
#include "vmm-accel.h"
#include "vmm-agent.h"
#include "vmm-cgroup.h"
#include "vmm-compose.h"
#include "vmm-grpc.h"
#include "vmm-log.h"
#include "vmm-manager.h"
#include "vmm-net.h"
#include "vmm-ports.h"
#include "vmm-pull.h"
#include "vmm-qemu.h"
#include "vmm-qmp.h"
#include "vmm-store.h"

#ifndef HOSTMESH_GUEST_DIR
#define HOSTMESH_GUEST_DIR "/usr/lib/hostmesh/guest"
#endif

#define CONSOLE_TAIL_LINES 15

static const ConfigItem config_table[] = {
        DAEMON_RPC_CONFIG_ITEMS(VmmConfig, rpc),
        CONFIG_ITEM("vmm", "qemu", config_type_string, VmmConfig, qemu, "QEMU binary (name in PATH or a path)"),
        CONFIG_ITEM("vmm", "kernel", config_type_string, VmmConfig, kernel, "Guest kernel (uncompressed vmlinux)"),
        CONFIG_ITEM("vmm", "initrd", config_type_string, VmmConfig, initrd, "Guest initramfs with hostmesh-init"),
        CONFIG_ITEM("vmm", "machine", config_type_string, VmmConfig, machine, "QEMU machine: microvm or pc"),
        CONFIG_ITEM("vmm", "accel", config_type_string, VmmConfig, accel,
                    "Accelerator: auto (KVM when a probe guest proves it works, TCG otherwise), kvm or tcg"),
        CONFIG_ITEM("vmm", "vcpus", config_type_uint32, VmmConfig, vcpus,
                    "vCPUs all instances may use together (0 = 4 x host CPUs)"),
        CONFIG_ITEM("vmm", "memory", config_type_size, VmmConfig, memory,
                    "Guest memory all instances may use together (0 = host RAM)"),
        CONFIG_ITEM("vmm", "default_duration", config_type_usec, VmmConfig, default_duration_usec,
                    "Deadline of an instance created without one"),
        CONFIG_ITEM("vmm", "max_duration", config_type_usec, VmmConfig, max_duration_usec,
                    "Latest deadline an instance may have, from now"),
        CONFIG_ITEM("vmm", "boot_timeout", config_type_usec, VmmConfig, boot_timeout_usec,
                    "Time for the guest to report READY before the instance is put in ERROR"),
        CONFIG_ITEM("vmm", "shutdown_timeout", config_type_usec, VmmConfig, shutdown_timeout_usec,
                    "Time for a graceful power-off before QEMU is killed"),
        CONFIG_ITEM("vmm", "system_disk", config_type_string, VmmConfig, system_disk,
                    "Guest system disk (containerd, runc; read-only ext4) attached to instances with containers"),
        CONFIG_ITEM("vmm", "disk", config_type_string, VmmConfig, disk,
                    "Disk from diskd: required, optional (run from the initramfs without diskd) or off"),
        CONFIG_ITEM("vmm", "token", config_type_string, VmmConfig, token,
                    "Instance token from identityd: required, optional or off"),
        CONFIG_ITEM("vmm", "token_audience", config_type_string, VmmConfig, token_audience,
                    "Audience of instance tokens"),
        CONFIG_ITEM("vmm", "tenant", config_type_string, VmmConfig, tenant, "Tenant id put in instance tokens"),
        CONFIG_ITEM("vmm", "log_max", config_type_size, VmmConfig, log_max,
                    "Console and workload output kept per instance"),
        CONFIG_ITEM("vmm", "memory_overhead", config_type_size, VmmConfig, memory_overhead,
                    "QEMU's own memory allowed above the guest's in the VM's cgroup"),
        CONFIG_ITEM("vmm", "allow_large_shapes", config_type_bool, VmmConfig, allow_large_shapes,
                    "Allow shapes above 64 GB"),
        CONFIG_ITEM("vmm", "max_instances", config_type_uint32, VmmConfig, max_instances,
                    "Instances kept (live and finished); the oldest finished ones are forgotten"),
        CONFIG_ITEM("vmm", "network", config_type_bool, VmmConfig, network,
                    "Instance networking: a tap on a bridge, an address from the pool, nftables rules"),
        CONFIG_ITEM("vmm", "network_bridge", config_type_string, VmmConfig, network_bridge,
                    "Bridge the instances' taps are on"),
        CONFIG_ITEM("vmm", "network_pool", config_type_string, VmmConfig, network_pool,
                    "Instance addresses (IPv4 network); the first address is the bridge's"),
        CONFIG_ITEM("vmm", "network_dns_port", config_type_uint32, VmmConfig, network_dns_port,
                    "Port dnsd listens on at the bridge address; instances' DNS (port 53) is sent there"),
        CONFIG_ITEM("vmm", "network_same_tenant", config_type_bool, VmmConfig, network_same_tenant,
                    "Let instances of the same tenant talk to each other (otherwise instances are isolated)"),
        CONFIG_ITEM("vmm", "network_helper", config_type_string, VmmConfig, network_helper,
                    "Privileged network helper (empty: hostmesh-vmm-nethelper next to vmmd)"),
        CONFIG_ITEM("vmm", "dns", config_type_string, VmmConfig, dns,
                    "Instance names <id>.<dns_zone> in dnsd: required, optional or off"),
        CONFIG_ITEM("vmm", "dns_zone", config_type_string, VmmConfig, dns_zone,
                    "Zone of instance names (one of dnsd's local_zones)"),
        CONFIG_ITEM("vmm", "export_address", config_type_string, VmmConfig, export_address,
                    "IPv4 address exported container ports listen on"),
        CONFIG_ITEM("vmm", "export_ports", config_type_string, VmmConfig, export_ports,
                    "Host ports for exported container ports: FIRST-LAST"),
};

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* [vmm] export_address and export_ports ("FIRST-LAST"). */
static int parse_export_config(Manager *m) {
        const char *ports = m->config.export_ports, *dash = strchr(ports, '-');
        _cleanup_free_ char *first = NULL;
        uint64_t a, b;
        int r;

        if (inet_pton(AF_INET, m->config.export_address, &m->export_addr) != 1)
                return log_error_errno(-EINVAL, "[vmm] export_address = %s: expected an IPv4 address.",
                                       m->config.export_address);
        if (!dash || !(first = strndup(ports, (size_t) (dash - ports))) ||
            parse_range_u64(first, 1, 65535, &a) < 0 || parse_range_u64(dash + 1, 1, 65535, &b) < 0 || a > b)
                return log_error_errno(-EINVAL, "[vmm] export_ports = %s: expected FIRST-LAST, 1 <= FIRST <= LAST "
                                       "<= 65535.", ports);
        r = port_pool_new((uint16_t) a, (uint16_t) b, &m->export_pool);
        if (r < 0)
                return log_error_errno(r, "[vmm] export_ports: %m");
        return 0;
}

static int parse_backend_mode(const char *key, const char *s, BackendMode *ret) {
        if (streq(s, "off"))
                *ret = BACKEND_OFF;
        else if (streq(s, "optional"))
                *ret = BACKEND_OPTIONAL;
        else if (streq(s, "required"))
                *ret = BACKEND_REQUIRED;
        else
                return log_error_errno(-EINVAL, "[vmm] %s = %s: expected required, optional or off.", key, s);
        return 0;
}

/* Instance names are "<id>.<zone>": the zone is checked here, the id is
 * ours (lower-case letters and digits). */
static bool dns_zone_is_valid(const char *zone) {
        size_t label = 0, n = strlen(zone);

        if (n == 0 || n > 200 || zone[0] == '.' || zone[n - 1] == '.')
                return false;
        for (const char *c = zone; *c; c++) {
                if (*c == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        continue;
                }
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-') ||
                    ++label > 63)
                        return false;
        }
        return true;
}

static int set_default_string(char **field, const char *value) {
        if (*field)
                return 0;
        *field = strdup(value);
        return *field ? 0 : -ENOMEM;
}

int manager_new(const DaemonArgs *args, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->config = (VmmConfig){
                /* Fields of the public API that hostmesh lacks are refused by
                 * number rather than dropped. */
                .rpc = { .name = "vmm", .refuse_unknown_fields = true },
                .default_duration_usec = 10 * 60 * USEC_PER_SEC,
                .max_duration_usec = 24 * 3600 * USEC_PER_SEC,
                .boot_timeout_usec = 60 * USEC_PER_SEC,
                .shutdown_timeout_usec = 5 * USEC_PER_SEC,
                .log_max = 1024 * 1024,
                .memory_overhead = 256 * 1024 * 1024,
                .max_instances = 1000,
                .network_dns_port = 53,
        };

        r = daemon_load_config(args, config_table, ELEMENTSOF(config_table), &m->config);
        if (r < 0)
                return r;
        /* HOSTMESH_GUEST_DIR in the environment points a build tree's vmmd
         * (the dev launcher) at that tree's guest image. */
        const char *guest_dir = getenv("HOSTMESH_GUEST_DIR");
        _cleanup_free_ char *kernel = NULL, *initrd = NULL, *system_disk = NULL;
        if (isempty(guest_dir))
                guest_dir = HOSTMESH_GUEST_DIR;
        if (asprintf(&kernel, "%s/vmlinux", guest_dir) < 0 || asprintf(&initrd, "%s/initramfs.cpio", guest_dir) < 0 ||
            asprintf(&system_disk, "%s/system.img", guest_dir) < 0)
                return log_error_errno(-ENOMEM, "Out of memory.");
        if (set_default_string(&m->config.qemu, "qemu-system-x86_64") < 0 ||
            set_default_string(&m->config.kernel, kernel) < 0 ||
            set_default_string(&m->config.initrd, initrd) < 0 ||
            set_default_string(&m->config.system_disk, system_disk) < 0 ||
            set_default_string(&m->config.machine, "microvm") < 0 ||
            set_default_string(&m->config.accel, "auto") < 0 ||
            set_default_string(&m->config.disk, "optional") < 0 ||
            set_default_string(&m->config.token, "optional") < 0 ||
            set_default_string(&m->config.token_audience, "hostmesh") < 0 ||
            set_default_string(&m->config.tenant, "local") < 0 ||
            set_default_string(&m->config.network_bridge, "hm0") < 0 ||
            set_default_string(&m->config.network_pool, "10.88.0.0/16") < 0 ||
            set_default_string(&m->config.network_helper, "") < 0 ||
            set_default_string(&m->config.dns, "optional") < 0 ||
            set_default_string(&m->config.dns_zone, "hostmesh.internal") < 0 ||
            set_default_string(&m->config.export_address, "127.0.0.1") < 0 ||
            set_default_string(&m->config.export_ports, "20000-20999") < 0)
                return log_error_errno(-ENOMEM, "Out of memory.");
        if (!streq(m->config.machine, "microvm") && !streq(m->config.machine, "pc"))
                return log_error_errno(-EINVAL, "[vmm] machine = %s: expected microvm or pc.", m->config.machine);
        AccelMode accel_mode;
        r = accel_mode_from_string(m->config.accel, &accel_mode);
        m->accel_mode = accel_mode;
        if (r < 0)
                return log_error_errno(r, "[vmm] accel = %s: expected auto, kvm or tcg.", m->config.accel);
        r = parse_backend_mode("disk", m->config.disk, &m->disk_mode);
        if (r < 0)
                return r;
        r = parse_backend_mode("token", m->config.token, &m->token_mode);
        if (r < 0)
                return r;
        r = parse_backend_mode("dns", m->config.dns, &m->dns_mode);
        if (r < 0)
                return r;
        if (!dns_zone_is_valid(m->config.dns_zone))
                return log_error_errno(-EINVAL, "[vmm] dns_zone = %s: expected a DNS name (letters, digits, '-', '.').",
                                       m->config.dns_zone);
        r = vmm_net_configure(m);
        if (r < 0)
                return r;
        r = parse_export_config(m);
        if (r < 0)
                return r;
        if (m->config.boot_timeout_usec == 0 || m->config.default_duration_usec == 0)
                return log_error_errno(-EINVAL, "[vmm] boot_timeout and default_duration must not be 0.");
        /* StreamInstanceLogs queues the whole stored log (up to log_max) at
         * once; with less room than that every replay would be cut. */
        if ((m->config.rpc.max_send_queue ?: RPC_SEND_QUEUE_DEFAULT) < 2 * m->config.log_max)
                return log_error_errno(-EINVAL, "[rpc] max_send_queue = %zu must be at least twice [vmm] log_max = %" PRIu64
                                       ": a log replay is queued at once.",
                                       m->config.rpc.max_send_queue ?: RPC_SEND_QUEUE_DEFAULT, m->config.log_max);

        m->capacity_vcpus = m->config.vcpus;
        if (m->capacity_vcpus == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                m->capacity_vcpus = 4 * (uint32_t) (n > 0 ? n : 1);
        }
        m->capacity_memory = m->config.memory;
        if (m->capacity_memory == 0)
                m->capacity_memory = (uint64_t) sysconf(_SC_PHYS_PAGES) * (uint64_t) sysconf(_SC_PAGESIZE);

        *ret = TAKE_PTR(m);
        return 0;
}

static void instance_release_vm(Instance *i);

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* VMs keep running: only vmmd's ends of their connections close. */
        for (size_t k = 0; k < m->n_instances; k++) {
                instance_release_vm(m->instances[k]);
                instance_free(m->instances[k]);
        }
        free(m->instances);
        accel_free(m->accel);
        accel_qemu_probe_free(m->accel_probe);
        vmm_net_stop(m);
        m->export_pool = port_pool_free(m->export_pool);
        store_free(m->store);
        rpc_client_free(m->disk_client);
        rpc_client_free(m->identity_client);
        rpc_client_free(m->dns_client);
        rpc_server_free(m->server);
        rpc_loop_free(m->rpc_loop);
        sd_event_unref(m->event);
        free(m->state_dir);
        free(m->run_dir);
        free(m->machine);
        free(m->disk_socket);
        free(m->identity_socket);
        free(m->dns_socket);
        config_done(config_table, ELEMENTSOF(config_table), &m->config);
        free(m);
        return NULL;
}

void manager_print_config(Manager *m, FILE *f) {
        config_print(config_table, ELEMENTSOF(config_table), &m->config, f);
}

Instance *manager_find(Manager *m, const char *id) {
        for (size_t k = 0; k < m->n_instances; k++)
                if (streq(m->instances[k]->id, id))
                        return m->instances[k];
        return NULL;
}

static int manager_add_instance(Manager *m, Instance *i) {
        Instance **a = realloc(m->instances, (m->n_instances + 1) * sizeof(Instance *));

        if (!a)
                return -ENOMEM;
        m->instances = a;
        m->instances[m->n_instances++] = i;
        return 0;
}

static void instance_save(Instance *i) {
        int r = store_save(i->manager->store, i);
        if (r < 0)
                log_struct(LOG_WARNING, r, FIELDS(i->log_field), "Failed to persist instance %s: %m, ignoring",
                           i->id);
}

/* ---- state changes -------------------------------------------------------- */

/* Tells waiters about the instance's current state; `only` limits it to
 * one new waiter (the others heard about this state already). */
static void instance_notify_waiters_only(Instance *i, Waiter *only) {
        for (Waiter **w = &i->waiters; *w;) {
                Waiter *x = *w;

                if (only && x != only) {
                        w = &x->next;
                        continue;
                }
                /* Waiting ends at RUNNING or a final state; a waiter that
                 * accepts destruction also waits through DESTROYING. */
                bool done = i->state == INSTANCE_RUNNING || instance_state_is_final(i->state) ||
                            (i->state == INSTANCE_DESTROYING && !x->destroyed_ok);

                if (x->stream)
                        (void) vmm_grpc_send_wait(x->call, i, true, x->container);
                if (!done) {
                        w = &x->next;
                        continue;
                }
                if (i->state == INSTANCE_RUNNING || (i->state == INSTANCE_DESTROYED && x->destroyed_ok)) {
                        if (x->stream)
                                rpc_call_finish(x->call, RPC_OK, NULL);
                        else
                                (void) vmm_grpc_send_wait(x->call, i, false, x->container);
                } else if (i->state == INSTANCE_ERROR)
                        /* A container's image that is not there (or a registry
                         * that is down) keeps its own code. */
                        rpc_call_fail(x->call, i->containers_error ? (RpcCode) i->containers_error : RPC_INTERNAL,
                                      "Instance %s failed: %s", i->id, i->reason ?: "unknown reason");
                else
                        rpc_call_fail(x->call, RPC_FAILED_PRECONDITION,
                                      "Instance %s is %s and will not become RUNNING; create a new one.", i->id,
                                      instance_state_to_string(i->state));
                *w = x->next;
                rpc_call_on_cancel(x->call, NULL, NULL);
                rpc_call_unref(x->call);
                free(x);
        }
}

static void instance_notify_waiters(Instance *i) {
        instance_notify_waiters_only(i, NULL);
}

/* Served with the rpc runtime's metrics (hostmesh.common.v1 GetMetrics). */
static void manager_update_metrics(Manager *m, Instance *changed) {
        Metrics *metrics = m->server ? rpc_server_metrics(m->server) : NULL;
        size_t count[_INSTANCE_STATE_MAX] = {};
        char labels[64];

        if (!metrics)
                return;
        for (size_t k = 0; k < m->n_instances; k++)
                count[m->instances[k]->state]++;
        for (int s = 0; s < _INSTANCE_STATE_MAX; s++) {
                snprintf(labels, sizeof(labels), "state=\"%s\"", instance_state_to_string(s));
                Metric *g = metrics_gauge(metrics, "hostmesh_vmm_instances", "Instances known to vmmd by state", labels);
                if (g)
                        metric_set(g, (int64_t) count[s]);
        }
        snprintf(labels, sizeof(labels), "state=\"%s\"", instance_state_to_string(changed->state));
        Metric *c = metrics_counter(metrics, "hostmesh_vmm_transitions_total", "Instance state changes by new state",
                                    labels);
        if (c)
                metric_add(c, 1);
        if (changed->state == INSTANCE_RUNNING && changed->ready_usec > 0) {
                Metric *h = metrics_histogram(metrics, "hostmesh_vmm_create_to_running_seconds",
                                              "CreateInstance to RUNNING (guest READY and token written)", NULL);
                if (h)
                        metric_observe(h, (double) changed->ready_usec / USEC_PER_SEC);
        }
}

/* One sample of a boot phase: "qemu", "kernel", "init" at READY and
 * "first_command" at the first command. */
static void manager_observe_boot_phase(Manager *m, const char *phase, uint64_t usec) {
        Metrics *metrics = m->server ? rpc_server_metrics(m->server) : NULL;
        char labels[64];
        Metric *h;

        if (!metrics)
                return;
        snprintf(labels, sizeof(labels), "phase=\"%s\"", phase);
        h = metrics_histogram(metrics, "hostmesh_vmm_boot_phase_seconds",
                              "Instance boot by phase: QEMU spawn to guest clock start (qemu), guest kernel to init "
                              "(kernel), init to READY (init), READY to the first command byte (first_command)",
                              labels);
        if (h)
                metric_observe(h, (double) usec / USEC_PER_SEC);
}

static void instance_set_state(Instance *i, InstanceState s) {
        if (!instance_state_transition_allowed(i->state, s)) {
                log_struct(LOG_DEBUG, 0, FIELDS(i->log_field), "Instance %s: ignoring %s → %s", i->id,
                           instance_state_to_string(i->state), instance_state_to_string(s));
                return;
        }
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: %s → %s%s%s", i->id,
                   instance_state_to_string(i->state), instance_state_to_string(s),
                   i->reason && (s == INSTANCE_ERROR || s == INSTANCE_DESTROYING) ? ": " : "",
                   i->reason && (s == INSTANCE_ERROR || s == INSTANCE_DESTROYING) ? i->reason : "");
        i->state = s;
        if (instance_state_is_final(s))
                i->destroyed_usec = now_usec(CLOCK_REALTIME);
        instance_save(i);
        manager_update_metrics(i->manager, i);
        instance_notify_waiters(i);
}

static void instance_fail_execs(Instance *i, RpcCode code, const char *message) {
        while (i->execs) {
                Exec *e = i->execs;
                i->execs = e->next;
                rpc_call_on_cancel(e->call, NULL, NULL);
                rpc_call_fail(e->call, code, "%s", message);
                rpc_call_unref(e->call);
                free(e->out);
                free(e->err);
                free(e);
        }
}

static void instance_end_followers(Instance *i) {
        while (i->followers) {
                LogFollower *f = i->followers;
                i->followers = f->next;
                rpc_call_on_cancel(f->call, NULL, NULL);
                rpc_call_finish(f->call, RPC_OK, NULL);
                rpc_call_unref(f->call);
                free(f);
        }
        if (i->log)
                instance_log_set_follower(i->log, NULL, NULL);
}

/* Drops vmmd's side of a VM: connections and watches. The VM itself is
 * not touched (this also runs when vmmd exits). */
static void instance_release_vm(Instance *i) {
        vmm_containers_close_ports(i->manager, i, /* release= */ false);
        i->qmp = qmp_client_free(i->qmp);
        vmm_pull_release_all(i);
        i->agent = agent_conn_free(i->agent);
        i->console_source = sd_event_source_disable_unref(i->console_source);
        i->console_fd = safe_close(i->console_fd);
        i->pid_source = sd_event_source_disable_unref(i->pid_source);
        i->pidfd = safe_close(i->pidfd);
        i->deadline_timer = sd_event_source_disable_unref(i->deadline_timer);
        i->boot_timer = sd_event_source_disable_unref(i->boot_timer);
        i->shutdown_timer = sd_event_source_disable_unref(i->shutdown_timer);
        instance_fail_execs(i, RPC_UNAVAILABLE, "vmmd is shutting down; run the command again.");
        while (i->waiters) {
                Waiter *w = i->waiters;
                i->waiters = w->next;
                rpc_call_on_cancel(w->call, NULL, NULL);
                rpc_call_fail(w->call, RPC_UNAVAILABLE, "vmmd is shutting down; wait again.");
                rpc_call_unref(w->call);
                free(w);
        }
        instance_end_followers(i);
        i->log = instance_log_free(i->log);
}

/* Gives back what other services hold for the instance: its disk and its
 * token. Runs once QEMU is gone. */
static void instance_release_backends(Instance *i) {
        if (i->cgroup) {
                int r = vmm_cgroup_remove(i->cgroup);
                if (r < 0)
                        log_struct(LOG_WARNING, r, FIELDS(i->log_field),
                                   "Failed to remove cgroup %s: %m, ignoring", i->cgroup);
                free(i->cgroup);
                i->cgroup = NULL;
        }
        if (i->disk_id) {
                compose_delete_disk(i->manager, i->id, i->disk_id);
                free(i->disk_id);
                i->disk_id = NULL;
        }
        vmm_containers_release(i->manager, i);
        vmm_containers_close_ports(i->manager, i, /* release= */ true);
        if (i->token_subject) {
                compose_revoke_token(i->manager, i->id, i->token_subject);
                free(i->token_subject);
                i->token_subject = NULL;
        }
        if (i->dns_name) {
                compose_remove_record(i->manager, i->id, i->dns_name);
                free(i->dns_name);
                i->dns_name = NULL;
        }
        i->tap_fd = safe_close(i->tap_fd);
        vmm_net_detach(i->manager, i);
        if (i->run_dir) {
                static const char *const names[] = { "qmp.sock", "agent.sock", "console.sock" };
                for (size_t k = 0; k < ELEMENTSOF(names); k++) {
                        _cleanup_free_ char *p = path_join(i->run_dir, names[k]);
                        if (p)
                                (void) unlink(p);
                }
                (void) rmdir(i->run_dir);
        }
        instance_save(i);
}

static char *instance_console_tail(Instance *i) {
        if (i->log)
                instance_log_flush(i->log);
        return instance_log_tail(i->dir, "console", CONSOLE_TAIL_LINES);
}

static void instance_kill(Instance *i, int sig) {
        if (i->pidfd >= 0)
                (void) syscall(SYS_pidfd_send_signal, i->pidfd, sig, NULL, 0);
}

/* Puts the instance in ERROR: the VM is killed, waiters and commands get
 * the reason, resources are released once QEMU is gone. */
void manager_instance_fail(Instance *i, const char *reason) {
        if (instance_state_is_final(i->state))
                return;
        (void) instance_set_reason(i, reason);
        i->boot_timer = sd_event_source_disable_unref(i->boot_timer);
        i->deadline_timer = sd_event_source_disable_unref(i->deadline_timer);
        i->shutdown_timer = sd_event_source_disable_unref(i->shutdown_timer);
        instance_fail_execs(i, RPC_ABORTED, reason);
        instance_set_state(i, INSTANCE_ERROR);
        if (i->pidfd >= 0)
                instance_kill(i, SIGKILL);
        else {
                instance_end_followers(i);
                instance_release_backends(i);
        }
}

static void instance_finish_destroy(Instance *i) {
        instance_set_state(i, INSTANCE_DESTROYED);
        instance_end_followers(i);
        instance_release_backends(i);
}

static void instance_launch(Instance *i);

static int on_qemu_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Instance *i = userdata;
        siginfo_t si = {};

        (void) s;
        (void) fd;
        (void) revents;
        /* Our own child (not when re-attached after a restart): reap it. */
        if (waitid(P_PIDFD, (id_t) i->pidfd, &si, WEXITED | WNOHANG) < 0)
                si.si_pid = 0;
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: QEMU (pid %d) exited.", i->id, (int) i->pid);
        i->pid_source = sd_event_source_disable_unref(i->pid_source);
        i->pidfd = safe_close(i->pidfd);
        i->pid = 0;
        i->qmp = qmp_client_free(i->qmp);
        vmm_pull_release_all(i);
        i->agent = agent_conn_free(i->agent);
        i->shutdown_timer = sd_event_source_disable_unref(i->shutdown_timer);
        i->boot_timer = sd_event_source_disable_unref(i->boot_timer);
        /* Read what the console still has buffered. */
        if (i->console_fd >= 0) {
                char buf[4096];
                ssize_t n;
                while ((n = read(i->console_fd, buf, sizeof(buf))) > 0)
                        instance_log_append(i->log, "console", buf, (size_t) n);
        }
        i->console_source = sd_event_source_disable_unref(i->console_source);
        i->console_fd = safe_close(i->console_fd);

        if (i->state == INSTANCE_DESTROYING)
                instance_finish_destroy(i);
        else if (instance_state_is_final(i->state)) {
                instance_end_followers(i);
                instance_release_backends(i);
        } else {
                _cleanup_free_ char *tail = instance_console_tail(i), *qlog = NULL, *reason = NULL, *p = NULL;
                bool kvm_words;

                p = path_join(i->dir, "qemu.log");
                if (p)
                        (void) read_full_file(p, &qlog, NULL, 64 * 1024);
                kvm_words = streq_ptr(i->accel, "kvm") && accel_words_name_kvm(qlog);
                if (i->state == INSTANCE_CREATING && kvm_words && !i->tcg_retry &&
                    accel_retry_under_tcg(i->manager->accel, qlog, now_usec(CLOCK_MONOTONIC) - i->launch_mono_usec)) {
                        /* The probe passed but this QEMU died of KVM at once:
                         * once more under TCG, and TCG from now on. */
                        log_struct(LOG_WARNING, 0, FIELDS(i->log_field),
                                   "Instance %s: QEMU died of a KVM error in its first second, retrying under TCG.",
                                   i->id);
                        (void) instance_add_event(i, "QEMU under KVM exited in its first second (%s); retrying under TCG",
                                                  qlog);
                        free(i->accel_reason);
                        i->accel_reason = strdup(accel_reason(i->manager->accel));
                        i->tcg_retry = true;
                        instance_launch(i);
                        return 0;
                }
                if (asprintf(&reason, "QEMU exited unexpectedly%s%s%s%s%s", !isempty(qlog) ? "; QEMU said: " : "",
                             !isempty(qlog) ? qlog : "", !isempty(tail) ? "; console tail: " : "",
                             !isempty(tail) ? tail : "",
                             kvm_words ? "; KVM does not work here: set [vmm] accel = tcg (or auto) in vmm.conf"
                                       : "") < 0)
                        reason = NULL;
                manager_instance_fail(i, reason ?: "QEMU exited unexpectedly");
        }
        return 0;
}

static int on_console(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Instance *i = userdata;
        char buf[4096];
        ssize_t n;

        (void) revents;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
                return 0;
        }
        instance_log_append(i->log, "console", buf, (size_t) n);
        return 0;
}

/* ---- agent ------------------------------------------------------------ */

static void agent_on_ready(AgentConn *a, const AgentReady *ready, void *userdata) {
        Instance *i = userdata;
        AgentBuffer b = {};
        int r;

        i->guest_kernel_usec = ready->boot_usec;
        i->guest_init_usec = ready->init_usec;
        free(i->guest_kernel);
        i->guest_kernel = strdup(ready->kernel);
        i->guest_phases_known = ready->n_phases >= _AGENT_PHASE_MAX;
        memcpy(i->guest_phase_usec, ready->phase_usec, sizeof(i->guest_phase_usec));
        log_struct(LOG_INFO, 0, FIELDS(i->log_field),
                   "Instance %s: guest READY (kernel %s, boot %" PRIu64 " ms, init %" PRIu64 " us).", i->id,
                   ready->kernel, ready->boot_usec / 1000, ready->init_usec);
        if (!i->guest_phases_known)
                log_struct(LOG_WARNING, 0, FIELDS(i->log_field),
                           "Instance %s: the guest's READY carries no boot phases (an older hostmesh-init?); "
                           "nsc describe shows only its totals.",
                           i->id);
        if (i->state != INSTANCE_CREATING)
                return; /* re-attached to a guest that was running already */
        /* The guest's clock starts with its kernel: what the host waited
         * beyond the guest's own count is QEMU's start and firmware. */
        i->ready_mono_usec = now_usec(CLOCK_MONOTONIC);
        uint64_t host = i->ready_mono_usec - i->launch_mono_usec, guest = ready->boot_usec + ready->init_usec;
        i->boot_qemu_usec = host > guest ? host - guest : 0;
        i->first_command_usec = 0;
        manager_observe_boot_phase(i->manager, "qemu", i->boot_qemu_usec);
        manager_observe_boot_phase(i->manager, "kernel", ready->boot_usec);
        manager_observe_boot_phase(i->manager, "init", ready->init_usec);
        /* The token goes over the channel, never on the command line (which
         * the host's ps would show). An empty token means none. */
        r = agent_string_encode(&b, AGENT_TOKEN, 0, i->token ?: "");
        if (r >= 0)
                r = agent_conn_send(a, &b);
        agent_buffer_done(&b);
        if (r < 0)
                manager_instance_fail(i, "Cannot send the instance token to the guest");
}

static void agent_on_token_ack(AgentConn *a, int32_t result, void *userdata) {
        Instance *i = userdata;

        (void) a;
        if (i->token) {
                explicit_bzero(i->token, strlen(i->token));
                free(i->token);
                i->token = NULL;
        }
        if (result < 0 && i->token_subject) {
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "The guest could not write its token: %s", strerror(-result)) < 0)
                        reason = NULL;
                manager_instance_fail(i, reason ?: "The guest could not write its token");
                return;
        }
        if (i->state != INSTANCE_CREATING)
                return;
        i->boot_timer = sd_event_source_disable_unref(i->boot_timer);
        i->tap_fd = safe_close(i->tap_fd); /* no retry under TCG after READY */
        i->ready_usec = now_usec(CLOCK_MONOTONIC) - i->create_mono_usec;
        /* Before the state change, which saves the instance with the
         * containers' command ids. */
        vmm_containers_start(i);
        instance_set_state(i, INSTANCE_RUNNING);
}

static Exec *exec_find(Instance *i, uint32_t id, Exec ***ret_prev) {
        for (Exec **e = &i->execs; *e; e = &(*e)->next)
                if ((*e)->id == id) {
                        if (ret_prev)
                                *ret_prev = e;
                        return *e;
                }
        return NULL;
}

#define SYNC_OUTPUT_MAX (16 * 1024 * 1024)

static void agent_on_output(AgentConn *a, uint32_t id, AgentFrameType stream, const uint8_t *data, size_t size,
                            void *userdata) {
        Instance *i = userdata;
        Exec *e = exec_find(i, id, NULL);

        (void) a;
        instance_log_append(i->log, stream == AGENT_STDOUT ? "stdout" : "stderr", data, size);
        if (!e) {
                VmmContainer *c = vmm_container_by_exec(i, id);
                if (c)
                        vmm_container_on_output(c, stream, data, size);
                return;
        }
        if (!e->sync) {
                /* A reader too far behind has its stream ended by the rpc
                 * layer, which then cancels the call: exec_cancelled() stops
                 * the command. */
                if (vmm_grpc_send_output(e->call, stream == AGENT_STDOUT ? 1 : 2, data, size) == -ENOBUFS)
                        log_struct(LOG_WARNING, 0, FIELDS(i->log_field),
                                   "Instance %s: the reader of command %" PRIu32 " fell behind by more than "
                                   "[rpc] max_send_queue; its stream was ended and the command is stopped.", i->id, id);
                return;
        }
        char **buf = stream == AGENT_STDOUT ? &e->out : &e->err;
        size_t *len = stream == AGENT_STDOUT ? &e->out_size : &e->err_size;
        if (*len + size > SYNC_OUTPUT_MAX)
                return; /* RunCommandSync keeps the first 16 MiB; RunCommand streams everything. */
        char *n = realloc(*buf, *len + size);
        if (!n)
                return;
        memcpy(n + *len, data, size);
        *buf = n;
        *len += size;
}

static void exec_free(Exec *e) {
        rpc_call_on_cancel(e->call, NULL, NULL);
        rpc_call_unref(e->call);
        free(e->out);
        free(e->err);
        free(e);
}

static void agent_on_exit(AgentConn *a, uint32_t id, int32_t code, void *userdata) {
        Instance *i = userdata;
        Exec **prev = NULL, *e = exec_find(i, id, &prev);
        VmmContainer *c = vmm_container_by_exec(i, id);

        (void) a;
        if (c)
                vmm_container_on_exit(i, c, code);
        if (!e)
                return;
        *prev = e->next;
        if (e->sync)
                (void) vmm_grpc_reply_sync(e->call, e->out, e->out_size, e->err, e->err_size, code);
        else
                (void) vmm_grpc_send_exit(e->call, code);
        exec_free(e);
}

static void agent_on_disconnected(AgentConn *a, int error, void *userdata) {
        Instance *i = userdata;

        (void) a;
        log_struct(LOG_DEBUG, error, FIELDS(i->log_field), "Instance %s: agent channel closed: %m", i->id);
        instance_fail_execs(i, RPC_UNAVAILABLE, "The guest agent channel closed; the instance is going away.");
        vmm_pull_release_all(i);
        /* Freed later, outside of its own callback. */
}

static void agent_on_container_state(AgentConn *a, uint32_t id, const char *state, void *userdata) {
        Instance *i = userdata;
        VmmContainer *c = vmm_container_by_exec(i, id);

        (void) a;
        if (c)
                vmm_container_on_state(i, c, state);
}

static void agent_on_image_pull(AgentConn *a, uint32_t id, const char *ref, void *userdata) {
        (void) a;
        vmm_pull_request(userdata, id, ref);
}

static void agent_on_writable(AgentConn *a, void *userdata) {
        (void) a;
        vmm_pull_on_writable(userdata);
}

static const AgentCallbacks agent_callbacks = {
        .ready = agent_on_ready,
        .token_ack = agent_on_token_ack,
        .output = agent_on_output,
        .exit = agent_on_exit,
        .container_state = agent_on_container_state,
        .image_pull = agent_on_image_pull,
        .writable = agent_on_writable,
        .disconnected = agent_on_disconnected,
};

static void qmp_on_event(QmpClient *q, const char *event, json_t *data, void *userdata) {
        Instance *i = userdata;

        (void) q;
        (void) data;
        log_struct(LOG_DEBUG, 0, FIELDS(i->log_field), "Instance %s: QMP event %s", i->id, event);
}

static int instance_connect(Instance *i) {
        Manager *m = i->manager;
        _cleanup_free_ char *qmp = path_join(i->run_dir, "qmp.sock"), *agent = path_join(i->run_dir, "agent.sock"),
                            *console = path_join(i->run_dir, "console.sock");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r;

        if (!qmp || !agent || !console)
                return -ENOMEM;
        r = sd_event_add_io(m->event, &i->pid_source, i->pidfd, EPOLLIN, on_qemu_exit, i);
        if (r < 0)
                return r;
        r = qmp_client_connect(m->event, qmp, qmp_on_event, NULL, i, &i->qmp);
        if (r < 0)
                return r;
        r = agent_conn_connect(m->event, agent, &agent_callbacks, i, &i->agent);
        if (r < 0)
                return r;
        if (strlen(console) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, console);
        i->console_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (i->console_fd < 0)
                return -errno;
        if (connect(i->console_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        return sd_event_add_io(m->event, &i->console_source, i->console_fd, EPOLLIN, on_console, i);
}

/* ---- timers ----------------------------------------------------------- */

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Instance *i = userdata;

        (void) s;
        (void) usec;
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s reached its deadline, destroying it.", i->id);
        (void) manager_destroy_instance(i->manager, i, "deadline reached");
        return 0;
}

static int instance_arm_deadline(Instance *i) {
        i->deadline_timer = sd_event_source_disable_unref(i->deadline_timer);
        return sd_event_add_time(i->manager->event, &i->deadline_timer, CLOCK_REALTIME, i->deadline_usec,
                                 100 * USEC_PER_MSEC, on_deadline, i);
}

static int on_boot_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Instance *i = userdata;
        _cleanup_free_ char *tail = instance_console_tail(i), *reason = NULL, *d = NULL;

        (void) s;
        (void) usec;
        d = format_usec(i->manager->config.boot_timeout_usec);
        if (asprintf(&reason, "The guest did not report READY within %s; console tail: %s", d ?: "the boot timeout",
                     isempty(tail) ? "(empty)" : tail) < 0)
                reason = NULL;
        manager_instance_fail(i, reason ?: "The guest did not report READY in time");
        return 0;
}

static int on_shutdown_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Instance *i = userdata;

        (void) s;
        (void) usec;
        if (!i->kill_sent) {
                /* The graceful way did not work: ask QEMU to quit, and give
                 * it one more second before SIGKILL. */
                log_struct(LOG_NOTICE, 0, FIELDS(i->log_field),
                           "Instance %s did not power off in time, stopping QEMU.", i->id);
                if (i->qmp)
                        (void) qmp_client_execute(i->qmp, "quit", NULL, NULL);
                i->kill_sent = true;
                i->shutdown_timer = sd_event_source_disable_unref(i->shutdown_timer);
                (void) sd_event_add_time_relative(i->manager->event, &i->shutdown_timer, CLOCK_MONOTONIC,
                                                  USEC_PER_SEC, 0, on_shutdown_timeout, i);
                return 0;
        }
        instance_kill(i, SIGKILL);
        return 0;
}

/* ---- create ----------------------------------------------------------- */

int manager_check_shape(Manager *m, const Shape *s, char **ret_error) {
        uint32_t vcpus = 0;
        uint64_t mem = 0;
        int r;

        r = shape_validate(s, m->config.allow_large_shapes);
        if (r < 0) {
                char buf[16];
                if (asprintf(ret_error, "Machine shape %s is not available%s; valid shapes: %s",
                             shape_to_string(s, buf, sizeof(buf)),
                             r == -EPERM ? " to this tenant (above 64 GB)" : "", shape_valid_help()) < 0)
                        *ret_error = NULL;
                return r == -EPERM ? -EPERM : -EINVAL;
        }
        for (size_t k = 0; k < m->n_instances; k++) {
                Instance *i = m->instances[k];
                if (!instance_state_is_active(i->state) && i->state != INSTANCE_DESTROYING)
                        continue;
                vcpus += i->shape.vcpu;
                mem += (uint64_t) i->shape.memory_gb << 30;
        }
        if (vcpus + s->vcpu > m->capacity_vcpus || mem + ((uint64_t) s->memory_gb << 30) > m->capacity_memory) {
                if (asprintf(ret_error,
                             "Out of capacity: %u vCPUs and %" PRIu64 " GB asked, %u of %u vCPUs and %" PRIu64
                             " of %" PRIu64 " GB in use; destroy instances or retry later",
                             s->vcpu, (uint64_t) s->memory_gb, vcpus, m->capacity_vcpus, mem >> 30,
                             m->capacity_memory >> 30) < 0)
                        *ret_error = NULL;
                return -ENOSPC;
        }
        return 0;
}

/* Starts deciding between KVM and TCG, once per process: the probe runs
 * on the loop while vmmd serves, and instances wait for its answer
 * before their QEMU starts. */
static int manager_start_accel(Manager *m, const char *qemu) {
        int r;

        if (m->accel)
                return 0;
        r = accel_qemu_probe_new(qemu, m->machine, m->run_dir, &m->accel_probe);
        if (r < 0)
                return r;
        r = accel_new(m->event, m->accel_mode, &accel_qemu_probe_ops, m->accel_probe, &m->accel);
        if (r < 0)
                return r;
        return accel_start(m->accel);
}

static int check_prerequisites(Manager *m, char **ret_error) {
        _cleanup_free_ char *qemu = NULL;
        int r;

        r = qemu_find_binary(m->config.qemu, &qemu);
        if (r < 0) {
                if (asprintf(ret_error, "QEMU (%s) is not installed; install the qemu-system-x86 package",
                             m->config.qemu) < 0)
                        *ret_error = NULL;
                return -EBUSY;
        }
        if (!m->machine) {
                /* Once: microvm where this QEMU has it, pc otherwise. */
                r = qemu_has_machine(qemu, m->config.machine);
                if (r == 0 && streq(m->config.machine, "microvm")) {
                        log_warning("%s has no microvm machine type, falling back to pc.", qemu);
                        m->machine = strdup("pc");
                } else
                        m->machine = strdup(m->config.machine);
                if (!m->machine)
                        return -ENOMEM;
        }
        r = manager_start_accel(m, qemu);
        if (r < 0)
                return r;
        if (m->tsc_khz == 0) {
                /* Once, 8 ms: the guest clock is only as right as this. */
                m->tsc_khz = qemu_host_tsc_khz();
                if (m->tsc_khz == 0) {
                        m->tsc_khz = QEMU_TSC_KHZ_DEFAULT;
                        log_warning("Cannot measure the host's TSC rate; guests are told %u kHz.", m->tsc_khz);
                } else
                        log_debug("Host TSC rate: %u kHz.", m->tsc_khz);
        }
        if (access(m->config.kernel, R_OK) < 0 || access(m->config.initrd, R_OK) < 0) {
                if (asprintf(ret_error,
                             "The guest image is missing (%s, %s); build it (target guest-image, with "
                             "-DHOSTMESH_BUILD_GUEST=ON) or set [vmm] kernel= and initrd=",
                             m->config.kernel, m->config.initrd) < 0)
                        *ret_error = NULL;
                return -EBUSY;
        }
        return 0;
}


/* The create pipeline, driven by backend answers: disk → token → QEMU. */
void manager_instance_continue(Instance *i) {
        Manager *m = i->manager;

        if (i->pending_ops > 0)
                return;
        if (i->state == INSTANCE_DESTROYING) {
                instance_finish_destroy(i);
                return;
        }
        if (i->state != INSTANCE_CREATING)
                return;
        if (m->disk_mode != BACKEND_OFF && !i->disk_id && !(i->create_flags & CREATE_DISK_DONE)) {
                i->create_flags |= CREATE_DISK_DONE;
                compose_create_disk(m, i);
                if (i->pending_ops > 0 || i->state != INSTANCE_CREATING)
                        return;
        }
        if (i->n_containers > 0 && !(i->create_flags & CREATE_CONTAINERS_DONE)) {
                i->create_flags |= CREATE_CONTAINERS_DONE;
                vmm_containers_prepare(m, i);
                if (i->pending_ops > 0 || i->state != INSTANCE_CREATING)
                        return;
        }
        if (m->token_mode != BACKEND_OFF && !i->token && !(i->create_flags & CREATE_TOKEN_DONE)) {
                i->create_flags |= CREATE_TOKEN_DONE;
                compose_issue_token(m, i);
                if (i->pending_ops > 0 || i->state != INSTANCE_CREATING)
                        return;
        }
        if (m->nethelper && !(i->create_flags & CREATE_NET_DONE)) {
                _cleanup_free_ char *error = NULL, *reason = NULL;
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);
                int r;

                i->create_flags |= CREATE_NET_DONE;
                r = vmm_net_attach(m, i, &i->tap_fd, &error);
                i->vmmd_cost_usec += now_usec(CLOCK_MONOTONIC) - t0;
                instance_save(i);
                if (r < 0) {
                        if (asprintf(&reason, "Cannot set up the instance's network: %s",
                                     error ?: strerror(-r)) < 0)
                                reason = NULL;
                        return manager_instance_fail(i, reason ?: "Cannot set up the instance's network");
                }
                /* Listening before the guest is up: a connection that comes
                 * too early is closed at once (nothing answers yet). */
                r = vmm_containers_open_ports(m, i, /* restart= */ false);
                if (r < 0) {
                        if (asprintf(&reason, "Cannot listen for the exported ports on %s: %s",
                                     m->config.export_address, strerror(-r)) < 0)
                                reason = NULL;
                        return manager_instance_fail(i, reason ?: "Cannot listen for the exported ports");
                }
                instance_save(i);
        }
        if (m->dns_mode != BACKEND_OFF && i->tap && !(i->create_flags & CREATE_DNS_DONE)) {
                i->create_flags |= CREATE_DNS_DONE;
                compose_add_record(m, i);
                if (i->pending_ops > 0 || i->state != INSTANCE_CREATING)
                        return;
        }
        instance_launch(i);
}

/* The accelerator decision arrived: launch the instances that waited. */
static void manager_on_accel_decided(Accel *a, void *userdata) {
        Manager *m = userdata;

        (void) a;
        m->accel_waiting = false;
        for (size_t k = 0; k < m->n_instances; k++) {
                Instance *i = m->instances[k];
                if (!i->accel_wait)
                        continue;
                i->accel_wait = false;
                if (i->state == INSTANCE_CREATING)
                        instance_launch(i);
        }
}

/* microvm without ACPI when the kernel can do without (see
 * qemu_kernel_takes_mmio_cmdline), read again when the image changes. */
static bool manager_kernel_no_acpi(Manager *m) {
        struct stat st;
        int r;

        if (stat(m->config.kernel, &st) < 0)
                return false;
        if (!m->kernel_probe.known || m->kernel_probe.dev != st.st_dev || m->kernel_probe.ino != st.st_ino ||
            m->kernel_probe.size != st.st_size || m->kernel_probe.mtime.tv_sec != st.st_mtim.tv_sec ||
            m->kernel_probe.mtime.tv_nsec != st.st_mtim.tv_nsec) {
                r = qemu_kernel_takes_mmio_cmdline(m->config.kernel);
                if (r < 0)
                        log_warning_errno(r, "Cannot read %s to see whether it boots without ACPI: %m; "
                                             "keeping ACPI.", m->config.kernel);
                m->kernel_probe.dev = st.st_dev;
                m->kernel_probe.ino = st.st_ino;
                m->kernel_probe.size = st.st_size;
                m->kernel_probe.mtime = st.st_mtim;
                m->kernel_probe.known = r >= 0;
                m->kernel_probe.mmio_cmdline = r > 0;
                log_debug("%s %s virtio-mmio devices from its command line: %s.", m->config.kernel,
                          r > 0 ? "takes" : "does not take", r > 0 ? "microvm without ACPI" : "ACPI kept");
        }
        return m->kernel_probe.mmio_cmdline;
}

static void instance_launch(Instance *i) {
        Manager *m = i->manager;
        _cleanup_close_ int qmp_fd = -EBADF, agent_fd = -EBADF, console_fd = -EBADF;
        _cleanup_free_ char *qmp = NULL, *agent = NULL, *console = NULL, *qemu = NULL, *qlog = NULL,
                            *net_cmdline = NULL;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        uint8_t mac[6];
        bool kvm;
        int r;

        if (!accel_decided(m->accel)) {
                /* The probe is still running (a few ms with a working KVM,
                 * up to its bound with a broken one). */
                i->accel_wait = true;
                if (!m->accel_waiting) {
                        m->accel_waiting = true;
                        if (accel_when_decided(m->accel, manager_on_accel_decided, m) < 0)
                                return manager_instance_fail(i, "Out of memory");
                }
                return;
        }
        kvm = accel_use_kvm(m->accel) && !i->tcg_retry;
        if (kvm && accel_kvm_broken(m->accel))
                return manager_instance_fail(i, accel_kvm_broken(m->accel));

        qmp = path_join(i->run_dir, "qmp.sock");
        agent = path_join(i->run_dir, "agent.sock");
        console = path_join(i->run_dir, "console.sock");
        qlog = path_join(i->dir, "qemu.log");
        if (!qmp || !agent || !console || !qlog)
                return manager_instance_fail(i, "Out of memory");
        r = mkdir_p(i->run_dir, 0750);
        if (r < 0)
                return manager_instance_fail(i, "Cannot create the instance's runtime directory");
        r = qemu_listen_socket(qmp, &qmp_fd);
        if (r >= 0)
                r = qemu_listen_socket(agent, &agent_fd);
        if (r >= 0)
                r = qemu_listen_socket(console, &console_fd);
        if (r < 0)
                return manager_instance_fail(i, "Cannot create the instance's sockets");
        r = qemu_find_binary(m->config.qemu, &qemu);
        if (r < 0)
                return manager_instance_fail(i, "QEMU is not installed; install qemu-system-x86");

        if (i->tap_fd >= 0) {
                net_cmdline = vmm_net_guest_cmdline(m, i);
                if (!net_cmdline)
                        return manager_instance_fail(i, "Out of memory");
                vmm_net_mac(i, mac);
        }
        /* Containers: the system disk (read-only, shared by all instances),
         * one copy-on-write disk per container, and for a container with
         * Docker its image's base disk (read-only: the guest's dockerd
         * imports the image from it). */
        QemuDrive drives[2 * CONTAINERS_PER_INSTANCE_MAX + 1];
        size_t n_drives = 0;
        if (i->n_containers > 0) {
                char *with = NULL;
                if (access(m->config.system_disk, R_OK) < 0)
                        return manager_instance_fail(i, "The guest system disk for containers is missing; build it "
                                                        "(target guest-system-disk) or set [vmm] system_disk=");
                drives[n_drives++] = (QemuDrive){ .path = m->config.system_disk, .format = "raw",
                                                  .serial = "hm-system", .read_only = true };
                for (size_t k = 0; k < i->n_containers; k++)
                        drives[n_drives++] = (QemuDrive){ .path = i->containers[k].disk_path,
                                                          .format = i->containers[k].disk_format,
                                                          .serial = i->containers[k].serial };
                for (size_t k = 0; k < i->n_containers; k++)
                        if (i->containers[k].docker_sock_path && i->containers[k].image_path)
                                drives[n_drives++] = (QemuDrive){ .path = i->containers[k].image_path,
                                                                  .format = "raw",
                                                                  .serial = i->containers[k].image_serial,
                                                                  .read_only = true };
                if (asprintf(&with, "%s%shostmesh.containers=1", net_cmdline ?: "", net_cmdline ? " " : "") < 0)
                        return manager_instance_fail(i, "Out of memory");
                free(net_cmdline);
                net_cmdline = with;
        }
        QemuConfig c = {
                .no_acpi = manager_kernel_no_acpi(m),
                .binary = qemu,
                .kernel = m->config.kernel,
                .initrd = m->config.initrd,
                .machine = m->machine ?: m->config.machine,
                .kvm = kvm,
                .cpu = accel_cpu(m->accel),
                .vcpus = i->shape.vcpu,
                .memory_mb = (uint64_t) i->shape.memory_gb * 1024,
                .hostname = i->id,
                .disk_path = i->disk_path,
                .disk_format = i->disk_format,
                .net_mac = i->tap_fd >= 0 ? mac : NULL,
                .extra_cmdline = net_cmdline,
                .log_path = qlog,
                .drives = drives,
                .n_drives = n_drives,
                .tsc_khz = m->tsc_khz,
        };
        free(i->machine);
        free(i->accel);
        i->machine = strdup(m->machine ?: m->config.machine);
        i->accel = strdup(kvm ? "kvm" : "tcg");
        if (!i->tcg_retry) {
                free(i->accel_reason);
                i->accel_reason = strdup(accel_reason(m->accel));
        }
        i->launch_mono_usec = now_usec(CLOCK_MONOTONIC);
        r = qemu_spawn(&c, qmp_fd, agent_fd, console_fd, i->tap_fd, &i->pid, &i->pidfd);
        /* QEMU has its own copy of the tap; ours stays until the guest is
         * READY, for a retry under TCG should KVM fail at once. */
        if (!kvm)
                i->tap_fd = safe_close(i->tap_fd);
        if (r < 0) {
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "Cannot start QEMU: %s", strerror(-r)) < 0)
                        reason = NULL;
                return manager_instance_fail(i, reason ?: "Cannot start QEMU");
        }
        r = instance_connect(i);
        if (r < 0) {
                log_struct(LOG_ERR, r, FIELDS(i->log_field), "Instance %s: cannot connect to QEMU: %m", i->id);
                return manager_instance_fail(i, "Cannot connect to QEMU's sockets");
        }
        free(i->cgroup);
        i->cgroup = NULL;
        r = vmm_cgroup_create(i->id, i->pid, i->shape.vcpu,
                              ((uint64_t) i->shape.memory_gb << 30) + m->config.memory_overhead, &i->cgroup);
        if (r < 0)
                log_struct(LOG_WARNING, r, FIELDS(i->log_field),
                           "Instance %s runs without CPU and memory limits (cannot create its cgroup: %m).", i->id);
        r = sd_event_add_time_relative(m->event, &i->boot_timer, CLOCK_MONOTONIC, m->config.boot_timeout_usec,
                                       10 * USEC_PER_MSEC, on_boot_timeout, i);
        if (r < 0)
                return manager_instance_fail(i, "Cannot arm the boot timer");
        instance_save(i);
        i->vmmd_cost_usec += now_usec(CLOCK_MONOTONIC) - t0;
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: QEMU started (pid %d, %s, %s).", i->id,
                   (int) i->pid, i->machine, i->accel);
}

static int copy_labels(Instance *i, const CreateParams *p) {
        i->label_names = calloc(p->n_labels + 1, sizeof(char *));
        i->label_values = calloc(p->n_labels + 1, sizeof(char *));
        if (!i->label_names || !i->label_values)
                return -ENOMEM;
        for (size_t k = 0; k < p->n_labels; k++) {
                i->label_names[k] = strdup(p->label_names[k]);
                i->label_values[k] = strdup(p->label_values[k]);
                i->n_labels++;
                if (!i->label_names[k] || !i->label_values[k])
                        return -ENOMEM;
        }
        return 0;
}

static void manager_forget_old(Manager *m) {
        /* Keep memory bounded: forget the oldest finished instances. */
        while (m->n_instances >= m->config.max_instances) {
                size_t k;
                for (k = 0; k < m->n_instances; k++)
                        if (instance_state_is_final(m->instances[k]->state) && m->instances[k]->pidfd < 0)
                                break;
                if (k == m->n_instances)
                        return;
                (void) store_delete(m->store, m->instances[k]->id);
                if (m->instances[k]->dir) {
                        /* Its log files go with it. */
                        _cleanup_free_ char *a = path_join(m->instances[k]->dir, "log"),
                                            *b = path_join(m->instances[k]->dir, "log.1"),
                                            *c = path_join(m->instances[k]->dir, "qemu.log");
                        (void) unlink(a);
                        (void) unlink(b);
                        (void) unlink(c);
                        (void) rmdir(m->instances[k]->dir);
                }
                instance_release_vm(m->instances[k]);
                instance_free(m->instances[k]);
                memmove(m->instances + k, m->instances + k + 1, (m->n_instances - k - 1) * sizeof(Instance *));
                m->n_instances--;
        }
}

/* Frees an instance that never made it into the list, giving its host
 * ports back. */
static void instance_discard(Manager *m, Instance *i) {
        vmm_containers_close_ports(m, i, /* release= */ true);
        instance_free(i);
}

int manager_create_instance(Manager *m, const CreateParams *p, Instance **ret, char **ret_error) {
        uint64_t t0 = now_usec(CLOCK_MONOTONIC), now = now_usec(CLOCK_REALTIME);
        _cleanup_free_ char *id = NULL;
        Instance *i;
        int r;

        r = manager_check_shape(m, &p->shape, ret_error);
        if (r < 0)
                return r;
        r = check_prerequisites(m, ret_error);
        if (r < 0)
                return r;
        if (p->deadline_usec != 0 && p->deadline_usec <= now) {
                *ret_error = strdup("The deadline is in the past; give a later one");
                return -EINVAL;
        }
        if (p->deadline_usec > now + m->config.max_duration_usec) {
                _cleanup_free_ char *d = format_usec(m->config.max_duration_usec);
                if (asprintf(ret_error, "The deadline is too far away; at most %s from now", d ?: "?") < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        manager_forget_old(m);
        if (m->n_instances >= m->config.max_instances) {
                *ret_error = strdup("Too many instances; destroy some first");
                return -ENOSPC;
        }

        r = instance_generate_id(&id);
        if (r < 0)
                return r;
        i = instance_new(m, id);
        if (!i)
                return -ENOMEM;
        i->shape = p->shape;
        i->created_usec = now;
        i->create_mono_usec = t0;
        i->deadline_usec = p->deadline_usec ?: now + m->config.default_duration_usec;
        i->state = INSTANCE_PENDING;
        if (p->containers) {
                i->containers = TAKE_PTR(*p->containers);
                i->n_containers = p->n_containers;
        }
        if (vmm_containers_count_ports(i) > 0) {
                /* Ports reach the guest over instance networking only. */
                if (!m->nethelper) {
                        instance_free(i);
                        *ret_error = strdup("containers[].export_ports need instance networking: set [vmm] network = "
                                            "yes in vmmd's configuration");
                        return -ENOPKG;
                }
                r = vmm_containers_allocate_ports(m, i, ret_error);
                if (r < 0) {
                        instance_free(i);
                        return r;
                }
        }
        if ((p->purpose && !(i->purpose = strdup(p->purpose))) || (p->creator && !(i->creator = strdup(p->creator))) ||
            copy_labels(i, p) < 0 || !(i->tenant = strdup(p->tenant ?: m->config.tenant)) ||
            !(i->dir = path_join(m->state_dir, "instances")) ||
            asprintf(&i->run_dir, "%s/%s", m->run_dir, id) < 0) {
                instance_discard(m, i);
                return -ENOMEM;
        }
        {
                char *d = path_join(i->dir, id);
                free(i->dir);
                i->dir = d;
        }
        if (!i->dir) {
                instance_discard(m, i);
                return -ENOMEM;
        }
        r = mkdir_p(i->dir, 0750);
        if (r >= 0)
                r = instance_log_open(i->dir, m->config.log_max, &i->log);
        if (r >= 0)
                r = manager_add_instance(m, i);
        if (r < 0) {
                instance_discard(m, i);
                return r;
        }
        r = instance_arm_deadline(i);
        if (r < 0)
                log_struct(LOG_WARNING, r, FIELDS(i->log_field), "Instance %s has no deadline timer: %m", i->id);
        instance_save(i);
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s created (%ux%u).", i->id, i->shape.vcpu,
                   i->shape.memory_gb);
        instance_set_state(i, INSTANCE_CREATING);
        i->vmmd_cost_usec += now_usec(CLOCK_MONOTONIC) - t0;
        manager_instance_continue(i);
        *ret = i;
        return 0;
}

/* ---- destroy, extend --------------------------------------------------- */

int manager_destroy_instance(Manager *m, Instance *i, const char *reason) {
        (void) m;
        if (instance_state_is_final(i->state) || i->state == INSTANCE_DESTROYING)
                return 0; /* idempotent */
        if (reason && !i->reason)
                (void) instance_set_reason(i, reason);
        i->boot_timer = sd_event_source_disable_unref(i->boot_timer);
        i->deadline_timer = sd_event_source_disable_unref(i->deadline_timer);
        instance_fail_execs(i, RPC_ABORTED, "The instance is being destroyed.");
        instance_set_state(i, INSTANCE_DESTROYING);
        if (i->pending_ops > 0)
                return 0; /* continue_create finishes it when the backends answer */
        if (i->pidfd < 0) {
                instance_finish_destroy(i);
                return 0;
        }
        /* Graceful: hostmesh-init powers off. The guest does not act on an
         * ACPI power button (no acpid), so system_powerdown would not help. */
        AgentBuffer b = {};
        size_t start = agent_frame_begin(&b, AGENT_POWEROFF, 0);
        if (agent_frame_end(&b, start) < 0 || agent_conn_send(i->agent, &b) < 0)
                i->shutdown_timer = sd_event_source_disable_unref(i->shutdown_timer);
        agent_buffer_done(&b);
        i->kill_sent = false;
        return sd_event_add_time_relative(m->event, &i->shutdown_timer, CLOCK_MONOTONIC,
                                          m->config.shutdown_timeout_usec, 10 * USEC_PER_MSEC, on_shutdown_timeout,
                                          i);
}

int manager_extend_instance(Manager *m, Instance *i, uint64_t new_deadline_usec, char **ret_error) {
        uint64_t now = now_usec(CLOCK_REALTIME);

        if (!instance_state_is_active(i->state)) {
                if (asprintf(ret_error, "Instance %s is %s; only live instances can be extended", i->id,
                             instance_state_to_string(i->state)) < 0)
                        *ret_error = NULL;
                return -EBUSY;
        }
        if (new_deadline_usec <= now) {
                *ret_error = strdup("The new deadline is in the past");
                return -EINVAL;
        }
        if (new_deadline_usec > now + m->config.max_duration_usec) {
                _cleanup_free_ char *d = format_usec(m->config.max_duration_usec);
                if (asprintf(ret_error, "The new deadline is too far away; at most %s from now", d ?: "?") < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        i->deadline_usec = new_deadline_usec;
        instance_save(i);
        return instance_arm_deadline(i);
}

/* ---- waiters, commands, logs ------------------------------------------- */

static void waiter_cancelled(RpcCall *c, void *userdata) {
        Instance *i = userdata;

        for (Waiter **w = &i->waiters; *w; w = &(*w)->next)
                if ((*w)->call == c) {
                        Waiter *x = *w;
                        *w = x->next;
                        rpc_call_unref(x->call);
                        free(x);
                        return;
                }
}

void manager_add_waiter(Manager *m, Instance *i, RpcCall *c, bool stream, bool destroyed_ok,
                        const VmmContainer *container) {
        Waiter *w;

        (void) m;
        w = calloc(1, sizeof(*w));
        if (!w) {
                rpc_call_fail_errno(c, -ENOMEM, "Out of memory");
                return;
        }
        *w = (Waiter){ .call = rpc_call_ref(c), .stream = stream, .destroyed_ok = destroyed_ok, .container = container,
                       .next = i->waiters };
        i->waiters = w;
        rpc_call_on_cancel(c, waiter_cancelled, i);
        instance_notify_waiters_only(i, w);
}

static void exec_cancelled(RpcCall *c, void *userdata) {
        Instance *i = userdata;

        for (Exec **e = &i->execs; *e; e = &(*e)->next)
                if ((*e)->call == c) {
                        Exec *x = *e;
                        AgentBuffer b = {};
                        VmmContainer *ct = vmm_container_by_exec(i, x->id);
                        /* The client went away: stop the command in the guest;
                         * a container's main task outlives its reader. */
                        if (!ct && agent_int_encode(&b, AGENT_SIGNAL, x->id, SIGKILL) >= 0)
                                (void) agent_conn_send(i->agent, &b);
                        agent_buffer_done(&b);
                        *e = x->next;
                        rpc_call_unref(x->call);
                        free(x->out);
                        free(x->err);
                        free(x);
                        return;
                }
}

int manager_exec(Manager *m, Instance *i, RpcCall *c, bool sync, char **argv, char **env, const char *cwd,
                 char **ret_error) {
        AgentBuffer b = {};
        Exec *e;
        int r;

        (void) m;
        if (i->state != INSTANCE_RUNNING || !i->agent) {
                if (asprintf(ret_error, "Instance %s is %s; commands run only on RUNNING instances%s", i->id,
                             instance_state_to_string(i->state),
                             instance_state_is_active(i->state) ? " (wait for it first)" : "") < 0)
                        *ret_error = NULL;
                return -EBUSY;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        *e = (Exec){ .instance = i, .id = i->next_exec_id++, .sync = sync };
        r = agent_exec_encode(&b, e->id, argv, env, cwd);
        if (r == -EMSGSIZE || r == -EINVAL) {
                agent_buffer_done(&b);
                free(e);
                *ret_error = strdup("The command, its environment and directory must fit in 32 KiB with at most "
                                    "1024 arguments and 1024 variables");
                return -EINVAL;
        }
        if (r >= 0)
                r = agent_conn_send(i->agent, &b);
        agent_buffer_done(&b);
        if (r >= 0 && i->first_command_usec == 0 && i->ready_mono_usec > 0) {
                i->first_command_usec = MAX(now_usec(CLOCK_MONOTONIC) - i->ready_mono_usec, (uint64_t) 1);
                manager_observe_boot_phase(i->manager, "first_command", i->first_command_usec);
                instance_save(i);
        }
        if (r < 0) {
                free(e);
                *ret_error = strdup("Cannot send the command to the guest agent");
                return r == -ENOTCONN ? -EBUSY : r;
        }
        e->call = rpc_call_ref(c);
        e->next = i->execs;
        i->execs = e;
        rpc_call_on_cancel(c, exec_cancelled, i);
        return 0;
}

int manager_exec_container(Manager *m, Instance *i, RpcCall *c, bool sync, const char *container, char **argv,
                           char **env, const char *cwd, char **ret_error) {
        VmmContainer *ct = vmm_container_find(i, container);
        AgentBuffer b = {};
        Exec *e;
        int r;

        if (!ct) {
                if (asprintf(ret_error, "Instance %s has no container named %s%s", i->id, container,
                             i->n_containers == 0 ? " (it runs none)" : "") < 0)
                        *ret_error = NULL;
                return -ENOENT;
        }
        if (i->state != INSTANCE_RUNNING || !i->agent) {
                if (asprintf(ret_error, "Instance %s is %s; commands run only on RUNNING instances", i->id,
                             instance_state_to_string(i->state)) < 0)
                        *ret_error = NULL;
                return -EBUSY;
        }
        if (argv && argv[0]) {
                (void) m;
                e = calloc(1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                *e = (Exec){ .instance = i, .id = i->next_exec_id++, .sync = sync };
                r = agent_exec_encode_in(&b, e->id, argv, env, cwd, ct->name);
                if (r >= 0)
                        r = agent_conn_send(i->agent, &b);
                agent_buffer_done(&b);
                if (r < 0) {
                        free(e);
                        *ret_error = strdup(r == -EINVAL || r == -EMSGSIZE
                                                    ? "The command must fit in 32 KiB with at most 1024 arguments"
                                                    : "Cannot send the command to the guest agent");
                        return r == -EMSGSIZE ? -EINVAL : r;
                }
        } else {
                /* Attach to the main task: one reader at a time. */
                if (ct->exec_id != 0 && exec_find(i, ct->exec_id, NULL)) {
                        if (asprintf(ret_error, "Container %s has a reader attached already", ct->name) < 0)
                                *ret_error = NULL;
                        return -EBUSY;
                }
                if (ct->exec_id == 0) {
                        if (asprintf(ret_error, "Container %s has not started", ct->name) < 0)
                                *ret_error = NULL;
                        return -EBUSY;
                }
                e = calloc(1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                *e = (Exec){ .instance = i, .id = ct->exec_id, .sync = sync };
                if (sync) {
                        /* Collect what came so far into the sync buffers. */
                        size_t off = 0;
                        while (off + 5 <= ct->pending_size) {
                                uint32_t len;
                                memcpy(&len, ct->pending + off + 1, 4);
                                char **buf = ct->pending[off] == 1 ? &e->out : &e->err;
                                size_t *bl = ct->pending[off] == 1 ? &e->out_size : &e->err_size;
                                char *nb = realloc(*buf, *bl + len);
                                if (nb) {
                                        memcpy(nb + *bl, ct->pending + off + 5, len);
                                        *buf = nb;
                                        *bl += len;
                                }
                                off += 5 + len;
                        }
                        free(ct->pending);
                        ct->pending = NULL;
                        ct->pending_size = 0;
                } else
                        (void) vmm_container_replay(ct, c);
                if (ct->exited) {
                        if (sync)
                                (void) vmm_grpc_reply_sync(c, e->out, e->out_size, e->err, e->err_size, ct->exit_code);
                        else
                                (void) vmm_grpc_send_exit(c, ct->exit_code);
                        free(e->out);
                        free(e->err);
                        free(e);
                        return 0;
                }
        }
        e->call = rpc_call_ref(c);
        e->next = i->execs;
        i->execs = e;
        rpc_call_on_cancel(c, exec_cancelled, i);
        return 0;
}

static void follower_cancelled(RpcCall *c, void *userdata) {
        Instance *i = userdata;

        for (LogFollower **f = &i->followers; *f; f = &(*f)->next)
                if ((*f)->call == c) {
                        LogFollower *x = *f;
                        *f = x->next;
                        rpc_call_unref(x->call);
                        free(x);
                        return;
                }
}

static void log_to_followers(uint64_t usec, const char *stream, const char *line, void *userdata) {
        Instance *i = userdata;

        for (LogFollower *f = i->followers; f; f = f->next)
                if (vmm_grpc_send_log_line(f->call, usec, stream, line) == -ENOBUFS)
                        log_struct(LOG_WARNING, 0, FIELDS(i->log_field),
                                   "Instance %s: a log follower fell behind by more than [rpc] max_send_queue; its "
                                   "stream was ended.", i->id);
}

void manager_follow_logs(Manager *m, Instance *i, RpcCall *c) {
        LogFollower *f;

        (void) m;
        if (i->log)
                instance_log_flush(i->log);
        (void) vmm_grpc_send_log_replay(c, i->dir);
        if (!i->log || instance_state_is_final(i->state)) {
                rpc_call_finish(c, RPC_OK, NULL);
                return;
        }
        f = calloc(1, sizeof(*f));
        if (!f) {
                rpc_call_finish(c, RPC_OK, NULL);
                return;
        }
        f->call = rpc_call_ref(c);
        f->next = i->followers;
        i->followers = f;
        rpc_call_on_cancel(c, follower_cancelled, i);
        instance_log_set_follower(i->log, log_to_followers, i);
}

/* ---- re-attach after a restart ------------------------------------------ */

/* Whether pid is this instance's QEMU: its command line names the instance
 * (hostmesh.hostname=<id> on the kernel command line), which also guards
 * against a recycled pid. */
static bool pid_is_instance_qemu(pid_t pid, const char *id) {
        _cleanup_free_ char *p = NULL, *cmdline = NULL, *needle = NULL;
        size_t n;

        if (pid <= 0 || asprintf(&p, "/proc/%d/cmdline", (int) pid) < 0 ||
            asprintf(&needle, "hostmesh.hostname=%s", id) < 0)
                return false;
        if (read_full_file(p, &cmdline, &n, 1024 * 1024) < 0)
                return false;
        for (size_t k = 0; k < n; k++)
                if (cmdline[k] == 0)
                        cmdline[k] = ' ';
        return strstr(cmdline, needle) != NULL;
}

static void instance_reattach(Instance *i) {
        Manager *m = i->manager;
        int r;

        if (!i->dir)
                i->dir = path_join(m->state_dir, "instances");
        if (i->dir && !strstr(i->dir, i->id)) {
                char *d = path_join(i->dir, i->id);
                free(i->dir);
                i->dir = d;
        }
        if (!i->run_dir && asprintf(&i->run_dir, "%s/%s", m->run_dir, i->id) < 0)
                i->run_dir = NULL;
        if (!i->dir || !i->run_dir)
                return;
        if (instance_state_is_final(i->state))
                return;
        (void) mkdir_p(i->dir, 0750);
        (void) instance_log_open(i->dir, m->config.log_max, &i->log);
        if (!pid_is_instance_qemu(i->pid, i->id)) {
                _cleanup_free_ char *tail = instance_console_tail(i), *reason = NULL;
                if (i->state == INSTANCE_DESTROYING) {
                        /* It was going away anyway. */
                        i->pid = 0;
                        instance_finish_destroy(i);
                        return;
                }
                if (i->pid <= 0)
                        reason = strdup("vmmd stopped before the instance's VM was started; create it again");
                else if (asprintf(&reason, "QEMU (pid %d) exited while vmmd was not running%s%s", (int) i->pid,
                                  isempty(tail) ? "" : "; console tail: ", tail ?: "") < 0)
                        reason = NULL;
                i->pid = 0;
                manager_instance_fail(i, reason ?: "QEMU exited while vmmd was not running");
                return;
        }
        i->pidfd = (int) syscall(SYS_pidfd_open, i->pid, 0);
        if (i->pidfd < 0) {
                manager_instance_fail(i, "Cannot watch QEMU after a restart");
                return;
        }
        r = instance_connect(i);
        if (r < 0) {
                log_struct(LOG_ERR, r, FIELDS(i->log_field), "Instance %s: cannot re-attach to QEMU: %m", i->id);
                manager_instance_fail(i, "Cannot re-attach to QEMU after a vmmd restart");
                return;
        }
        (void) qmp_client_execute(i->qmp, "query-status", NULL, NULL);
        (void) instance_arm_deadline(i);
        /* The ports told to clients stay the same: listen on them again. */
        if (i->address && i->state != INSTANCE_DESTROYING)
                (void) vmm_containers_open_ports(m, i, /* restart= */ true);
        if (i->state == INSTANCE_CREATING || i->state == INSTANCE_PENDING) {
                /* Booting when vmmd went away: the guest's READY is still to
                 * come (its write blocks until we connect). No token now,
                 * the one issued before is lost with vmmd's memory. */
                i->create_mono_usec = now_usec(CLOCK_MONOTONIC);
                (void) sd_event_add_time_relative(m->event, &i->boot_timer, CLOCK_MONOTONIC,
                                                  m->config.boot_timeout_usec, 10 * USEC_PER_MSEC, on_boot_timeout, i);
        } else if (i->state == INSTANCE_DESTROYING) {
                i->state = INSTANCE_RUNNING; /* let destroy start over */
                (void) manager_destroy_instance(m, i, NULL);
        }
        log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: re-attached to QEMU (pid %d), %s.", i->id,
                   (int) i->pid, instance_state_to_string(i->state));
}

static int load_one(Instance *i, void *userdata) {
        Manager *m = userdata;
        int r = manager_add_instance(m, i);

        if (r < 0) {
                instance_free(i);
                return r;
        }
        return 0;
}

int manager_start(Manager *m) {
        _cleanup_free_ char *db = NULL;
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        m->state_dir = hostmesh_state_dir("vmm");
        if (!m->state_dir || asprintf(&m->run_dir, "%s/vmm", hostmesh_runtime_dir()) < 0)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = mkdir_p(m->state_dir, 0750);
        if (r < 0)
                return log_error_errno(r, "Failed to create state directory %s: %m", m->state_dir);
        r = mkdir_p(m->run_dir, 0750);
        if (r < 0)
                return log_error_errno(r, "Failed to create runtime directory %s: %m", m->run_dir);
        db = path_join(m->state_dir, "instances.db");
        if (!db)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = store_open(db, &m->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open %s: %m", db);
        m->disk_socket = hostmesh_socket_path("disk");
        m->identity_socket = hostmesh_socket_path("identity");
        m->dns_socket = hostmesh_socket_path("dns");
        if (!m->disk_socket || !m->identity_socket || !m->dns_socket)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = rpc_loop_new(m->event, &m->rpc_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to start the rpc loop: %m");
        r = rpc_server_new(m->rpc_loop, &m->config.rpc, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to create the rpc server: %m");

        r = store_load(m->store, m, load_one, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load instances from %s: %m", db);
        r = vmm_net_start(m);
        if (r < 0)
                return r;
        for (size_t k = 0; k < m->n_instances; k++)
                instance_reattach(m->instances[k]);
        r = vmm_net_reconcile(m);
        if (r < 0)
                return r;
        /* dnsd keeps local records in memory: give it the live names again. */
        for (size_t k = 0; k < m->n_instances; k++)
                if (m->instances[k]->dns_name && instance_state_is_active(m->instances[k]->state))
                        compose_refresh_record(m, m->instances[k]);

        r = vmm_grpc_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register methods: %m");
        r = rpc_server_start(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to start serving: %m");
        /* The accelerator probe starts now, so the first instance rarely
         * waits for it; without QEMU or the image it starts with the first
         * create that has them. */
        {
                _cleanup_free_ char *error = NULL;
                (void) check_prerequisites(m, &error);
        }
        log_info("vmmd ready: capacity %u vCPUs, %" PRIu64 " GB; %zu instances known.", m->capacity_vcpus,
                 m->capacity_memory >> 30, m->n_instances);
        return 0;
}

int manager_run(Manager *m) {
        return sd_event_loop(m->event);
}
