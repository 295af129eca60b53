/* SPDX-License-Identifier: MIT */
#include <sys/socket.h>
#include <sys/un.h>

#include "macro.h"
#include "vmm-agent.h"

#define AGENT_OUT_MAX (8 * 1024 * 1024)

struct AgentConn {
        int fd;
        sd_event_source *io;
        uint8_t in[AGENT_HEADER_SIZE + AGENT_PAYLOAD_MAX];
        size_t in_size;
        uint8_t *out;
        size_t out_size;
        const AgentCallbacks *cb;
        void *userdata;
        bool above_low_water;   /* tell cb->writable when the queue drains */
};

static void agent_close(AgentConn *a, int error) {
        a->io = sd_event_source_disable_unref(a->io);
        a->fd = safe_close(a->fd);
        if (a->cb->disconnected)
                a->cb->disconnected(a, error, a->userdata);
}

static int agent_flush(AgentConn *a) {
        while (a->out_size > 0) {
                ssize_t n = send(a->fd, a->out, a->out_size, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                memmove(a->out, a->out + n, a->out_size - (size_t) n);
                a->out_size -= (size_t) n;
        }
        return sd_event_source_set_io_events(a->io, EPOLLIN | (a->out_size > 0 ? EPOLLOUT : 0));
}

/* Returns false when the connection was closed (callbacks may free a). */
static bool agent_dispatch(AgentConn *a, const AgentFrame *f) {
        int32_t v;
        int r = 0;

        switch (f->type) {
        case AGENT_READY: {
                AgentReady ready = {};
                r = agent_ready_decode(f, &ready);
                if (r >= 0 && a->cb->ready)
                        a->cb->ready(a, &ready, a->userdata);
                agent_ready_done(&ready);
                break;
        }
        case AGENT_TOKEN_ACK:
                r = agent_int_decode(f, &v);
                if (r >= 0 && a->cb->token_ack)
                        a->cb->token_ack(a, v, a->userdata);
                break;
        case AGENT_STDOUT:
        case AGENT_STDERR:
                if (a->cb->output)
                        a->cb->output(a, f->id, f->type, f->payload, f->length, a->userdata);
                break;
        case AGENT_EXIT:
                r = agent_int_decode(f, &v);
                if (r >= 0 && a->cb->exit)
                        a->cb->exit(a, f->id, v, a->userdata);
                break;
        case AGENT_IMAGE_PULL: {
                char *ref = NULL;
                /* A malformed frame ends the channel like any other; a
                 * well-formed one naming no reference is answered. */
                r = agent_image_pull_decode(f, &ref);
                if (r == -EINVAL)
                        r = 0;
                if (r >= 0 && a->cb->image_pull)
                        a->cb->image_pull(a, f->id, ref, a->userdata);
                free(ref);
                break;
        }
        case AGENT_CONTAINER_STATE: {
                char *state = NULL;
                r = agent_string_decode(f, &state);
                if (r >= 0 && strlen(state) > 1024)
                        r = -EBADMSG;
                if (r >= 0 && a->cb->container_state)
                        a->cb->container_state(a, f->id, state, a->userdata);
                free(state);
                break;
        }
        default:
                /* Host-bound frame types only: anything else is a broken guest. */
                r = -EBADMSG;
        }
        if (r < 0) {
                agent_close(a, r);
                return false;
        }
        return true;
}

static int agent_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AgentConn *a = userdata;
        ssize_t n;
        int r;

        (void) s;
        if (revents & EPOLLOUT) {
                r = agent_flush(a);
                if (r < 0) {
                        agent_close(a, r);
                        return 0;
                }
                /* Only from here, never from agent_conn_send(): a bulk
                 * sender refilling from inside its own send would recurse. */
                if (a->above_low_water && a->out_size < AGENT_CONN_LOW_WATER) {
                        a->above_low_water = false;
                        if (a->cb->writable)
                                a->cb->writable(a, a->userdata);
                        if (a->fd < 0)
                                return 0;
                }
        }
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;
        n = read(fd, a->in + a->in_size, sizeof(a->in) - a->in_size);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                agent_close(a, n < 0 ? -errno : -ECONNRESET);
                return 0;
        }
        a->in_size += (size_t) n;
        for (;;) {
                AgentFrame f;
                size_t used;

                r = agent_frame_decode(a->in, a->in_size, &f, &used);
                if (r < 0) {
                        agent_close(a, r);
                        return 0;
                }
                if (r == 0)
                        return 0;
                /* Callbacks may send; the frame stays valid until memmove. */
                if (!agent_dispatch(a, &f))
                        return 0;
                memmove(a->in, a->in + used, a->in_size - used);
                a->in_size -= used;
        }
}

int agent_conn_connect(sd_event *e, const char *path, const AgentCallbacks *cb, void *userdata, AgentConn **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        AgentConn *a;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->cb = cb;
        a->userdata = userdata;
        a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (a->fd < 0) {
                r = -errno;
                goto fail;
        }
        if (connect(a->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(e, &a->io, a->fd, EPOLLIN, agent_on_io, a);
        if (r < 0)
                goto fail;
        *ret = a;
        return 0;
fail:
        a->cb = &(const AgentCallbacks){};
        agent_conn_free(a);
        return r;
}

AgentConn *agent_conn_free(AgentConn *a) {
        if (!a)
                return NULL;
        a->io = sd_event_source_disable_unref(a->io);
        safe_close(a->fd);
        free(a->out);
        free(a);
        return NULL;
}

int agent_conn_send(AgentConn *a, const AgentBuffer *b) {
        uint8_t *o;
        int r;

        if (!a || a->fd < 0)
                return -ENOTCONN;
        if (b->oom)
                return -ENOMEM;
        if (a->out_size + b->size > AGENT_OUT_MAX)
                return -ENOBUFS;
        o = realloc(a->out, a->out_size + b->size);
        if (!o)
                return -ENOMEM;
        a->out = o;
        memcpy(a->out + a->out_size, b->data, b->size);
        a->out_size += b->size;
        r = agent_flush(a);
        if (a->out_size >= AGENT_CONN_LOW_WATER)
                a->above_low_water = true;
        return r;
}

size_t agent_conn_queued(const AgentConn *a) {
        return a && a->fd >= 0 ? a->out_size : 0;
}
