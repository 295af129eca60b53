/* SPDX-License-Identifier: MIT */
#include <jansson.h>
#include <sqlite3.h>

#include "macro.h"
#include "vmm-store.h"
#include "vmm-containers.h"

struct Store {
        sqlite3 *db;
        sqlite3_stmt *save;
};

static const char schema[] =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS instances ("
        " id TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, vcpu INTEGER, memory_gb INTEGER,"
        " purpose TEXT, labels TEXT, creator TEXT, created INTEGER, deadline INTEGER, destroyed INTEGER,"
        " pid INTEGER, machine TEXT, accel TEXT, disk_id TEXT, disk_path TEXT, disk_format TEXT,"
        " disk_bytes INTEGER, token_subject TEXT, cgroup TEXT, guest_kernel_usec INTEGER,"
        " guest_init_usec INTEGER, ready_usec INTEGER);";

/* Columns added after the first schema, appended so that positional
 * INSERT and SELECT * keep working on databases made before them. */
static const char *const added_columns[] = {
        "tenant TEXT", "address TEXT", "tap TEXT", "dns_name TEXT", "accel_reason TEXT", "events TEXT",
        "boot_phases TEXT",
        "containers TEXT",
};

static int sqlite_error(int rc) {
        switch (rc) {
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_READONLY:
        case SQLITE_PERM:
                return -EACCES;
        default:
                return -EIO;
        }
}

int store_open(const char *path, Store **ret) {
        Store *s;
        int rc;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(s->db, schema, NULL, NULL, NULL);
        for (size_t k = 0; rc == SQLITE_OK && k < ELEMENTSOF(added_columns); k++) {
                _cleanup_free_ char *sql = NULL;
                if (asprintf(&sql, "ALTER TABLE instances ADD COLUMN %s", added_columns[k]) < 0) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                /* "duplicate column name" when the database has it already. */
                (void) sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(
                        s->db,
                        "INSERT OR REPLACE INTO instances VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        -1, &s->save, NULL);
        if (rc != SQLITE_OK) {
                store_free(s);
                return sqlite_error(rc);
        }
        *ret = s;
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        sqlite3_finalize(s->save);
        sqlite3_close(s->db);
        free(s);
        return NULL;
}

static char *events_to_json(const Instance *i) {
        json_t *a = json_array();
        char *s;

        if (!a)
                return NULL;
        for (size_t k = 0; k < i->n_events; k++)
                json_array_append_new(a, json_string(i->events[k]));
        s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        return s;
}

static int events_from_json(Instance *i, const char *text) {
        json_t *a, *v;
        size_t k;

        if (!text)
                return 0;
        a = json_loads(text, 0, NULL);
        if (!json_is_array(a)) {
                json_decref(a);
                return 0; /* a damaged list of events is not worth losing the instance */
        }
        i->events = calloc(json_array_size(a) + 1, sizeof(char *));
        if (!i->events) {
                json_decref(a);
                return -ENOMEM;
        }
        json_array_foreach(a, k, v)
                if (json_is_string(v) && (i->events[i->n_events] = strdup(json_string_value(v))))
                        i->n_events++;
        json_decref(a);
        return 0;
}

/* The boot phases beyond the first schema's two guest times, as one JSON
 * object (phase names as nsc -o json describe prints them). */
static const char *const guest_phase_names[_AGENT_PHASE_MAX] = {
        [AGENT_PHASE_MOUNTS] = "mounts",
        [AGENT_PHASE_MODULES] = "modules",
        [AGENT_PHASE_NETWORK] = "network",
        [AGENT_PHASE_PORT] = "port",
};

static char *boot_phases_to_json(const Instance *i) {
        json_t *o = json_object();
        char *s;

        if (!o)
                return NULL;
        json_object_set_new(o, "qemu", json_integer((json_int_t) i->boot_qemu_usec));
        json_object_set_new(o, "first_command", json_integer((json_int_t) i->first_command_usec));
        json_object_set_new(o, "known", json_boolean(i->guest_phases_known));
        if (i->guest_kernel)
                json_object_set_new(o, "kernel", json_string(i->guest_kernel));
        for (size_t k = 0; k < _AGENT_PHASE_MAX; k++)
                json_object_set_new(o, guest_phase_names[k], json_integer((json_int_t) i->guest_phase_usec[k]));
        s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        return s;
}

static uint64_t json_usec(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);

        return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t) json_integer_value(v) : 0;
}

static int boot_phases_from_json(Instance *i, const char *text) {
        json_t *o = text ? json_loads(text, 0, NULL) : NULL, *kernel;

        if (!json_is_object(o)) {
                json_decref(o);
                return 0; /* from before the phases, or damaged: shown as unknown */
        }
        i->boot_qemu_usec = json_usec(o, "qemu");
        i->first_command_usec = json_usec(o, "first_command");
        i->guest_phases_known = json_is_true(json_object_get(o, "known"));
        for (size_t k = 0; k < _AGENT_PHASE_MAX; k++)
                i->guest_phase_usec[k] = json_usec(o, guest_phase_names[k]);
        kernel = json_object_get(o, "kernel");
        if (json_is_string(kernel) && !(i->guest_kernel = strdup(json_string_value(kernel)))) {
                json_decref(o);
                return -ENOMEM;
        }
        json_decref(o);
        return 0;
}

static char *labels_to_json(const Instance *i) {
        json_t *o = json_object();
        char *s;

        if (!o)
                return NULL;
        for (size_t k = 0; k < i->n_labels; k++)
                json_object_set_new(o, i->label_names[k], json_string(i->label_values[k]));
        s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        return s;
}

int store_save(Store *s, const Instance *i) {
        _cleanup_free_ char *labels = labels_to_json(i), *events = events_to_json(i),
                            *phases = boot_phases_to_json(i), *containers = vmm_containers_to_json(i);
        sqlite3_stmt *st = s->save;
        int n = 1, rc;

        if (!labels || !events || !phases || !containers)
                return -ENOMEM;
        sqlite3_reset(st);
        sqlite3_bind_text(st, n++, i->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, instance_state_to_string(i->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->reason, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, n++, (int) i->shape.vcpu);
        sqlite3_bind_int(st, n++, (int) i->shape.memory_gb);
        sqlite3_bind_text(st, n++, i->purpose, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, labels, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->creator, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->created_usec);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->deadline_usec);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->destroyed_usec);
        sqlite3_bind_int64(st, n++, i->pid);
        sqlite3_bind_text(st, n++, i->machine, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->accel, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->disk_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->disk_path, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->disk_format, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->disk_bytes);
        sqlite3_bind_text(st, n++, i->token_subject, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->cgroup, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->guest_kernel_usec);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->guest_init_usec);
        sqlite3_bind_int64(st, n++, (sqlite3_int64) i->ready_usec);
        sqlite3_bind_text(st, n++, i->tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->address, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->tap, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->dns_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, i->accel_reason, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, events, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, phases, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, n++, containers, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc == SQLITE_DONE ? 0 : sqlite_error(rc);
}

int store_delete(Store *s, const char *id) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(s->db, "DELETE FROM instances WHERE id = ?", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(rc);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? 0 : sqlite_error(rc);
}

static int dup_column(sqlite3_stmt *st, int col, char **ret) {
        const unsigned char *t = sqlite3_column_text(st, col);

        *ret = NULL;
        if (!t)
                return 0;
        *ret = strdup((const char *) t);
        return *ret ? 0 : -ENOMEM;
}

static int labels_from_json(Instance *i, const char *text) {
        json_t *o = text ? json_loads(text, 0, NULL) : NULL, *v;
        const char *k;
        size_t n;

        if (!json_is_object(o)) {
                json_decref(o);
                return 0;
        }
        n = json_object_size(o);
        i->label_names = calloc(n + 1, sizeof(char *));
        i->label_values = calloc(n + 1, sizeof(char *));
        if (!i->label_names || !i->label_values) {
                json_decref(o);
                return -ENOMEM;
        }
        json_object_foreach(o, k, v) {
                if (!json_is_string(v))
                        continue;
                i->label_names[i->n_labels] = strdup(k);
                i->label_values[i->n_labels] = strdup(json_string_value(v));
                i->n_labels++;
        }
        json_decref(o);
        return 0;
}

int store_load(Store *s, Manager *m, int (*cb)(Instance *i, void *userdata), void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, r = 0;

        rc = sqlite3_prepare_v2(s->db, "SELECT * FROM instances ORDER BY created", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(rc);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                Instance *i = instance_new(m, (const char *) sqlite3_column_text(st, 0));
                int c = 1;

                if (!i) {
                        r = -ENOMEM;
                        break;
                }
                i->state = instance_state_from_string((const char *) sqlite3_column_text(st, c++));
                if (i->state < 0)
                        i->state = INSTANCE_ERROR;
                r = dup_column(st, c++, &i->reason);
                i->shape.vcpu = (unsigned) sqlite3_column_int(st, c++);
                i->shape.memory_gb = (unsigned) sqlite3_column_int(st, c++);
                r = r ?: dup_column(st, c++, &i->purpose);
                r = r ?: labels_from_json(i, (const char *) sqlite3_column_text(st, c++));
                r = r ?: dup_column(st, c++, &i->creator);
                i->created_usec = (uint64_t) sqlite3_column_int64(st, c++);
                i->deadline_usec = (uint64_t) sqlite3_column_int64(st, c++);
                i->destroyed_usec = (uint64_t) sqlite3_column_int64(st, c++);
                i->pid = (pid_t) sqlite3_column_int64(st, c++);
                r = r ?: dup_column(st, c++, &i->machine);
                r = r ?: dup_column(st, c++, &i->accel);
                r = r ?: dup_column(st, c++, &i->disk_id);
                r = r ?: dup_column(st, c++, &i->disk_path);
                r = r ?: dup_column(st, c++, &i->disk_format);
                i->disk_bytes = (uint64_t) sqlite3_column_int64(st, c++);
                r = r ?: dup_column(st, c++, &i->token_subject);
                r = r ?: dup_column(st, c++, &i->cgroup);
                i->guest_kernel_usec = (uint64_t) sqlite3_column_int64(st, c++);
                i->guest_init_usec = (uint64_t) sqlite3_column_int64(st, c++);
                i->ready_usec = (uint64_t) sqlite3_column_int64(st, c++);
                r = r ?: dup_column(st, c++, &i->tenant);
                r = r ?: dup_column(st, c++, &i->address);
                r = r ?: dup_column(st, c++, &i->tap);
                r = r ?: dup_column(st, c++, &i->dns_name);
                r = r ?: dup_column(st, c++, &i->accel_reason);
                r = r ?: events_from_json(i, (const char *) sqlite3_column_text(st, c++));
                r = r ?: boot_phases_from_json(i, (const char *) sqlite3_column_text(st, c++));
                r = r ?: vmm_containers_from_json(i, (const char *) sqlite3_column_text(st, c++));
                if (r < 0) {
                        instance_free(i);
                        break;
                }
                r = cb(i, userdata);
                if (r < 0)
                        break;
        }
        sqlite3_finalize(st);
        if (r < 0)
                return r;
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sqlite_error(rc);
}
