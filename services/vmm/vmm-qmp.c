/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "macro.h"
#include "vmm-qmp.h"

typedef struct QmpPending {
        uint64_t id;
        char *command;          /* not yet sent while negotiating */
        QmpReplyCallback cb;
        void *userdata;
        struct QmpPending *next;
} QmpPending;

struct QmpClient {
        int fd;
        sd_event_source *io;
        char *buf;
        size_t size;
        bool negotiated;
        uint64_t next_id;
        QmpPending *pending;     /* in order of issue */
        QmpEventCallback on_event;
        QmpDisconnectCallback on_disconnect;
        void *userdata;
};

int qmp_message_parse(const char *line, size_t len, QmpMessage *ret) {
        json_t *root, *v;
        QmpMessage m = {};

        root = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
        if (!root)
                return -EBADMSG;
        if (!json_is_object(root))
                goto bad;
        m.root = root;
        v = json_object_get(root, "id");
        if (v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0)
                        goto bad;
                m.has_id = true;
                m.id = (uint64_t) json_integer_value(v);
        }
        if ((v = json_object_get(root, "QMP"))) {
                if (!json_is_object(v))
                        goto bad;
                m.type = QMP_MESSAGE_GREETING;
        } else if ((v = json_object_get(root, "return"))) {
                m.type = QMP_MESSAGE_RETURN;
                m.value = v;
        } else if ((v = json_object_get(root, "error"))) {
                json_t *cls = json_object_get(v, "class"), *desc = json_object_get(v, "desc");

                if (!json_is_object(v) || !json_is_string(cls) || !json_is_string(desc))
                        goto bad;
                m.type = QMP_MESSAGE_ERROR;
                m.error_class = json_string_value(cls);
                m.error_desc = json_string_value(desc);
        } else if ((v = json_object_get(root, "event"))) {
                if (!json_is_string(v))
                        goto bad;
                m.type = QMP_MESSAGE_EVENT;
                m.event = json_string_value(v);
                m.value = json_object_get(root, "data");
        } else
                goto bad;
        *ret = m;
        return 0;
bad:
        json_decref(root);
        return -EBADMSG;
}

void qmp_message_done(QmpMessage *m) {
        json_decref(m->root);
        *m = (QmpMessage){};
}

static int qmp_send(QmpClient *q, const char *command, uint64_t id) {
        _cleanup_free_ char *line = NULL;
        ssize_t n;
        int len;

        len = asprintf(&line, "{\"execute\":\"%s\",\"id\":%llu}\r\n", command, (unsigned long long) id);
        if (len < 0)
                return -ENOMEM;
        /* Commands are tiny; a full socket buffer here means QEMU is stuck. */
        n = send(q->fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
                return -errno;
        if (n != len)
                return -EAGAIN;
        return 0;
}

static void qmp_fail_all(QmpClient *q) {
        while (q->pending) {
                QmpPending *p = q->pending;
                q->pending = p->next;
                if (p->cb)
                        p->cb(q, -ECONNRESET, NULL, "QMP connection closed", p->userdata);
                free(p->command);
                free(p);
        }
}

static void qmp_disconnect(QmpClient *q) {
        q->io = sd_event_source_disable_unref(q->io);
        q->fd = safe_close(q->fd);
        qmp_fail_all(q);
        if (q->on_disconnect)
                q->on_disconnect(q, q->userdata);
}

static void qmp_handle(QmpClient *q, QmpMessage *m) {
        switch (m->type) {
        case QMP_MESSAGE_GREETING:
                if (!q->negotiated)
                        (void) qmp_send(q, "qmp_capabilities", 0);
                return;
        case QMP_MESSAGE_EVENT:
                if (q->on_event)
                        q->on_event(q, m->event, m->value, q->userdata);
                return;
        case QMP_MESSAGE_RETURN:
        case QMP_MESSAGE_ERROR:
                if (m->has_id && m->id == 0) {
                        /* The reply to qmp_capabilities: send what was queued. */
                        q->negotiated = true;
                        for (QmpPending *p = q->pending; p; p = p->next)
                                if (p->command) {
                                        (void) qmp_send(q, p->command, p->id);
                                        free(p->command);
                                        p->command = NULL;
                                }
                        return;
                }
                for (QmpPending **pp = &q->pending; *pp; pp = &(*pp)->next) {
                        QmpPending *p = *pp;
                        if (!m->has_id || p->id != m->id)
                                continue;
                        *pp = p->next;
                        if (p->cb)
                                p->cb(q, m->type == QMP_MESSAGE_ERROR ? -EIO : 0, m->value, m->error_desc,
                                      p->userdata);
                        free(p->command);
                        free(p);
                        return;
                }
        }
}

static int qmp_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        QmpClient *q = userdata;
        char *nl;
        ssize_t n;

        (void) s;
        (void) revents;
        if (q->size >= QMP_LINE_MAX) {
                qmp_disconnect(q);
                return 0;
        }
        char *b = realloc(q->buf, QMP_LINE_MAX + 1);
        if (!b)
                return 0;
        q->buf = b;
        n = read(fd, q->buf + q->size, QMP_LINE_MAX - q->size);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                qmp_disconnect(q);
                return 0;
        }
        q->size += (size_t) n;
        while ((nl = memchr(q->buf, '\n', q->size))) {
                size_t len = (size_t) (nl - q->buf) + 1;
                QmpMessage m;

                if (qmp_message_parse(q->buf, len, &m) >= 0) {
                        qmp_handle(q, &m);
                        qmp_message_done(&m);
                }
                memmove(q->buf, q->buf + len, q->size - len);
                q->size -= len;
                if (q->fd < 0)
                        return 0;
        }
        return 0;
}

int qmp_client_connect(sd_event *e, const char *path, QmpEventCallback on_event,
                       QmpDisconnectCallback on_disconnect, void *userdata, QmpClient **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        QmpClient *q;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        *q = (QmpClient){ .next_id = 1, .on_event = on_event, .on_disconnect = on_disconnect, .userdata = userdata };
        q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (q->fd < 0) {
                r = -errno;
                goto fail;
        }
        if (connect(q->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(e, &q->io, q->fd, EPOLLIN, qmp_on_io, q);
        if (r < 0)
                goto fail;
        *ret = q;
        return 0;
fail:
        qmp_client_free(q);
        return r;
}

QmpClient *qmp_client_free(QmpClient *q) {
        if (!q)
                return NULL;
        q->on_disconnect = NULL;
        q->io = sd_event_source_disable_unref(q->io);
        q->fd = safe_close(q->fd);
        qmp_fail_all(q);
        free(q->buf);
        free(q);
        return NULL;
}

bool qmp_client_is_ready(QmpClient *q) {
        return q && q->fd >= 0 && q->negotiated;
}

int qmp_client_execute(QmpClient *q, const char *command, QmpReplyCallback cb, void *userdata) {
        QmpPending *p, **tail;
        int r;

        if (!q || q->fd < 0)
                return -ENOTCONN;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (QmpPending){ .id = q->next_id++, .cb = cb, .userdata = userdata };
        if (!q->negotiated) {
                p->command = strdup(command);
                if (!p->command) {
                        free(p);
                        return -ENOMEM;
                }
        } else {
                r = qmp_send(q, command, p->id);
                if (r < 0) {
                        free(p);
                        return r;
                }
        }
        for (tail = &q->pending; *tail; tail = &(*tail)->next)
                ;
        *tail = p;
        return 0;
}
