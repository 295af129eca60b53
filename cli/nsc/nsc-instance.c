/* SPDX-License-Identifier: MIT */
/* nsc create/list/describe/destroy/extend/logs/exec/run: instances, through
 * the gateway to vmmd's public compute API (verbs and flags follow
 * Namespace's nsc). */

#include <getopt.h>
#include <inttypes.h>
#include <time.h>

#include "hostmesh/vmm/v1/vmm.pb-c.h"
#include "namespace/cloud/compute/v1beta/compute.pb-c.h"
#include "nsc.h"
#include "parse-util.h"
#include "shape.h"

#define COMPUTE "/namespace.cloud.compute.v1beta.ComputeService/"
#define COMMAND "/namespace.cloud.compute.v1beta.CommandService/"
#define LABELS_MAX 64
#define ENV_MAX 1024
#define PORTS_MAX 16 /* exported ports per container, as vmmd takes them */

typedef Namespace__Cloud__Compute__V1beta__InstanceMetadata InstanceMetadata;

static const char *status_name(int s) {
        static const char *const names[] = { "UNKNOWN",   "PENDING",    "CREATING",  "RUNNING", "DESTROYED",
                                             "DESTROYING", "SUSPENDING", "SUSPENDED", "ERROR" };
        return s >= 0 && (size_t) s < ELEMENTSOF(names) ? names[s] : "UNKNOWN";
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static char *ts_string(const Google__Protobuf__Timestamp *t) {
        return t ? nsc_format_time(t->seconds, t->nanos) : strdup("");
}

static char *machine_type(const InstanceMetadata *md) {
        char *s = NULL;
        if (md->shape && asprintf(&s, "%dx%d", md->shape->virtual_cpu, md->shape->memory_megabytes / 1024) < 0)
                s = NULL;
        return s ?: strdup("?");
}

static json_t *metadata_json(const InstanceMetadata *md) {
        _cleanup_free_ char *created = ts_string(md->created_at), *deadline = ts_string(md->deadline),
                            *mt = machine_type(md);
        json_t *o, *labels = json_object();
        Shape shape = {};

        for (size_t k = 0; k < md->n_labels; k++)
                json_object_set_new(labels, md->labels[k]->name, json_string(md->labels[k]->value));
        o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "instance_id", md->instance_id, "machine_type", mt, "state",
                      status_name(md->status), "created_at", created, "deadline", deadline, "labels", labels);
        if (o && md->shape) {
                shape.vcpu = (unsigned) md->shape->virtual_cpu;
                shape.memory_gb = (unsigned) md->shape->memory_megabytes / 1024;
                json_object_set_new(o, "disk_gb", json_integer((json_int_t) (shape_disk_bytes(&shape) >> 30)));
        }
        if (o && md->destroyed_at) {
                _cleanup_free_ char *d = ts_string(md->destroyed_at);
                json_object_set_new(o, "destroyed_at", json_string(d));
        }
        return o;
}

/* Skips the -o/--output the dispatcher already applied. */
#define OUTPUT_OPTION { "output", required_argument, NULL, 'o' }

/* ---- create / wait ------------------------------------------------------- */

typedef struct WaitState {
        Nsc *n;
        uint64_t start;
        const char *what;
        int status;
        InstanceMetadata *last;  /* owned copy of the fields we print */
        char *id;
} WaitState;

static void progress(Nsc *n, uint64_t start, const char *id, const char *phase) {
        if (!n->tty || n->json)
                return;
        fprintf(stderr, "\r\033[K[%s] %s %.1fs", id, phase, (double) (now_usec() - start) / USEC_PER_SEC);
        fflush(stderr);
}

static void progress_done(Nsc *n) {
        if (n->tty && !n->json) {
                fprintf(stderr, "\r\033[K");
                fflush(stderr);
        }
}

static int on_wait(const ProtobufCMessage *message, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__WaitInstanceResponse *resp = (const void *) message;
        WaitState *w = userdata;

        if (resp->metadata) {
                w->status = resp->metadata->status;
                progress(w->n, w->start, w->id, status_name(w->status));
        }
        return 0;
}

/* Waits until the instance is RUNNING; returns 0 or an exit code. */
static int wait_running(Nsc *n, const char *id, uint64_t timeout_usec, uint64_t start) {
        Namespace__Cloud__Compute__V1beta__WaitInstanceRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__WAIT_INSTANCE_REQUEST__INIT;
        WaitState w = { .n = n, .start = start, .id = (char *) id };
        uint64_t saved = n->timeout_usec;
        int r;

        req.instance_id = (char *) id;
        n->timeout_usec = timeout_usec;
        r = nsc_call_stream(n, COMPUTE "WaitInstance", &req.base,
                            &namespace__cloud__compute__v1beta__wait_instance_response__descriptor, on_wait, &w);
        n->timeout_usec = saved;
        progress_done(n);
        if (r != 0)
                return r;
        if (w.status != NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__RUNNING)
                return nsc_fail(n, NSC_EXIT_FAILURE, "FAILED_PRECONDITION", "Instance %s is %s, not RUNNING.", id,
                                status_name(w.status));
        return 0;
}

static int describe(Nsc *n, const char *id, Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse **ret) {
        Namespace__Cloud__Compute__V1beta__DescribeInstanceRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__DESCRIBE_INSTANCE_REQUEST__INIT;

        req.instance_id = (char *) id;
        return nsc_call(n, COMPUTE "DescribeInstance", &req.base,
                        &namespace__cloud__compute__v1beta__describe_instance_response__descriptor,
                        (ProtobufCMessage **) ret);
}

typedef struct CreateArgs {
        const char *machine_type;
        uint64_t duration_usec;
        char *label_names[LABELS_MAX], *label_values[LABELS_MAX];
        size_t n_labels;
        const char *purpose;
        /* nsc run --image: one container. */
        const char *image;
        const char *container_name;
        int network;              /* ContainerRequest.Network; 0: unset */
        bool enable_docker;       /* docker.sock at /var/run/docker.sock, served by the guest's proxy */
        char **args;
        size_t n_args;
        char **env;
        size_t n_env;
        /* -p PORT[/tcp|/http]: exported ports of that container. */
        int32_t ports[PORTS_MAX];
        int ports_proto[PORTS_MAX];
        size_t n_ports;
} CreateArgs;

/* -p 8080, -p 8080/tcp, -p 8080/http (forwarded as TCP all the same). */
static int parse_publish(Nsc *n, const NscCommand *cmd, const char *s, CreateArgs *a) {
        const char *slash = strchr(s, '/');
        _cleanup_free_ char *num = strndup(s, slash ? (size_t) (slash - s) : strlen(s));
        uint64_t port;

        if (!num)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "Out of memory.");
        if (parse_range_u64(num, 1, 65535, &port) < 0 || (slash && !streq(slash, "/tcp") && !streq(slash, "/http")))
                return nsc_usage(n, cmd, "Invalid -p '%s'; use -p PORT or -p PORT/tcp (1 to 65535).", s);
        if (a->n_ports >= PORTS_MAX)
                return nsc_usage(n, cmd, "At most %d ports.", PORTS_MAX);
        for (size_t k = 0; k < a->n_ports; k++)
                if (a->ports[k] == (int32_t) port)
                        return nsc_usage(n, cmd, "Port %" PRIu64 " is given twice.", port);
        a->ports[a->n_ports] = (int32_t) port;
        a->ports_proto[a->n_ports] = slash && streq(slash, "/http")
                                             ? NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_PORT__PROTO__HTTP
                                             : NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_PORT__PROTO__TCP;
        a->n_ports++;
        return 0;
}

static const char *port_proto_name(int proto) {
        return proto == NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_PORT__PROTO__HTTP ? "http" : "tcp";
}

/* The exported ports of a container as JSON: [{container_port, exported_port, endpoint, proto}]. */
static json_t *exported_ports_json(const Namespace__Cloud__Compute__V1beta__AllocatedContainer *c) {
        json_t *a = json_array();

        for (size_t k = 0; a && k < c->n_exported_port; k++) {
                const Namespace__Cloud__Compute__V1beta__AllocatedContainer__ExportedContainerPort *p =
                        c->exported_port[k];
                json_array_append_new(a, json_pack("{s:i, s:i, s:s, s:s}", "container_port", (int) p->container_port,
                                                   "exported_port", (int) p->exported_port, "endpoint",
                                                   p->endpoint ?: "", "proto", port_proto_name(p->proto)));
        }
        return a;
}

static int parse_label(Nsc *n, const NscCommand *cmd, const char *s, CreateArgs *a) {
        const char *eq = strchr(s, '=');

        if (!eq || eq == s)
                return nsc_usage(n, cmd, "Invalid label '%s'; use --label key=value.", s);
        if (a->n_labels >= LABELS_MAX)
                return nsc_usage(n, cmd, "At most %d labels.", LABELS_MAX);
        a->label_names[a->n_labels] = strndup(s, (size_t) (eq - s));
        a->label_values[a->n_labels] = strdup(eq + 1);
        a->n_labels++;
        return 0;
}

static void create_args_done(CreateArgs *a) {
        for (size_t k = 0; k < a->n_labels; k++) {
                free(a->label_names[k]);
                free(a->label_values[k]);
        }
}

/* CreateInstance; returns 0 and the new id, or an exit code. */
static int create_instance(Nsc *n, const NscCommand *cmd, const CreateArgs *a, char **ret_id) {
        Namespace__Cloud__Compute__V1beta__CreateInstanceRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__CREATE_INSTANCE_REQUEST__INIT;
        Namespace__Cloud__Compute__V1beta__InstanceShape shape = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_SHAPE__INIT;
        Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse *resp = NULL;
        Namespace__Stdlib__Label labels[LABELS_MAX], *label_ptrs[LABELS_MAX];
        Google__Protobuf__Timestamp deadline = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        unsigned vcpu, gb;
        char extra;
        int r;

        if (sscanf(a->machine_type, "%ux%u%c", &vcpu, &gb, &extra) != 2 || vcpu == 0 || gb == 0 || vcpu > 1024 ||
            gb > 4096)
                return nsc_usage(n, cmd, "Invalid --machine_type '%s'; use CPUxGB, e.g. 2x4.", a->machine_type);
        shape.virtual_cpu = (int32_t) vcpu;
        shape.memory_megabytes = (int32_t) gb * 1024;
        shape.machine_arch = (char *) "amd64";
        req.shape = &shape;
        for (size_t k = 0; k < a->n_labels; k++) {
                labels[k] = (Namespace__Stdlib__Label) NAMESPACE__STDLIB__LABEL__INIT;
                labels[k].name = a->label_names[k];
                labels[k].value = a->label_values[k];
                label_ptrs[k] = &labels[k];
        }
        req.n_labels = a->n_labels;
        req.labels = label_ptrs;
        req.documented_purpose = (char *) (a->purpose ?: "");
        Namespace__Cloud__Compute__V1beta__ContainerRequest cr =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_REQUEST__INIT;
        Namespace__Cloud__Compute__V1beta__ContainerRequest *crp = &cr;
        Namespace__Cloud__Compute__V1beta__EnvironmentVariable vars[ENV_MAX], *var_ptrs[ENV_MAX];
        Namespace__Cloud__Compute__V1beta__ContainerPort ports[PORTS_MAX], *port_ptrs[PORTS_MAX];
        if (a->image) {
                cr.name = (char *) (a->container_name ?: "main");
                cr.image_ref = (char *) a->image;
                cr.args = a->args;
                cr.n_args = a->n_args;
                cr.network = a->network;
                if (a->enable_docker)
                        cr.docker_sock_path = (char *) "/var/run/docker.sock";
                for (size_t k = 0; k < a->n_env && k < ENV_MAX; k++) {
                        const char *eq = strchr(a->env[k], '=');
                        vars[k] = (Namespace__Cloud__Compute__V1beta__EnvironmentVariable)
                                NAMESPACE__CLOUD__COMPUTE__V1BETA__ENVIRONMENT_VARIABLE__INIT;
                        vars[k].name = strndup(a->env[k], (size_t) (eq - a->env[k]));
                        vars[k].value = (char *) eq + 1;
                        var_ptrs[k] = &vars[k];
                }
                cr.env_vars = var_ptrs;
                cr.n_env_vars = a->n_env;
                for (size_t k = 0; k < a->n_ports; k++) {
                        ports[k] = (Namespace__Cloud__Compute__V1beta__ContainerPort)
                                NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_PORT__INIT;
                        ports[k].container_port = a->ports[k];
                        ports[k].proto = (Namespace__Cloud__Compute__V1beta__ContainerPort__Proto) a->ports_proto[k];
                        port_ptrs[k] = &ports[k];
                }
                cr.export_ports = port_ptrs;
                cr.n_export_ports = a->n_ports;
                req.containers = &crp;
                req.n_containers = 1;
        }
        if (a->duration_usec) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t d = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000 + a->duration_usec;
                deadline.seconds = (int64_t) (d / USEC_PER_SEC);
                deadline.nanos = (int32_t) (d % USEC_PER_SEC) * 1000;
                req.deadline = &deadline;
        }
        r = nsc_call(n, COMPUTE "CreateInstance", &req.base,
                     &namespace__cloud__compute__v1beta__describe_instance_response__descriptor,
                     (ProtobufCMessage **) &resp);
        for (size_t k = 0; a->image && k < cr.n_env_vars; k++)
                free(vars[k].name);
        if (r != 0)
                return r;
        *ret_id = strdup(resp->metadata && resp->metadata->instance_id ? resp->metadata->instance_id : "");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return *ret_id ? 0 : NSC_EXIT_FAILURE;
}

static int destroy_instance(Nsc *n, const char *id, const char *reason) {
        Namespace__Cloud__Compute__V1beta__DestroyInstanceRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__DESTROY_INSTANCE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        int r;

        req.instance_id = (char *) id;
        req.reason = (char *) (reason ?: "");
        r = nsc_call(n, COMPUTE "DestroyInstance", &req.base, &google__protobuf__empty__descriptor, &resp);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

static const NscCommand *cmd_create_ptr(void);

static int verb_create(Nsc *n, int argc, char **argv) {
        static const struct option options[] = {
                { "machine_type", required_argument, NULL, 'm' },
                { "duration", required_argument, NULL, 'd' },
                { "label", required_argument, NULL, 'l' },
                { "wait_timeout", required_argument, NULL, 'w' },
                { "nowait", no_argument, NULL, 'N' },
                { "purpose", required_argument, NULL, 'p' },
                OUTPUT_OPTION,
                {},
        };
        const NscCommand *cmd = cmd_create_ptr();
        _cleanup_(create_args_done) CreateArgs a = { .machine_type = "2x4" };
        Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse *resp = NULL;
        uint64_t wait_timeout = 60 * USEC_PER_SEC, start = now_usec();
        _cleanup_free_ char *id = NULL;
        bool nowait = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "+o:", options, NULL)) >= 0)
                switch (c) {
                case 'm':
                        a.machine_type = optarg;
                        break;
                case 'd':
                        if (parse_usec(optarg, &a.duration_usec) < 0 || a.duration_usec == 0)
                                return nsc_usage(n, cmd, "Invalid --duration '%s'; use e.g. 10m, 1h.", optarg);
                        break;
                case 'l':
                        r = parse_label(n, cmd, optarg, &a);
                        if (r != 0)
                                return r;
                        break;
                case 'w':
                        if (parse_usec(optarg, &wait_timeout) < 0 || wait_timeout == 0)
                                return nsc_usage(n, cmd, "Invalid --wait_timeout '%s'; use e.g. 1m.", optarg);
                        break;
                case 'N':
                        nowait = true;
                        break;
                case 'p':
                        a.purpose = optarg;
                        break;
                case 'o':
                        break;
                default:
                        return nsc_usage(n, cmd, "Unknown option.");
                }
        if (optind < argc)
                return nsc_usage(n, cmd, "Unexpected argument '%s'.", argv[optind]);

        r = create_instance(n, cmd, &a, &id);
        if (r != 0)
                return r;
        if (!nowait) {
                r = wait_running(n, id, wait_timeout, start);
                if (r != 0)
                        return r;
        }
        r = describe(n, id, &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(metadata_json(resp->metadata));
        else
                printf("%s\n", id);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return 0;
}

/* ---- list / describe / destroy / extend ------------------------------- */

static int verb_list(Nsc *n, int argc, char **argv) {
        static const struct option options[] = {
                { "all", no_argument, NULL, 'a' },
                OUTPUT_OPTION,
                {},
        };
        Namespace__Cloud__Compute__V1beta__ListInstancesRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__LIST_INSTANCES_REQUEST__INIT;
        Namespace__Cloud__Compute__V1beta__ListInstancesResponse *resp = NULL;
        json_t *list;
        int c, r;

        while ((c = getopt_long(argc, argv, "+o:a", options, NULL)) >= 0)
                if (c == 'a')
                        req.include_complete_runs = true;
                else if (c != 'o')
                        return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc list [--all] [-o json]");
        r = nsc_call(n, COMPUTE "ListInstances", &req.base,
                     &namespace__cloud__compute__v1beta__list_instances_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        list = json_array();
        if (!n->json)
                printf("%-22s %-11s %-7s %-21s %-21s %s\n", "INSTANCE", "STATE", "SHAPE", "CREATED", "DEADLINE",
                       "LABELS");
        for (size_t k = 0; k < resp->n_instances; k++) {
                json_t *o = metadata_json(resp->instances[k]);
                if (!n->json) {
                        _cleanup_free_ char *labels = json_dumps(json_object_get(o, "labels"), JSON_COMPACT);
                        printf("%-22s %-11s %-7s %-21s %-21s %s\n", json_string_value(json_object_get(o, "instance_id")),
                               json_string_value(json_object_get(o, "state")),
                               json_string_value(json_object_get(o, "machine_type")),
                               json_string_value(json_object_get(o, "created_at")),
                               json_string_value(json_object_get(o, "deadline")), labels ?: "");
                }
                json_array_append_new(list, o);
        }
        if (n->json)
                nsc_print_json(list);
        else
                json_decref(list);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return 0;
}

static int single_id(Nsc *n, int argc, char **argv, const char *usage, const char **ret) {
        const char *id = NULL;

        for (int k = 1; k < argc; k++) {
                if (argv[k][0] == '-' || id)
                        return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: %s", usage);
                id = argv[k];
        }
        if (!id)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: %s", usage);
        *ret = id;
        return 0;
}

static void print_usec(const char *label, json_t *v) {
        uint64_t us = json_is_integer(v) ? (uint64_t) json_integer_value(v) : 0;

        if (us == 0)
                printf("%s -", label);
        else if (us < 10000)
                printf("%s %.1f ms", label, (double) us / 1000);
        else
                printf("%s %" PRIu64 " ms", label, (us + 500) / 1000);
}

/* "boot  qemu 900 ms → kernel 310 ms → init 4.2 ms (mounts 0.3 ms, ...) →
 * first command 12 ms": the phases in the order they happen. */
static void print_boot_phases(json_t *p) {
        printf("%-21s ", "boot");
        print_usec("qemu", json_object_get(p, "qemu"));
        print_usec(" → kernel", json_object_get(p, "kernel"));
        print_usec(" → init", json_object_get(p, "init"));
        if (json_is_true(json_object_get(p, "known"))) {
                print_usec(" (mounts", json_object_get(p, "mounts"));
                print_usec(", modules", json_object_get(p, "modules"));
                print_usec(", network", json_object_get(p, "network"));
                print_usec(", port", json_object_get(p, "port"));
                printf(")");
        }
        print_usec(" → first command", json_object_get(p, "first_command"));
        printf("\n");
}

static int verb_describe(Nsc *n, int argc, char **argv) {
        Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse *resp = NULL;
        Hostmesh__Vmm__V1__GetInstanceDetailsRequest dreq = HOSTMESH__VMM__V1__GET_INSTANCE_DETAILS_REQUEST__INIT;
        Hostmesh__Vmm__V1__InstanceDetails *d = NULL;
        RpcStatus st = {};
        const char *id = NULL;
        json_t *o;
        int r;

        r = single_id(n, argc, argv, "nsc describe ID [-o json]", &id);
        if (r != 0)
                return r;
        r = describe(n, id, &resp);
        if (r != 0)
                return r;
        o = metadata_json(resp->metadata);
        if (resp->n_containers > 0) {
                json_t *cs = json_array();
                for (size_t k = 0; k < resp->n_containers; k++)
                        json_array_append_new(cs, json_pack("{s:s, s:s, s:o}", "id", resp->containers[k]->id ?: "",
                                                            "name", resp->containers[k]->name ?: "", "ports",
                                                            exported_ports_json(resp->containers[k])));
                json_object_set_new(o, "containers", cs);
        }
        /* vmmd's own extras; older servers may not have them. */
        dreq.instance_id = (char *) id;
        if (rpc_client_call(n->client, "/hostmesh.vmm.v1.Vmm/GetInstanceDetails", NULL, &dreq.base,
                            &hostmesh__vmm__v1__instance_details__descriptor, n->timeout_usec, (ProtobufCMessage **) &d,
                            &st) >= 0) {
                if (!isempty(d->reason))
                        json_object_set_new(o, "reason", json_string(d->reason));
                json_object_set_new(o, "machine", json_string(d->machine));
                json_object_set_new(o, "accelerator", json_string(d->accelerator));
                if (!isempty(d->accelerator_reason))
                        json_object_set_new(o, "accelerator_reason", json_string(d->accelerator_reason));
                if (d->qemu_pid)
                        json_object_set_new(o, "qemu_pid", json_integer(d->qemu_pid));
                json_object_set_new(o, "guest_kernel_us", json_integer((json_int_t) d->guest_kernel_usec));
                json_object_set_new(o, "guest_init_us", json_integer((json_int_t) d->guest_init_usec));
                json_object_set_new(o, "create_to_running_us", json_integer((json_int_t) d->create_to_running_usec));
                if (!isempty(d->guest_kernel))
                        json_object_set_new(o, "guest_kernel", json_string(d->guest_kernel));
                /* In boot order; "known" is false when the guest did not
                 * split its init time (an older hostmesh-init). */
                json_object_set_new(
                        o, "boot_phases_us",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "qemu",
                                  (json_int_t) d->boot_qemu_usec, "kernel", (json_int_t) d->guest_kernel_usec, "init",
                                  (json_int_t) d->guest_init_usec, "mounts", (json_int_t) d->guest_mounts_usec,
                                  "modules", (json_int_t) d->guest_modules_usec, "network",
                                  (json_int_t) d->guest_network_usec, "port", (json_int_t) d->guest_port_usec,
                                  "first_command", (json_int_t) d->ready_to_first_command_usec, "known",
                                  (int) d->boot_phases_known));
                json_object_set_new(o, "vmmd_cost_us", json_integer((json_int_t) d->vmmd_cost_usec));
                if (!isempty(d->disk_id))
                        json_object_set_new(o, "disk", json_pack("{s:s, s:s, s:I}", "id", d->disk_id, "path",
                                                                 d->disk_path, "bytes", (json_int_t) d->disk_bytes));
                json_object_set_new(o, "token", json_boolean(d->has_token));
                if (!isempty(d->cgroup))
                        json_object_set_new(o, "cgroup", json_string(d->cgroup));
                if (!isempty(d->tenant))
                        json_object_set_new(o, "tenant", json_string(d->tenant));
                /* Always present, empty without network, so scripts can rely on the keys. */
                json_object_set_new(o, "address", json_string(d->address));
                json_object_set_new(o, "dns_name", json_string(d->dns_name));
                if (!isempty(d->tap))
                        json_object_set_new(o, "network", json_pack("{s:s, s:s, s:s}", "tap", d->tap, "mac", d->mac,
                                                                    "gateway", d->gateway));
                /* The containers' state and Docker socket, matched to the
                 * public answer's list by id. */
                json_t *cs = json_object_get(o, "containers");
                for (size_t k = 0; json_is_array(cs) && k < d->n_containers; k++) {
                        size_t l;
                        json_t *c;
                        json_array_foreach(cs, l, c) {
                                if (!streq(json_string_value(json_object_get(c, "id")) ?: "", d->containers[k]->id))
                                        continue;
                                json_object_set_new(c, "image", json_string(d->containers[k]->image_ref));
                                json_object_set_new(c, "status", json_string(d->containers[k]->status));
                                json_object_set_new(c, "docker", json_boolean(!isempty(d->containers[k]->docker_sock_path)));
                                if (!isempty(d->containers[k]->docker_sock_path))
                                        json_object_set_new(c, "docker_sock_path",
                                                            json_string(d->containers[k]->docker_sock_path));
                        }
                }
                if (d->n_events > 0) {
                        json_t *events = json_array();
                        for (size_t k = 0; k < d->n_events; k++)
                                json_array_append_new(events, json_string(d->events[k]));
                        json_object_set_new(o, "events", events);
                }
                protobuf_c_message_free_unpacked(&d->base, NULL);
        }
        rpc_status_done(&st);
        if (n->json)
                nsc_print_json(o);
        else {
                const char *key;
                json_t *v;
                json_object_foreach(o, key, v) {
                        if (streq(key, "boot_phases_us")) {
                                print_boot_phases(v);
                                continue;
                        }
                        _cleanup_free_ char *s = json_is_string(v) ? strdup(json_string_value(v))
                                                                   : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                        printf("%-21s %s\n", key, s ?: "");
                }
                json_decref(o);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return 0;
}

/* Waits until the instance is DESTROYED (or ERROR): Describe every 100 ms. */
static int wait_gone(Nsc *n, const char *id, uint64_t timeout_usec) {
        uint64_t end = now_usec() + timeout_usec, start = now_usec();

        for (;;) {
                Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse *resp = NULL;
                int r = describe(n, id, &resp), s;

                if (r != 0)
                        return r;
                s = resp->metadata ? resp->metadata->status : 0;
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                if (s == NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__DESTROYED ||
                    s == NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__ERROR) {
                        progress_done(n);
                        return 0;
                }
                progress(n, start, id, status_name(s));
                if (now_usec() > end) {
                        progress_done(n);
                        return nsc_fail(n, NSC_EXIT_TIMEOUT, "DEADLINE_EXCEEDED",
                                        "Instance %s is still %s; it is being destroyed in the background.", id,
                                        status_name(s));
                }
                nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
        }
}

static int verb_destroy(Nsc *n, int argc, char **argv) {
        bool force = false;
        const char *id = NULL;
        int r;

        for (int k = 1; k < argc; k++) {
                if (streq(argv[k], "--force"))
                        force = true;
                else if (argv[k][0] != '-' && !id)
                        id = argv[k];
                else
                        return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc destroy ID [--force] [-o json]");
        }
        if (!id)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc destroy ID [--force] [-o json]");
        r = destroy_instance(n, id, "destroyed with nsc");
        if (r != 0)
                return r;
        /* --force: do not wait for the VM to be gone. */
        if (!force) {
                r = wait_gone(n, id, 60 * USEC_PER_SEC);
                if (r != 0)
                        return r;
        }
        if (n->json)
                nsc_print_json(json_pack("{s:s, s:s}", "instance_id", id, "state", force ? "DESTROYING" : "DESTROYED"));
        return 0;
}

static int verb_extend(Nsc *n, int argc, char **argv) {
        static const struct option options[] = {
                { "duration", required_argument, NULL, 'd' },
                OUTPUT_OPTION,
                {},
        };
        Namespace__Cloud__Compute__V1beta__ExtendInstanceRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__EXTEND_INSTANCE_REQUEST__INIT;
        Namespace__Cloud__Compute__V1beta__ExtendInstanceResponse *resp = NULL;
        Google__Protobuf__Duration by = GOOGLE__PROTOBUF__DURATION__INIT;
        uint64_t d = 0;
        int c, r;

        while ((c = getopt_long(argc, argv, "o:", options, NULL)) >= 0)
                if (c == 'd') {
                        if (parse_usec(optarg, &d) < 0 || d < USEC_PER_SEC)
                                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Invalid --duration '%s'; use e.g. 30m.",
                                                optarg);
                } else if (c != 'o')
                        return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc extend ID --duration D");
        if (optind + 1 != argc || d == 0)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc extend ID --duration D");
        req.instance_id = argv[optind];
        by.seconds = (int64_t) (d / USEC_PER_SEC);
        req.extend_by = &by;
        r = nsc_call(n, COMPUTE "ExtendInstance", &req.base,
                     &namespace__cloud__compute__v1beta__extend_instance_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        _cleanup_free_ char *t = ts_string(resp->new_deadline);
        if (n->json)
                nsc_print_json(json_pack("{s:s, s:s}", "instance_id", argv[optind], "deadline", t));
        else
                printf("%s\n", t);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return 0;
}

/* ---- logs ---------------------------------------------------------------- */

static int on_log(const ProtobufCMessage *message, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__LogBlock *b = (const void *) message;
        Nsc *n = userdata;

        for (size_t k = 0; k < b->n_lines; k++) {
                const Namespace__Cloud__Compute__V1beta__LogBlock__Line *l = b->lines[k];
                if (n->json) {
                        _cleanup_free_ char *t = ts_string(l->timestamp);
                        json_t *o = json_pack("{s:s, s:s, s:s}", "timestamp", t, "stream", l->stream ?: "",
                                              "content", l->content ?: "");
                        _cleanup_free_ char *s = json_dumps(o, JSON_COMPACT);
                        json_decref(o);
                        if (s)
                                puts(s);
                } else
                        printf("%s\n", l->content ?: "");
        }
        fflush(stdout);
        return 0;
}

static int verb_logs(Nsc *n, int argc, char **argv) {
        Namespace__Cloud__Compute__V1beta__StreamInstanceLogsRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__STREAM_INSTANCE_LOGS_REQUEST__INIT;
        const char *id = NULL;

        for (int k = 1; k < argc; k++) {
                if (streq(argv[k], "-f") || streq(argv[k], "--follow"))
                        req.follow = true;
                else if (argv[k][0] != '-' && !id)
                        id = argv[k];
                else
                        return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc logs ID [-f] [-o json]");
        }
        if (!id)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "Usage: nsc logs ID [-f] [-o json]");
        req.instance_id = (char *) id;
        if (req.follow)
                n->timeout_usec = UINT64_MAX / 4; /* until the instance ends or ^C */
        return nsc_call_stream(n, "/namespace.cloud.compute.v1beta.ObservabilityService/StreamInstanceLogs", &req.base,
                               &namespace__cloud__compute__v1beta__log_block__descriptor, on_log, n);
}

/* ---- exec / run ---------------------------------------------------------- */

typedef struct ExecState {
        Nsc *n;
        int exit_code;
        bool exited;
} ExecState;

static int write_all(int fd, const uint8_t *p, size_t size) {
        while (size > 0) {
                ssize_t k = write(fd, p, size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                size -= (size_t) k;
        }
        return 0;
}

static int on_exec(const ProtobufCMessage *message, void *userdata) {
        const Namespace__Cloud__Compute__V1beta__RunCommandResponse *resp = (const void *) message;
        ExecState *e = userdata;

        if (resp->data.len > 0)
                (void) write_all(resp->stream == NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_RESPONSE__STREAM__STDERR
                                         ? STDERR_FILENO
                                         : STDOUT_FILENO,
                                 resp->data.data, resp->data.len);
        if (resp->exit_status) {
                e->exit_code = resp->exit_status->exit_code;
                e->exited = true;
        }
        return 0;
}

/* Runs argv in the instance: streamed (plain) or collected (JSON). Returns
 * the command's exit code, or an nsc exit code with the error printed. */
static int exec_command(Nsc *n, const char *id, const char *container, char **argv, size_t argc, char **env,
                        size_t n_env, json_t **ret_json) {
        Namespace__Cloud__Compute__V1beta__RunCommandRequest req =
                NAMESPACE__CLOUD__COMPUTE__V1BETA__RUN_COMMAND_REQUEST__INIT;
        Namespace__Cloud__Compute__V1beta__Command cmd = NAMESPACE__CLOUD__COMPUTE__V1BETA__COMMAND__INIT;
        Namespace__Cloud__Compute__V1beta__EnvironmentVariable vars[ENV_MAX], *var_ptrs[ENV_MAX];
        uint64_t saved = n->timeout_usec;
        int r;

        for (size_t k = 0; k < n_env; k++) {
                char *eq = strchr(env[k], '=');
                vars[k] = (Namespace__Cloud__Compute__V1beta__EnvironmentVariable)
                        NAMESPACE__CLOUD__COMPUTE__V1BETA__ENVIRONMENT_VARIABLE__INIT;
                *eq = 0;
                vars[k].name = env[k];
                vars[k].value = eq + 1;
                var_ptrs[k] = &vars[k];
        }
        cmd.n_command = argc;
        cmd.command = argv;
        cmd.n_env_vars = n_env;
        cmd.env_vars = var_ptrs;
        req.instance_id = (char *) id;
        req.command = &cmd;
        req.target_container_name = (char *) (container ?: "");
        /* A command runs as long as it runs; --timeout bounds the other calls. */
        n->timeout_usec = UINT64_MAX / 4;
        if (n->json) {
                Namespace__Cloud__Compute__V1beta__RunCommandSyncResponse *resp = NULL;
                r = nsc_call(n, COMMAND "RunCommandSync", &req.base,
                             &namespace__cloud__compute__v1beta__run_command_sync_response__descriptor,
                             (ProtobufCMessage **) &resp);
                n->timeout_usec = saved;
                if (r != 0)
                        return r;
                *ret_json = json_pack("{s:s, s:s, s:i, s:s%, s:s%}", "instance_id", id, "container", container ?: "",
                                      "exit_code", resp->exit_code,
                                      "stdout", (const char *) resp->stdout.data ?: "", resp->stdout.len, "stderr",
                                      (const char *) resp->stderr.data ?: "", resp->stderr.len);
                r = resp->exit_code;
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return r;
        }
        ExecState e = { .n = n };
        r = nsc_call_stream(n, COMMAND "RunCommand", &req.base,
                            &namespace__cloud__compute__v1beta__run_command_response__descriptor, on_exec, &e);
        n->timeout_usec = saved;
        if (r != 0)
                return r;
        if (!e.exited)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "The command's exit status was not received.");
        return e.exit_code;
}

/* Splits argv at "--": options before, the command after. */
static int split_command(int argc, char **argv, int *ret_dashdash) {
        for (int k = 1; k < argc; k++)
                if (streq(argv[k], "--")) {
                        *ret_dashdash = k;
                        return 0;
                }
        return -EINVAL;
}

static int verb_exec(Nsc *n, int argc, char **argv) {
        static const char usage[] = "Usage: nsc exec ID [--container NAME] -- CMD [ARGS...]";
        const char *id = NULL, *container = NULL;
        json_t *out = NULL;
        int dd, r;

        if (split_command(argc, argv, &dd) < 0 || dd + 1 >= argc)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", usage);
        for (int k = 1; k < dd; k++) {
                if (streq(argv[k], "--container") && k + 1 < dd)
                        container = argv[++k];
                else if (strncmp(argv[k], "--container=", 12) == 0)
                        container = argv[k] + 12;
                else if (argv[k][0] != '-' && !id)
                        id = argv[k];
                else
                        return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", usage);
        }
        if (!id)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", usage);
        r = exec_command(n, id, container, argv + dd + 1, (size_t) (argc - dd - 1), NULL, 0, &out);
        if (out)
                nsc_print_json(out);
        return r;
}

static const NscCommand *cmd_run_ptr(void);

/* Where the ports of nsc run -p are reachable: a line each on stderr
 * ("port 8080 → 127.0.0.1:20001"), and the list for -o json. */
static json_t *show_published(Nsc *n, const char *id) {
        Namespace__Cloud__Compute__V1beta__DescribeInstanceResponse *resp = NULL;
        json_t *ports;

        if (describe(n, id, &resp) != 0)
                return NULL;
        ports = resp->n_containers > 0 ? exported_ports_json(resp->containers[0]) : json_array();
        for (size_t k = 0; k < resp->n_containers; k++)
                for (size_t l = 0; l < resp->containers[k]->n_exported_port; l++) {
                        const Namespace__Cloud__Compute__V1beta__AllocatedContainer__ExportedContainerPort *p =
                                resp->containers[k]->exported_port[l];
                        fprintf(stderr, "nsc: port %d \u2192 %s\n", (int) p->container_port, p->endpoint ?: "");
                }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return ports;
}

static int verb_run(Nsc *n, int argc, char **argv) {
        static const struct option options[] = {
                { "machine_type", required_argument, NULL, 'm' },
                { "duration", required_argument, NULL, 'd' },
                { "label", required_argument, NULL, 'l' },
                { "env", required_argument, NULL, 'e' },
                { "keep", no_argument, NULL, 'k' },
                { "wait_timeout", required_argument, NULL, 'w' },
                { "image", required_argument, NULL, 'i' },
                { "name", required_argument, NULL, 'N' },
                { "network", required_argument, NULL, 'n' },
                { "enable_docker", no_argument, NULL, 'D' },
                { "publish", required_argument, NULL, 'p' },
                OUTPUT_OPTION,
                {},
        };
        const NscCommand *cmd = cmd_run_ptr();
        _cleanup_(create_args_done) CreateArgs a = { .machine_type = "2x4", .purpose = "nsc run" };
        _cleanup_free_ char *id = NULL;
        char *env[ENV_MAX];
        size_t n_env = 0;
        uint64_t wait_timeout = 2 * 60 * USEC_PER_SEC, start = now_usec();
        bool keep = false;
        json_t *out = NULL;
        int dd = argc, c, r, code;

        if (split_command(argc, argv, &dd) < 0)
                dd = argc;
        while ((c = getopt_long(dd, argv, "+o:e:p:", options, NULL)) >= 0)
                switch (c) {
                case 'm':
                        a.machine_type = optarg;
                        break;
                case 'd':
                        if (parse_usec(optarg, &a.duration_usec) < 0 || a.duration_usec == 0)
                                return nsc_usage(n, cmd, "Invalid --duration '%s'; use e.g. 10m.", optarg);
                        break;
                case 'l':
                        r = parse_label(n, cmd, optarg, &a);
                        if (r != 0)
                                return r;
                        break;
                case 'e':
                        if (!strchr(optarg, '=') || optarg[0] == '=')
                                return nsc_usage(n, cmd, "Invalid -e '%s'; use -e NAME=VALUE.", optarg);
                        if (n_env >= ENV_MAX)
                                return nsc_usage(n, cmd, "At most %d variables.", ENV_MAX);
                        env[n_env++] = optarg;
                        break;
                case 'k':
                        keep = true;
                        break;
                case 'w':
                        if (parse_usec(optarg, &wait_timeout) < 0 || wait_timeout == 0)
                                return nsc_usage(n, cmd, "Invalid --wait_timeout '%s'.", optarg);
                        break;
                case 'i':
                        a.image = optarg;
                        break;
                case 'N':
                        a.container_name = optarg;
                        break;
                case 'n':
                        if (streq(optarg, "bridge"))
                                a.network = NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_REQUEST__NETWORK__BRIDGE;
                        else if (streq(optarg, "host"))
                                a.network = NAMESPACE__CLOUD__COMPUTE__V1BETA__CONTAINER_REQUEST__NETWORK__HOST;
                        else
                                return nsc_usage(n, cmd, "Invalid --network '%s'; use bridge or host.", optarg);
                        break;
                case 'D':
                        a.enable_docker = true;
                        break;
                case 'p':
                        r = parse_publish(n, cmd, optarg, &a);
                        if (r != 0)
                                return r;
                        break;
                case 'o':
                        break;
                default:
                        return nsc_usage(n, cmd, "Unknown option.");
                }
        if (optind < dd)
                return nsc_usage(n, cmd, "Unexpected argument '%s'; the command goes after '--'.", argv[optind]);
        if (!a.image && dd + 1 >= argc)
                return nsc_usage(n, cmd, "Give the command after '--' (or an image with --image).");
        if (!a.image && (a.container_name || a.network || a.enable_docker || a.n_ports > 0))
                return nsc_usage(n, cmd, "--name, --network, -p and --enable_docker need --image.");
        if (a.image) {
                /* The command becomes the container's; its environment too. */
                a.args = dd + 1 < argc ? argv + dd + 1 : NULL;
                a.n_args = dd + 1 < argc ? (size_t) (argc - dd - 1) : 0;
                a.env = env;
                a.n_env = n_env;
                if (!n->json && !n->tty)
                        fprintf(stderr, "nsc: resolving %s and booting the instance...\n", a.image);
        }

        progress(n, start, "new", a.image ? "PULLING + CREATING" : "CREATING");
        r = create_instance(n, cmd, &a, &id);
        if (r != 0) {
                progress_done(n);
                return r;
        }
        r = wait_running(n, id, wait_timeout, start);
        if (r != 0) {
                if (!keep)
                        (void) destroy_instance(n, id, "nsc run: the instance did not start");
                return r;
        }
        json_t *published = NULL;
        if (a.n_ports > 0)
                published = show_published(n, id);
        if (a.image)
                /* Attach to the container's main task: its output so far, then the rest. */
                code = exec_command(n, id, a.container_name ?: "main", NULL, 0, NULL, 0, &out);
        else
                code = exec_command(n, id, NULL, argv + dd + 1, (size_t) (argc - dd - 1), env, n_env, &out);
        if (!keep) {
                r = destroy_instance(n, id, "nsc run finished");
                if (r != 0 && !n->json)
                        fprintf(stderr, "nsc: instance %s was not destroyed; run 'nsc destroy %s'.\n", id, id);
        } else if (!n->json)
                fprintf(stderr, "nsc: instance %s kept; 'nsc destroy %s' ends it.\n", id, id);
        if (out) {
                json_object_set_new(out, "kept", json_boolean(keep));
                if (a.image)
                        json_object_set_new(out, "image", json_string(a.image));
                if (published)
                        json_object_set_new(out, "ports", TAKE_PTR(published));
                nsc_print_json(out);
        }
        json_decref(published);
        return code;
}

NSC_COMMAND(create, .name = "create",
            .usage = "--machine_type CPUxGB [--duration D] [--label K=V]... [--wait_timeout D] [--nowait]",
            .summary = "Create an instance (a micro-VM) and wait until it runs", .run = verb_create);
NSC_COMMAND(list, .name = "list", .usage = "[--all]", .summary = "List instances (--all: finished ones too)",
            .run = verb_list);
NSC_COMMAND(describe, .name = "describe", .usage = "ID", .summary = "Show an instance", .run = verb_describe);
NSC_COMMAND(destroy, .name = "destroy", .usage = "ID [--force]",
            .summary = "Destroy an instance (--force: do not wait until it is gone)", .run = verb_destroy);
NSC_COMMAND(extend, .name = "extend", .usage = "ID --duration D", .summary = "Move an instance's deadline later",
            .run = verb_extend);
NSC_COMMAND(logs, .name = "logs", .usage = "ID [-f]", .summary = "Show an instance's console and command output",
            .run = verb_logs);
NSC_COMMAND(exec, .name = "exec", .usage = "ID [--container NAME] -- CMD [ARGS...]",
            .summary = "Run a command in an instance; exits with its code", .run = verb_exec);
NSC_COMMAND(run, .name = "run",
            .usage = "[--image REF [--name N] [--network bridge|host] [-p PORT[/tcp]]...] [--machine_type CPUxGB] "
                     "[-e K=V]... [--keep] "
                     "[--duration D] -- CMD [ARGS...]",
            .summary = "Create an instance, run a command in it, destroy it", .run = verb_run);

static const NscCommand *cmd_create_ptr(void) {
        return &nsc_command_create;
}

static const NscCommand *cmd_run_ptr(void) {
        return &nsc_command_run;
}
