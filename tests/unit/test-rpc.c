/* SPDX-License-Identifier: MIT */
/* The rpc runtime in one process: a server on a temp unix socket, its
 * sd-event loop on a second thread, and blocking clients on this one. */

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "daemon.h"
#include "grpc/health/v1/health.pb-c.h"
#include "metrics.h"
#include "rpc.h"

typedef Grpc__Health__V1__HealthCheckRequest Req;
typedef Grpc__Health__V1__HealthCheckResponse Resp;
#define REQ_INIT GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT
#define RESP_INIT GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT
#define REQ_DESC (&grpc__health__v1__health_check_request__descriptor)
#define RESP_DESC (&grpc__health__v1__health_check_response__descriptor)

static char dir[] = "/tmp/hostmesh-test-rpc-XXXXXX";
static char target[320];
static pthread_t loop_thread;
static sd_event *event;
static RpcLoop *loop;
static RpcServer *server;
static volatile int hang_cancelled;
static volatile int hang_active;

/* Echo: status = length of the request's service string; "einval"/"enoent"
 * fail with that errno. */
static void handle_echo(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Req *req = (const Req *) request;
        Resp resp = RESP_INIT;

        (void) userdata;
        if (strcmp(req->service, "einval") == 0) {
                rpc_call_fail_errno(c, -EINVAL, "Shape '%s' is not valid.", "3x3");
                return;
        }
        if (strcmp(req->service, "enoent") == 0) {
                rpc_call_fail_errno(c, -ENOENT, "No such instance.");
                return;
        }
        resp.status = (int) strlen(req->service);
        rpc_call_reply(c, &resp.base);
}

static void handle_stream(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Req *req = (const Req *) request;
        int n = atoi(req->service);

        (void) userdata;
        for (int i = 0; i < n; i++) {
                Resp resp = RESP_INIT;
                resp.status = i;
                rpc_call_send(c, &resp.base);
        }
        rpc_call_finish(c, RPC_OK, NULL);
}

static void handle_peer(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const RpcPeer *p = rpc_call_peer(c);
        Resp resp = RESP_INIT;

        (void) request;
        (void) userdata;
        resp.status = p->known && p->pid == getpid() ? (int) p->uid + 1000 : -1;
        rpc_call_reply(c, &resp.base);
}

static void hang_cancelled_cb(RpcCall *c, void *userdata) {
        (void) userdata;
        hang_cancelled++;
        __atomic_sub_fetch(&hang_active, 1, __ATOMIC_SEQ_CST);
        rpc_call_unref(c);
}

static void handle_hang(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        (void) request;
        (void) userdata;
        rpc_call_ref(c);
        rpc_call_on_cancel(c, hang_cancelled_cb, NULL);
        __atomic_add_fetch(&hang_active, 1, __ATOMIC_SEQ_CST);
}

static int later_fire(sd_event_source *s, uint64_t usec, void *userdata) {
        RpcCall *c = userdata;
        Resp resp = RESP_INIT;

        (void) usec;
        resp.status = 42;
        rpc_call_reply(c, &resp.base);
        rpc_call_unref(c);
        sd_event_source_disable_unref(s);
        return 0;
}

static void handle_later(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        (void) request;
        (void) userdata;
        sd_event_add_time_relative(event, NULL, CLOCK_MONOTONIC, 50 * USEC_PER_MSEC, 0, later_fire, rpc_call_ref(c));
}

static const RpcMethod methods[] = {
        { "/test.v1.T/Echo", RPC_UNARY, REQ_DESC, RESP_DESC, handle_echo },
        { "/test.v1.T/Stream", RPC_SERVER_STREAMING, REQ_DESC, RESP_DESC, handle_stream },
        { "/test.v1.T/Peer", RPC_UNARY, REQ_DESC, RESP_DESC, handle_peer },
        { "/test.v1.T/Hang", RPC_UNARY, REQ_DESC, RESP_DESC, handle_hang },
        { "/test.v1.T/Later", RPC_UNARY, REQ_DESC, RESP_DESC, handle_later },
};

static void *loop_main(void *arg) {
        (void) arg;
        sd_event_loop(event);
        return NULL;
}

static int setup(void **state) {
        char path[300];
        RpcServerOptions opts = { .name = "test", .max_message_size = 64 * 1024, .max_calls_per_peer = 4,
                                  .drain_usec = 500 * USEC_PER_MSEC };

        (void) state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/test.sock", dir);
        snprintf(target, sizeof(target), "unix:%s", path);
        opts.socket_path = path;
        /* Signals go to the loop's signalfd, in every thread. */
        assert_int_equal(daemon_block_signals(), 0);
        assert_int_equal(sd_event_new(&event), 0);
        assert_int_equal(rpc_loop_new(event, &loop), 0);
        assert_int_equal(rpc_server_new(loop, &opts, &server), 0);
        assert_int_equal(rpc_server_add_methods(server, methods, ELEMENTSOF(methods), NULL), 0);
        assert_int_equal(rpc_server_start(server), 0);
        assert_int_equal(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        /* SIGTERM is handled by the server: drain, then leave the loop. */
        kill(getpid(), SIGTERM);
        pthread_join(loop_thread, NULL);
        server = rpc_server_free(server);
        loop = rpc_loop_free(loop);
        event = sd_event_unref(event);
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static int call(const char *method, const char *service, uint64_t timeout, Resp **ret, RpcStatus *st) {
        RpcClient *c;
        Req req = REQ_INIT;
        int r;

        req.service = (char *) service;
        assert_int_equal(rpc_client_new(NULL, target, &c), 0);
        r = rpc_client_call(c, method, NULL, &req.base, RESP_DESC, timeout, (ProtobufCMessage **) ret, st);
        rpc_client_free(c);
        return r;
}

static void test_unary_reply(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        assert_int_equal(call("/test.v1.T/Echo", "hello", 5 * USEC_PER_SEC, &resp, &st), 0);
        assert_int_equal(resp->status, 5);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_errno_maps_to_status_with_the_message(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        assert_int_equal(call("/test.v1.T/Echo", "einval", 5 * USEC_PER_SEC, &resp, &st), -EINVAL);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        assert_string_equal(st.message, "Shape '3x3' is not valid.");
        rpc_status_done(&st);
        assert_int_equal(call("/test.v1.T/Echo", "enoent", 5 * USEC_PER_SEC, &resp, &st), -ENOENT);
        assert_int_equal(st.code, RPC_NOT_FOUND);
        rpc_status_done(&st);
}

static void test_unknown_method_is_unimplemented_at_once(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        assert_int_equal(call("/test.v1.T/Nope", "", 5 * USEC_PER_SEC, &resp, &st), -EOPNOTSUPP);
        assert_int_equal(st.code, RPC_UNIMPLEMENTED);
        assert_non_null(strstr(st.message, "/test.v1.T/Nope"));
        rpc_status_done(&st);
}

static int count_cb(const ProtobufCMessage *m, void *userdata) {
        int *n = userdata;
        if ((int) ((const Resp *) m)->status != *n)
                return -EBADMSG; /* out of order */
        (*n)++;
        return 0;
}

static void test_stream_arrives_in_order(void **state) {
        RpcClient *c;
        Req req = REQ_INIT;
        RpcStatus st = {};
        int n = 0;

        (void) state;
        req.service = (char *) "1000";
        assert_int_equal(rpc_client_new(NULL, target, &c), 0);
        assert_int_equal(rpc_client_call_stream(c, "/test.v1.T/Stream", NULL, &req.base, RESP_DESC, 10 * USEC_PER_SEC,
                                                count_cb, &n, &st),
                         0);
        assert_int_equal(n, 1000);
        rpc_client_free(c);
}

static void test_handler_sees_peer_credentials(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        assert_int_equal(call("/test.v1.T/Peer", "", 5 * USEC_PER_SEC, &resp, &st), 0);
        assert_int_equal(resp->status, (int) getuid() + 1000);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_deadline_expires_and_handler_sees_cancellation(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};
        int before = hang_cancelled;

        (void) state;
        assert_int_equal(call("/test.v1.T/Hang", "", 200 * USEC_PER_MSEC, &resp, &st), -ETIMEDOUT);
        assert_int_equal(st.code, RPC_DEADLINE_EXCEEDED);
        rpc_status_done(&st);
        for (int i = 0; i < 100 && hang_cancelled == before; i++)
                usleep(10000);
        assert_int_equal(hang_cancelled, before + 1);
}

static void test_asynchronous_reply(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        assert_int_equal(call("/test.v1.T/Later", "", 5 * USEC_PER_SEC, &resp, &st), 0);
        assert_int_equal(resp->status, 42);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_health_check_serves_and_knows_services(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        assert_int_equal(call("/grpc.health.v1.Health/Check", "", 5 * USEC_PER_SEC, &resp, &st), 0);
        assert_int_equal(resp->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        assert_int_equal(call("/grpc.health.v1.Health/Check", "test.v1.T", 5 * USEC_PER_SEC, &resp, &st), 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        assert_int_equal(call("/grpc.health.v1.Health/Check", "no.such.Service", 5 * USEC_PER_SEC, &resp, &st), -ENOENT);
        rpc_status_done(&st);
}

static void test_oversize_request_is_resource_exhausted(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};
        char *big = malloc(100 * 1024);

        (void) state;
        memset(big, 'a', 100 * 1024 - 1);
        big[100 * 1024 - 1] = 0;
        assert_int_equal(call("/test.v1.T/Echo", big, 5 * USEC_PER_SEC, &resp, &st), -ENOSPC);
        assert_int_equal(st.code, RPC_RESOURCE_EXHAUSTED);
        rpc_status_done(&st);
        free(big);
        /* And the server still serves. */
        assert_int_equal(call("/test.v1.T/Echo", "ok", 5 * USEC_PER_SEC, &resp, &st), 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void *hang_thread(void *arg) {
        Resp *resp = NULL;
        RpcStatus st = {};
        (void) arg;
        (void) call("/test.v1.T/Hang", "", 4 * USEC_PER_SEC, &resp, &st);
        rpc_status_done(&st);
        return NULL;
}

static void test_calls_beyond_the_per_peer_limit_are_refused(void **state) {
        pthread_t t[4];
        Resp *resp = NULL;
        RpcStatus st = {};

        (void) state;
        for (int i = 0; i < 4; i++)
                pthread_create(&t[i], NULL, hang_thread, NULL);
        for (int i = 0; i < 300 && __atomic_load_n(&hang_active, __ATOMIC_SEQ_CST) < 4; i++)
                usleep(10 * 1000);
        assert_int_equal(hang_active, 4);
        /* Four calls from this process are in flight: the fifth is refused at once. */
        assert_int_equal(call("/test.v1.T/Echo", "x", 5 * USEC_PER_SEC, &resp, &st), -ENOSPC);
        assert_int_equal(st.code, RPC_RESOURCE_EXHAUSTED);
        assert_non_null(strstr(st.message, "limit 4"));
        rpc_status_done(&st);
        for (int i = 0; i < 4; i++)
                pthread_join(t[i], NULL);
        assert_int_equal(call("/test.v1.T/Echo", "x", 5 * USEC_PER_SEC, &resp, &st), 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_metrics_count_calls_by_method_and_code(void **state) {
        Resp *resp = NULL;
        RpcStatus st = {};
        char *text = NULL;

        (void) state;
        assert_int_equal(call("/test.v1.T/Echo", "m", 5 * USEC_PER_SEC, &resp, &st), 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        assert_int_equal(metrics_format(rpc_server_metrics(server), NULL, &text), 0);
        assert_non_null(strstr(text, "hostmesh_rpc_calls_total{method=\"/test.v1.T/Echo\",code=\"OK\"}"));
        assert_non_null(strstr(text, "hostmesh_rpc_calls_total{method=\"/test.v1.T/Echo\",code=\"INVALID_ARGUMENT\"} 1"));
        assert_non_null(strstr(text, "hostmesh_rpc_duration_seconds_bucket{method=\"/test.v1.T/Echo\""));
        free(text);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unary_reply),
                cmocka_unit_test(test_errno_maps_to_status_with_the_message),
                cmocka_unit_test(test_unknown_method_is_unimplemented_at_once),
                cmocka_unit_test(test_stream_arrives_in_order),
                cmocka_unit_test(test_handler_sees_peer_credentials),
                cmocka_unit_test(test_deadline_expires_and_handler_sees_cancellation),
                cmocka_unit_test(test_asynchronous_reply),
                cmocka_unit_test(test_health_check_serves_and_knows_services),
                cmocka_unit_test(test_oversize_request_is_resource_exhausted),
                cmocka_unit_test(test_calls_beyond_the_per_peer_limit_are_refused),
                cmocka_unit_test(test_metrics_count_calls_by_method_and_code),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
