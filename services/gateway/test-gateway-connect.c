/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>

#include "gateway-connect.h"

#define LIST "/namespace.cloud.compute.v1beta.ComputeService/ListInstances"
#define DESCRIBE "/namespace.cloud.compute.v1beta.ComputeService/DescribeInstance"
#define DESTROY "/namespace.cloud.compute.v1beta.ComputeService/DestroyInstance"

static HttpRequest request(const char *text, size_t len) {
        HttpRequest req;
        assert_int_equal(http_request_parse(text, len, NULL, &req, NULL), 0);
        return req;
}

static int parse(const char *text, size_t len, ConnectRequest *ret, RpcCode *code, char **msg) {
        HttpRequest req = request(text, len);
        int r = connect_request_parse(&req, ret, code, msg);
        http_request_done(&req);
        return r;
}

static void test_unary_json_with_timeout(void **state) {
        const char *t = "POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/json; charset=utf-8\r\n"
                        "Connect-Protocol-Version: 1\r\nConnect-Timeout-Ms: 1500\r\nContent-Length: 2\r\n\r\n{}";
        HttpRequest req = request(t, strlen(t));
        ConnectRequest c;
        RpcCode code;
        char *msg;

        assert_int_equal(connect_request_parse(&req, &c, &code, &msg), 0);
        assert_string_equal(c.method, LIST);
        assert_true(c.json);
        assert_false(c.streaming);
        assert_int_equal(c.timeout_usec, 1500 * 1000);
        assert_int_equal(c.message_len, 2);
        assert_memory_equal(c.message, "{}", 2);
        assert_int_equal(code, RPC_OK);
        assert_null(msg);
        assert_non_null(connect_method_find(c.method));
        assert_string_equal(connect_method_find(c.method)->input->name,
                            "namespace.cloud.compute.v1beta.ListInstancesRequest");
        http_request_done(&req);
}

static void test_streaming_envelope(void **state) {
        /* flags 0, length 2, "{}" */
        const char t[] = "POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/connect+proto\r\n"
                         "Content-Length: 7\r\n\r\n\x00\x00\x00\x00\x02{}";
        ConnectRequest c;
        RpcCode code;
        char *msg;

        assert_int_equal(parse(t, sizeof(t) - 1, &c, &code, &msg), 0);
        assert_true(c.streaming);
        assert_false(c.json);
        assert_int_equal(c.message_len, 2);
}

static void expect_refusal(const char *t, size_t len, int status, RpcCode want, const char *words) {
        ConnectRequest c;
        RpcCode code;
        char *msg = NULL;

        assert_int_equal(parse(t, len, &c, &code, &msg), status);
        assert_int_equal(code, want);
        assert_non_null(msg);
        if (!strstr(msg, words))
                fail_msg("'%s' does not say '%s'", msg, words);
        free(msg);
}

static void test_refusals(void **state) {
#define R(text, status, code, words) expect_refusal(text, sizeof(text) - 1, status, code, words)
        R("PUT " LIST " HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 405, RPC_UNIMPLEMENTED, "POST");
        /* GET (Connect spec, "Unary-Get-Request") */
        R("GET " LIST " HTTP/1.1\r\nHost: h\r\n\r\n", 415, RPC_INVALID_ARGUMENT, "encoding=json");
        R("GET " DESTROY "?encoding=json&message=%7B%7D HTTP/1.1\r\nHost: h\r\n\r\n", 405, RPC_UNIMPLEMENTED,
          "NO_SIDE_EFFECTS");
        R("GET " LIST "?encoding=json&encoding=proto HTTP/1.1\r\nHost: h\r\n\r\n", 400, RPC_INVALID_ARGUMENT, "twice");
        R("GET " LIST "?encoding=yaml HTTP/1.1\r\nHost: h\r\n\r\n", 415, RPC_INVALID_ARGUMENT, "yaml");
        R("GET " LIST "?connect=v2&encoding=json HTTP/1.1\r\nHost: h\r\n\r\n", 400, RPC_INVALID_ARGUMENT, "v2");
        R("GET " LIST "?encoding=json&compression=gzip HTTP/1.1\r\nHost: h\r\n\r\n", 501, RPC_UNIMPLEMENTED, "gzip");
        R("GET " LIST "?encoding=json&message=%7 HTTP/1.1\r\nHost: h\r\n\r\n", 400, RPC_INVALID_ARGUMENT,
          "percent-encoded");
        R("GET " LIST "?encoding=json&message=%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400, RPC_INVALID_ARGUMENT,
          "percent-encoded");
        R("GET " LIST "?encoding=proto&base64=1&message=a%21 HTTP/1.1\r\nHost: h\r\n\r\n", 400, RPC_INVALID_ARGUMENT,
          "base64url");
        R("GET " LIST "?encoding=proto&base64=2 HTTP/1.1\r\nHost: h\r\n\r\n", 400, RPC_INVALID_ARGUMENT, "base64");
        R("POST " LIST "?encoding=json HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 404, RPC_UNIMPLEMENTED,
          "No Connect method");
        R("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 404, RPC_UNIMPLEMENTED, "/package.Service/Method");
        R("POST /a.B/C/D HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 404, RPC_UNIMPLEMENTED, "/a.B/C/D");
        R("POST /a.B/C%00 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 404, RPC_UNIMPLEMENTED, "No Connect method");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 415, RPC_INVALID_ARGUMENT, "Content-Type");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: text/xml\r\nContent-Length: 0\r\n\r\n", 415,
          RPC_INVALID_ARGUMENT, "text/xml");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/jsonx\r\nContent-Length: 0\r\n\r\n", 415,
          RPC_INVALID_ARGUMENT, "application/jsonx");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nConnect-Protocol-Version: 2\r\n"
          "Content-Length: 0\r\n\r\n", 400, RPC_INVALID_ARGUMENT, "Connect-Protocol-Version 2");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nConnect-Timeout-Ms: 12345678901\r\n"
          "Content-Length: 0\r\n\r\n", 400, RPC_INVALID_ARGUMENT, "1 to 10 digits");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nConnect-Timeout-Ms: -5\r\n"
          "Content-Length: 0\r\n\r\n", 400, RPC_INVALID_ARGUMENT, "'-5'");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Encoding: br\r\n"
          "Content-Length: 0\r\n\r\n", 501, RPC_UNIMPLEMENTED, "br");
        /* Streaming refusals travel in the end-stream message: HTTP 200. */
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/connect+json\r\nContent-Length: 3\r\n\r\nabc",
          200, RPC_INVALID_ARGUMENT, "5-byte prefix");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/connect+json\r\nContent-Length: 7\r\n\r\n"
          "\x01\x00\x00\x00\x02{}", 200, RPC_INVALID_ARGUMENT, "flags 0x01");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/connect+json\r\nContent-Length: 7\r\n\r\n"
          "\x00\x00\x00\x00\x09{}", 200, RPC_INVALID_ARGUMENT, "says 9 bytes but 2 follow");
        R("POST " LIST " HTTP/1.1\r\nHost: h\r\nContent-Type: application/connect+json\r\n"
          "Connect-Content-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", 200, RPC_UNIMPLEMENTED, "gzip");
#undef R
}

static void test_get_json_percent_encoded(void **state) {
        const char *t = "GET " LIST "?connect=v1&encoding=json&message=%7B%22maxEntries%22%3A+%225%22%7D HTTP/1.1\r\n"
                        "Host: h\r\nConnect-Timeout-Ms: 20\r\n\r\n";
        ConnectRequest c;
        RpcCode code;
        char *msg;

        assert_int_equal(parse(t, strlen(t), &c, &code, &msg), 0);
        assert_string_equal(c.method, LIST);
        assert_true(c.get);
        assert_true(c.json);
        assert_false(c.streaming);
        assert_int_equal(c.timeout_usec, 20 * 1000);
        /* '+' is a space, as in form encoding */
        assert_int_equal(c.message_len, strlen("{\"maxEntries\": \"5\"}"));
        assert_memory_equal(c.message, "{\"maxEntries\": \"5\"}", c.message_len);
        connect_request_done(&c);
}

static void test_get_proto_base64url_unpadded(void **state) {
        /* DescribeInstanceRequest{instance_id (1) = "nope"} = 0a 04 6e 6f 70 65 → "CgRub3Bl" */
        const char *t = "GET " DESCRIBE "?encoding=proto&base64=1&compression=identity&message=CgRub3Bl HTTP/1.1\r\n"
                        "Host: h\r\n\r\n";
        ConnectRequest c;
        RpcCode code;
        char *msg;

        assert_int_equal(parse(t, strlen(t), &c, &code, &msg), 0);
        assert_false(c.json);
        assert_int_equal(c.message_len, 6);
        assert_memory_equal(c.message, "\x0a\x04nope", 6);
        connect_request_done(&c);
        /* An empty message is an empty request. */
        t = "GET " DESCRIBE "?encoding=proto HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_int_equal(parse(t, strlen(t), &c, &code, &msg), 0);
        assert_int_equal(c.message_len, 0);
        connect_request_done(&c);
}

/* The list of GET-able methods is the proto's NO_SIDE_EFFECTS methods, no
 * more, no fewer (protobuf-c keeps no method options, so the gateway holds
 * a copy). */
static void test_idempotent_methods_match_the_proto(void **state) {
        static const char *const files[] = { "namespace/cloud/compute/v1beta/compute.proto",
                                             "namespace/cloud/iam/v1beta/token.proto" };
        size_t found = 0, listed = 0;

        for (size_t f = 0; f < ELEMENTSOF(files); f++) {
                char path[512], package[128] = "", service[128] = "", *text, *p;
                FILE *fp;
                long size;

                snprintf(path, sizeof(path), "%s/%s", PROTO_DIR, files[f]);
                fp = fopen(path, "re");
                assert_non_null(fp);
                assert_int_equal(fseek(fp, 0, SEEK_END), 0);
                size = ftell(fp);
                rewind(fp);
                text = calloc(1, (size_t) size + 1);
                assert_int_equal(fread(text, 1, (size_t) size, fp), (size_t) size);
                fclose(fp);
                assert_int_equal(sscanf(strstr(text, "\npackage ") + 9, "%127[^;]", package), 1);
                for (p = text; (p = strstr(p, "\n")); p++) {
                        char name[128], method[512];
                        const char *q = p + 1 + strspn(p + 1, " ");
                        if (sscanf(q, "service %127[A-Za-z0-9_]", service) == 1)
                                continue;
                        if (sscanf(q, "rpc %127[A-Za-z0-9_]", name) != 1)
                                continue;
                        /* The rpc's own text runs to its ';' or its '}'. */
                        const char *end = strpbrk(strchr(q, ')') ? strchr(strchr(q, ')') + 1, ')') : q, ";{");
                        bool idempotent = end && *end == '{' &&
                                          strstr(end, "NO_SIDE_EFFECTS") && strstr(end, "NO_SIDE_EFFECTS") < strchr(end, '}');
                        snprintf(method, sizeof(method), "/%s.%s/%s", package, service, name);
                        if (idempotent != connect_method_is_idempotent(method))
                                fail_msg("%s: the proto says %s, the gateway's list does not", method,
                                         idempotent ? "NO_SIDE_EFFECTS" : "not idempotent");
                        found += idempotent;
                }
                free(text);
        }
        for (size_t i = 0; connect_idempotent_methods[i]; i++)
                listed++;
        assert_int_equal(found, listed);
        assert_true(listed >= 2);
}

static void test_codes_and_error_bodies(void **state) {
        char *s;
        /* Connect spec, "Error Codes". */
        assert_int_equal(connect_code_http_status(RPC_NOT_FOUND), 404);
        assert_int_equal(connect_code_http_status(RPC_UNAUTHENTICATED), 401);
        assert_int_equal(connect_code_http_status(RPC_UNIMPLEMENTED), 501);
        assert_int_equal(connect_code_http_status(RPC_RESOURCE_EXHAUSTED), 429);
        assert_int_equal(connect_code_http_status(RPC_FAILED_PRECONDITION), 400);
        assert_int_equal(connect_code_http_status(RPC_CANCELLED), 499);
        assert_int_equal(connect_code_http_status(RPC_DEADLINE_EXCEEDED), 504);
        assert_int_equal(connect_code_http_status((RpcCode) 99), 500);
        assert_string_equal(connect_code_name(RPC_CANCELLED), "canceled");
        assert_string_equal(connect_code_name(RPC_INVALID_ARGUMENT), "invalid_argument");
        s = connect_error_json(RPC_NOT_FOUND, "no \"x\"");
        assert_string_equal(s, "{\"code\":\"not_found\",\"message\":\"no \\\"x\\\"\"}");
        free(s);
        s = connect_error_json(RPC_INTERNAL, NULL);
        assert_string_equal(s, "{\"code\":\"internal\"}");
        free(s);
        assert_null(connect_method_find("/namespace.cloud.compute.v1beta.ComputeService/WakeInstance"));
        assert_null(connect_method_find("namespace.cloud.compute.v1beta.ComputeService/ListInstances"));
        assert_non_null(connect_method_find("/namespace.cloud.compute.v1beta.CommandService/RunCommand"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unary_json_with_timeout),
                cmocka_unit_test(test_streaming_envelope),
                cmocka_unit_test(test_refusals),
                cmocka_unit_test(test_get_json_percent_encoded),
                cmocka_unit_test(test_get_proto_base64url_unpadded),
                cmocka_unit_test(test_idempotent_methods_match_the_proto),
                cmocka_unit_test(test_codes_and_error_bodies),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
