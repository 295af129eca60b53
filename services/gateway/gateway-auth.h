/* SPDX-License-Identifier: MIT */
#pragma once

/* Who may call the gateway: local callers by peer uid/gid. */

#include <stdbool.h>

#include "rpc.h"

typedef struct Manager Manager;

/* Resolves allow_users/allow_groups from the config into ids (names are
 * looked up once at start). The group "hostmesh" is allowed by default when
 * it exists. */
int gateway_auth_resolve(Manager *m);
/* 0 when the caller may proceed, -EPERM otherwise. */
int gateway_auth_check(Manager *m, const RpcPeer *peer);
