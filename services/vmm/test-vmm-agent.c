/* SPDX-License-Identifier: MIT */
/* vmmd's end of the agent channel against a hostile guest (the other end of
 * a unix socket, as QEMU's chardev is): image pulls naming no reference are
 * passed on as such, oversize references and frames only the host sends end
 * the channel, and the write queue tells bulk senders when it drained. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "macro.h"
#include "vmm-agent.h"

typedef struct Seen {
        unsigned pulls;
        uint32_t pull_id;
        char pull_ref[300];
        bool pull_ref_null;
        unsigned writable;
        bool disconnected;
        int error;
} Seen;

static void on_pull(AgentConn *a, uint32_t id, const char *ref, void *userdata) {
        Seen *s = userdata;
        (void) a;
        s->pulls++;
        s->pull_id = id;
        s->pull_ref_null = !ref;
        snprintf(s->pull_ref, sizeof(s->pull_ref), "%s", ref ?: "");
}

static void on_writable(AgentConn *a, void *userdata) {
        (void) a;
        ((Seen *) userdata)->writable++;
}

static void on_disconnected(AgentConn *a, int error, void *userdata) {
        Seen *s = userdata;
        (void) a;
        s->disconnected = true;
        s->error = error;
}

static const AgentCallbacks callbacks = {
        .image_pull = on_pull,
        .writable = on_writable,
        .disconnected = on_disconnected,
};

typedef struct Fixture {
        char dir[64];
        sd_event *event;
        AgentConn *conn;
        int guest;
        Seen seen;
} Fixture;

static int setup(void **state) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Fixture *f = calloc(1, sizeof(*f));
        int lfd;

        strcpy(f->dir, "/tmp/test-vmm-agent-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/agent.sock", f->dir);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(bind(lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(lfd, 1), 0);
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(agent_conn_connect(f->event, sa.sun_path, &callbacks, &f->seen, &f->conn), 0);
        f->guest = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(f->guest >= 0);
        close(lfd);
        unlink(sa.sun_path);
        rmdir(f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        agent_conn_free(f->conn);
        sd_event_unref(f->event);
        close(f->guest);
        free(f);
        return 0;
}

static void guest_sends(Fixture *f, AgentBuffer *b) {
        assert_false(b->oom);
        assert_int_equal(write(f->guest, b->data, b->size), (ssize_t) b->size);
        agent_buffer_done(b);
        for (int i = 0; i < 10; i++)
                (void) sd_event_run(f->event, 10 * USEC_PER_MSEC);
}

static void test_pull_naming_no_reference_is_passed_on_without_it(void **state) {
        Fixture *f = *state;
        AgentBuffer b = {};

        assert_int_equal(agent_image_pull_encode(&b, 7, "127.0.0.1:5000/test/b:2"), 0);
        guest_sends(f, &b);
        assert_int_equal(f->seen.pulls, 1);
        assert_int_equal(f->seen.pull_id, 7);
        assert_string_equal(f->seen.pull_ref, "127.0.0.1:5000/test/b:2");
        /* Shell metacharacters: answered (the callback gets NULL), the channel stays. */
        assert_int_equal(agent_string_encode(&b, AGENT_IMAGE_PULL, 8, "x; cat /etc/shadow"), 0);
        guest_sends(f, &b);
        assert_int_equal(f->seen.pulls, 2);
        assert_true(f->seen.pull_ref_null);
        assert_false(f->seen.disconnected);
}

static void test_oversize_reference_ends_the_channel(void **state) {
        Fixture *f = *state;
        AgentBuffer b = {};
        char ref[1001];

        memset(ref, 'a', 1000);
        ref[1000] = 0;
        assert_int_equal(agent_string_encode(&b, AGENT_IMAGE_PULL, 7, ref), 0);
        guest_sends(f, &b);
        assert_int_equal(f->seen.pulls, 0);
        assert_true(f->seen.disconnected);
        assert_int_equal(f->seen.error, -EBADMSG);
}

static void test_host_only_frames_from_the_guest_end_the_channel(void **state) {
        Fixture *f = *state;
        AgentBuffer b = {};

        /* A guest "answering" its own pull with data or an end. */
        assert_int_equal(agent_image_data_encode(&b, 7, 0, "ext4", 4), 0);
        guest_sends(f, &b);
        assert_true(f->seen.disconnected);
        assert_int_equal(f->seen.error, -EBADMSG);
        assert_int_equal(f->seen.pulls, 0);
}

static void test_queue_above_low_water_reports_when_drained(void **state) {
        Fixture *f = *state;
        static uint8_t chunk[AGENT_PAYLOAD_MAX - 8];
        AgentBuffer b = {};
        size_t sent = 0;
        char buf[65536];

        /* The guest reads nothing: the socket fills and the rest queues. */
        while (agent_conn_queued(f->conn) < 2 * AGENT_CONN_LOW_WATER) {
                assert_int_equal(agent_image_data_encode(&b, 1, sent, chunk, sizeof(chunk)), 0);
                assert_int_equal(agent_conn_send(f->conn, &b), 0);
                agent_buffer_done(&b);
                sent += sizeof(chunk);
                assert_true(sent < 64 * 1024 * 1024);
        }
        assert_int_equal(f->seen.writable, 0);
        /* The guest drains: the queue goes below the low-water mark once. */
        for (int i = 0; i < 2000 && agent_conn_queued(f->conn) > 0; i++) {
                (void) read(f->guest, buf, sizeof(buf));
                (void) sd_event_run(f->event, 1 * USEC_PER_MSEC);
        }
        assert_int_equal(agent_conn_queued(f->conn), 0);
        assert_int_equal(f->seen.writable, 1);
        assert_false(f->seen.disconnected);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_pull_naming_no_reference_is_passed_on_without_it, setup, teardown),
                cmocka_unit_test_setup_teardown(test_oversize_reference_ends_the_channel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_host_only_frames_from_the_guest_end_the_channel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_queue_above_low_water_reports_when_drained, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
