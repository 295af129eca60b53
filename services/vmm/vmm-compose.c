/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "vmm-compose.h"
#include "vmm-manager.h"

/* The disk and identity APIs are written by their services; until their
 * protos are in the tree these calls report the backend as unavailable. */
#if __has_include("hostmesh/disk/v1/disk.pb-c.h")
#include "hostmesh/disk/v1/disk.pb-c.h"
#define HAVE_DISK_API 1
#else
#define HAVE_DISK_API 0
#endif
#if __has_include("hostmesh/identity/v1/identity.pb-c.h")
#include "hostmesh/identity/v1/identity.pb-c.h"
#define HAVE_IDENTITY_API 1
#else
#define HAVE_IDENTITY_API 0
#endif

#include "hostmesh/dns/v1/dns.pb-c.h"

#define BACKEND_TIMEOUT_USEC (10 * USEC_PER_SEC)
/* Short: a name outlives its instance in caches at most this long. */
#define INSTANCE_RECORD_TTL 30

int compose_backend_client(Manager *m, const char *socket, RpcClient **client) {
        _cleanup_free_ char *target = NULL;

        if (*client)
                return 0;
        /* No socket file: nothing listens (not even an activator), fail now
         * rather than after a connect timeout. */
        if (access(socket, F_OK) < 0)
                return -ECONNREFUSED;
        if (asprintf(&target, "unix:%s", socket) < 0)
                return -ENOMEM;
        return rpc_client_new(m->rpc_loop, target, client);
}

/* A backend failed: required → ERROR, optional → go on without it. */
static void backend_failed(Instance *i, BackendMode mode, const char *what, const char *service, const char *socket,
                           const char *key, int r, const RpcStatus *status) {
        _cleanup_free_ char *reason = NULL;

        if (asprintf(&reason, "%s failed: %s is not usable at %s (%s)%s", what, service, socket,
                     status && status->message ? status->message : strerror(-r),
                     mode == BACKEND_REQUIRED ? "" : "") < 0)
                reason = NULL;
        if (mode == BACKEND_REQUIRED) {
                _cleanup_free_ char *full = NULL;
                if (asprintf(&full, "%s; start %s or set [vmm] %s = optional", reason ?: what, service, key) < 0)
                        full = NULL;
                manager_instance_fail(i, full ?: what);
                return;
        }
        log_struct(LOG_WARNING, 0, FIELDS(i->log_field), "Instance %s: %s; going on without it ([vmm] %s = optional).",
                   i->id, reason ?: what, key);
}

#if HAVE_DISK_API
static void on_disk_created(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        Instance *i = userdata;
        Manager *m = i->manager;
        const Hostmesh__Disk__V1__CreateDiskResponse *resp = (const void *) response;

        i->pending_ops--;
        if (r >= 0 && (isempty(resp->disk_id) || isempty(resp->path) || resp->path[0] != '/' ||
                       strlen(resp->disk_id) > 128 || strlen(resp->path) > 4096))
                r = -EBADMSG; /* a sibling's answer is checked like any input */
        if (r < 0) {
                backend_failed(i, m->disk_mode, "Disk provisioning", "diskd", m->disk_socket, "disk", r, status);
        } else if (i->state != INSTANCE_CREATING) {
                /* Destroyed meanwhile: give the disk back at once. */
                compose_delete_disk(m, i->id, resp->disk_id);
        } else {
                i->disk_id = strdup(resp->disk_id);
                i->disk_path = strdup(resp->path);
                i->disk_format = strdup(isempty(resp->format) ? "raw" : resp->format);
                i->disk_bytes = resp->size_bytes;
                if (!i->disk_id || !i->disk_path || !i->disk_format)
                        manager_instance_fail(i, "Out of memory");
                else
                        log_struct(LOG_INFO, 0, FIELDS(i->log_field),
                                   "Instance %s: disk %s at %s (%" PRIu64 " bytes).", i->id, i->disk_id,
                                   i->disk_path, i->disk_bytes);
        }
        manager_instance_continue(i);
}
#endif

void compose_create_disk(Manager *m, Instance *i) {
#if HAVE_DISK_API
        Hostmesh__Disk__V1__CreateDiskRequest req = HOSTMESH__DISK__V1__CREATE_DISK_REQUEST__INIT;
        char shape[16];
        int r;

        r = compose_backend_client(m, m->disk_socket, &m->disk_client);
        if (r < 0)
                return backend_failed(i, m->disk_mode, "Disk provisioning", "diskd", m->disk_socket, "disk", r, NULL);
        req.instance_id = i->id;
        req.shape = (char *) shape_to_string(&i->shape, shape, sizeof(shape));
        r = rpc_client_call_async(m->disk_client, "/hostmesh.disk.v1.Disk/CreateDisk", NULL, &req.base,
                                  &hostmesh__disk__v1__create_disk_response__descriptor, BACKEND_TIMEOUT_USEC,
                                  on_disk_created, i);
        if (r < 0)
                return backend_failed(i, m->disk_mode, "Disk provisioning", "diskd", m->disk_socket, "disk", r, NULL);
        i->pending_ops++;
#else
        backend_failed(i, m->disk_mode, "Disk provisioning", "diskd", m->disk_socket, "disk", -EPROTONOSUPPORT, NULL);
#endif
}

#if HAVE_DISK_API
static void on_disk_deleted(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        char *id = userdata;

        (void) response;
        if (r < 0 && r != -ENOENT)
                log_struct(LOG_WARNING, r, NULL, "Failed to delete disk %s: %s, ignoring", id,
                           status && status->message ? status->message : strerror(-r));
        free(id);
}
#endif

void compose_delete_disk(Manager *m, const char *instance_id, const char *disk_id) {
#if HAVE_DISK_API
        Hostmesh__Disk__V1__DeleteDiskRequest req = HOSTMESH__DISK__V1__DELETE_DISK_REQUEST__INIT;
        char *id = strdup(disk_id);
        int r;

        if (!id)
                return;
        r = compose_backend_client(m, m->disk_socket, &m->disk_client);
        req.disk_id = id;
        if (r >= 0)
                r = rpc_client_call_async(m->disk_client, "/hostmesh.disk.v1.Disk/DeleteDisk", NULL, &req.base,
                                          &hostmesh__disk__v1__delete_disk_response__descriptor, BACKEND_TIMEOUT_USEC,
                                          on_disk_deleted, id);
        if (r < 0) {
                log_struct(LOG_WARNING, r, NULL,
                           "Instance %s: cannot delete disk %s: %m, ignoring", instance_id, disk_id);
                free(id);
        }
#else
        (void) m;
        (void) instance_id;
        (void) disk_id;
#endif
}

#if HAVE_IDENTITY_API
static void on_token_issued(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        Instance *i = userdata;
        Manager *m = i->manager;
        const Hostmesh__Identity__V1__IssueInstanceTokenResponse *resp = (const void *) response;

        i->pending_ops--;
        if (r >= 0 && (isempty(resp->token) || strlen(resp->token) > 16 * 1024))
                r = -EBADMSG;
        if (r < 0)
                backend_failed(i, m->token_mode, "Instance token", "identityd", m->identity_socket, "token", r, status);
        else {
                char *subject = NULL;
                if (asprintf(&subject, "%s/%s", i->tenant ?: m->config.tenant, i->id) < 0)
                        subject = NULL;
                if (i->state != INSTANCE_CREATING) {
                        if (subject)
                                compose_revoke_token(m, i->id, subject);
                        free(subject);
                } else {
                        i->token = strdup(resp->token);
                        i->token_subject = subject;
                        if (!i->token || !subject)
                                manager_instance_fail(i, "Out of memory");
                }
        }
        manager_instance_continue(i);
}
#endif

void compose_issue_token(Manager *m, Instance *i) {
#if HAVE_IDENTITY_API
        Hostmesh__Identity__V1__IssueInstanceTokenRequest req = HOSTMESH__IDENTITY__V1__ISSUE_INSTANCE_TOKEN_REQUEST__INIT;
        char *audience[] = { m->config.token_audience };
        Google__Protobuf__Duration duration = GOOGLE__PROTOBUF__DURATION__INIT;
        uint64_t now, lifetime;
        struct timespec ts;
        int r;

        r = compose_backend_client(m, m->identity_socket, &m->identity_client);
        if (r < 0)
                return backend_failed(i, m->token_mode, "Instance token", "identityd", m->identity_socket, "token", r,
                                      NULL);
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        /* The token lives as long as the instance (it is revoked at destroy). */
        lifetime = i->deadline_usec > now ? i->deadline_usec - now : USEC_PER_SEC;
        duration.seconds = (int64_t) ((lifetime + USEC_PER_SEC - 1) / USEC_PER_SEC);
        req.tenant_id = i->tenant ?: m->config.tenant;
        req.instance_id = i->id;
        req.n_audience = 1;
        req.audience = audience;
        req.duration = &duration;
        r = rpc_client_call_async(m->identity_client, "/hostmesh.identity.v1.Identity/IssueInstanceToken", NULL,
                                  &req.base, &hostmesh__identity__v1__issue_instance_token_response__descriptor,
                                  BACKEND_TIMEOUT_USEC, on_token_issued, i);
        if (r < 0)
                return backend_failed(i, m->token_mode, "Instance token", "identityd", m->identity_socket, "token", r,
                                      NULL);
        i->pending_ops++;
#else
        backend_failed(i, m->token_mode, "Instance token", "identityd", m->identity_socket, "token", -EPROTONOSUPPORT,
                       NULL);
#endif
}

#if HAVE_IDENTITY_API
static void on_token_revoked(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        char *subject = userdata;

        (void) response;
        if (r < 0)
                log_warning("Failed to revoke the tokens of %s: %s, ignoring", subject,
                            status && status->message ? status->message : strerror(-r));
        free(subject);
}
#endif

void compose_revoke_token(Manager *m, const char *instance_id, const char *subject) {
#if HAVE_IDENTITY_API
        Hostmesh__Identity__V1__RevokeSubjectRequest req = HOSTMESH__IDENTITY__V1__REVOKE_SUBJECT_REQUEST__INIT;
        char *s = strdup(subject);
        int r;

        if (!s)
                return;
        r = compose_backend_client(m, m->identity_socket, &m->identity_client);
        req.subject = s;
        if (r >= 0)
                r = rpc_client_call_async(m->identity_client, "/hostmesh.identity.v1.Identity/RevokeSubject", NULL,
                                          &req.base, &hostmesh__identity__v1__revoke_subject_response__descriptor,
                                          BACKEND_TIMEOUT_USEC, on_token_revoked, s);
        if (r < 0) {
                log_struct(LOG_WARNING, r, NULL,
                           "Instance %s: cannot revoke its token: %m, ignoring", instance_id);
                free(s);
        }
#else
        (void) m;
        (void) instance_id;
        (void) subject;
#endif
}

/* ---- dnsd: instance names ------------------------------------------------ */

static void on_record_added(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        Instance *i = userdata;
        Manager *m = i->manager;

        (void) response;
        i->pending_ops--;
        if (r < 0) {
                free(i->dns_name);
                i->dns_name = NULL;
                backend_failed(i, m->dns_mode, "Instance name", "dnsd", m->dns_socket, "dns", r, status);
        } else if (i->state != INSTANCE_CREATING)
                compose_remove_record(m, i->id, i->dns_name); /* destroyed meanwhile */
        else
                log_struct(LOG_INFO, 0, FIELDS(i->log_field), "Instance %s: %s → %s in dnsd.", i->id, i->dns_name,
                           i->address);
        manager_instance_continue(i);
}

static int add_record(Manager *m, Instance *i, RpcDoneCallback cb, void *userdata) {
        Hostmesh__Dns__V1__AddRecordRequest req = HOSTMESH__DNS__V1__ADD_RECORD_REQUEST__INIT;
        int r;

        r = compose_backend_client(m, m->dns_socket, &m->dns_client);
        if (r < 0)
                return r;
        req.name = i->dns_name;
        req.type = (char *) "A";
        req.value = i->address;
        req.ttl = INSTANCE_RECORD_TTL;
        return rpc_client_call_async(m->dns_client, "/hostmesh.dns.v1.Dns/AddRecord", NULL, &req.base,
                                     &hostmesh__dns__v1__add_record_response__descriptor, BACKEND_TIMEOUT_USEC, cb,
                                     userdata);
}

void compose_add_record(Manager *m, Instance *i) {
        int r;

        free(i->dns_name);
        if (asprintf(&i->dns_name, "%s.%s", i->id, m->config.dns_zone) < 0) {
                i->dns_name = NULL;
                return manager_instance_fail(i, "Out of memory");
        }
        r = add_record(m, i, on_record_added, i);
        if (r < 0) {
                free(i->dns_name);
                i->dns_name = NULL;
                return backend_failed(i, m->dns_mode, "Instance name", "dnsd", m->dns_socket, "dns", r, NULL);
        }
        i->pending_ops++;
}

static void on_record_refreshed(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        char *name = userdata;

        (void) response;
        if (r < 0)
                log_warning("Failed to register %s in dnsd again: %s, ignoring", name,
                            status && status->message ? status->message : strerror(-r));
        free(name);
}

void compose_refresh_record(Manager *m, Instance *i) {
        char *name = strdup(i->dns_name);
        int r;

        if (!name)
                return;
        r = add_record(m, i, on_record_refreshed, name);
        if (r < 0) {
                log_struct(LOG_WARNING, r, FIELDS(i->log_field), "Instance %s: cannot register %s in dnsd: %m, ignoring",
                           i->id, name);
                free(name);
        }
}

static void on_record_removed(int r, const ProtobufCMessage *response, const RpcStatus *status, void *userdata) {
        char *name = userdata;

        (void) response;
        if (r < 0 && r != -ENOENT)
                log_warning("Failed to remove %s from dnsd: %s, ignoring", name,
                            status && status->message ? status->message : strerror(-r));
        free(name);
}

void compose_remove_record(Manager *m, const char *instance_id, const char *name) {
        Hostmesh__Dns__V1__RemoveRecordRequest req = HOSTMESH__DNS__V1__REMOVE_RECORD_REQUEST__INIT;
        char *n = strdup(name);
        int r;

        if (!n)
                return;
        r = compose_backend_client(m, m->dns_socket, &m->dns_client);
        req.name = n;
        req.type = (char *) "A";
        if (r >= 0)
                r = rpc_client_call_async(m->dns_client, "/hostmesh.dns.v1.Dns/RemoveRecord", NULL, &req.base,
                                          &hostmesh__dns__v1__remove_record_response__descriptor,
                                          BACKEND_TIMEOUT_USEC, on_record_removed, n);
        if (r < 0) {
                log_struct(LOG_WARNING, r, NULL, "Instance %s: cannot remove %s from dnsd: %m, ignoring", instance_id,
                           name);
                free(n);
        }
}
