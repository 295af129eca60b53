/* SPDX-License-Identifier: MIT */
#pragma once

/* Collects the Prometheus text of every part (each sample labelled
 * part="<name>") asynchronously, then calls `done` on the loop. */

#include <jansson.h>

typedef struct Manager Manager;

/* text: the merged exposition; errors: {"part": "reason"} for parts that
 * could not be asked (borrowed, valid during the callback). */
typedef void (*GatewayMetricsDone)(const char *text, json_t *errors, void *userdata);
int gateway_metrics_collect(Manager *m, const char *only_part, GatewayMetricsDone done, void *userdata);
