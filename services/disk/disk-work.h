/* SPDX-License-Identifier: MIT */
#pragma once

/* Slow file work (copying images, mkfs, digests) on worker threads, so that
 * the loop keeps serving and the watchdog keeps getting pinged. A work item
 * touches files only; its completion runs on the loop, where the records
 * are written. */

#include <stdbool.h>

typedef struct Manager Manager;
typedef struct Work Work;

typedef void (*WorkRun)(void *data);                                   /* worker thread */
typedef void (*WorkComplete)(Manager *m, void *data, bool cancelled);  /* loop */

/* Starts `run` on a new thread; `complete` follows on the loop. On failure
 * nothing was started and `complete` is never called. */
int work_start(Manager *m, WorkRun run, WorkComplete complete, void *data);
/* Shutdown: waits for every running item and completes it as cancelled. */
void work_cancel_all(Manager *m);
