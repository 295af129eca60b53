/* SPDX-License-Identifier: MIT */
#pragma once

/* Who may call the gateway: local callers by peer uid/gid; bearer-token
 * callers (TCP) only the public API plus what [gateway] bearer_allow lists. */

#include <stdbool.h>

#include "rpc.h"

typedef struct Manager Manager;

/* Resolves allow_users/allow_groups from the config into ids (names are
 * looked up once at start). The group "hostmesh" is allowed by default when
 * it exists. */
int gateway_auth_resolve(Manager *m);
/* 0 when the caller may proceed, -EPERM otherwise. */
int gateway_auth_check(Manager *m, const RpcPeer *peer);

/* What bearer-token callers may always call, for messages. */
extern const char gateway_auth_public_api[];
/* Checks the shape of every [gateway] bearer_allow entry; -EINVAL (logged,
 * naming the entry) when one is unusable. */
int gateway_auth_check_bearer_allow(Manager *m);
/* 0 when a bearer-token caller may call `method` ("/pkg.Service/Method"),
 * -EPERM otherwise. */
int gateway_auth_bearer_method(Manager *m, const char *method);
