/* SPDX-License-Identifier: MIT */
#pragma once

/* Composition with the other hostmesh services, over their unix sockets:
 * a disk from diskd, the instance token from identityd. Each is optional
 * by config ([vmm] disk=, token=): when the backend is unreachable, an
 * optional one is skipped with a warning and a required one puts the
 * instance in ERROR with the reason. */

typedef struct Manager Manager;
typedef struct Instance Instance;
typedef struct RpcClient RpcClient;

/* The client of a backend's socket, made on first use. */
int compose_backend_client(Manager *m, const char *socket, RpcClient **client);

/* Start the call (i->pending_ops counts it) and continue the create
 * pipeline from the answer. */
void compose_create_disk(Manager *m, Instance *i);
void compose_issue_token(Manager *m, Instance *i);
/* <id>.<zone> → the instance's address in dnsd's local records. */
void compose_add_record(Manager *m, Instance *i);
/* Fire and forget, failures are logged. */
void compose_delete_disk(Manager *m, const char *instance_id, const char *disk_id);
void compose_revoke_token(Manager *m, const char *instance_id, const char *subject);
void compose_remove_record(Manager *m, const char *instance_id, const char *name);
/* Adds the record again (dnsd keeps local records in memory only). */
void compose_refresh_record(Manager *m, Instance *i);
