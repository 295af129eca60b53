/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent-protocol.h"

static void test_exec_round_trips_argv_env_and_cwd(void **state) {
        char *argv[] = { "sh", "-c", "echo hi", NULL };
        char *env[] = { "A=1", "B=two=2", NULL };
        AgentBuffer b = {};
        AgentExec e = {};
        AgentFrame f;
        size_t used;

        (void) state;
        assert_int_equal(agent_exec_encode(&b, 7, argv, env, "/tmp"), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(used, b.size);
        assert_int_equal(f.type, AGENT_EXEC);
        assert_int_equal(f.id, 7);
        assert_int_equal(agent_exec_decode(&f, &e), 0);
        assert_string_equal(e.argv[0], "sh");
        assert_string_equal(e.argv[2], "echo hi");
        assert_null(e.argv[3]);
        assert_string_equal(e.env[1], "B=two=2");
        assert_null(e.env[2]);
        assert_string_equal(e.cwd, "/tmp");
        agent_exec_done(&e);
        agent_buffer_done(&b);
}

static void test_decode_waits_for_whole_frame(void **state) {
        AgentBuffer b = {};
        AgentFrame f;
        size_t used = 0;

        (void) state;
        assert_int_equal(agent_int_encode(&b, AGENT_EXIT, 3, 127), 0);
        for (size_t n = 0; n < b.size; n++)
                assert_int_equal(agent_frame_decode(b.data, n, &f, &used), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        int32_t code;
        assert_int_equal(agent_int_decode(&f, &code), 0);
        assert_int_equal(code, 127);
        agent_buffer_done(&b);
}

static void test_decode_refuses_bad_magic_version_type_and_length(void **state) {
        AgentFrame f;
        size_t used;
        /* magic "HM", version 1, type EXIT, id 1, length 0x10000 (too long) */
        uint8_t too_long[] = { 0x48, 0x4d, 1, AGENT_EXIT, 1, 0, 0, 0, 0x00, 0x00, 0x01, 0x00 };
        uint8_t bad_magic[] = { 0x47 };
        uint8_t bad_version[] = { 0x48, 0x4d, 2 };
        uint8_t bad_type[] = { 0x48, 0x4d, 1, 0xee };

        (void) state;
        assert_int_equal(agent_frame_decode(too_long, sizeof(too_long), &f, &used), -EMSGSIZE);
        assert_int_equal(agent_frame_decode(bad_magic, sizeof(bad_magic), &f, &used), -EBADMSG);
        assert_int_equal(agent_frame_decode(bad_version, sizeof(bad_version), &f, &used), -EBADMSG);
        assert_int_equal(agent_frame_decode(bad_type, sizeof(bad_type), &f, &used), -EBADMSG);
}

static void test_exec_refuses_string_longer_than_payload(void **state) {
        /* header: EXEC id 1 length 8; payload: argc=1, then a string claiming 100 bytes */
        uint8_t frame[] = { 0x48, 0x4d, 1, AGENT_EXEC, 1, 0, 0, 0, 8, 0, 0, 0,
                            1, 0, 0, 0,  100, 0, 0, 0 };
        AgentExec e = {};
        AgentFrame f;
        size_t used;

        (void) state;
        assert_int_equal(agent_frame_decode(frame, sizeof(frame), &f, &used), 1);
        assert_int_equal(agent_exec_decode(&f, &e), -EBADMSG);
}

static void test_exec_refuses_empty_argv_and_bad_env(void **state) {
        char *argv[] = { NULL };
        char *one[] = { "true", NULL };
        char *env[] = { "NOEQUALS", NULL };
        AgentBuffer b = {};
        AgentExec e = {};
        AgentFrame f;
        size_t used;

        (void) state;
        assert_int_equal(agent_exec_encode(&b, 1, argv, NULL, NULL), -EINVAL);
        agent_buffer_done(&b);
        assert_int_equal(agent_exec_encode(&b, 1, one, env, NULL), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_exec_decode(&f, &e), -EBADMSG);
        agent_buffer_done(&b);
}

static void test_payload_above_maximum_is_refused_by_encoder(void **state) {
        AgentBuffer b = {};
        size_t start;
        char *big = calloc(1, AGENT_PAYLOAD_MAX + 1);

        (void) state;
        start = agent_frame_begin(&b, AGENT_STDOUT, 1);
        agent_put_bytes(&b, big, AGENT_PAYLOAD_MAX + 1);
        assert_int_equal(agent_frame_end(&b, start), -EMSGSIZE);
        free(big);
        agent_buffer_done(&b);
}

static void test_ready_round_trips_times(void **state) {
        AgentBuffer b = {};
        AgentReady r = {};
        AgentFrame f;
        size_t used;

        (void) state;
        const uint64_t phases[_AGENT_PHASE_MAX] = { 11, 0, 222, 3333 };
        assert_int_equal(agent_ready_encode(&b, 1234567, 890, "6.1.0-56-amd64", phases), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), 0);
        assert_int_equal(r.boot_usec, 1234567);
        assert_int_equal(r.init_usec, 890);
        assert_string_equal(r.kernel, "6.1.0-56-amd64");
        assert_int_equal(r.n_phases, _AGENT_PHASE_MAX);
        assert_int_equal(r.phase_usec[AGENT_PHASE_MOUNTS], 11);
        assert_int_equal(r.phase_usec[AGENT_PHASE_MODULES], 0);
        assert_int_equal(r.phase_usec[AGENT_PHASE_NETWORK], 222);
        assert_int_equal(r.phase_usec[AGENT_PHASE_PORT], 3333);
        agent_ready_done(&r);
        agent_buffer_done(&b);
}

/* A guest from before the phases: boot, init, kernel and nothing after. */
static const uint8_t ready_without_phases[] = {
        'H', 'M', 1, AGENT_READY, 0, 0, 0, 0, /* magic, version, type, id 0 */
        22, 0, 0, 0,                          /* payload length */
        0x40, 0x42, 0x0f, 0, 0, 0, 0, 0,      /* boot_usec 1000000 */
        0xe8, 0x03, 0, 0, 0, 0, 0, 0,         /* init_usec 1000 */
        2, 0, 0, 0, '6', '1',                 /* kernel "61" */
};

static void test_ready_from_older_guest_has_no_phases(void **state) {
        AgentReady r = {};
        AgentFrame f;
        size_t used;

        (void) state;
        assert_int_equal(agent_frame_decode(ready_without_phases, sizeof(ready_without_phases), &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), 0);
        assert_int_equal(r.boot_usec, 1000000);
        assert_int_equal(r.init_usec, 1000);
        assert_string_equal(r.kernel, "61");
        assert_int_equal(r.n_phases, 0);
        agent_ready_done(&r);
}

static void ready_with_phase_block(AgentBuffer *b, uint32_t n, size_t values) {
        size_t start = agent_frame_begin(b, AGENT_READY, 0);

        agent_put_u64(b, 5);
        agent_put_u64(b, 6);
        agent_put_string(b, "k");
        agent_put_u32(b, n);
        for (size_t k = 0; k < values; k++)
                agent_put_u64(b, 100 + k);
        assert_int_equal(agent_frame_end(b, start), 0);
}

static void test_ready_from_newer_guest_skips_unknown_phases(void **state) {
        AgentBuffer b = {};
        AgentReady r = {};
        AgentFrame f;
        size_t used;

        (void) state;
        ready_with_phase_block(&b, _AGENT_PHASE_MAX + 3, _AGENT_PHASE_MAX + 3);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), 0);
        assert_int_equal(r.n_phases, _AGENT_PHASE_MAX);
        assert_int_equal(r.phase_usec[_AGENT_PHASE_MAX - 1], 100 + _AGENT_PHASE_MAX - 1);
        agent_ready_done(&r);
        agent_buffer_done(&b);
}

static void test_ready_refuses_phase_count_that_does_not_match_payload(void **state) {
        AgentBuffer b = {};
        AgentReady r = {};
        AgentFrame f;
        size_t used;

        (void) state;
        /* Says 4, carries 3. */
        ready_with_phase_block(&b, 4, 3);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), -EBADMSG);
        agent_buffer_done(&b);
        /* Says 4, carries 5. */
        ready_with_phase_block(&b, 4, 5);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), -EBADMSG);
        agent_buffer_done(&b);
        /* A huge count is garbage, not a newer guest. */
        ready_with_phase_block(&b, AGENT_PHASES_MAX + 1, AGENT_PHASES_MAX + 1);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), -EBADMSG);
        agent_buffer_done(&b);
        /* Half a count. */
        size_t start = agent_frame_begin(&b, AGENT_READY, 0);
        agent_put_u64(&b, 5);
        agent_put_u64(&b, 6);
        agent_put_string(&b, "k");
        agent_put_bytes(&b, "\x01\x00", 2);
        assert_int_equal(agent_frame_end(&b, start), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_ready_decode(&f, &r), -EBADMSG);
        agent_buffer_done(&b);
}

/* c encoded in a frame with id and decoded again into *d (the caller's to
 * free with agent_container_done). */
static void container_round_trip(const AgentContainer *c, uint32_t id, AgentContainer *d) {
        AgentBuffer b = {};
        AgentFrame f;
        size_t used;

        assert_int_equal(agent_container_encode(&b, id, c), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(used, b.size);
        assert_int_equal(f.id, id);
        assert_int_equal(agent_container_decode(&f, d), 0);
        agent_buffer_done(&b);
}

static void test_container_round_trips_and_exec_names_its_container(void **state) {
        char *argv[] = { "sh", "-c", "exit 3", NULL };
        char *env[] = { "A=1", NULL };
        AgentContainer c = { .id = "c1a2", .name = "web", .serial = "hm-ctr-0", .network = AGENT_NETWORK_HOST,
                             .argv = argv, .env = env },
                       d = {};
        AgentBuffer b = {};
        AgentExec e = {};
        AgentFrame f;
        size_t used;

        (void) state;
        assert_int_equal(agent_container_encode(&b, 9, &c), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(f.type, AGENT_CONTAINER);
        assert_int_equal(f.id, 9);
        assert_int_equal(agent_container_decode(&f, &d), 0);
        assert_string_equal(d.id, "c1a2");
        assert_string_equal(d.name, "web");
        assert_string_equal(d.serial, "hm-ctr-0");
        assert_int_equal(d.network, AGENT_NETWORK_HOST);
        assert_string_equal(d.argv[2], "exit 3");
        assert_null(d.argv[3]);
        assert_string_equal(d.env[0], "A=1");
        assert_null(d.cwd);
        agent_container_done(&d);
        agent_buffer_done(&b);

        /* The image's WorkingDir trails the environment; a relative one is refused. */
        c.cwd = "/srv/app";
        container_round_trip(&c, 9, &d);
        assert_string_equal(d.cwd, "/srv/app");
        agent_container_done(&d);
        c.cwd = "srv";
        assert_int_equal(agent_container_encode(&b, 9, &c), -EINVAL);
        agent_buffer_done(&b);
        c.cwd = NULL;
        /* The image's User trails the cwd (empty when there is none). */
        c.user = "app:staff";
        container_round_trip(&c, 9, &d);
        assert_null(d.cwd);
        assert_string_equal(d.user, "app:staff");
        agent_container_done(&d);
        c.user = "app:staff:x";
        assert_int_equal(agent_container_encode(&b, 9, &c), -EINVAL);
        agent_buffer_done(&b);
        c.user = "../app";
        assert_int_equal(agent_container_encode(&b, 9, &c), -EINVAL);
        agent_buffer_done(&b);
        c.user = NULL;

        /* An EXEC naming a container carries it as a trailing string. */
        assert_int_equal(agent_exec_encode_in(&b, 4, argv, NULL, NULL, "web"), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_exec_decode(&f, &e), 0);
        assert_string_equal(e.container, "web");
        agent_exec_done(&e);
        agent_buffer_done(&b);
        /* Without it (an older host), the command runs in the guest. */
        assert_int_equal(agent_exec_encode(&b, 5, argv, NULL, NULL), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_exec_decode(&f, &e), 0);
        assert_null(e.container);
        agent_exec_done(&e);
        agent_buffer_done(&b);
}

static void test_container_with_docker_round_trips_and_refuses_bad_socket_paths(void **state) {
        char *argv[] = { "docker", "ps", NULL };
        AgentContainer c = { .id = "c1a2", .name = "web", .serial = "hm-c1a2", .network = AGENT_NETWORK_BRIDGE,
                             .argv = argv, .docker_sock_path = "/var/run/docker.sock", .image_serial = "hi-c1a2",
                             .image_ref = "127.0.0.1:5000/test/box:1" },
                       d = {};
        AgentBuffer b = {};
        AgentFrame f;
        size_t used;

        (void) state;
        container_round_trip(&c, 3, &d);
        assert_string_equal(d.docker_sock_path, "/var/run/docker.sock");
        assert_string_equal(d.image_serial, "hi-c1a2");
        assert_string_equal(d.image_ref, "127.0.0.1:5000/test/box:1");
        agent_container_done(&d);

        /* Docker without an image disk: the empty strings decode as none. */
        c.image_serial = c.image_ref = NULL;
        container_round_trip(&c, 3, &d);
        assert_string_equal(d.docker_sock_path, "/var/run/docker.sock");
        assert_null(d.image_serial);
        assert_null(d.image_ref);
        agent_container_done(&d);

        /* Without Docker nothing trails the environment. */
        c.docker_sock_path = NULL;
        container_round_trip(&c, 3, &d);
        assert_null(d.docker_sock_path);
        agent_container_done(&d);

        static const char *const bad[] = { "relative/docker.sock", "/", "/var//run/docker.sock", "/var/run/",
                                           "/var/../etc/docker.sock", "/var/./run", "/var/run/docker sock",
                                           "/var/run/a,b", "/var/run/a:b" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_false(agent_docker_sock_path_valid(bad[i]));
                c.docker_sock_path = (char *) bad[i];
                assert_int_equal(agent_container_encode(&b, 3, &c), -EINVAL);
        }
        /* A host that sends a climbing path or a cut-off Docker part:
         * refused by the guest too. */
        c.docker_sock_path = "/var/run/docker.sock";
        c.image_serial = "hi-c1a2";
        c.image_ref = "box:1";
        assert_int_equal(agent_container_encode(&b, 3, &c), 0);
        uint8_t *p = memmem(b.data, b.size, "/var/run/docker.sock", 20);
        assert_non_null(p);
        memcpy(p, "/var/../docker..sock", 20); /* same length, now with a ".." component */
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        agent_buffer_done(&b);
        assert_int_equal(agent_container_encode(&b, 3, &c), 0);
        /* Drop the last string (the image reference, 4 + 5 bytes): fix the length field. */
        b.size -= 9;
        uint32_t len = (uint32_t) (b.size - AGENT_HEADER_SIZE);
        memcpy(b.data + 8, &len, 4);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_true(agent_container_decode(&f, &d) < 0);
        agent_buffer_done(&b);
        assert_true(agent_docker_sock_path_valid("/run/my.docker/d_1-x.sock"));
        assert_false(agent_image_ref_valid("-rm"));
        assert_false(agent_image_ref_valid("box; rm -rf /"));
        assert_true(agent_image_ref_valid("host:5000/a/b@sha256:00ff"));
        agent_buffer_done(&b);
}

static void test_container_refuses_bad_names_serials_networks_and_env(void **state) {
        char *bad_env[] = { "=x", NULL };
        AgentContainer c = { .id = "c1", .name = "web", .serial = "hm-ctr-0", .network = AGENT_NETWORK_BRIDGE };
        AgentContainer d = {};
        AgentBuffer b = {};

        (void) state;
        c.name = "../etc";
        assert_int_equal(agent_container_encode(&b, 1, &c), -EINVAL);
        c.name = "web";
        c.serial = "serial-longer-than-twenty";
        assert_int_equal(agent_container_encode(&b, 1, &c), -EINVAL);
        c.serial = "hm-ctr-0";
        c.network = 3;
        assert_int_equal(agent_container_encode(&b, 1, &c), -EINVAL);
        c.network = AGENT_NETWORK_BRIDGE;
        c.env = bad_env;
        assert_int_equal(agent_container_encode(&b, 1, &c), -EINVAL);
        agent_buffer_done(&b);

        /* Hand-made payload: id "c1", name "a/b" (a slash), serial "s", network 1, no args, no env. */
        uint8_t frame[] = { 0x48, 0x4d, 1, AGENT_CONTAINER, 1, 0, 0, 0, 30, 0, 0, 0,
                            2, 0, 0, 0, 'c', '1',      /* id */
                            3, 0, 0, 0, 'a', '/', 'b', /* name */
                            1, 0, 0, 0, 's',           /* serial */
                            1, 0, 0, 0,                /* network BRIDGE */
                            0, 0, 0, 0,                /* argc */
                            0, 0, 0, 0 };              /* envc */
        AgentFrame f;
        size_t used;
        assert_int_equal(agent_frame_decode(frame, sizeof(frame), &f, &used), 1);
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        frame[23] = '_'; /* "a_b" */
        assert_int_equal(agent_container_decode(&f, &d), 0);
        agent_container_done(&d);
        {
                /* The same with a trailing relative cwd "x": refused. */
                uint8_t with_cwd[sizeof(frame) + 5];
                memcpy(with_cwd, frame, sizeof(frame));
                memcpy(with_cwd + sizeof(frame), (const uint8_t[]){ 1, 0, 0, 0, 'x' }, 5);
                with_cwd[8] = 35;
                assert_int_equal(agent_frame_decode(with_cwd, sizeof(with_cwd), &f, &used), 1);
                assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
                with_cwd[sizeof(frame) + 4] = '/';
                assert_int_equal(agent_container_decode(&f, &d), 0);
                assert_string_equal(d.cwd, "/");
                agent_container_done(&d);
                assert_int_equal(agent_frame_decode(frame, sizeof(frame), &f, &used), 1);
        }
        /* Truncated: the envc is missing. */
        frame[8] = 26;
        assert_int_equal(agent_frame_decode(frame, sizeof(frame) - 4, &f, &used), 1);
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
}

static void test_image_pull_round_trips_and_refuses_bad_refs(void **state) {
        AgentBuffer b = {};
        AgentFrame f;
        size_t used;
        char *ref = NULL;

        (void) state;
        assert_int_equal(agent_image_pull_encode(&b, 5, "127.0.0.1:5000/test/b:2"), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(f.type, AGENT_IMAGE_PULL);
        assert_int_equal(f.id, 5);
        assert_int_equal(agent_image_pull_decode(&f, &ref), 0);
        assert_string_equal(ref, "127.0.0.1:5000/test/b:2");
        free(ref);
        agent_buffer_done(&b);

        /* The encoder refuses what the decoder would. */
        assert_int_equal(agent_image_pull_encode(&b, 0, "busybox"), -EINVAL);
        assert_int_equal(agent_image_pull_encode(&b, 1, "-busybox"), -EINVAL);
        assert_int_equal(agent_image_pull_encode(&b, 1, "busy box"), -EINVAL);
        agent_buffer_done(&b);

        /* A hostile guest: quotes (answered, not fatal), id 0, a 300-byte reference. */
        assert_int_equal(agent_string_encode(&b, AGENT_IMAGE_PULL, 5, "a'; rm -rf /"), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_pull_decode(&f, &ref), -EINVAL);
        agent_buffer_done(&b);
        assert_int_equal(agent_string_encode(&b, AGENT_IMAGE_PULL, 0, "busybox"), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_pull_decode(&f, &ref), -EBADMSG);
        agent_buffer_done(&b);
        char long_ref[301];
        memset(long_ref, 'a', 300);
        long_ref[300] = 0;
        assert_int_equal(agent_string_encode(&b, AGENT_IMAGE_PULL, 5, long_ref), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_pull_decode(&f, &ref), -EBADMSG);
        agent_buffer_done(&b);
        /* A string length that claims more than the payload holds. */
        assert_int_equal(agent_int_encode(&b, AGENT_IMAGE_PULL, 5, 200), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_pull_decode(&f, &ref), -EBADMSG);
        agent_buffer_done(&b);
}

static void test_image_data_splits_at_frame_size_and_keeps_offsets(void **state) {
        size_t n = 3 * AGENT_PAYLOAD_MAX;
        uint8_t *data = malloc(n);
        AgentBuffer b = {};
        size_t pos = 0, total = 0, frames = 0;
        uint64_t expect = 1ULL << 33; /* above 4 GiB: the offset is a u64 */

        (void) state;
        assert_non_null(data);
        for (size_t i = 0; i < n; i++)
                data[i] = (uint8_t) (i * 7);
        assert_int_equal(agent_image_data_encode(&b, 9, expect, data, n), 0);
        while (pos < b.size) {
                AgentFrame f;
                size_t used, size;
                uint64_t offset;
                const uint8_t *p;

                assert_int_equal(agent_frame_decode(b.data + pos, b.size - pos, &f, &used), 1);
                assert_int_equal(f.type, AGENT_IMAGE_DATA);
                assert_int_equal(f.id, 9);
                assert_true(f.length <= AGENT_PAYLOAD_MAX);
                assert_int_equal(agent_image_data_decode(&f, &offset, &p, &size), 0);
                assert_true(offset == expect);
                assert_memory_equal(p, data + (offset - (1ULL << 33)), size);
                expect += size;
                total += size;
                pos += used;
                frames++;
        }
        assert_int_equal(total, n);
        assert_int_equal(frames, 4);
        agent_buffer_done(&b);
        free(data);

        /* Shorter than an offset; an offset that would wrap around. */
        AgentFrame f;
        size_t used, size;
        uint64_t offset;
        const uint8_t *p;
        size_t start = agent_frame_begin(&b, AGENT_IMAGE_DATA, 9);
        agent_put_u32(&b, 1);
        assert_int_equal(agent_frame_end(&b, start), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_data_decode(&f, &offset, &p, &size), -EBADMSG);
        agent_buffer_done(&b);
        start = agent_frame_begin(&b, AGENT_IMAGE_DATA, 9);
        agent_put_u64(&b, UINT64_MAX - 1);
        agent_put_bytes(&b, "xyz", 3);
        assert_int_equal(agent_frame_end(&b, start), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_data_decode(&f, &offset, &p, &size), -EBADMSG);
        agent_buffer_done(&b);
}

static void test_image_end_round_trips_and_failures_carry_no_image(void **state) {
        char *changes[] = { "CMD [\"sh\"]", "ENV PATH=\"/bin\"", "WORKDIR /srv", NULL };
        AgentImageEnd e = { .status = AGENT_PULL_OK, .size = 4194304, .changes = changes }, d = {};
        AgentBuffer b = {};
        AgentFrame f;
        size_t used;

        (void) state;
        assert_int_equal(agent_image_end_encode(&b, 4, &e), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_end_decode(&f, &d), 0);
        assert_int_equal(d.status, AGENT_PULL_OK);
        assert_string_equal(d.message, "");
        assert_true(d.size == 4194304);
        assert_string_equal(d.changes[0], "CMD [\"sh\"]");
        assert_string_equal(d.changes[2], "WORKDIR /srv");
        assert_null(d.changes[3]);
        agent_image_end_done(&d);
        agent_buffer_done(&b);

        e = (AgentImageEnd){ .status = AGENT_PULL_NOT_FOUND, .message = "repository or tag not found" };
        assert_int_equal(agent_image_end_encode(&b, 4, &e), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_end_decode(&f, &d), 0);
        assert_int_equal(d.status, AGENT_PULL_NOT_FOUND);
        assert_string_equal(d.message, "repository or tag not found");
        assert_null(d.changes[0]);
        assert_string_equal(agent_pull_status_to_string(d.status), "not-found");
        agent_image_end_done(&d);
        agent_buffer_done(&b);

        /* A failure with an image attached, an unknown status: refused both ways. */
        e = (AgentImageEnd){ .status = AGENT_PULL_FAILED, .size = 1 };
        assert_int_equal(agent_image_end_encode(&b, 4, &e), -EINVAL);
        e = (AgentImageEnd){ .status = _AGENT_PULL_STATUS_MAX };
        assert_int_equal(agent_image_end_encode(&b, 4, &e), -EINVAL);
        agent_buffer_done(&b);
        size_t start = agent_frame_begin(&b, AGENT_IMAGE_END, 4);
        agent_put_u32(&b, AGENT_PULL_DENIED); /* status */
        agent_put_string(&b, "no");           /* message */
        agent_put_u64(&b, 10);                /* size: not 0 on a failure */
        agent_put_u32(&b, 0);                 /* no changes */
        assert_int_equal(agent_frame_end(&b, start), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_end_decode(&f, &d), -EBADMSG);
        agent_buffer_done(&b);
        start = agent_frame_begin(&b, AGENT_IMAGE_END, 4);
        agent_put_u32(&b, 99);                /* status out of range */
        agent_put_string(&b, "");
        agent_put_u64(&b, 0);
        agent_put_u32(&b, 0);
        assert_int_equal(agent_frame_end(&b, start), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_image_end_decode(&f, &d), -EBADMSG);
        agent_buffer_done(&b);
}

static void test_container_features_trail_the_docker_part_and_older_hosts_send_none(void **state) {
        char *argv[] = { "docker", "ps", NULL };
        AgentContainer c = { .id = "c1a2", .name = "web", .serial = "hm-c1a2", .network = AGENT_NETWORK_BRIDGE,
                             .argv = argv, .docker_sock_path = "/var/run/docker.sock",
                             .features = AGENT_FEATURE_IMAGE_PULL | (1U << 7) },
                       d = {};
        AgentBuffer b = {};
        AgentFrame f;
        size_t used;

        (void) state;
        /* The frame stays: it is cut below. */
        assert_int_equal(agent_container_encode(&b, 3, &c), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_container_decode(&f, &d), 0);
        /* A bit this guest does not know is kept, and harmless. */
        assert_int_equal(d.features, AGENT_FEATURE_IMAGE_PULL | (1U << 7));
        agent_container_done(&d);

        /* The same frame without its last 4 bytes is what an older host sent. */
        b.size -= 4;
        b.data[8] = (uint8_t) (b.size - AGENT_HEADER_SIZE);
        b.data[9] = (uint8_t) ((b.size - AGENT_HEADER_SIZE) >> 8);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_container_decode(&f, &d), 0);
        assert_int_equal(d.features, 0);
        assert_string_equal(d.docker_sock_path, "/var/run/docker.sock");
        agent_container_done(&d);
        agent_buffer_done(&b);
}

static void test_container_ports_trail_the_docker_part_and_are_checked(void **state) {
        char *argv[] = { "httpd", "-f", NULL };
        AgentContainer c = { .id = "c1a2", .name = "web", .serial = "hm-c1a2", .network = AGENT_NETWORK_BRIDGE,
                             .argv = argv, .n_ports = 2, .ports = { 8080, 443 } },
                       d = {};
        AgentBuffer b = {};
        AgentFrame f;
        size_t used;

        (void) state;
        /* Ports without Docker: cwd, user and an empty Docker part go first.
         * The frame stays: it is patched below. */
        assert_int_equal(agent_container_encode(&b, 5, &c), 0);
        assert_int_equal(agent_frame_decode(b.data, b.size, &f, &used), 1);
        assert_int_equal(agent_container_decode(&f, &d), 0);
        assert_null(d.cwd);
        assert_null(d.user);
        assert_null(d.docker_sock_path);
        assert_null(d.image_serial);
        assert_int_equal(d.n_ports, 2);
        assert_int_equal(d.ports[0], 8080);
        assert_int_equal(d.ports[1], 443);
        agent_container_done(&d);
        /* The last 12 bytes: u32 n=2, u32 8080, u32 443. */
        assert_memory_equal(b.data + b.size - 12, ((const uint8_t[]){ 2, 0, 0, 0, 0x90, 0x1f, 0, 0, 0xbb, 1, 0, 0 }),
                            12);

        /* A port of 0 or above 65535 (patched on the wire), a count of 0 or
         * above the maximum, a port twice: all refused. */
        b.data[b.size - 4] = 0;
        b.data[b.size - 3] = 0;
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        b.data[b.size - 2] = 1; /* 65536 */
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        memcpy(b.data + b.size - 4, (const uint8_t[]){ 0x90, 0x1f, 0, 0 }, 4); /* 8080 twice */
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        b.data[b.size - 12] = 0;
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        b.data[b.size - 12] = AGENT_PORTS_MAX + 1;
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        b.data[b.size - 12] = 3; /* one port more than the payload holds */
        assert_int_equal(agent_container_decode(&f, &d), -EBADMSG);
        agent_buffer_done(&b);

        /* With Docker: its part, then the ports. */
        c.docker_sock_path = "/var/run/docker.sock";
        c.image_serial = "hi-c1a2";
        c.image_ref = "box:1";
        container_round_trip(&c, 5, &d);
        assert_string_equal(d.docker_sock_path, "/var/run/docker.sock");
        assert_string_equal(d.image_ref, "box:1");
        assert_int_equal(d.n_ports, 2);
        agent_container_done(&d);

        /* The encoder refuses what the decoder would. */
        c.ports[1] = 8080;
        assert_int_equal(agent_container_encode(&b, 5, &c), -EINVAL);
        c.ports[1] = 0;
        assert_int_equal(agent_container_encode(&b, 5, &c), -EINVAL);
        c.ports[1] = 1;
        c.n_ports = AGENT_PORTS_MAX + 1;
        assert_int_equal(agent_container_encode(&b, 5, &c), -EINVAL);
        agent_buffer_done(&b);

        /* No Docker: the part is three empty strings (its path, image disk
         * serial and reference), the host's features (none here), then the
         * count and the port (8080), at the frame's end. */
        c.docker_sock_path = NULL;
        c.n_ports = 1;
        assert_int_equal(agent_container_encode(&b, 5, &c), 0);
        assert_memory_equal(b.data + b.size - 24,
                            ((const uint8_t[]){ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x90, 0x1f, 0, 0 }),
                            24);
        agent_buffer_done(&b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exec_round_trips_argv_env_and_cwd),
                cmocka_unit_test(test_decode_waits_for_whole_frame),
                cmocka_unit_test(test_decode_refuses_bad_magic_version_type_and_length),
                cmocka_unit_test(test_exec_refuses_string_longer_than_payload),
                cmocka_unit_test(test_exec_refuses_empty_argv_and_bad_env),
                cmocka_unit_test(test_payload_above_maximum_is_refused_by_encoder),
                cmocka_unit_test(test_ready_round_trips_times),
                cmocka_unit_test(test_ready_from_older_guest_has_no_phases),
                cmocka_unit_test(test_ready_from_newer_guest_skips_unknown_phases),
                cmocka_unit_test(test_ready_refuses_phase_count_that_does_not_match_payload),
                cmocka_unit_test(test_container_round_trips_and_exec_names_its_container),
                cmocka_unit_test(test_container_refuses_bad_names_serials_networks_and_env),
                cmocka_unit_test(test_container_with_docker_round_trips_and_refuses_bad_socket_paths),
                cmocka_unit_test(test_image_pull_round_trips_and_refuses_bad_refs),
                cmocka_unit_test(test_image_data_splits_at_frame_size_and_keeps_offsets),
                cmocka_unit_test(test_image_end_round_trips_and_failures_carry_no_image),
                cmocka_unit_test(test_container_features_trail_the_docker_part_and_older_hosts_send_none),
                cmocka_unit_test(test_container_ports_trail_the_docker_part_and_are_checked),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
