/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dockerproxy-http.h"

static int parse_req(const char *s, HttpMessage **ret) {
        return http_parse_request(s, strlen(s), 1024 * 1024, ret);
}

static void test_request_with_content_length_is_framed_by_length(void **state) {
        _cleanup_(http_message_freep) HttpMessage *m = NULL;
        const char *s = "POST /v1.41/containers/create?name=x HTTP/1.1\r\n"
                        "Host: docker\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: 2\r\n"
                        "\r\n"
                        "{}";
        (void) state;
        assert_int_equal(parse_req(s, &m), 1);
        assert_string_equal(m->method, "POST");
        assert_string_equal(m->target, "/v1.41/containers/create?name=x");
        assert_int_equal(m->body, HTTP_BODY_LENGTH);
        assert_int_equal(m->content_length, 2);
        assert_int_equal(m->head_len, strlen(s) - 2);
        assert_true(m->keep_alive);
        assert_string_equal(http_message_header(m, "content-type"), "application/json");
}

static void test_incomplete_head_needs_more(void **state) {
        HttpMessage *m = NULL;
        (void) state;
        assert_int_equal(parse_req("GET /_ping HTTP/1.1\r\nHost: x\r\n", &m), 0);
        assert_int_equal(parse_req("GET /_ping HTTP/1.1\r\nHost: x\r\n\r", &m), 0);
        assert_null(m);
}

static void test_ambiguous_framing_is_refused(void **state) {
        HttpMessage *m = NULL;
        (void) state;
        /* CL + TE: the classic request smuggling vector. */
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n", &m), -EBADMSG);
        /* Two Content-Length headers, even equal ones. */
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   "Content-Length: 3\r\n\r\n", &m), -EBADMSG);
        /* A Content-Length list. */
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", &m), -EBADMSG);
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", &m), -EBADMSG);
        /* Two Transfer-Encoding headers. */
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n", &m), -EBADMSG);
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &m),
                         -EBADMSG);
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", &m),
                         -EOPNOTSUPP);
        /* TE in HTTP/1.0. */
        assert_int_equal(parse_req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &m), -EBADMSG);
        /* Space before the colon (RFC 9112 §5.1). */
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\n", &m), -EBADMSG);
        /* obs-fold (RFC 9112 §5.2). */
        assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", &m), -EBADMSG);
        /* Bare LF line ends. */
        assert_int_equal(parse_req("GET / HTTP/1.1\nHost: x\n\n", &m), -EBADMSG);
        /* Bare CR inside a line. */
        assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n", &m), -EBADMSG);
        /* Control characters in a value. */
        assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n", &m), -EBADMSG);
        assert_null(m);
}

static void test_request_line_and_host_rules(void **state) {
        HttpMessage *m = NULL;
        (void) state;
        assert_int_equal(parse_req("GET / HTTP/1.1\r\n\r\n", &m), -EBADMSG);                       /* no Host */
        assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &m), -EBADMSG); /* two Hosts */
        assert_int_equal(parse_req("GET / HTTP/2.0\r\nHost: a\r\n\r\n", &m), -EOPNOTSUPP);
        assert_int_equal(parse_req("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", &m), -EBADMSG);
        assert_int_equal(parse_req("GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n", &m), -EBADMSG);
        assert_int_equal(parse_req("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &m), -EBADMSG);
        assert_int_equal(parse_req("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", &m), -EBADMSG);
        assert_null(m);
}

static void test_size_limits(void **state) {
        HttpMessage *m = NULL;
        char *big;
        (void) state;
        assert_int_equal(http_parse_request("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 49, 10, &m),
                         -EMSGSIZE);
        big = malloc(HTTP_HEAD_MAX + 10);
        assert_non_null(big);
        memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
        memset(big + 19, 'a', HTTP_HEAD_MAX - 9);
        assert_int_equal(http_parse_request(big, HTTP_HEAD_MAX + 10, 10, &m), -E2BIG);
        free(big);
        assert_null(m);
}

static void test_keep_alive_and_upgrade(void **state) {
        _cleanup_(http_message_freep) HttpMessage *a = NULL, *b = NULL, *c = NULL;
        (void) state;
        assert_int_equal(parse_req("GET / HTTP/1.0\r\n\r\n", &a), 1);
        assert_false(a->keep_alive);
        assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &b), 1);
        assert_false(b->keep_alive);
        assert_int_equal(parse_req("POST /v1.41/containers/x/attach?stream=1 HTTP/1.1\r\nHost: a\r\n"
                                   "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n", &c), 1);
        assert_true(c->upgrade);
        assert_int_equal(c->body, HTTP_BODY_NONE);
}

static void test_response_framing(void **state) {
        _cleanup_(http_message_freep) HttpMessage *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL;
        const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nOK\r\n";
        (void) state;
        assert_int_equal(http_parse_response(ok, strlen(ok), "GET", &a), 1);
        assert_int_equal(a->status, 200);
        assert_int_equal(a->body, HTTP_BODY_LENGTH);
        assert_int_equal(http_parse_response(ok, strlen(ok), "HEAD", &b), 1);
        assert_int_equal(b->body, HTTP_BODY_NONE);
        const char *up = "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n";
        assert_int_equal(http_parse_response(up, strlen(up), "POST", &c), 1);
        assert_true(c->upgrade);
        assert_int_equal(c->body, HTTP_BODY_NONE);
        const char *raw = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n";
        assert_int_equal(http_parse_response(raw, strlen(raw), "POST", &d), 1);
        assert_int_equal(d->body, HTTP_BODY_UNTIL_CLOSE);
        assert_false(d->keep_alive);
        const char *ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_int_equal(http_parse_response(ch, strlen(ch), "GET", &e), 1);
        assert_int_equal(e->body, HTTP_BODY_CHUNKED);
}

static int collect(const char *data, size_t len, void *userdata) {
        strncat(userdata, data, len);
        return 0;
}

static void test_chunked_body_decodes_across_splits(void **state) {
        const char *body = "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        (void) state;
        /* Feed every possible split point: the scanner must reach the same result. */
        for (size_t split = 0; split <= strlen(body); split++) {
                HttpChunked c = {};
                char out[64] = "";
                size_t n1 = 0, n2 = 0;
                int r;

                r = http_chunked_feed(&c, body, split, &n1, collect, out);
                assert_true(r >= 0);
                if (r == 0) {
                        assert_int_equal(n1, split);
                        r = http_chunked_feed(&c, body + split, strlen(body) - split, &n2, collect, out);
                }
                assert_int_equal(r, 1);
                assert_int_equal(n1 + n2, strlen(body) - 4);
                assert_string_equal(out, "Wikipedia in\r\n\r\nchunks.");
        }
}

static void test_bad_chunk_sizes_are_refused(void **state) {
        static const char *const bad[] = {
                "-1\r\n",                   /* sign */
                "0x5\r\nhello\r\n0\r\n\r\n", /* 0x prefix */
                " 5\r\nhello\r\n",          /* leading space */
                "\r\n",                     /* empty size */
                "11111111111111111\r\n",    /* 17 digits: overflow */
                "5\r\nhelloX\r\n",          /* data longer than size */
                "5\nhello\r\n",             /* bare LF */
                "0\r\n folded\r\n\r\n",     /* obs-fold in trailer */
                "5;a\x01\r\n",              /* control char in chunk-ext */
        };
        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                HttpChunked c = {};
                size_t n;
                assert_int_equal(http_chunked_feed(&c, bad[i], strlen(bad[i]), &n, NULL, NULL), -EBADMSG);
        }
}

static void test_target_split_strips_version(void **state) {
        _cleanup_free_ char *p = NULL, *v = NULL, *q = NULL, *p2 = NULL, *v2 = NULL, *q2 = NULL, *p3 = NULL,
                           *v3 = NULL, *q3 = NULL;
        char *x = NULL, *y = NULL, *z = NULL;
        (void) state;
        assert_int_equal(http_split_target("/v1.41/containers/json?all=1", &p, &v, &q), 0);
        assert_string_equal(p, "/containers/json");
        assert_string_equal(v, "1.41");
        assert_string_equal(q, "all=1");
        assert_int_equal(http_split_target("/_ping", &p2, &v2, &q2), 0);
        assert_string_equal(p2, "/_ping");
        assert_string_equal(v2, "");
        assert_int_equal(http_split_target("/containers/%61bc/json", &p3, &v3, &q3), 0);
        assert_string_equal(p3, "/containers/abc/json");
        assert_int_equal(http_split_target("/containers/%2e%2e/json", &x, &y, &z), -EBADMSG);
        assert_int_equal(http_split_target("/containers//json", &x, &y, &z), -EBADMSG);
        assert_int_equal(http_split_target("/containers/json?a=1;b=2", &x, &y, &z), -EBADMSG);
        assert_int_equal(http_split_target("/containers/%00/json", &x, &y, &z), -EBADMSG);
}

static void test_query_get_decodes(void **state) {
        _cleanup_free_ char *v = NULL;
        char *w = NULL;
        (void) state;
        assert_int_equal(http_query_get("all=1&filters=%7B%22a%22%3A1%7D", "filters", &v), 1);
        assert_string_equal(v, "{\"a\":1}");
        assert_int_equal(http_query_get("all=1", "filters", &w), 0);
        assert_int_equal(http_query_get("filters=%zz", "filters", &w), -EBADMSG);
}

static void test_format_head_round_trips(void **state) {
        _cleanup_(http_message_freep) HttpMessage *m = NULL, *m2 = NULL;
        _cleanup_free_ char *out = NULL;
        size_t len;
        (void) state;
        assert_int_equal(parse_req("POST /x HTTP/1.1\r\nHost: a\r\nX-Registry-Auth: s\r\nContent-Length: 5\r\n\r\n", &m), 1);
        assert_int_equal(http_message_set_header(m, "content-length", "7"), 0);
        assert_int_equal(http_message_format_head(m, &out, &len), 0);
        assert_int_equal(http_parse_request(out, len, 100, &m2), 1);
        assert_int_equal(m2->content_length, 7);
        assert_int_equal(m2->n_headers, 3);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_with_content_length_is_framed_by_length),
                cmocka_unit_test(test_incomplete_head_needs_more),
                cmocka_unit_test(test_ambiguous_framing_is_refused),
                cmocka_unit_test(test_request_line_and_host_rules),
                cmocka_unit_test(test_size_limits),
                cmocka_unit_test(test_keep_alive_and_upgrade),
                cmocka_unit_test(test_response_framing),
                cmocka_unit_test(test_chunked_body_decodes_across_splits),
                cmocka_unit_test(test_bad_chunk_sizes_are_refused),
                cmocka_unit_test(test_target_split_strips_version),
                cmocka_unit_test(test_query_get_decodes),
                cmocka_unit_test(test_format_head_round_trips),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
