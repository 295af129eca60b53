/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include "macro.h"
#include "vmm-instance.h"
#include "vmm-containers.h"

static const char *const state_names[_INSTANCE_STATE_MAX] = {
        [INSTANCE_PENDING] = "PENDING",       [INSTANCE_CREATING] = "CREATING",
        [INSTANCE_RUNNING] = "RUNNING",       [INSTANCE_DESTROYING] = "DESTROYING",
        [INSTANCE_DESTROYED] = "DESTROYED",   [INSTANCE_ERROR] = "ERROR",
};

const char *instance_state_to_string(InstanceState s) {
        if (s < 0 || s >= _INSTANCE_STATE_MAX)
                return "UNKNOWN";
        return state_names[s];
}

InstanceState instance_state_from_string(const char *s) {
        for (int i = 0; i < _INSTANCE_STATE_MAX; i++)
                if (s && streq(s, state_names[i]))
                        return (InstanceState) i;
        return _INSTANCE_STATE_INVALID;
}

bool instance_state_transition_allowed(InstanceState from, InstanceState to) {
        if (from == to)
                return false;
        switch (from) {
        case INSTANCE_PENDING:
                return to == INSTANCE_CREATING || to == INSTANCE_DESTROYING || to == INSTANCE_ERROR;
        case INSTANCE_CREATING:
                return to == INSTANCE_RUNNING || to == INSTANCE_DESTROYING || to == INSTANCE_ERROR;
        case INSTANCE_RUNNING:
                return to == INSTANCE_DESTROYING || to == INSTANCE_ERROR;
        case INSTANCE_DESTROYING:
                return to == INSTANCE_DESTROYED || to == INSTANCE_ERROR;
        default:
                return false;
        }
}

bool instance_state_is_final(InstanceState s) {
        return s == INSTANCE_DESTROYED || s == INSTANCE_ERROR;
}

bool instance_state_is_active(InstanceState s) {
        return s == INSTANCE_PENDING || s == INSTANCE_CREATING || s == INSTANCE_RUNNING;
}

Instance *instance_new(Manager *m, const char *id) {
        Instance *i = calloc(1, sizeof(*i));

        if (!i)
                return NULL;
        i->manager = m;
        i->pidfd = -EBADF;
        i->console_fd = -EBADF;
        i->tap_fd = -EBADF;
        i->next_exec_id = 1;
        i->id = strdup(id);
        if (!i->id || asprintf(&i->log_field, "INSTANCE_ID=%s", id) < 0) {
                free(i->id);
                free(i);
                return NULL;
        }
        return i;
}

static void strv_free_n(char **l, size_t n) {
        for (size_t k = 0; l && k < n; k++)
                free(l[k]);
        free(l);
}

/* Frees the object only; the manager has released what it holds
 * (timers, QEMU connections, calls) before. */
Instance *instance_free(Instance *i) {
        if (!i)
                return NULL;
        free(i->id);
        free(i->log_field);
        free(i->reason);
        free(i->purpose);
        strv_free_n(i->label_names, i->n_labels);
        strv_free_n(i->label_values, i->n_labels);
        free(i->creator);
        free(i->dir);
        free(i->run_dir);
        free(i->machine);
        free(i->accel);
        free(i->accel_reason);
        free(i->guest_kernel);
        strv_free_n(i->events, i->n_events);
        free(i->disk_id);
        i->containers = vmm_container_free_all(i->containers, i->n_containers);
        free(i->disk_path);
        free(i->disk_format);
        if (i->token)
                explicit_bzero(i->token, strlen(i->token));
        free(i->token);
        free(i->token_subject);
        free(i->cgroup);
        free(i->tenant);
        free(i->address);
        free(i->tap);
        free(i->dns_name);
        safe_close(i->tap_fd);
        free(i);
        return NULL;
}

int instance_set_reason(Instance *i, const char *reason) {
        char *r = reason ? strdup(reason) : NULL;

        if (reason && !r)
                return -ENOMEM;
        free(i->reason);
        i->reason = r;
        return 0;
}

#define INSTANCE_EVENTS_MAX 32

int instance_add_event(Instance *i, const char *format, ...) {
        _cleanup_free_ char *what = NULL;
        char stamp[32], *e, **l;
        struct tm tm;
        time_t now = time(NULL);
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&what, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        if (asprintf(&e, "%s %s", stamp, what) < 0)
                return -ENOMEM;
        if (i->n_events >= INSTANCE_EVENTS_MAX) {
                /* Keep the first (how it started) and the latest ones. */
                free(i->events[1]);
                memmove(i->events + 1, i->events + 2, (i->n_events - 2) * sizeof(char *));
                i->n_events--;
        }
        l = realloc(i->events, (i->n_events + 1) * sizeof(char *));
        if (!l) {
                free(e);
                return -ENOMEM;
        }
        i->events = l;
        i->events[i->n_events++] = e;
        return 0;
}

/* 20 characters of lowercase base32: 100 bits, a valid DNS label and file
 * name. */
int instance_generate_id(char **ret) {
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
        uint8_t rnd[20];
        char *id;

        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                return -EIO;
        id = malloc(sizeof(rnd) + 1);
        if (!id)
                return -ENOMEM;
        for (size_t k = 0; k < sizeof(rnd); k++)
                id[k] = alphabet[rnd[k] & 31];
        id[sizeof(rnd)] = 0;
        /* Start with a letter so that it is a valid hostname everywhere. */
        if (id[0] >= '2' && id[0] <= '7')
                id[0] = 'i';
        *ret = id;
        return 0;
}
