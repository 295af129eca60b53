/* SPDX-License-Identifier: MIT */
#pragma once

/* Errors that carry words for a person: a negative errno for the code, and
 * a message saying what went wrong and what to do. */

#include "macro.h"

/* Replaces *ret_error (when ret_error is not NULL) with the formatted
 * message and returns r, so that a caller writes
 * `return error_set(ret_error, -EINVAL, "...", ...);`. */
int error_set(char **ret_error, int r, const char *format, ...) _printf_(3, 4);
