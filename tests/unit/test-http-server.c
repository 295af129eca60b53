/* SPDX-License-Identifier: MIT */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "http-server.h"

static int parse(const char *text, HttpRequest *req, size_t *used) {
        return http_request_parse(text, strlen(text), NULL, req, used);
}

static void test_parse_request_with_headers_and_length_body(void **state) {
        const char *r = "POST /a.B/C?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type:  application/json \r\n"
                        "Content-Length: 2\r\n\r\n{}GET";
        HttpRequest req;
        size_t used;

        assert_int_equal(parse(r, &req, &used), 0);
        assert_string_equal(req.method, "POST");
        assert_string_equal(req.target, "/a.B/C?x=1");
        assert_int_equal(req.minor_version, 1);
        assert_string_equal(http_request_header(&req, "content-type"), "application/json");
        assert_null(http_request_header(&req, "Accept"));
        assert_int_equal(req.body_len, 2);
        assert_string_equal(req.body, "{}");
        assert_true(req.keep_alive);
        assert_int_equal(used, strlen(r) - 3);  /* the pipelined "GET" stays */
        http_request_done(&req);
}

static void test_parse_chunked_body_with_extension_and_trailer(void **state) {
        const char *r = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3;ext=1\r\nabc\r\n"   /* 3 bytes, with a chunk extension */
                        "A\r\n0123456789\r\n"  /* 10 bytes, upper-case hex */
                        "0\r\nX-Trailer: y\r\n\r\n";
        HttpRequest req;
        size_t used;

        assert_int_equal(parse(r, &req, &used), 0);
        assert_int_equal(req.body_len, 13);
        assert_string_equal(req.body, "abc0123456789");
        assert_int_equal(used, strlen(r));
        http_request_done(&req);
        /* Cut anywhere before the end: more is needed. */
        for (size_t cut = 1; cut < strlen(r); cut++)
                assert_int_equal(http_request_parse(r, cut, NULL, &req, &used), -EAGAIN);
}

static void test_parse_keep_alive_rules(void **state) {
        HttpRequest req;

        assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &req, NULL), 0);
        assert_false(req.keep_alive);
        http_request_done(&req);
        assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &req, NULL), 0);
        assert_false(req.keep_alive);
        http_request_done(&req);
        assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req, NULL), 0);
        assert_true(req.keep_alive);
        http_request_done(&req);
}

static void test_parse_refuses_malformed_and_smuggling_requests(void **state) {
        HttpRequest req;
        HttpLimits small = { .head_max = 64, .body_max = 8 };
        char big[200];

        assert_int_equal(parse("GET / HTTP/2.0\r\nHost: h\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", &req, NULL), -EBADMSG);  /* no Host */
        assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nX: a\001b\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("G\001T / HTTP/1.1\r\nHost: h\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                               &req, NULL), -EBADMSG);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                               &req, NULL), -EBADMSG);
        /* Both framings: refused rather than guessed (request smuggling). */
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "0\r\n\r\n", &req, NULL), -EBADMSG);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", &req, NULL),
                         -EOPNOTSUPP);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &req, NULL),
                         -EBADMSG);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &req, NULL),
                         -EBADMSG);
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", &req,
                               NULL), -EBADMSG);  /* chunk longer than its size */
        assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "fffffffffffffffff\r\n", &req, NULL), -EBADMSG);

        /* Limits: the head, a declared length, a chunked body that grows. */
        memset(big, 'a', sizeof(big));
        assert_int_equal(http_request_parse(big, sizeof(big), &small, &req, NULL), -EMSGSIZE);
        const char *cl = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n";
        assert_int_equal(http_request_parse(cl, strlen(cl), &small, &req, NULL), -EFBIG);
        const char *ch = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n";
        assert_int_equal(http_request_parse(ch, strlen(ch), &small, &req, NULL), -EFBIG);
}

/* ---- a live server on loopback ---------------------------------------------- */

typedef struct Live {
        sd_event *event;
        HttpServer *server;
        int port;
        unsigned handled;
        HttpExchange *held;       /* answered later */
        bool aborted;
        int h2_fd;
} Live;

static void on_abort(HttpExchange *x, void *userdata) {
        Live *l = userdata;
        (void) x;
        l->held = NULL;
        l->aborted = true;
}

static void handler(HttpExchange *x, const HttpRequest *req, void *userdata) {
        Live *l = userdata;
        char body[256];

        l->handled++;
        if (streq(req->target, "/stream")) {
                assert_int_equal(http_exchange_stream_begin(x, 200, "text/plain", "X-A: b\r\n"), 0);
                assert_int_equal(http_exchange_stream_send(x, "hello ", 6), 0);
                assert_int_equal(http_exchange_stream_send(x, "world", 5), 0);
                assert_int_equal(http_exchange_stream_end(x), 0);
                return;
        }
        if (streq(req->target, "/later")) {
                l->held = x;
                http_exchange_on_abort(x, on_abort, l);
                return;
        }
        int n = snprintf(body, sizeof(body), "%s %s %zu", req->method, req->target, req->body_len);
        assert_int_equal(http_exchange_respond(x, 200, "text/plain", NULL, body, (size_t) n), 0);
}

static int h2_hook(int fd, int peer_fd, void *userdata) {
        Live *l = userdata;
        assert_int_equal(fd, peer_fd);
        l->h2_fd = fd;
        return 0;
}

static bool claim_grpc(const HttpRequest *first, void *userdata) {
        const char *ctype = http_request_header(first, "content-type");
        (void) userdata;
        return ctype && strncmp(ctype, "application/grpc", 16) == 0;
}

static void live_start_with(Live *l, uint64_t request_timeout, bool h2_serve) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        HttpServerOptions opts = { .request_timeout_usec = request_timeout, .h2 = h2_hook, .h2_userdata = l,
                                   .limits = { .body_max = 1024 }, .h2_serve = h2_serve,
                                   .h2_claim = h2_serve ? claim_grpc : NULL };
        int fd;

        *l = (Live){ .h2_fd = -1 };
        assert_int_equal(sd_event_new(&l->event), 0);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 16), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
        l->port = ntohs(sa.sin_port);
        assert_int_equal(http_server_new(l->event, fd, &opts, handler, l, &l->server), 0);
}

static void live_start(Live *l, uint64_t request_timeout) {
        live_start_with(l, request_timeout, /* h2_serve= */ false);
}

static void live_stop(Live *l) {
        l->server = http_server_free(l->server);
        if (l->h2_fd >= 0)
                close(l->h2_fd);
        l->event = sd_event_unref(l->event);
}

static int live_connect(Live *l) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                  .sin_port = htons((uint16_t) l->port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(fd >= 0);
        (void) connect(fd, (struct sockaddr *) &sa, sizeof(sa));
        return fd;
}

/* Runs the loop until `want` has arrived on fd (or EOF); returns what came. */
static char *live_read_until(Live *l, int fd, const char *want, bool *eof) {
        static char buf[8192];
        size_t len = 0;

        *eof = false;
        for (int i = 0; i < 300; i++) {
                ssize_t n;
                assert_true(sd_event_run(l->event, 10 * 1000) >= 0);
                n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
                if (n == 0) {
                        *eof = true;
                        break;
                }
                if (n > 0) {
                        len += (size_t) n;
                        buf[len] = 0;
                        if (want && strstr(buf, want))
                                break;
                }
        }
        buf[len] = 0;
        return buf;
}

static void test_live_keep_alive_pipelining_and_chunked_request(void **state) {
        Live l;
        bool eof;
        int fd;
        const char *two = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
                          "POST /two HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";

        live_start(&l, 0);
        fd = live_connect(&l);
        (void) sd_event_run(l.event, 10000);
        assert_int_equal(send(fd, two, strlen(two), 0), (ssize_t) strlen(two));
        char *out = live_read_until(&l, fd, "POST /two 4", &eof);
        assert_false(eof);
        assert_non_null(strstr(out, "Content-Type: text/plain\r\nContent-Length: 10\r\n\r\nGET /one 0"));
        assert_non_null(strstr(out, "POST /two 4"));
        assert_null(strstr(out, "Connection: close"));
        assert_int_equal(l.handled, 2);
        /* The same connection takes a third request with Connection: close. */
        const char *third = "GET /stream HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        assert_int_equal(send(fd, third, strlen(third), 0), (ssize_t) strlen(third));
        out = live_read_until(&l, fd, NULL, &eof);
        assert_true(eof);
        assert_non_null(strstr(out, "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                    "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"));
        assert_non_null(strstr(out, "X-A: b\r\n"));
        close(fd);
        live_stop(&l);
}

static void test_live_errors_oversize_and_timeout(void **state) {
        Live l;
        bool eof;
        int fd;
        char *out;

        live_start(&l, 200 * 1000);
        /* A body over the 1 KiB limit: 413, and the connection is closed. */
        fd = live_connect(&l);
        const char *big = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n";
        assert_int_equal(send(fd, big, strlen(big), 0), (ssize_t) strlen(big));
        out = live_read_until(&l, fd, NULL, &eof);
        assert_true(eof);
        assert_true(strncmp(out, "HTTP/1.1 413 Content Too Large\r\n", 32) == 0);
        close(fd);
        /* Garbage: 400. */
        fd = live_connect(&l);
        assert_int_equal(send(fd, "HELLO\r\n\r\n", 9, 0), 9);
        out = live_read_until(&l, fd, NULL, &eof);
        assert_true(eof);
        assert_true(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
        close(fd);
        /* Half a request, then silence: 408 once the request timeout passes. */
        fd = live_connect(&l);
        assert_int_equal(send(fd, "GET / HTTP/1.1\r\n", 16, 0), 16);
        out = live_read_until(&l, fd, NULL, &eof);
        assert_true(eof);
        assert_true(strncmp(out, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
        close(fd);
        assert_int_equal(l.handled, 0);
        assert_int_equal(http_server_connections(l.server), 0);
        live_stop(&l);
}

static void test_live_late_answer_and_client_leaving(void **state) {
        Live l;
        bool eof;
        int fd;
        char *out;
        const char *req = "GET /later HTTP/1.1\r\nHost: h\r\n\r\n";

        live_start(&l, 0);
        fd = live_connect(&l);
        assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t) strlen(req));
        for (int i = 0; i < 100 && !l.held; i++)
                (void) sd_event_run(l.event, 10000);
        assert_non_null(l.held);
        assert_int_equal(http_exchange_respond(l.held, 404, "text/plain", NULL, "no", 2), 0);
        l.held = NULL;
        out = live_read_until(&l, fd, "\r\n\r\nno", &eof);
        assert_true(strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
        /* Asked again, the client leaves before the answer: the handler hears of it. */
        assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t) strlen(req));
        for (int i = 0; i < 100 && !l.held; i++)
                (void) sd_event_run(l.event, 10000);
        assert_non_null(l.held);
        close(fd);
        for (int i = 0; i < 100 && !l.aborted; i++)
                (void) sd_event_run(l.event, 10000);
        assert_true(l.aborted);
        assert_null(l.held);
        assert_int_equal(http_server_connections(l.server), 0);
        live_stop(&l);
}

static void test_live_http2_preface_goes_to_the_hook(void **state) {
        Live l;
        int fd;
        char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        char got[sizeof(preface)];

        live_start(&l, 0);
        fd = live_connect(&l);
        (void) sd_event_run(l.event, 10000);
        /* Sent in two parts: "PR" alone is not enough to decide. */
        assert_int_equal(send(fd, preface, 2, 0), 2);
        for (int i = 0; i < 20; i++)
                (void) sd_event_run(l.event, 10000);
        assert_int_equal(l.h2_fd, -1);
        assert_int_equal(send(fd, preface + 2, sizeof(preface) - 3, 0), (ssize_t) sizeof(preface) - 3);
        for (int i = 0; i < 100 && l.h2_fd < 0; i++)
                (void) sd_event_run(l.event, 10000);
        assert_true(l.h2_fd >= 0);
        /* Nothing was consumed: the hook's fd reads the whole preface. */
        assert_int_equal(recv(l.h2_fd, got, sizeof(got) - 1, MSG_WAITALL), (ssize_t) sizeof(preface) - 1);
        assert_memory_equal(got, preface, sizeof(preface) - 1);
        assert_int_equal(http_server_connections(l.server), 0);
        close(fd);
        live_stop(&l);
}

/* What curl --http2-prior-knowledge sent (tests/fuzz/corpus/http2-server, whose
 * first byte is the fuzzer's mode and is skipped). */
static size_t read_seed(const char *name, char *buf, size_t size) {
        char path[512];
        FILE *f;
        size_t n;
        snprintf(path, sizeof(path), "%s/%s", H2_SEEDS, name);
        f = fopen(path, "re");
        assert_non_null(f);
        n = fread(buf, 1, size, f);
        fclose(f);
        assert_true(n > 1 && n < size);
        memmove(buf, buf + 1, n - 1);
        return n - 1;
}

static void test_live_http2_first_request_decides_who_serves(void **state) {
        char sent[4096], got[4096];
        size_t n;
        Live l;
        int fd;

        live_start_with(&l, 0, /* h2_serve= */ true);

        /* gRPC first: the hook gets the socket with every byte unread, and
         * the client has heard nothing but our SETTINGS (RFC 9113 §3.4). */
        n = read_seed("h2-grpc-first-mode1", sent, sizeof(sent));
        fd = live_connect(&l);
        (void) sd_event_run(l.event, 10000);
        assert_int_equal(send(fd, sent, n, 0), (ssize_t) n);
        for (int i = 0; i < 200 && l.h2_fd < 0; i++)
                (void) sd_event_run(l.event, 10000);
        assert_true(l.h2_fd >= 0);
        assert_int_equal(recv(l.h2_fd, got, n, MSG_WAITALL), (ssize_t) n);
        assert_memory_equal(got, sent, n);
        /* 9-byte frame header: length 6, type SETTINGS (4), flags 0, stream 0; then
         * MAX_CONCURRENT_STREAMS (3) = 100. Nothing else, not even the ACK. */
        const uint8_t settings[] = { 0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100 };
        assert_int_equal(recv(fd, got, sizeof(got), 0), (ssize_t) sizeof(settings));
        assert_memory_equal(got, settings, sizeof(settings));
        assert_int_equal(l.handled, 0);
        close(fd);
        close(l.h2_fd);
        l.h2_fd = -1;

        /* Connect first: served here, the handler sees the request as HTTP/2. */
        n = read_seed("h2-connect-json-mode0", sent, sizeof(sent));
        fd = live_connect(&l);
        (void) sd_event_run(l.event, 10000);
        assert_int_equal(send(fd, sent, n, 0), (ssize_t) n);
        /* The answer is a HEADERS frame and a DATA frame holding the handler's body. */
        size_t have = 0;
        for (int i = 0; i < 300 && !memmem(got, have, "POST /namespace", 15); i++) {
                ssize_t k;
                (void) sd_event_run(l.event, 10000);
                k = recv(fd, got + have, sizeof(got) - have, MSG_DONTWAIT);
                if (k > 0)
                        have += (size_t) k;
        }
        assert_non_null(memmem(got, have, "POST /namespace.cloud.compute.v1beta.ComputeService/ListInstances 18", 68));
        assert_int_equal(l.handled, 1);
        assert_int_equal(l.h2_fd, -1);
        assert_int_equal(http_server_connections(l.server), 1);
        close(fd);

        /* The preface and an empty SETTINGS frame, then the client shuts down
         * its side: peeked bytes hide the EOF, the hang-up must not. */
        const char half[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";
        /* (The Connect connection above goes when its client closed it.) */
        for (int i = 0; i < 100 && http_server_connections(l.server) > 0; i++)
                (void) sd_event_run(l.event, 10000);
        assert_int_equal(http_server_connections(l.server), 0);
        fd = live_connect(&l);
        assert_int_equal(send(fd, half, sizeof(half) - 1, 0), (ssize_t) sizeof(half) - 1);
        for (int i = 0; i < 100 && http_server_connections(l.server) == 0; i++)
                (void) sd_event_run(l.event, 10000);
        for (int i = 0; i < 20; i++)
                (void) sd_event_run(l.event, 10000);
        assert_int_equal(http_server_connections(l.server), 1);  /* waiting for a request */
        assert_int_equal(shutdown(fd, SHUT_WR), 0);
        for (int i = 0; i < 100 && http_server_connections(l.server) > 0; i++)
                (void) sd_event_run(l.event, 10000);
        assert_int_equal(http_server_connections(l.server), 0);
        assert_int_equal(l.h2_fd, -1);
        close(fd);
        live_stop(&l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_request_with_headers_and_length_body),
                cmocka_unit_test(test_parse_chunked_body_with_extension_and_trailer),
                cmocka_unit_test(test_parse_keep_alive_rules),
                cmocka_unit_test(test_parse_refuses_malformed_and_smuggling_requests),
                cmocka_unit_test(test_live_keep_alive_pipelining_and_chunked_request),
                cmocka_unit_test(test_live_errors_oversize_and_timeout),
                cmocka_unit_test(test_live_late_answer_and_client_leaving),
                cmocka_unit_test(test_live_http2_preface_goes_to_the_hook),
                cmocka_unit_test(test_live_http2_first_request_decides_who_serves),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
