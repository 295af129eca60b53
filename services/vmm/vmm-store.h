/* SPDX-License-Identifier: MIT */
#pragma once

/* Instances persisted in SQLite (WAL): everything needed to re-attach to
 * a running VM after vmmd restarts, and the history of finished ones. The
 * instance token is never stored. */

#include "vmm-instance.h"

typedef struct Store Store;

int store_open(const char *path, Store **ret);
Store *store_free(Store *s);
int store_save(Store *s, const Instance *i);
int store_delete(Store *s, const char *id);
/* Calls cb for every stored instance (a new Instance owned by cb). */
int store_load(Store *s, Manager *m, int (*cb)(Instance *i, void *userdata), void *userdata);
