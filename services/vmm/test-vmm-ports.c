/* SPDX-License-Identifier: MIT */
/* Exported ports: the host port range, and the forwarder on loopback with
 * real sockets (a backend and a client in threads, the forwarder on an
 * sd-event loop in the test's thread, as in vmmd). */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "macro.h"
#include "vmm-ports.h"

static void test_pool_gives_lowest_free_port_and_runs_out(void **state) {
        PortPool *p;
        uint16_t a, b, c, d;

        (void) state;
        assert_int_equal(port_pool_new(0, 10, &p), -EINVAL);
        assert_int_equal(port_pool_new(20, 10, &p), -EINVAL);
        assert_int_equal(port_pool_new(20000, 20002, &p), 0);
        assert_int_equal(port_pool_free_count(p), 3);
        assert_int_equal(port_pool_allocate(p, &a), 0);
        assert_int_equal(port_pool_allocate(p, &b), 0);
        assert_int_equal(port_pool_allocate(p, &c), 0);
        assert_int_equal(a, 20000);
        assert_int_equal(b, 20001);
        assert_int_equal(c, 20002);
        assert_int_equal(port_pool_allocate(p, &d), -ENOSPC);
        assert_int_equal(port_pool_free_count(p), 0);
        /* Given back: the lowest free one comes first again. */
        port_pool_release(p, 20001);
        port_pool_release(p, 20001); /* twice: no double count */
        port_pool_release(p, 9);     /* outside: ignored */
        assert_int_equal(port_pool_free_count(p), 1);
        assert_int_equal(port_pool_allocate(p, &d), 0);
        assert_int_equal(d, 20001);
        /* A restart takes stored ports back; a port twice or outside is refused. */
        port_pool_release(p, 20002);
        assert_int_equal(port_pool_reserve(p, 20002), 0);
        assert_int_equal(port_pool_reserve(p, 20002), -EEXIST);
        assert_int_equal(port_pool_reserve(p, 20003), -ERANGE);
        assert_int_equal(port_pool_reserve(p, 19999), -ERANGE);
        p = port_pool_free(p);
        assert_null(p);
        /* The whole port space. */
        assert_int_equal(port_pool_new(1, 65535, &p), 0);
        assert_int_equal(port_pool_reserve(p, 65535), 0);
        assert_int_equal(port_pool_free_count(p), 65534);
        port_pool_free(p);
}

/* ---- the forwarder on loopback ------------------------------------------ */

#define loopback ((struct in_addr){ .s_addr = htonl(INADDR_LOOPBACK) })

static uint16_t bound_port(int fd) {
        struct sockaddr_in sa;
        socklen_t len = sizeof(sa);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
        return ntohs(sa.sin_port);
}

static int listen_loopback(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = { htonl(INADDR_LOOPBACK) } };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 8), 0);
        *ret_port = bound_port(fd);
        return fd;
}

/* A port nothing listens on (bound, then closed). */
static uint16_t unused_port(void) {
        uint16_t port;
        int fd = listen_loopback(&port);
        close(fd);
        return port;
}

static int connect_loopback(uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = { htonl(INADDR_LOOPBACK) },
                                  .sin_port = htons(port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0)
                        return -errno;
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* Reads until EOF (or max bytes); returns the count or a negative errno. */
static ssize_t read_all(int fd, uint8_t *buf, size_t max) {
        size_t got = 0;
        for (;;) {
                ssize_t k = read(fd, buf + got, max - got);
                if (k < 0)
                        return -errno;
                if (k == 0 || got + (size_t) k == max)
                        return (ssize_t) (got + (size_t) k);
                got += (size_t) k;
        }
}

typedef struct Scenario {
        int backend_listen;     /* the backend's listening socket */
        uint16_t forward_port;  /* where the forwarder listens */
        size_t size;            /* bytes each way in the big transfer */
        atomic_bool done;
        int result;             /* 0 when every check in the threads held */
        char why[128];
} Scenario;

static void run_loop_until(sd_event *e, Scenario *s) {
        for (int k = 0; k < 60000 && !atomic_load(&s->done); k++)
                assert_true(sd_event_run(e, 1000) >= 0);
        assert_true(atomic_load(&s->done));
}

static void fail_scenario(Scenario *s, const char *why) {
        if (s->result == 0) {
                s->result = -1;
                snprintf(s->why, sizeof(s->why), "%s", why);
        }
}

/* Client: "hello", FIN; the backend reads it to EOF, then answers
 * "world" and closes: the answer must arrive after the client's FIN. */
static void *half_close_threads(void *userdata) {
        Scenario *s = userdata;
        uint8_t buf[64];
        int c = connect_loopback(s->forward_port), b;

        if (c < 0) {
                fail_scenario(s, "connect");
                goto out;
        }
        b = accept(s->backend_listen, NULL, NULL);
        if (write_all(c, (const uint8_t *) "hello", 5) < 0 || shutdown(c, SHUT_WR) < 0)
                fail_scenario(s, "client write");
        if (read_all(b, buf, sizeof(buf)) != 5 || memcmp(buf, "hello", 5) != 0)
                fail_scenario(s, "backend did not get hello then EOF");
        if (write_all(b, (const uint8_t *) "world", 5) < 0)
                fail_scenario(s, "backend write after the client's FIN");
        close(b);
        if (read_all(c, buf, sizeof(buf)) != 5 || memcmp(buf, "world", 5) != 0)
                fail_scenario(s, "client did not get world then EOF");
        close(c);
out:
        atomic_store(&s->done, true);
        return NULL;
}

/* A forwarder from a fresh port to a loopback backend, and the scenario's
 * client and backend threads run against it until they are done. */
static void run_scenario(Scenario *s, void *(*threads)(void *), sd_event **ret_e, PortForward **ret_f) {
        _cleanup_close_ int backend = -EBADF;
        uint16_t backend_port;
        pthread_t t;

        backend = listen_loopback(&backend_port);
        s->backend_listen = backend;
        s->forward_port = unused_port();
        assert_int_equal(sd_event_new(ret_e), 0);
        assert_int_equal(port_forward_new(*ret_e, loopback, s->forward_port, loopback, backend_port, ret_f), 0);
        assert_int_equal(pthread_create(&t, NULL, threads, s), 0);
        run_loop_until(*ret_e, s);
        pthread_join(t, NULL);
        if (s->result != 0)
                fail_msg("%s", s->why);
}

static void test_forward_passes_bytes_and_half_close(void **state) {
        Scenario s = {};
        PortForward *f;
        sd_event *e;

        (void) state;
        run_scenario(&s, half_close_threads, &e, &f);
        /* Both sides closed: the connection is gone from the forwarder. */
        for (int k = 0; k < 1000 && port_forward_connections(f) > 0; k++)
                sd_event_run(e, 1000);
        assert_int_equal(port_forward_connections(f), 0);
        assert_int_equal(port_forward_accepted(f), 1);
        assert_int_equal(port_forward_refused(f), 0);
        port_forward_free(f);
        sd_event_unref(e);
}

static uint8_t pattern(size_t i, uint8_t seed) {
        return (uint8_t) ((i * 2654435761u) >> 13) ^ seed;
}

typedef struct Writer {
        int fd;
        size_t size;
        uint8_t seed;
} Writer;

static void *writer_thread(void *userdata) {
        Writer *w = userdata;
        uint8_t chunk[16384];

        for (size_t off = 0; off < w->size;) {
                size_t n = MIN(sizeof(chunk), w->size - off);
                for (size_t i = 0; i < n; i++)
                        chunk[i] = pattern(off + i, w->seed);
                if (write_all(w->fd, chunk, n) < 0)
                        break;
                off += n;
        }
        shutdown(w->fd, SHUT_WR);
        return NULL;
}

/* Reads to EOF, checking every byte against the pattern. */
static bool read_pattern(int fd, size_t size, uint8_t seed) {
        uint8_t chunk[16384];
        size_t off = 0;

        for (;;) {
                ssize_t k = read(fd, chunk, sizeof(chunk));
                if (k < 0)
                        return false;
                if (k == 0)
                        return off == size;
                for (ssize_t i = 0; i < k; i++)
                        if (chunk[i] != pattern(off + (size_t) i, seed))
                                return false;
                off += (size_t) k;
        }
}

/* Both ways at once, far more than the buffers hold. */
static void *big_transfer_threads(void *userdata) {
        Scenario *s = userdata;
        int c = connect_loopback(s->forward_port), b;
        pthread_t tc, tb;

        if (c < 0) {
                fail_scenario(s, "connect");
                atomic_store(&s->done, true);
                return NULL;
        }
        b = accept(s->backend_listen, NULL, NULL);
        Writer wc = { c, s->size, 0x11 }, wb = { b, s->size, 0x77 };
        pthread_create(&tc, NULL, writer_thread, &wc);
        pthread_create(&tb, NULL, writer_thread, &wb);
        if (!read_pattern(b, s->size, 0x11))
                fail_scenario(s, "backend got other bytes than the client sent");
        if (!read_pattern(c, s->size, 0x77))
                fail_scenario(s, "client got other bytes than the backend sent");
        pthread_join(tc, NULL);
        pthread_join(tb, NULL);
        close(b);
        close(c);
        atomic_store(&s->done, true);
        return NULL;
}

static void test_forward_large_transfer_both_ways_is_intact(void **state) {
        Scenario s = { .size = 24 * 1024 * 1024 + 7 };
        PortForward *f;
        sd_event *e;

        (void) state;
        run_scenario(&s, big_transfer_threads, &e, &f);
        port_forward_free(f);
        sd_event_unref(e);
}

static void *refused_thread(void *userdata) {
        Scenario *s = userdata;
        uint8_t buf[16];
        int c = connect_loopback(s->forward_port);

        /* Accepted by the forwarder, then closed: the target refused. */
        if (c < 0)
                fail_scenario(s, "connect");
        else {
                ssize_t k = read(c, buf, sizeof(buf));
                if (!(k == 0 || (k < 0 && errno == ECONNRESET)))
                        fail_scenario(s, "the connection was not closed");
                close(c);
        }
        atomic_store(&s->done, true);
        return NULL;
}

static void test_forward_closes_client_when_target_refuses(void **state) {
        Scenario s = {};
        PortForward *f;
        sd_event *e;
        pthread_t t;

        (void) state;
        s.forward_port = unused_port();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(port_forward_new(e, loopback, s.forward_port, loopback, unused_port(), &f), 0);
        assert_int_equal(pthread_create(&t, NULL, refused_thread, &s), 0);
        run_loop_until(e, &s);
        pthread_join(t, NULL);
        if (s.result != 0)
                fail_msg("%s", s.why);
        assert_int_equal(port_forward_refused(f), 1);
        assert_int_equal(port_forward_connections(f), 0);
        port_forward_free(f);
        sd_event_unref(e);
}

static void test_forward_free_ends_connections_and_stops_listening(void **state) {
        _cleanup_close_ int backend = -EBADF, c = -EBADF, b = -EBADF, holder = -EBADF;
        uint16_t backend_port, port, held;
        PortForward *f;
        uint8_t buf[8];
        sd_event *e;

        (void) state;
        backend = listen_loopback(&backend_port);
        port = unused_port();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(port_forward_new(e, loopback, port, loopback, backend_port, &f), 0);
        /* A port another program listens on is refused, not shared. */
        holder = listen_loopback(&held);
        PortForward *g = NULL;
        assert_int_equal(port_forward_new(e, loopback, held, loopback, backend_port, &g), -EADDRINUSE);
        assert_null(g);

        c = connect_loopback(port); /* the kernel completes it; the loop accepts it */
        assert_true(c >= 0);
        for (int k = 0; k < 1000 && port_forward_connections(f) == 0; k++)
                sd_event_run(e, 1000);
        assert_int_equal(port_forward_connections(f), 1);
        b = accept(backend, NULL, NULL);
        assert_true(b >= 0);
        for (int k = 0; k < 100; k++)
                sd_event_run(e, 0);
        port_forward_free(f);
        /* Both ends see the connection closed, and nothing listens any more. */
        assert_int_equal(read(c, buf, sizeof(buf)), 0);
        assert_int_equal(read(b, buf, sizeof(buf)), 0);
        assert_int_equal(connect_loopback(port), -ECONNREFUSED);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pool_gives_lowest_free_port_and_runs_out),
                cmocka_unit_test(test_forward_passes_bytes_and_half_close),
                cmocka_unit_test(test_forward_large_transfer_both_ways_is_intact),
                cmocka_unit_test(test_forward_closes_client_when_target_refuses),
                cmocka_unit_test(test_forward_free_ends_connections_and_stops_listening),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
