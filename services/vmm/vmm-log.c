/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/uio.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "macro.h"
#include "vmm-log.h"

#define LINE_MAX_BYTES 4096
#define N_STREAMS 3

static const char *const stream_names[N_STREAMS] = { "console", "stdout", "stderr" };

struct InstanceLog {
        char *path, *path_old;
        int fd;
        uint64_t size, max_bytes;
        char partial[N_STREAMS][LINE_MAX_BYTES];
        size_t partial_size[N_STREAMS];
        InstanceLogLine follower;
        void *follower_userdata;
};

static uint64_t now_realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

void utf8_sanitize(char *s, size_t len) {
        size_t i = 0;

        while (i < len) {
                unsigned char c = (unsigned char) s[i];
                size_t n;

                if (c < 0x80) {
                        if ((c < 0x20 && c != '\t') || c == 0x7f)
                                s[i] = '?';
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1;
                else if (c >= 0xe0 && c <= 0xef)
                        n = 2;
                else if (c >= 0xf0 && c <= 0xf4)
                        n = 3;
                else {
                        s[i++] = '?';
                        continue;
                }
                bool ok = i + n < len;
                for (size_t k = 1; ok && k <= n; k++)
                        if (i + k >= len || ((unsigned char) s[i + k] & 0xc0) != 0x80)
                                ok = false;
                /* Overlong and surrogate forms. */
                if (ok && c == 0xe0 && (unsigned char) s[i + 1] < 0xa0)
                        ok = false;
                if (ok && c == 0xed && (unsigned char) s[i + 1] > 0x9f)
                        ok = false;
                if (ok && c == 0xf0 && (unsigned char) s[i + 1] < 0x90)
                        ok = false;
                if (ok && c == 0xf4 && (unsigned char) s[i + 1] > 0x8f)
                        ok = false;
                if (!ok) {
                        s[i++] = '?';
                        continue;
                }
                i += n + 1;
        }
}

int instance_log_open(const char *dir, uint64_t max_bytes, InstanceLog **ret) {
        InstanceLog *l;
        struct stat st;

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->max_bytes = MAX(max_bytes, (uint64_t) 64 * 1024);
        if (asprintf(&l->path, "%s/log", dir) < 0 || asprintf(&l->path_old, "%s/log.1", dir) < 0) {
                free(l->path);
                free(l);
                return -ENOMEM;
        }
        l->fd = open(l->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (l->fd < 0) {
                int r = -errno;
                instance_log_free(l);
                return r;
        }
        if (fstat(l->fd, &st) >= 0)
                l->size = (uint64_t) st.st_size;
        *ret = l;
        return 0;
}

InstanceLog *instance_log_free(InstanceLog *l) {
        if (!l)
                return NULL;
        instance_log_flush(l);
        safe_close(l->fd);
        free(l->path);
        free(l->path_old);
        free(l);
        return NULL;
}

void instance_log_set_follower(InstanceLog *l, InstanceLogLine cb, void *userdata) {
        l->follower = cb;
        l->follower_userdata = userdata;
}

static void log_write_line(InstanceLog *l, const char *stream, char *line, size_t len) {
        uint64_t usec = now_realtime_usec();
        char head[48];
        int hl;

        utf8_sanitize(line, len);
        line[len] = 0;
        hl = snprintf(head, sizeof(head), "%" PRIu64 " %s ", usec, stream);
        if (l->size + (uint64_t) hl + len + 1 > l->max_bytes / 2) {
                /* Rotate: log → log.1, start a new log. */
                (void) rename(l->path, l->path_old);
                safe_close(l->fd);
                l->fd = open(l->path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0640);
                l->size = 0;
        }
        if (l->fd >= 0) {
                struct iovec iov[3] = {
                        { head, (size_t) hl },
                        { line, len },
                        { (char *) "\n", 1 },
                };
                ssize_t n = writev(l->fd, iov, 3);
                if (n > 0)
                        l->size += (uint64_t) n;
        }
        if (l->follower)
                l->follower(usec, stream, line, l->follower_userdata);
}

static int stream_index(const char *stream) {
        for (int i = 0; i < N_STREAMS; i++)
                if (streq(stream, stream_names[i]))
                        return i;
        return -1;
}

void instance_log_append(InstanceLog *l, const char *stream, const void *data, size_t size) {
        int s = stream_index(stream);
        const char *p = data;

        if (!l || s < 0)
                return;
        for (size_t i = 0; i < size; i++) {
                char c = p[i];

                if (c == '\r')
                        continue;
                if (c == '\n' || l->partial_size[s] >= LINE_MAX_BYTES - 1) {
                        log_write_line(l, stream_names[s], l->partial[s], l->partial_size[s]);
                        l->partial_size[s] = 0;
                        if (c == '\n')
                                continue;
                }
                l->partial[s][l->partial_size[s]++] = c;
        }
}

void instance_log_flush(InstanceLog *l) {
        if (!l)
                return;
        for (int s = 0; s < N_STREAMS; s++)
                if (l->partial_size[s] > 0) {
                        log_write_line(l, stream_names[s], l->partial[s], l->partial_size[s]);
                        l->partial_size[s] = 0;
                }
}

static int replay_file(const char *path, InstanceLogLine cb, void *userdata) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        ssize_t n;

        f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : -errno;
        while ((n = getline(&line, &cap, f)) > 0) {
                char *stream, *content, *end;
                uint64_t usec;

                if (line[n - 1] == '\n')
                        line[--n] = 0;
                usec = strtoull(line, &end, 10);
                if (*end != ' ')
                        continue;
                stream = end + 1;
                content = strchr(stream, ' ');
                if (!content)
                        continue;
                *content++ = 0;
                cb(usec, stream, content, userdata);
        }
        return 0;
}

int instance_log_replay(const char *dir, InstanceLogLine cb, void *userdata) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        int r;

        if (asprintf(&a, "%s/log.1", dir) < 0 || asprintf(&b, "%s/log", dir) < 0)
                return -ENOMEM;
        r = replay_file(a, cb, userdata);
        if (r < 0)
                return r;
        return replay_file(b, cb, userdata);
}

typedef struct Tail {
        const char *stream;
        char **lines;
        size_t max, next, count;
} Tail;

static void tail_line(uint64_t usec, const char *stream, const char *line, void *userdata) {
        Tail *t = userdata;

        (void) usec;
        if (!streq(stream, t->stream))
                return;
        free(t->lines[t->next]);
        t->lines[t->next] = strdup(line);
        t->next = (t->next + 1) % t->max;
        if (t->count < t->max)
                t->count++;
}

char *instance_log_tail(const char *dir, const char *stream, size_t max_lines) {
        Tail t = { .stream = stream, .max = MAX(max_lines, (size_t) 1) };
        char *out = NULL;
        size_t len = 0;
        FILE *f;

        t.lines = calloc(t.max, sizeof(char *));
        if (!t.lines)
                return NULL;
        (void) instance_log_replay(dir, tail_line, &t);
        f = open_memstream(&out, &len);
        if (f) {
                size_t start = (t.next + t.max - t.count) % t.max;
                for (size_t i = 0; i < t.count; i++) {
                        const char *s = t.lines[(start + i) % t.max];
                        fprintf(f, "%s%s", i ? "\n" : "", s ?: "");
                }
                fclose(f);
        }
        for (size_t i = 0; i < t.max; i++)
                free(t.lines[i]);
        free(t.lines);
        return out;
}
