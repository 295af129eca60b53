/* SPDX-License-Identifier: MIT */
#include "config.h"
#include "disk-containers.h"
#include "disk-grpc.h"
#include "disk-manager.h"
#include "disk-ops.h"
#include "disk-work.h"
#include "fs-util.h"
#include "log.h"
#include "paths.h"

static const ConfigItem config_table[] = {
        DAEMON_RPC_CONFIG_ITEMS(DiskConfig, rpc),
        CONFIG_ITEM("disk", "pool", config_type_string, DiskConfig, pool,
                    "Directory holding the disks and base images (default: <state dir>/pool)"),
        CONFIG_ITEM("disk", "reserve", config_type_size, DiskConfig, reserve,
                    "Free space that disk creation never eats into"),
        CONFIG_ITEM("disk", "overcommit_ratio", config_type_double, DiskConfig, overcommit_ratio,
                    "Disks' virtual sizes may total the pool's capacity times this"),
        CONFIG_ITEM("disk", "max_disks", config_type_uint32, DiskConfig, max_disks, "Most disks the pool holds"),
        CONFIG_ITEM("disk", "large_shape_tenants", config_type_strv, DiskConfig, large_shape_tenants,
                    "Tenants allowed shapes above 64 GB of memory (\"*\" = everyone)"),
        CONFIG_ITEM("disk", "image_source_dirs", config_type_strv, DiskConfig, image_source_dirs,
                    "Directories AddImage and ImportImage may read sources from (empty = anywhere)"),
        CONFIG_ITEM("disk", "max_image_bytes", config_type_size, DiskConfig, max_image_bytes,
                    "Most file bytes one container image may unpack to (tar bombs are refused)"),
        CONFIG_ITEM("disk", "max_image_entries", config_type_uint32, DiskConfig, max_image_entries,
                    "Most tar entries one container image may hold"),
};

void disk_config_defaults(DiskConfig *c) {
        *c = (DiskConfig){
                .rpc = { .name = "disk", .idle_exit_usec = 60 * USEC_PER_SEC },
                .reserve = 1ULL << 30,
                .overcommit_ratio = 4.0,
                .max_disks = 4096,
                .max_image_bytes = 16ULL << 30,
                .max_image_entries = 1000000,
        };
}

int manager_new(const DaemonArgs *args, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        disk_config_defaults(&m->config);

        r = daemon_load_config(args, config_table, ELEMENTSOF(config_table), &m->config);
        if (r < 0)
                return r;

        m->state_dir = hostmesh_state_dir("disk");
        if (!m->state_dir)
                return log_error_errno(-ENOMEM, "Out of memory.");
        if (!m->config.pool) {
                m->config.pool = path_join(m->state_dir, "pool");
                if (!m->config.pool)
                        return log_error_errno(-ENOMEM, "Out of memory.");
        } else if (m->config.pool[0] != '/')
                return log_error_errno(-EINVAL, "pool = %s in disk.conf must be an absolute path.", m->config.pool);

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        work_cancel_all(m);
        container_jobs_free(m);
        rpc_server_free(m->server);
        rpc_loop_free(m->rpc_loop);
        sd_event_unref(m->event);
        store_free(m->store);
        pool_free(m->pool);
        free(m->state_dir);
        config_done(config_table, ELEMENTSOF(config_table), &m->config);
        free(m);
        return NULL;
}

void manager_print_config(Manager *m, FILE *f) {
        config_print(config_table, ELEMENTSOF(config_table), &m->config, f);
}

int manager_open_state(Manager *m) {
        _cleanup_free_ char *db = NULL;
        int r;

        r = mkdir_p(m->state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the state directory %s: %m", m->state_dir);
        db = path_join(m->state_dir, "disk.db");
        if (!db)
                return log_error_errno(-ENOMEM, "Out of memory.");
        r = store_open(db, &m->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the state database %s: %m", db);
        r = pool_open(m->config.pool, &m->pool);
        if (r < 0)
                return log_error_errno(r, "Failed to open the pool %s: %m", m->config.pool);
        log_info("Pool %s on %s: %s.", m->pool->path, m->pool->fs_name,
                 m->pool->reflink ? "reflink clones of raw base images" : "qcow2 overlays on base images (no reflink)");
        r = disk_recover(m);
        if (r < 0)
                return log_error_errno(r, "Failed to reconcile the pool with its records: %m");
        r = container_recover(m);
        if (r < 0)
                log_warning_errno(r, "Failed to collect unused container images: %m, ignoring.");
        return 0;
}

int manager_start(Manager *m) {
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        r = rpc_loop_new(m->event, &m->rpc_loop);
        if (r < 0)
                return log_error_errno(r, "Failed to start the rpc loop: %m");
        r = rpc_server_new(m->rpc_loop, &m->config.rpc, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to create the rpc server: %m");
        m->metrics = rpc_server_metrics(m->server);
        r = manager_open_state(m);
        if (r < 0)
                return r;
        r = disk_grpc_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to register methods: %m");
        r = rpc_server_start(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to start serving: %m");
        return 0;
}

int manager_run(Manager *m) {
        return sd_event_loop(m->event);
}
