/* SPDX-License-Identifier: MIT */
#pragma once

/* Per-instance logs: the serial console and the workload's stdout/stderr,
 * as lines "USEC STREAM CONTENT" in a file in the instance's directory.
 * Bounded: when the file passes half the limit it becomes log.1 (the old
 * log.1 is dropped), so both together stay under the limit. Followers get
 * every complete line as it is written. */

#include <stddef.h>
#include <stdint.h>

typedef struct InstanceLog InstanceLog;

typedef void (*InstanceLogLine)(uint64_t usec, const char *stream, const char *line, void *userdata);

int instance_log_open(const char *dir, uint64_t max_bytes, InstanceLog **ret);
InstanceLog *instance_log_free(InstanceLog *l);
/* Appends output of one stream ("console", "stdout", "stderr"); partial
 * lines are kept until their newline arrives (or 4 KiB). */
void instance_log_append(InstanceLog *l, const char *stream, const void *data, size_t size);
/* Flushes partial lines (at the end of a command or of the VM). */
void instance_log_flush(InstanceLog *l);
void instance_log_set_follower(InstanceLog *l, InstanceLogLine cb, void *userdata);
/* Replays what is stored, oldest first. */
int instance_log_replay(const char *dir, InstanceLogLine cb, void *userdata);
/* The last max_lines lines of one stream, joined with '\n' (malloc'ed). */
char *instance_log_tail(const char *dir, const char *stream, size_t max_lines);
/* Replaces bytes that are not valid UTF-8 (and control characters other
 * than tab) with '?', in place: log lines go into protobuf strings. */
void utf8_sanitize(char *s, size_t len);
