/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "macro.h"
#include "paths.h"

const char *const hostmesh_parts[HOSTMESH_PARTS_MAX] = {
        "identity", "dns", "disk", "vmm", "dockerproxy", "gateway",
};

static const char *env_or(const char *name, const char *def) {
        const char *e = getenv(name);
        return isempty(e) ? def : e;
}

const char *hostmesh_runtime_dir(void) {
        return env_or("HOSTMESH_RUNTIME_DIR", "/run/hostmesh");
}

static char *joinf(const char *a, const char *b, const char *suffix) {
        char *p;
        if (asprintf(&p, "%s/%s%s", a, b, suffix) < 0)
                return NULL;
        return p;
}

char *hostmesh_socket_path(const char *part) {
        return joinf(hostmesh_runtime_dir(), part, ".sock");
}

char *hostmesh_state_dir(const char *part) {
        /* systemd's StateDirectory= passes the exact directory. */
        const char *sd = getenv("STATE_DIRECTORY");
        if (!isempty(sd) && !getenv("HOSTMESH_STATE_DIR"))
                return strdup(sd);
        return joinf(env_or("HOSTMESH_STATE_DIR", "/var/lib/hostmesh"), part, "");
}

char *hostmesh_config_path(const char *part) {
        return joinf(env_or("HOSTMESH_CONFIG_DIR", "/etc/hostmesh"), part, ".conf");
}
