/* SPDX-License-Identifier: MIT */
/* The proxy between a client and a fake engine (a thread answering canned
 * responses and recording what reached it): framing on the wire, keep-alive,
 * chunked bodies both ways, ownership probes and refusals. The real engine
 * is exercised by tests/integration/test_dockerproxy.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "dockerproxy-proxy.h"

static char dir[] = "/tmp/test-dockerproxy-proxy-XXXXXX";
static char engine_path[128], proxy_path[128], pull_path[128];
static pthread_mutex_t pulls_lock = PTHREAD_MUTEX_INITIALIZER;
static char pulls_seen[4096];
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static char seen[1 << 16];
static size_t seen_len;
static atomic_bool stop;
static pthread_t engine_thread, loop_thread;
/* As in an instance whose host answers pulls (hostmesh-dockerproxy-guest --pull-socket). */
static DockerPolicy policy = { .refuse_pull = true, .pull_via_host = true };
static DockerCaller caller = { .id = "t", .root = "/", .policy = &policy };
static OwnedSet *owned;
static pthread_mutex_t records_lock = PTHREAD_MUTEX_INITIALIZER;
static char records[4096];

/* The proxy's report of what a request made or removed (the manager's
 * job in the daemon). */
static void on_record(void *userdata, const DockerCaller *c, OwnedKind kind, const char *id, bool add) {
        size_t n;
        (void) userdata;
        pthread_mutex_lock(&records_lock);
        n = strlen(records);
        snprintf(records + n, sizeof(records) - n, "%s %s %s %s;", c->id, owned_kind_to_string(kind), id,
                 add ? "add" : "forget");
        pthread_mutex_unlock(&records_lock);
}

static bool records_have(const char *s) {
        bool r;
        pthread_mutex_lock(&records_lock);
        r = strstr(records, s) != NULL;
        pthread_mutex_unlock(&records_lock);
        return r;
}

static void seen_add(const char *p, size_t n) {
        pthread_mutex_lock(&seen_lock);
        n = MIN(n, sizeof(seen) - 1 - seen_len);
        memcpy(seen + seen_len, p, n);
        seen_len += n;
        seen[seen_len] = '\0';
        pthread_mutex_unlock(&seen_lock);
}

static bool seen_has(const char *s) {
        bool r;
        pthread_mutex_lock(&seen_lock);
        r = strstr(seen, s) != NULL;
        pthread_mutex_unlock(&seen_lock);
        return r;
}

static void seen_reset(void) {
        pthread_mutex_lock(&seen_lock);
        seen_len = 0;
        seen[0] = '\0';
        pthread_mutex_unlock(&seen_lock);
}

static int unix_socket(const char *path, bool listen_on) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        strcpy(sa.sun_path, path);
        if (listen_on) {
                assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
                assert_int_equal(listen(fd, 16), 0);
        } else
                assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

/* One engine connection: requests in a row, answered by target. */
static void *engine_conn(void *arg) {
        int fd = (int) (intptr_t) arg;
        char buf[65536];
        size_t len = 0;

        for (;;) {
                char *end;
                ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
                if (n <= 0)
                        break;
                len += (size_t) n;
                buf[len] = '\0';
                while ((end = strstr(buf, "\r\n\r\n"))) {
                        size_t head = (size_t) (end - buf) + 4, total = head;
                        const char *cl = strcasestr(buf, "Content-Length: ");
                        const char *resp;

                        if (strstr(buf, "t=big") && strstr(buf, "t=big") < end) {
                                /* Stream and discard a large chunked body slowly,
                                 * so that the proxy has to hold back. */
                                size_t got = len - head;
                                char tail[5] = "", reply[128];
                                if (got >= 5)
                                        memcpy(tail, buf + len - 5, 5);
                                while (got < 5 || memcmp(tail, "0\r\n\r\n", 5) != 0) {
                                        char chunk[4096];
                                        ssize_t k = read(fd, chunk, sizeof(chunk));
                                        if (k <= 0)
                                                goto out;
                                        got += (size_t) k;
                                        if (k >= 5)
                                                memcpy(tail, chunk + k - 5, 5);
                                        else {
                                                memmove(tail, tail + k, (size_t) (5 - k));
                                                memcpy(tail + 5 - k, chunk, (size_t) k);
                                        }
                                        usleep(50);
                                }
                                snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n%012zu", got);
                                if (write(fd, reply, strlen(reply)) < 0)
                                        goto out;
                                len = 0;
                                buf[0] = '\0';
                                continue;
                        }
                        if (cl && cl < end)
                                total += (size_t) atoi(cl + 16);
                        else if (strcasestr(buf, "Transfer-Encoding: chunked") && strcasestr(buf, "Transfer-Encoding: chunked") < end) {
                                /* last-chunk "0" line, then trailers up to an empty line */
                                char *z = strncmp(end + 4, "0\r\n", 3) == 0 ? end + 4 : strstr(end + 4, "\r\n0\r\n");
                                if (!z)
                                        break;
                                z += z == end + 4 ? 3 : 5;
                                if (strncmp(z, "\r\n", 2) == 0)
                                        z += 2;
                                else if ((z = strstr(z, "\r\n\r\n")))
                                        z += 4;
                                else
                                        break;
                                total = (size_t) (z - buf);
                        }
                        if (total > len)
                                break;
                        seen_add(buf, total);
                        if (strstr(buf, "/containers/mine/json"))
                                resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 78\r\n\r\n"
                                       "{\"Id\":\"mine\",\"Config\":{\"Labels\":{\"io.hostmesh.dockerproxy.owner.t\":\"\"}},\"x\":1}";
                        else if (strstr(buf, "GET /containers/web/json"))
                                /* a name of "mine" */
                                resp = "HTTP/1.1 200 OK\r\nContent-Length: 78\r\n\r\n"
                                       "{\"Id\":\"mine\",\"Config\":{\"Labels\":{\"io.hostmesh.dockerproxy.owner.t\":\"\"}},\"x\":1}";
                        else if (strstr(buf, "/containers/theirs/json"))
                                resp = "HTTP/1.1 200 OK\r\nContent-Length: 80\r\n\r\n"
                                       "{\"Id\":\"theirs\",\"Config\":{\"Labels\":{\"io.hostmesh.dockerproxy.owner.t\":\"\"}},\"x\":1}";
                        else if (strstr(buf, "GET /images/docker.io/") && strstr(buf, "GET /images/docker.io/") < end)
                                /* build -t names that exist nowhere yet */
                                resp = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
                        else if (strncmp(buf, "GET /images/", 12) == 0)
                                /* the image a container is created from: no labels */
                                resp = "HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n{\"Config\":{\"Labels\":null}}";
                        else if (strstr(buf, "/chunky"))
                                resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
                        else if (strstr(buf, "/containers/create"))
                                resp = "HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"Id\":\"n\"}\n";
                        else if (strncmp(buf, "HEAD ", 5) == 0)
                                resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
                        else
                                resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";
                        if (write(fd, resp, strlen(resp)) < 0)
                                break;
                        memmove(buf, buf + total, len - total);
                        len -= total;
                        buf[len] = '\0';
                }
        }
out:
        close(fd);
        return NULL;
}

static void *engine_main(void *arg) {
        int lfd = (int) (intptr_t) arg;
        for (;;) {
                pthread_t t;
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        break;
                pthread_create(&t, NULL, engine_conn, (void *) (intptr_t) fd);
                pthread_detach(t);
        }
        return NULL;
}

/* hostmesh-init's pull socket: one line in, one line out. A reference
 * naming "missing" is not found, "dies" gets no answer at all. */
static void *pull_main(void *arg) {
        int lfd = (int) (intptr_t) arg;
        for (;;) {
                char line[600];
                size_t len = 0;
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        break;
                while (len < sizeof(line) - 1) {
                        ssize_t n = read(fd, line + len, sizeof(line) - 1 - len);
                        if (n <= 0)
                                break;
                        len += (size_t) n;
                        if (memchr(line, '\n', len))
                                break;
                }
                line[len] = '\0';
                pthread_mutex_lock(&pulls_lock);
                snprintf(pulls_seen + strlen(pulls_seen), sizeof(pulls_seen) - strlen(pulls_seen), "%s", line);
                pthread_mutex_unlock(&pulls_lock);
                const char *answer = strstr(line, "missing") ? "2 manifest unknown\n" : strstr(line, "dies") ? "" : "0 \n";
                if (write(fd, answer, strlen(answer)) < 0)
                        break;
                close(fd);
        }
        return NULL;
}

static bool pulls_have(const char *s) {
        bool r;
        pthread_mutex_lock(&pulls_lock);
        r = strstr(pulls_seen, s) != NULL;
        pthread_mutex_unlock(&pulls_lock);
        return r;
}

static void *loop_main(void *arg) {
        sd_event *e = NULL;
        Proxy *p = NULL;
        ProxyContext ctx;

        (void) arg;
        assert_int_equal(sd_event_new(&e), 0);
        ctx = (ProxyContext){ .event = e, .upstream = engine_path, .on_record = on_record, .pull_socket = pull_path };
        /* "mine" is in the caller's records; "theirs" carries the caller's
         * owner label too, which decides nothing. */
        assert_int_equal(owned_set_new(&owned), 0);
        assert_int_equal(owned_set_add(owned, OWNED_CONTAINER, "mine"), 1);
        caller.owned = owned;
        assert_int_equal(proxy_new(&ctx, &caller, proxy_path, -EBADF, &p), 0);
        while (!atomic_load(&stop))
                (void) sd_event_run(e, 50 * USEC_PER_MSEC);
        proxy_unlink(p);
        proxy_free(p);
        owned = owned_set_free(owned);
        sd_event_unref(e);
        return NULL;
}

static int setup(void **state) {
        int lfd;
        (void) state;
        signal(SIGPIPE, SIG_IGN);
        assert_non_null(mkdtemp(dir));
        snprintf(engine_path, sizeof(engine_path), "%s/engine.sock", dir);
        snprintf(proxy_path, sizeof(proxy_path), "%s/proxy.sock", dir);
        snprintf(pull_path, sizeof(pull_path), "%s/pull.sock", dir);
        lfd = unix_socket(pull_path, true);
        pthread_t pull_thread;
        pthread_create(&pull_thread, NULL, pull_main, (void *) (intptr_t) lfd);
        pthread_detach(pull_thread);
        lfd = unix_socket(engine_path, true);
        pthread_create(&engine_thread, NULL, engine_main, (void *) (intptr_t) lfd);
        pthread_detach(engine_thread);
        pthread_create(&loop_thread, NULL, loop_main, NULL);
        /* Until the proxy listens (the socket file exists from bind() on). */
        for (int i = 0; i < 1000; i++) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
                strcpy(sa.sun_path, proxy_path);
                ok = fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
                if (fd >= 0)
                        close(fd);
                if (ok)
                        break;
                usleep(10000);
        }
        return 0;
}

static int teardown(void **state) {
        char cmd[200];
        (void) state;
        atomic_store(&stop, true);
        pthread_join(loop_thread, NULL);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

/* Sends `req`, reads until `responses` complete "HTTP/1.1" messages ending
 * with `tail`-terminated bodies are in, or EOF / 5 s. */
static char *exchange(const char *req, size_t req_len, const char *until) {
        int fd = unix_socket(proxy_path, false);
        struct timeval tv = { .tv_sec = 5 };
        char *out = calloc(1, 65536);
        size_t len = 0;

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        for (size_t done = 0; done < req_len;) {
                ssize_t n = write(fd, req + done, req_len - done);
                if (n <= 0)
                        fail_msg("write after %zu of %zu bytes: %m", done, req_len);
                done += (size_t) n;
        }
        while (len < 65535) {
                ssize_t n = read(fd, out + len, 65535 - len);
                if (n <= 0)
                        break;
                len += (size_t) n;
                out[len] = '\0';
                if (until && strstr(out, until))
                        break;
        }
        close(fd);
        return out;
}

static size_t count(const char *hay, const char *needle) {
        size_t n = 0;
        for (const char *p = hay; (p = strstr(p, needle)); p++)
                n++;
        return n;
}

static void test_pipelined_keep_alive_requests_are_answered_in_order(void **state) {
        const char *req = "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nGET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n"
                          "HEAD /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
        char *out;
        (void) state;
        out = exchange(req, strlen(req), NULL);
        assert_int_equal(count(out, "HTTP/1.1 200 OK"), 3);
        /* HEAD: the engine's Content-Length is passed on, no body is read. */
        assert_true(strstr(out, "OKHTTP/1.1 200 OK") != NULL);
        free(out);
}

static void test_chunked_bodies_pass_both_ways_verbatim(void **state) {
        const char *req = "POST /v1.41/build?t=x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: y\r\n\r\n"
                          "GET /v1.41/images/chunky/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
        char *out;
        (void) state;
        seen_reset();
        out = exchange(req, strlen(req), "0\r\n\r\n");
        assert_true(seen_has("5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: y\r\n\r\n"));
        if (!strstr(out, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
                fail_msg("got: %s", out);
        free(out);
}

static void test_create_body_is_reframed_with_content_length(void **state) {
        const char *req = "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Type: application/json\r\nConnection: close\r\n\r\n"
                          "a\r\n{\"Image\":\"\r\n6\r\nubuntu\r\n2\r\n\"}\r\n0\r\n\r\n";
        char *out;
        (void) state;
        seen_reset();
        out = exchange(req, strlen(req), NULL);
        assert_true(strstr(out, "HTTP/1.1 201 Created") != NULL);
        assert_true(seen_has("Content-Length: "));
        assert_false(seen_has("Transfer-Encoding"));
        assert_true(seen_has("\"io.hostmesh.dockerproxy.owner.t\":\"\""));
        free(out);
}

static void test_others_containers_are_not_found_and_never_forwarded(void **state) {
        const char *theirs = "GET /v1.41/containers/theirs/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
        const char *mine = "POST /v1.41/containers/mine/stop HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
        char *out;
        (void) state;
        seen_reset();
        out = exchange(theirs, strlen(theirs), NULL);
        if (!strstr(out, "HTTP/1.1 404 Not Found"))
                fail_msg("got: %s", out);
        assert_true(strstr(out, "No such container: theirs") != NULL);
        assert_true(seen_has("GET /containers/theirs/json"));   /* the probe */
        assert_false(seen_has("/v1.41/containers/theirs"));      /* the request itself */
        free(out);
        out = exchange(mine, strlen(mine), NULL);
        assert_true(strstr(out, "HTTP/1.1 200 OK") != NULL);
        assert_true(seen_has("POST /v1.41/containers/mine/stop"));
        free(out);
}

static void test_the_engine_gets_the_checked_id_and_creates_are_recorded(void **state) {
        const char *by_name = "POST /v1.41/containers/web/stop?t=1 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
        const char *create = "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 16\r\n"
                             "Connection: close\r\n\r\n{\"Image\":\"busy\"}";
        const char *rm = "DELETE /containers/web HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
        char *out;
        (void) state;
        seen_reset();
        out = exchange(by_name, strlen(by_name), NULL);
        assert_true(strstr(out, "HTTP/1.1 200 OK") != NULL);
        /* The name was resolved and checked; the engine acts on that id. */
        assert_true(seen_has("POST /v1.41/containers/mine/stop?t=1 HTTP/1.1"));
        assert_false(seen_has("POST /v1.41/containers/web/stop"));
        free(out);
        out = exchange(create, strlen(create), NULL);
        assert_true(strstr(out, "HTTP/1.1 201 Created") != NULL);
        assert_true(records_have("t containers n add;"));
        free(out);
        out = exchange(rm, strlen(rm), NULL);
        assert_true(seen_has("DELETE /containers/mine HTTP/1.1"));
        assert_true(records_have("t containers mine forget;"));
        free(out);
}

static void test_refusals_answer_json_and_close(void **state) {
        const char *smuggle = "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        const char *priv = "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 33\r\n\r\n"
                           "{\"HostConfig\":{\"Privileged\":true}";
        char *out;
        (void) state;
        seen_reset();
        out = exchange(smuggle, strlen(smuggle), NULL);
        assert_true(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
        assert_true(strstr(out, "Connection: close") != NULL);
        free(out);
        /* 33 bytes: the closing brace is missing, so this is invalid JSON. */
        out = exchange(priv, strlen(priv), NULL);
        assert_true(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
        assert_true(strstr(out, "{\"message\":\"Request body is not valid JSON") != NULL);
        free(out);
        assert_false(seen_has("containers/create"));
}

static void test_checked_bodies_are_bounded_and_expect_continue_is_answered(void **state) {
        const char *big = "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 5000000\r\n\r\n{";
        const char *expect = "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\n"
                             "Content-Length: 18\r\nConnection: close\r\n\r\n{\"Image\":\"ubuntu\"}";
        char *out;
        (void) state;
        seen_reset();
        out = exchange(big, strlen(big), NULL);
        assert_true(strncmp(out, "HTTP/1.1 413 Payload Too Large\r\n", strlen("HTTP/1.1 413 Payload Too Large\r\n")) == 0);
        free(out);
        assert_false(seen_has("containers/create"));
        out = exchange(expect, strlen(expect), NULL);
        if (strncmp(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n", 47) != 0)
                fail_msg("got: %s", out);
        assert_true(strncmp(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n",
                            strlen("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")) == 0);
        assert_false(seen_has("Expect"));
        free(out);
}

/* A pull inside an instance is answered by the proxy with init's answer
 * as the Engine API's progress stream; the engine never sees it, and a
 * malformed reference never reaches init. */
static void test_pull_is_answered_through_the_host_and_never_reaches_the_engine(void **state) {
        const char *ok = "POST /v1.41/images/create?fromImage=127.0.0.1%3A5000%2Ftest%2Fb&tag=2 HTTP/1.1\r\nHost: d\r\n"
                         "Content-Length: 0\r\n\r\n";
        const char *missing = "POST /v1.41/images/create?fromImage=127.0.0.1%3A5000%2Ftest%2Fb&tag=missing HTTP/1.1\r\n"
                              "Host: d\r\n\r\n";
        const char *dies = "POST /images/create?fromImage=127.0.0.1%3A5000%2Fdies&tag=1 HTTP/1.1\r\nHost: d\r\n\r\n";
        const char *bad = "POST /images/create?fromImage=Not%20A%20Name&tag=1 HTTP/1.1\r\nHost: d\r\n\r\n";
        char *out;

        (void) state;
        seen_reset();
        out = exchange(ok, strlen(ok), NULL);
        assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
        assert_non_null(strstr(out, "Connection: close\r\n"));
        assert_non_null(strstr(out, "{\"status\":\"Pulling 127.0.0.1:5000/test/b:2 through the host"));
        assert_non_null(strstr(out, "{\"status\":\"Status: Downloaded newer image for 127.0.0.1:5000/test/b:2\"}\n"));
        assert_true(pulls_have("127.0.0.1:5000/test/b:2\n"));
        free(out);

        out = exchange(missing, strlen(missing), NULL);
        assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
        assert_non_null(strstr(out, "{\"errorDetail\":{\"message\":\"127.0.0.1:5000/test/b:missing: repository or tag "
                                    "not found in 127.0.0.1:5000 (manifest unknown); check the name and tag\"}"));
        free(out);

        out = exchange(dies, strlen(dies), NULL);
        assert_non_null(strstr(out, "the instance's init ended the pull without an answer"));
        free(out);

        out = exchange(bad, strlen(bad), NULL);
        assert_non_null(strstr(out, "HTTP/1.1 400 Bad Request\r\n"));
        assert_non_null(strstr(out, "invalid reference format"));
        assert_false(pulls_have("Not"));
        free(out);
        /* None of them reached the engine. */
        assert_false(seen_has("/images/create"));
}

static void test_large_streamed_body_survives_backpressure(void **state) {
        const size_t chunks = 96, chunk = 65536;
        const char *head = "POST /v1.41/build?t=big HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        /* + 1: sprintf() writes the terminating NUL after the last chunk. */
        size_t len = strlen(head) + chunks * (chunk + 9) + 5 + 1, off, body_bytes;
        char *req = malloc(len), *out, want[32];
        (void) state;
        assert_non_null(req);
        off = (size_t) sprintf(req, "%s", head);
        for (size_t i = 0; i < chunks; i++) {
                off += (size_t) sprintf(req + off, "10000\r\n");
                memset(req + off, 'a', chunk);
                off += chunk;
                off += (size_t) sprintf(req + off, "\r\n");
        }
        off += (size_t) sprintf(req + off, "0\r\n\r\n");
        body_bytes = off - strlen(head);
        out = exchange(req, off, NULL);
        snprintf(want, sizeof(want), "%012zu", body_bytes);
        if (!strstr(out, want))
                fail_msg("engine did not get the whole body (%zu bytes): %s", body_bytes, out);
        free(out);
        free(req);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pipelined_keep_alive_requests_are_answered_in_order),
                cmocka_unit_test(test_chunked_bodies_pass_both_ways_verbatim),
                cmocka_unit_test(test_create_body_is_reframed_with_content_length),
                cmocka_unit_test(test_others_containers_are_not_found_and_never_forwarded),
                cmocka_unit_test(test_the_engine_gets_the_checked_id_and_creates_are_recorded),
                cmocka_unit_test(test_refusals_answer_json_and_close),
                cmocka_unit_test(test_checked_bodies_are_bounded_and_expect_continue_is_answered),
                cmocka_unit_test(test_large_streamed_body_survives_backpressure),
                cmocka_unit_test(test_pull_is_answered_through_the_host_and_never_reaches_the_engine),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
