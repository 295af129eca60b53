/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>

#include "disk-manager.h"
#include "disk-work.h"

struct Work {
        Manager *manager;
        pthread_t thread;
        int notify[2];              /* the worker writes one byte when done */
        sd_event_source *source;
        WorkRun run;
        WorkComplete complete;
        void *data;
        Work *next;
};

static Work *work_free(Work *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->source);
        safe_close(w->notify[0]);
        safe_close(w->notify[1]);
        free(w);
        return NULL;
}

static void work_finish(Work *w, bool cancelled) {
        Manager *m = w->manager;

        (void) pthread_join(w->thread, NULL);
        for (Work **p = &m->works; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        break;
                }
        w->complete(m, w->data, cancelled);
        work_free(w);
}

static void *work_thread(void *userdata) {
        Work *w = userdata;

        w->run(w->data);
        while (write(w->notify[1], "x", 1) < 0 && errno == EINTR)
                ;
        return NULL;
}

static int on_work_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s;
        (void) fd;
        (void) revents;
        work_finish(userdata, /* cancelled= */ false);
        return 0;
}

int work_start(Manager *m, WorkRun run, WorkComplete complete, void *data) {
        Work *w;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        *w = (Work){ .manager = m, .run = run, .complete = complete, .data = data, .notify = { -EBADF, -EBADF } };
        if (pipe2(w->notify, O_CLOEXEC | O_NONBLOCK) < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(m->event, &w->source, w->notify[0], EPOLLIN, on_work_done, w);
        if (r < 0)
                goto fail;
        r = -pthread_create(&w->thread, NULL, work_thread, w);
        if (r < 0)
                goto fail;
        w->next = m->works;
        m->works = w;
        return 0;
fail:
        work_free(w);
        return r;
}

void work_cancel_all(Manager *m) {
        while (m->works)
                work_finish(m->works, /* cancelled= */ true);
}
