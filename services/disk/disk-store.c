/* SPDX-License-Identifier: MIT */
/* SQLite storage for diskd. WAL with synchronous=NORMAL: a commit survives
 * the daemon being killed (the WAL is in the page cache, which the kernel
 * keeps); a power cut may lose the last commits but never corrupts the
 * database, and start-up reconciliation then treats the files those commits
 * described as orphans. */

#include <sqlite3.h>

#include "disk-store.h"

struct Store {
        sqlite3 *db;
};

static const char schema[] =
        "CREATE TABLE IF NOT EXISTS disks ("
        "  id TEXT PRIMARY KEY,"
        "  instance_id TEXT NOT NULL,"
        "  path TEXT NOT NULL UNIQUE,"
        "  format TEXT NOT NULL,"
        "  backend TEXT NOT NULL,"
        "  base_image TEXT NOT NULL,"
        "  backing TEXT NOT NULL,"
        "  size INTEGER NOT NULL,"
        "  created INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS disks_instance ON disks(instance_id);"
        "CREATE INDEX IF NOT EXISTS disks_base ON disks(base_image);"
        "CREATE TABLE IF NOT EXISTS images ("
        "  name TEXT PRIMARY KEY,"
        "  path TEXT NOT NULL,"
        "  format TEXT NOT NULL,"
        "  digest TEXT NOT NULL,"
        "  virtual_size INTEGER NOT NULL,"
        "  file_size INTEGER NOT NULL,"
        "  created INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS containers ("
        "  digest TEXT PRIMARY KEY,"
        "  image TEXT NOT NULL UNIQUE,"
        "  source TEXT NOT NULL,"
        "  content_bytes INTEGER NOT NULL,"
        "  layers INTEGER NOT NULL,"
        "  created INTEGER NOT NULL,"
        "  config TEXT NOT NULL DEFAULT '');"
        "CREATE TABLE IF NOT EXISTS container_refs ("
        "  ref TEXT PRIMARY KEY,"
        "  digest TEXT NOT NULL);"
        "CREATE INDEX IF NOT EXISTS container_refs_digest ON container_refs(digest);"
        "CREATE TABLE IF NOT EXISTS intents ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  op TEXT NOT NULL,"
        "  object TEXT NOT NULL,"
        "  path TEXT NOT NULL,"
        "  started INTEGER NOT NULL DEFAULT (strftime('%s','now')));";

static int sqlite_errno(int rc) {
        switch (rc) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return 0;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
        case SQLITE_PERM:
                return -EROFS;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        default:
                return -EIO;
        }
}

static void finalizep(sqlite3_stmt **st) {
        if (*st)
                sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(finalizep)

int store_open(const char *path, Store **ret) {
        _cleanup_(store_freep) Store *s = NULL;
        int rc;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK)
                return sqlite_errno(rc);
        sqlite3_busy_timeout(s->db, 5000);
        rc = sqlite3_exec(s->db,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", NULL,
                          NULL, NULL);
        if (rc != SQLITE_OK)
                return sqlite_errno(rc);
        rc = sqlite3_exec(s->db, schema, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return sqlite_errno(rc);
        /* Databases from before the image's run config was kept: the column
         * is added, and their images read as having no config. */
        if (sqlite3_exec(s->db, "SELECT config FROM containers LIMIT 0", NULL, NULL, NULL) != SQLITE_OK) {
                rc = sqlite3_exec(s->db, "ALTER TABLE containers ADD COLUMN config TEXT NOT NULL DEFAULT ''", NULL,
                                  NULL, NULL);
                if (rc != SQLITE_OK)
                        return sqlite_errno(rc);
        }
        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        sqlite3_close_v2(s->db);
        free(s);
        return NULL;
}

static int prepare(Store *s, const char *sql, sqlite3_stmt **ret) {
        return sqlite_errno(sqlite3_prepare_v2(s->db, sql, -1, ret, NULL));
}

static int exec(Store *s, const char *sql) {
        return sqlite_errno(sqlite3_exec(s->db, sql, NULL, NULL, NULL));
}

static char *column_strdup(sqlite3_stmt *st, int i) {
        const unsigned char *t = sqlite3_column_text(st, i);
        return strdup(t ? (const char *) t : "");
}

void disk_record_done(DiskRecord *d) {
        free(d->id);
        free(d->instance_id);
        free(d->path);
        free(d->format);
        free(d->backend);
        free(d->base_image);
        free(d->backing);
        *d = (DiskRecord){};
}

void image_record_done(ImageRecord *i) {
        free(i->name);
        free(i->path);
        free(i->format);
        free(i->digest);
        *i = (ImageRecord){};
}

void intent_record_done(IntentRecord *i) {
        free(i->op);
        free(i->object);
        free(i->path);
        *i = (IntentRecord){};
}

void disk_records_free(DiskRecord *d, size_t n) {
        for (size_t i = 0; i < n; i++)
                disk_record_done(&d[i]);
        free(d);
}

void image_records_free(ImageRecord *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                image_record_done(&r[i]);
        free(r);
}

void intent_records_free(IntentRecord *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                intent_record_done(&r[i]);
        free(r);
}

/* ---- intents ---- */

int store_intent_add(Store *s, const char *op, const char *object, const char *path, int64_t *ret_id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "INSERT INTO intents (op, object, path) VALUES (?, ?, ?)", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, op, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, object, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, path, -1, SQLITE_STATIC);
        r = sqlite_errno(sqlite3_step(st));
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = sqlite3_last_insert_rowid(s->db);
        return 0;
}

int store_intent_remove(Store *s, int64_t id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "DELETE FROM intents WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        return sqlite_errno(sqlite3_step(st));
}

int store_intent_list(Store *s, IntentRecord **ret, size_t *ret_n) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        IntentRecord *list = NULL;
        size_t n = 0;
        int r, rc;

        r = prepare(s, "SELECT id, op, object, path FROM intents ORDER BY id", &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                IntentRecord *t = realloc(list, (n + 1) * sizeof(*list));
                if (!t) {
                        intent_records_free(list, n);
                        return -ENOMEM;
                }
                list = t;
                list[n] = (IntentRecord){
                        .id = sqlite3_column_int64(st, 0),
                        .op = column_strdup(st, 1),
                        .object = column_strdup(st, 2),
                        .path = column_strdup(st, 3),
                };
                if (!list[n].op || !list[n].object || !list[n].path) {
                        intent_records_free(list, n + 1);
                        return -ENOMEM;
                }
                n++;
        }
        if (rc != SQLITE_DONE) {
                intent_records_free(list, n);
                return sqlite_errno(rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

/* ---- disks ---- */

#define DISK_COLUMNS "id, instance_id, path, format, backend, base_image, backing, size, created"

static int disk_from_row(sqlite3_stmt *st, DiskRecord *d) {
        *d = (DiskRecord){
                .id = column_strdup(st, 0),
                .instance_id = column_strdup(st, 1),
                .path = column_strdup(st, 2),
                .format = column_strdup(st, 3),
                .backend = column_strdup(st, 4),
                .base_image = column_strdup(st, 5),
                .backing = column_strdup(st, 6),
                .size = (uint64_t) sqlite3_column_int64(st, 7),
                .created = sqlite3_column_int64(st, 8),
        };
        if (!d->id || !d->instance_id || !d->path || !d->format || !d->backend || !d->base_image || !d->backing) {
                disk_record_done(d);
                return -ENOMEM;
        }
        return 0;
}

static int disk_get_one(Store *s, const char *sql, const char *arg, DiskRecord *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return sqlite_errno(rc);
        return disk_from_row(st, ret);
}

int store_disk_get(Store *s, const char *id, DiskRecord *ret) {
        return disk_get_one(s, "SELECT " DISK_COLUMNS " FROM disks WHERE id = ?", id, ret);
}

int store_disk_get_by_instance(Store *s, const char *instance_id, DiskRecord *ret) {
        return disk_get_one(s, "SELECT " DISK_COLUMNS " FROM disks WHERE instance_id = ? ORDER BY created LIMIT 1",
                            instance_id, ret);
}

int store_disk_list(Store *s, const char *instance_id, DiskRecord **ret, size_t *ret_n) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        DiskRecord *list = NULL;
        size_t n = 0;
        int r, rc;

        r = prepare(s,
                    isempty(instance_id) ? "SELECT " DISK_COLUMNS " FROM disks ORDER BY created, id"
                                         : "SELECT " DISK_COLUMNS " FROM disks WHERE instance_id = ? ORDER BY created, id",
                    &st);
        if (r < 0)
                return r;
        if (!isempty(instance_id))
                sqlite3_bind_text(st, 1, instance_id, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                DiskRecord *t = realloc(list, (n + 1) * sizeof(*list));
                if (!t) {
                        disk_records_free(list, n);
                        return -ENOMEM;
                }
                list = t;
                r = disk_from_row(st, &list[n]);
                if (r < 0) {
                        disk_records_free(list, n);
                        return r;
                }
                n++;
        }
        if (rc != SQLITE_DONE) {
                disk_records_free(list, n);
                return sqlite_errno(rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

static int rollback(Store *s, int r) {
        (void) exec(s, "ROLLBACK");
        return r;
}

int store_disk_commit(Store *s, const DiskRecord *d, int64_t intent_id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = exec(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = prepare(s, "INSERT INTO disks (" DISK_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", &st);
        if (r < 0)
                return rollback(s, r);
        sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, d->instance_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, d->path, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, d->format, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, d->backend, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, d->base_image, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, d->backing, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, (int64_t) d->size);
        sqlite3_bind_int64(st, 9, d->created);
        r = sqlite_errno(sqlite3_step(st));
        if (r < 0)
                return rollback(s, r);
        r = store_intent_remove(s, intent_id);
        if (r < 0)
                return rollback(s, r);
        r = exec(s, "COMMIT");
        return r < 0 ? rollback(s, r) : 0;
}

int store_disk_remove(Store *s, const char *id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "DELETE FROM disks WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        r = sqlite_errno(sqlite3_step(st));
        if (r < 0)
                return r;
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

int store_disk_remove_with_intent(Store *s, const char *id, const char *path, int64_t *ret_intent) {
        int r;

        r = exec(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = store_disk_remove(s, id);
        if (r < 0)
                return rollback(s, r);
        r = store_intent_add(s, "delete-disk", id, path, ret_intent);
        if (r < 0)
                return rollback(s, r);
        r = exec(s, "COMMIT");
        return r < 0 ? rollback(s, r) : 0;
}

int store_disk_set_size(Store *s, const char *id, uint64_t size) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "UPDATE disks SET size = ? WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) size);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        return sqlite_errno(sqlite3_step(st));
}

int store_disk_totals(Store *s, uint64_t *ret_virtual, uint64_t *ret_count) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = prepare(s, "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM disks", &st);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return sqlite_errno(rc) ?: -EIO;
        *ret_virtual = (uint64_t) sqlite3_column_int64(st, 0);
        *ret_count = (uint64_t) sqlite3_column_int64(st, 1);
        return 0;
}

/* ---- images ---- */

#define IMAGE_COLUMNS "name, path, format, digest, virtual_size, file_size, created"

static int image_from_row(sqlite3_stmt *st, ImageRecord *i) {
        *i = (ImageRecord){
                .name = column_strdup(st, 0),
                .path = column_strdup(st, 1),
                .format = column_strdup(st, 2),
                .digest = column_strdup(st, 3),
                .virtual_size = (uint64_t) sqlite3_column_int64(st, 4),
                .file_size = (uint64_t) sqlite3_column_int64(st, 5),
                .created = sqlite3_column_int64(st, 6),
        };
        if (!i->name || !i->path || !i->format || !i->digest) {
                image_record_done(i);
                return -ENOMEM;
        }
        return 0;
}

int store_image_get(Store *s, const char *name, ImageRecord *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = prepare(s, "SELECT " IMAGE_COLUMNS " FROM images WHERE name = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return sqlite_errno(rc);
        return image_from_row(st, ret);
}

int store_image_list(Store *s, ImageRecord **ret, size_t *ret_n) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        ImageRecord *list = NULL;
        size_t n = 0;
        int r, rc;

        r = prepare(s, "SELECT " IMAGE_COLUMNS " FROM images ORDER BY name", &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                ImageRecord *t = realloc(list, (n + 1) * sizeof(*list));
                if (!t) {
                        image_records_free(list, n);
                        return -ENOMEM;
                }
                list = t;
                r = image_from_row(st, &list[n]);
                if (r < 0) {
                        image_records_free(list, n);
                        return r;
                }
                n++;
        }
        if (rc != SQLITE_DONE) {
                image_records_free(list, n);
                return sqlite_errno(rc);
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

/* One row of images; the caller holds the transaction. */
static int image_insert(Store *s, const ImageRecord *i) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "INSERT INTO images (" IMAGE_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?)", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, i->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, i->path, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, i->format, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, i->digest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (int64_t) i->virtual_size);
        sqlite3_bind_int64(st, 6, (int64_t) i->file_size);
        sqlite3_bind_int64(st, 7, i->created);
        return sqlite_errno(sqlite3_step(st));
}

int store_image_commit(Store *s, const ImageRecord *i, int64_t intent_id) {
        int r;

        r = exec(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = image_insert(s, i);
        if (r < 0)
                return rollback(s, r);
        r = store_intent_remove(s, intent_id);
        if (r < 0)
                return rollback(s, r);
        r = exec(s, "COMMIT");
        return r < 0 ? rollback(s, r) : 0;
}

int store_image_remove(Store *s, const char *name) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "DELETE FROM images WHERE name = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        r = sqlite_errno(sqlite3_step(st));
        if (r < 0)
                return r;
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

int store_image_users(Store *s, const char *name, uint64_t *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = prepare(s, "SELECT COUNT(*) FROM disks WHERE base_image = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return sqlite_errno(rc) ?: -EIO;
        *ret = (uint64_t) sqlite3_column_int64(st, 0);
        return 0;
}

/* ---- container images ---- */

void container_record_done(ContainerRecord *c) {
        free(c->digest);
        free(c->image);
        free(c->source);
        free(c->path);
        free(c->config);
        strv_free(c->refs);
        *c = (ContainerRecord){};
}

void container_records_free(ContainerRecord *c, size_t n) {
        for (size_t i = 0; i < n; i++)
                container_record_done(&c[i]);
        free(c);
}

static int container_refs_load(Store *s, ContainerRecord *c) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        size_t n = 0;
        int r, rc;

        r = prepare(s, "SELECT ref FROM container_refs WHERE digest = ? ORDER BY ref", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, c->digest, -1, SQLITE_STATIC);
        c->refs = calloc(1, sizeof(char *));
        if (!c->refs)
                return -ENOMEM;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                char **t = realloc(c->refs, (n + 2) * sizeof(char *));
                if (!t)
                        return -ENOMEM;
                c->refs = t;
                c->refs[n] = column_strdup(st, 0);
                c->refs[n + 1] = NULL;
                if (!c->refs[n])
                        return -ENOMEM;
                n++;
        }
        return rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}

#define CONTAINER_SELECT                                                                                      \
        "SELECT c.digest, c.image, c.source, COALESCE(i.path, ''), COALESCE(i.file_size, 0), c.content_bytes, " \
        "c.layers, c.created, c.config FROM containers c LEFT JOIN images i ON i.name = c.image "

static int container_list_where(Store *s, const char *where, const char *arg, ContainerRecord **ret, size_t *ret_n) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_free_ char *sql = NULL;
        ContainerRecord *list = NULL;
        size_t n = 0;
        int r, rc;

        if (asprintf(&sql, CONTAINER_SELECT "%s ORDER BY c.created, c.digest", where) < 0)
                return -ENOMEM;
        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        if (arg)
                sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                ContainerRecord *t = realloc(list, (n + 1) * sizeof(*list));
                if (!t) {
                        container_records_free(list, n);
                        return -ENOMEM;
                }
                list = t;
                list[n] = (ContainerRecord){
                        .digest = column_strdup(st, 0),
                        .image = column_strdup(st, 1),
                        .source = column_strdup(st, 2),
                        .path = column_strdup(st, 3),
                        .file_size = (uint64_t) sqlite3_column_int64(st, 4),
                        .content_bytes = (uint64_t) sqlite3_column_int64(st, 5),
                        .layers = (uint64_t) sqlite3_column_int64(st, 6),
                        .created = sqlite3_column_int64(st, 7),
                        .config = column_strdup(st, 8),
                };
                n++;
                if (!list[n - 1].digest || !list[n - 1].image || !list[n - 1].source || !list[n - 1].path ||
                    !list[n - 1].config) {
                        container_records_free(list, n);
                        return -ENOMEM;
                }
        }
        if (rc != SQLITE_DONE) {
                container_records_free(list, n);
                return sqlite_errno(rc);
        }
        for (size_t i = 0; i < n; i++) {
                r = container_refs_load(s, &list[i]);
                if (r < 0) {
                        container_records_free(list, n);
                        return r;
                }
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int store_container_get(Store *s, const char *digest, ContainerRecord *ret) {
        ContainerRecord *list = NULL;
        size_t n = 0;
        int r;

        r = container_list_where(s, "WHERE c.digest = ?", digest, &list, &n);
        if (r < 0)
                return r;
        if (n == 0) {
                free(list);
                return -ENOENT;
        }
        *ret = list[0];
        for (size_t i = 1; i < n; i++)
                container_record_done(&list[i]);
        free(list);
        return 0;
}

int store_container_list(Store *s, ContainerRecord **ret, size_t *ret_n) {
        return container_list_where(s, "", NULL, ret, ret_n);
}

int store_container_unreferenced(Store *s, ContainerRecord **ret, size_t *ret_n) {
        return container_list_where(s,
                                    "WHERE NOT EXISTS (SELECT 1 FROM container_refs r WHERE r.digest = c.digest) "
                                    "AND NOT EXISTS (SELECT 1 FROM disks d WHERE d.base_image = c.image)",
                                    NULL, ret, ret_n);
}

int store_ref_resolve(Store *s, const char *ref, char **ret_digest) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = prepare(s, "SELECT digest FROM container_refs WHERE ref = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, ref, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return sqlite_errno(rc);
        *ret_digest = column_strdup(st, 0);
        return *ret_digest ? 0 : -ENOMEM;
}

int store_ref_set(Store *s, const char *ref, const char *digest) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "INSERT OR REPLACE INTO container_refs (ref, digest) VALUES (?, ?)", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, ref, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, digest, -1, SQLITE_STATIC);
        return sqlite_errno(sqlite3_step(st));
}

int store_ref_remove(Store *s, const char *ref_or_digest) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, "DELETE FROM container_refs WHERE ref = ?1 OR digest = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, ref_or_digest, -1, SQLITE_STATIC);
        r = sqlite_errno(sqlite3_step(st));
        if (r < 0)
                return r;
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

int store_container_commit(Store *s, const ImageRecord *i, const ContainerRecord *c, const char *ref,
                           int64_t intent_id) {
        _cleanup_stmt_ sqlite3_stmt *st2 = NULL;
        int r;

        r = exec(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = image_insert(s, i);
        if (r < 0)
                return rollback(s, r);
        r = prepare(s, "INSERT INTO containers (digest, image, source, content_bytes, layers, created, config) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", &st2);
        if (r < 0)
                return rollback(s, r);
        sqlite3_bind_text(st2, 1, c->digest, -1, SQLITE_STATIC);
        sqlite3_bind_text(st2, 2, c->image, -1, SQLITE_STATIC);
        sqlite3_bind_text(st2, 3, c->source, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st2, 4, (int64_t) c->content_bytes);
        sqlite3_bind_int64(st2, 5, (int64_t) c->layers);
        sqlite3_bind_int64(st2, 6, c->created);
        sqlite3_bind_text(st2, 7, c->config ?: "", -1, SQLITE_STATIC);
        r = sqlite_errno(sqlite3_step(st2));
        if (r >= 0)
                r = store_ref_set(s, ref, c->digest);
        if (r >= 0)
                r = store_intent_remove(s, intent_id);
        if (r < 0)
                return rollback(s, r);
        r = exec(s, "COMMIT");
        return r < 0 ? rollback(s, r) : 0;
}

int store_container_remove_with_intent(Store *s, const ContainerRecord *c, int64_t *ret_intent) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = exec(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = prepare(s, "DELETE FROM containers WHERE digest = ?", &st);
        if (r < 0)
                return rollback(s, r);
        sqlite3_bind_text(st, 1, c->digest, -1, SQLITE_STATIC);
        r = sqlite_errno(sqlite3_step(st));
        if (r >= 0) {
                r = store_image_remove(s, c->image);
                if (r == -ENOENT)
                        r = 0;
        }
        if (r >= 0)
                r = store_intent_add(s, "remove-image", c->image, c->path, ret_intent);
        if (r < 0)
                return rollback(s, r);
        r = exec(s, "COMMIT");
        return r < 0 ? rollback(s, r) : 0;
}

int store_container_prune(Store *s) {
        return exec(s, "DELETE FROM containers WHERE image NOT IN (SELECT name FROM images)");
}
