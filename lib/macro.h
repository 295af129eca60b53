/* SPDX-License-Identifier: MIT */
#pragma once

/* Small building blocks every hostmesh file uses: cleanup attributes,
 * ownership hand-off, array sizes. Modelled on systemd's macro.h. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand ownership of a pointer or fd to someone else: returns the value and
 * resets the variable so that its cleanup attribute does nothing. */
#define TAKE_PTR(p)                         \
        ({                                  \
                __typeof__(p) _tp_ = (p);   \
                (p) = NULL;                 \
                _tp_;                       \
        })
#define TAKE_FD(fd)                         \
        ({                                  \
                int _tf_ = (fd);            \
                (fd) = -EBADF;              \
                _tf_;                       \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd) {
        *fd = safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Declares a cleanup helper `<func>p` for a type whose destructor is `func`
 * and returns NULL (our destructors accept NULL and return NULL). */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)         \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        *p = func(*p);                  \
        }

/* Same for destructors returning void (third-party types). */
#define DEFINE_VOID_CLEANUP_FUNC(type, func)            \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        func(*p);                       \
        }

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)
#define isempty(s) (!(s) || !*(s))

/* Returns a negative errno from errno, never 0: the pattern for wrapping
 * libc calls that signal failure with -1. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

#define USEC_PER_SEC  1000000ULL
#define USEC_PER_MSEC 1000ULL
#define NSEC_PER_USEC 1000ULL

/* CLOCK_MONOTONIC in microseconds: for durations. */
static inline uint64_t monotonic_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}
#define NSEC_PER_SEC  1000000000ULL

/* NULL-terminated string arrays. */
static inline char **strv_free(char **v) {
        if (v)
                for (char **i = v; *i; i++)
                        free(*i);
        free(v);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
static inline size_t strv_length(char *const *v) {
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}
