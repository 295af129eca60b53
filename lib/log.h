/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging: journald native protocol with structured fields when running
 * under systemd (JOURNAL_STREAM set or journald socket reachable and
 * INVOCATION_ID set), plain stderr otherwise. Library code does not log
 * errors; it returns them and the service logs once, with context. */

#include <syslog.h>
#include "macro.h"

void log_setup(const char *identifier);
void log_set_max_level(int level);
int log_get_max_level(void);
int log_parse_level(const char *s); /* "debug", "info", ... → LOG_*, or -EINVAL */

/* Logs at `level`; `fields` is NULL or a NULL-terminated list of
 * "KEY=value" strings sent to journald as structured fields (and appended
 * as key=value to stderr lines). Returns -abs(error) when error != 0 so that
 * callers can `return log_error_errno(r, ...)`. */
int log_internal(int level, int error, const char *const *fields, const char *file, int line,
                 const char *func, const char *format, ...) _printf_(7, 8);

#define log_full_errno_fields(level, error, fields, ...) \
        log_internal(level, error, fields, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_full_errno(level, error, ...) log_full_errno_fields(level, error, NULL, __VA_ARGS__)

#define log_debug(...)   log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)  log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(e, ...)   log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...)    log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, e, __VA_ARGS__)

/* With structured fields: log_struct(LOG_INFO, 0, FIELDS("INSTANCE_ID=abc"), "Created %s", id); */
#define FIELDS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define log_struct(level, error, fields, ...) log_full_errno_fields(level, error, fields, __VA_ARGS__)
