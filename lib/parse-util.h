/* SPDX-License-Identifier: MIT */
#pragma once

/* Safe parsing of numbers, durations, sizes and booleans: whole string
 * consumed, range checked, negative errno on failure (-EINVAL malformed,
 * -ERANGE out of range). */

#include <stdbool.h>
#include <stdint.h>

/* The value of one hex digit (either case), or -1. */
int unhexchar(char c);

int safe_atou64(const char *s, uint64_t *ret);
int safe_atou32(const char *s, uint32_t *ret);
int safe_atoi64(const char *s, int64_t *ret);
int safe_atoi32(const char *s, int32_t *ret);
/* Parses an integer and checks min <= v <= max. */
int parse_range_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* "1h30m", "10m", "90s", "250ms", "2d", bare number = seconds → microseconds. */
int parse_usec(const char *s, uint64_t *ret);
/* Formats microseconds as the shortest exact duration ("1h30m", "250ms", "0"). */
char *format_usec(uint64_t usec);

/* "64G", "512M", "4096", "1.5G" (binary units K/M/G/T, optional "iB"/"B") → bytes. */
int parse_size(const char *s, uint64_t *ret);
/* Formats bytes with the largest binary unit that divides them exactly
 * ("64G", "1536M", "4097"), so that parse_size() reads back the same value. */
char *format_size(uint64_t bytes);

/* yes/no, true/false, on/off, 1/0. */
int parse_boolean(const char *s, bool *ret);

/* "host:port", "[v6]:port", "host" (default_port) → numeric sockaddr, no DNS. */
struct sockaddr_storage;
int parse_sockaddr(const char *s, uint16_t default_port, struct sockaddr_storage *ret, unsigned *ret_len);

/* "a.b.c.d/n" → network (host bits must be zero) and prefix length. */
struct in_addr;
int parse_ipv4_prefix(const char *s, struct in_addr *ret_network, unsigned *ret_prefixlen);
