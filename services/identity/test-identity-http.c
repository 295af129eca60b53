/* SPDX-License-Identifier: MIT */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "identity-http.h"

static HttpRequest request(const char *text) {
        HttpRequest req;
        assert_int_equal(http_request_parse(text, strlen(text), NULL, &req, NULL), 0);
        return req;
}

static void test_documents_with_etag_and_304(void **state) {
        _cleanup_(identity_http_freep) IdentityHttp *s = NULL;
        _cleanup_free_ char *etag = NULL, *inm = NULL;
        IdentityHttpAnswer a;
        HttpRequest req;
        sd_event *e = NULL;
        const char *p, *q;
        int fd;
        (void) state;

        assert_int_equal(sd_event_new(&e), 0);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(identity_http_new(e, fd, NULL, NULL, 0, &s), 0);
        assert_int_equal(identity_http_set_document(s, "/jwks", "application/json", "{\"keys\":[]}", 300), 0);

        req = request("GET /jwks?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_int_equal(identity_http_answer(s, &req, &a), 0);
        assert_int_equal(a.status, 200);
        assert_string_equal(a.content_type, "application/json");
        assert_non_null(strstr(a.headers, "Cache-Control: public, max-age=300\r\n"));
        assert_int_equal(a.body_len, 11);
        assert_memory_equal(a.body, "{\"keys\":[]}", 11);
        p = strstr(a.headers, "ETag: ");
        assert_non_null(p);
        q = strstr(p, "\r\n");
        etag = strndup(p + 6, (size_t) (q - p - 6));
        free(a.headers);
        http_request_done(&req);

        assert_true(asprintf(&inm, "GET /jwks HTTP/1.1\r\nHost: a\r\nIf-None-Match:  \"other\", W/%s \r\n\r\n", etag) > 0);
        req = request(inm);
        assert_int_equal(identity_http_answer(s, &req, &a), 0);
        assert_int_equal(a.status, 304);
        assert_int_equal(a.body_len, 0);
        free(a.headers);

        /* New content, new ETag: the old one no longer matches. */
        assert_int_equal(identity_http_set_document(s, "/jwks", "application/json", "{\"keys\":[1]}", 300), 0);
        assert_int_equal(identity_http_answer(s, &req, &a), 0);
        assert_int_equal(a.status, 200);
        free(a.headers);
        http_request_done(&req);

        req = request("GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_int_equal(identity_http_answer(s, &req, &a), 0);
        assert_int_equal(a.status, 404);
        free(a.headers);
        http_request_done(&req);
        req = request("DELETE /jwks HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_int_equal(identity_http_answer(s, &req, &a), 0);
        assert_int_equal(a.status, 405);
        assert_string_equal(a.headers, "Allow: GET, HEAD\r\n");
        free(a.headers);
        http_request_done(&req);
        req = request("GET /jwks HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        assert_int_equal(identity_http_answer(s, &req, &a), 0);
        assert_int_equal(a.status, 413);
        free(a.headers);
        http_request_done(&req);
        s = identity_http_free(s);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_documents_with_etag_and_304),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
