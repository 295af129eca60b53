/* SPDX-License-Identifier: MIT */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "identity-http.h"

static void test_parse_request_line_and_if_none_match(void **state) {
        const char *r = "GET /.well-known/jwks.json?x=1 HTTP/1.1\r\nHost: a\r\nIf-None-Match:  \"abc\" \r\n\r\nrest";
        HttpRequest req;
        size_t used;
        (void) state;

        assert_int_equal(http_request_parse(r, strlen(r), &req, &used), 0);
        assert_string_equal(req.method, "GET");
        assert_string_equal(req.path, "/.well-known/jwks.json?x=1");
        assert_string_equal(req.if_none_match, "\"abc\"");
        assert_int_equal(used, strlen(r) - 4);
}

static void test_parse_incomplete_oversized_and_bad_requests(void **state) {
        char big[HTTP_REQUEST_MAX + 10];
        HttpRequest req;
        (void) state;

        assert_int_equal(http_request_parse("GET / HTTP/1.1\r\nHost: a\r\n", 25, &req, NULL), -EAGAIN);
        memset(big, 'a', sizeof(big));
        assert_int_equal(http_request_parse(big, sizeof(big), &req, NULL), -EMSGSIZE);
        assert_int_equal(http_request_parse("GET / HTTP/2.0\r\n\r\n", 18, &req, NULL), -EBADMSG);
        assert_int_equal(http_request_parse("GET  / HTTP/1.1\r\n\r\n", 19, &req, NULL), -EBADMSG);
        assert_int_equal(http_request_parse("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 33, &req, NULL), -EBADMSG);
        assert_int_equal(http_request_parse("GET / HTTP/1.1\r\n folded\r\n\r\n", 27, &req, NULL), -EBADMSG);
        assert_int_equal(http_request_parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 39, &req, NULL), -EOPNOTSUPP);
        assert_int_equal(http_request_parse("G\001T / HTTP/1.1\r\n\r\n", 18, &req, NULL), -EBADMSG);
}

static void test_documents_with_etag_and_304(void **state) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        _cleanup_free_ char *out = NULL, *etag = NULL;
        sd_event *e = NULL;
        HttpRequest req = { .method = "GET", .path = "/jwks" };
        const char *p, *q;
        size_t len;
        int fd;
        (void) state;

        assert_int_equal(sd_event_new(&e), 0);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(http_server_new(e, fd, NULL, NULL, 0, &s), 0);
        assert_int_equal(http_server_set_document(s, "/jwks", "application/json", "{\"keys\":[]}", 300), 0);

        assert_int_equal(http_server_respond(s, &req, &out, &len), 0);
        assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
        assert_non_null(strstr(out, "Cache-Control: public, max-age=300\r\n"));
        assert_non_null(strstr(out, "Content-Length: 11\r\n"));
        assert_true(strcmp(out + len - 11, "{\"keys\":[]}") == 0);
        p = strstr(out, "ETag: ");
        assert_non_null(p);
        q = strstr(p, "\r\n");
        etag = strndup(p + 6, (size_t) (q - p - 6));
        out = (free(out), NULL);

        snprintf(req.if_none_match, sizeof(req.if_none_match), "\"other\", %s", etag);
        assert_int_equal(http_server_respond(s, &req, &out, &len), 0);
        assert_true(strncmp(out, "HTTP/1.1 304 Not Modified\r\n", 27) == 0);
        assert_null(strstr(out, "{\"keys\""));
        out = (free(out), NULL);

        /* New content, new ETag: the old one no longer matches. */
        assert_int_equal(http_server_set_document(s, "/jwks", "application/json", "{\"keys\":[1]}", 300), 0);
        assert_int_equal(http_server_respond(s, &req, &out, &len), 0);
        assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
        out = (free(out), NULL);

        req = (HttpRequest){ .method = "GET", .path = "/other" };
        assert_int_equal(http_server_respond(s, &req, &out, &len), 0);
        assert_true(strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
        out = (free(out), NULL);
        req = (HttpRequest){ .method = "DELETE", .path = "/jwks" };
        assert_int_equal(http_server_respond(s, &req, &out, &len), 0);
        assert_true(strncmp(out, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
        s = http_server_free(s);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_request_line_and_if_none_match),
                cmocka_unit_test(test_parse_incomplete_oversized_and_bad_requests),
                cmocka_unit_test(test_documents_with_etag_and_304),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
