/* SPDX-License-Identifier: MIT */
/* The bridge between gRPC core's completion queue and the daemon's sd-event
 * loop. One thread blocks in grpc_completion_queue_next() and appends each
 * event to a queue; an eventfd wakes the loop, which runs the tags' callbacks.
 * So every callback, and every handler, runs on the loop thread: daemon state
 * has exactly one owner and needs no locks. */

#include <pthread.h>
#include <sys/eventfd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "log.h"
#include "rpc-internal.h"
#include "rpc-raw.h"

typedef struct RpcEvent {
        RpcTag *tag;
        bool ok;
} RpcEvent;

struct RpcLoop {
        sd_event *event;
        sd_event_source *wake_source;
        grpc_completion_queue *cq;
        pthread_t thread;
        bool thread_started;
        int wake_fd;

        pthread_mutex_t lock;
        pthread_cond_t cond;       /* signalled on every push, for rpc_loop_run_until() */
        RpcEvent *queue;
        size_t n_queue, queue_size;
        bool thread_done;
};

static void loop_push(RpcLoop *l, RpcTag *tag, bool ok) {
        bool wake;

        pthread_mutex_lock(&l->lock);
        if (l->n_queue == l->queue_size) {
                size_t n = l->queue_size ? l->queue_size * 2 : 256;
                RpcEvent *q = realloc(l->queue, n * sizeof(RpcEvent));
                if (!q) {
                        /* Nothing sane is left to do: a lost completion would hang a call. */
                        log_error("Out of memory queueing a gRPC completion, aborting.");
                        abort();
                }
                l->queue = q;
                l->queue_size = n;
        }
        wake = l->n_queue == 0;
        l->queue[l->n_queue++] = (RpcEvent){ tag, ok };
        pthread_cond_signal(&l->cond);
        pthread_mutex_unlock(&l->lock);

        if (wake) {
                uint64_t one = 1;
                (void) !write(l->wake_fd, &one, sizeof(one));
        }
}

static void *cq_thread(void *userdata) {
        RpcLoop *l = userdata;

        for (;;) {
                grpc_event ev = grpc_completion_queue_next(l->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                RpcTag *tag;

                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        break;
                if (ev.type != GRPC_OP_COMPLETE)
                        continue;
                tag = ev.tag;
                if (tag->run_inline)
                        tag->fn(tag, ev.success != 0);
                else
                        loop_push(l, tag, ev.success != 0);
        }

        pthread_mutex_lock(&l->lock);
        l->thread_done = true;
        pthread_cond_signal(&l->cond);
        pthread_mutex_unlock(&l->lock);
        return NULL;
}

/* Runs every queued completion. Events queued while we run wait for the next
 * round, so that a busy queue cannot starve the rest of the loop. */
static void dispatch(RpcLoop *l) {
        RpcEvent *batch;
        size_t n;

        pthread_mutex_lock(&l->lock);
        batch = l->queue;
        n = l->n_queue;
        l->queue = NULL;
        l->n_queue = l->queue_size = 0;
        pthread_mutex_unlock(&l->lock);

        for (size_t i = 0; i < n; i++)
                batch[i].tag->fn(batch[i].tag, batch[i].ok);
        free(batch);
}

static int on_wake(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        RpcLoop *l = userdata;
        uint64_t v;

        (void) s;
        (void) revents;
        (void) !read(fd, &v, sizeof(v));
        dispatch(l);
        return 0;
}

int rpc_loop_new(sd_event *event, RpcLoop **ret) {
        RpcLoop *l;
        int r;

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->wake_fd = -EBADF;
        pthread_mutex_init(&l->lock, NULL);
        pthread_cond_init(&l->cond, NULL);
        l->event = sd_event_ref(event);

        l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->wake_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(event, &l->wake_source, l->wake_fd, EPOLLIN, on_wake, l);
        if (r < 0)
                goto fail;

        grpc_init();
        l->cq = grpc_completion_queue_create_for_next(NULL);
        if (pthread_create(&l->thread, NULL, cq_thread, l) != 0) {
                r = -EAGAIN;
                goto fail;
        }
        l->thread_started = true;
        *ret = l;
        return 0;

fail:
        rpc_loop_free(l);
        return r;
}

RpcLoop *rpc_loop_free(RpcLoop *l) {
        if (!l)
                return NULL;
        if (l->cq) {
                grpc_completion_queue_shutdown(l->cq);
                if (l->thread_started)
                        pthread_join(l->thread, NULL);
                /* Completions that arrived after the loop stopped still own
                 * memory (request slots, calls): run them now. */
                dispatch(l);
                grpc_completion_queue_destroy(l->cq);
                grpc_shutdown();
        }
        sd_event_source_disable_unref(l->wake_source);
        safe_close(l->wake_fd);
        sd_event_unref(l->event);
        free(l->queue);
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->cond);
        free(l);
        return NULL;
}

sd_event *rpc_loop_event(RpcLoop *l) {
        return l->event;
}

grpc_completion_queue *rpc_loop_cq(RpcLoop *l) {
        return l->cq;
}

void rpc_loop_run_until(RpcLoop *l, const bool *done) {
        while (!*done) {
                pthread_mutex_lock(&l->lock);
                while (l->n_queue == 0 && !l->thread_done)
                        pthread_cond_wait(&l->cond, &l->lock);
                bool empty = l->n_queue == 0;
                pthread_mutex_unlock(&l->lock);
                if (empty)
                        return;
                dispatch(l);
        }
}

/* ---- batches with callbacks --------------------------------------------- */

typedef struct BatchTag {
        RpcTag tag;
        RpcBatchCallback done;
        void *userdata;
} BatchTag;

static void batch_tag_fn(RpcTag *t, bool ok) {
        BatchTag *b = (BatchTag *) t;
        b->done(b->userdata, ok);
        free(b);
}

static int batch_start(grpc_call *call, const grpc_op *ops, size_t n_ops, RpcBatchCallback done, void *userdata,
                       bool run_inline) {
        BatchTag *b;
        grpc_call_error e;

        b = malloc(sizeof(*b));
        if (!b)
                return -ENOMEM;
        *b = (BatchTag){ .tag.fn = batch_tag_fn, .tag.run_inline = run_inline, .done = done, .userdata = userdata };
        e = grpc_call_start_batch(call, ops, n_ops, &b->tag, NULL);
        if (e != GRPC_CALL_OK) {
                free(b);
                return -EPROTO;
        }
        return 0;
}

int rpc_batch(RpcLoop *l, grpc_call *call, const grpc_op *ops, size_t n_ops, RpcBatchCallback done,
              void *userdata) {
        (void) l;
        return batch_start(call, ops, n_ops, done, userdata, false);
}

int rpc_batch_inline(grpc_call *call, const grpc_op *ops, size_t n_ops, RpcBatchCallback done, void *userdata) {
        return batch_start(call, ops, n_ops, done, userdata, true);
}

int rpc_loop_post(RpcLoop *l, RpcBatchCallback done, void *userdata) {
        BatchTag *b = malloc(sizeof(*b));
        if (!b)
                return -ENOMEM;
        *b = (BatchTag){ .tag.fn = batch_tag_fn, .done = done, .userdata = userdata };
        loop_push(l, &b->tag, true);
        return 0;
}

/* ---- shared helpers ----------------------------------------------------- */

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *m) {
        size_t len = protobuf_c_message_get_packed_size(m);
        grpc_slice s = grpc_slice_malloc(len);
        grpc_byte_buffer *b;

        protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
        b = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        return b;
}

int rpc_unpack(grpc_byte_buffer *b, const ProtobufCMessageDescriptor *d, ProtobufCMessage **ret) {
        grpc_byte_buffer_reader reader;
        grpc_slice s;
        ProtobufCMessage *m;

        if (!grpc_byte_buffer_reader_init(&reader, b))
                return -EBADMSG;
        s = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
        grpc_slice_unref(s);
        if (!m)
                return -EBADMSG;
        *ret = m;
        return 0;
}

char *rpc_slice_to_string(grpc_slice s) {
        size_t n = GRPC_SLICE_LENGTH(s);
        char *p = malloc(n + 1);
        if (!p)
                return NULL;
        memcpy(p, GRPC_SLICE_START_PTR(s), n);
        p[n] = 0;
        return p;
}

gpr_timespec rpc_deadline_from_timeout(uint64_t timeout_usec) {
        if (timeout_usec == 0 || timeout_usec == UINT64_MAX)
                return gpr_inf_future(GPR_CLOCK_MONOTONIC);
        return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros((int64_t) timeout_usec, GPR_TIMESPAN));
}
