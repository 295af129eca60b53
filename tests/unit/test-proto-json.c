/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "namespace/cloud/compute/v1beta/compute.pb-c.h"
#include "proto-json.h"

#define COMPUTE(x) namespace__cloud__compute__v1beta__##x
#define COMPUTE_T(x) Namespace__Cloud__Compute__V1beta__##x

static char *to_json(const ProtobufCMessage *m) {
        size_t n = protobuf_c_message_get_packed_size(m), len;
        uint8_t *buf = malloc(n + 1);
        char *out;
        assert_non_null(buf);
        protobuf_c_message_pack(m, buf);
        assert_int_equal(proto_binary_to_json(m->descriptor, buf, n, &out, &len), 0);
        assert_int_equal(strlen(out), len);
        free(buf);
        return out;
}

/* JSON in, wire bytes out, then back to JSON. */
static char *round_trip(const ProtobufCMessageDescriptor *d, const char *json) {
        uint8_t *bin;
        size_t n, len;
        char *err = NULL, *out;
        int r = proto_json_to_binary(d, json, strlen(json), &bin, &n, &err);
        if (r < 0)
                fail_msg("%s: %s", json, err);
        assert_int_equal(proto_binary_to_json(d, bin, n, &out, &len), 0);
        free(bin);
        return out;
}

static char *refusal(const ProtobufCMessageDescriptor *d, const char *json) {
        uint8_t *bin = NULL;
        size_t n;
        char *err = NULL;
        assert_int_equal(proto_json_to_binary(d, json, strlen(json), &bin, &n, &err), -EINVAL);
        assert_null(bin);
        assert_non_null(err);
        return err;
}

static void test_message_to_json_uses_camel_case_enum_names_and_timestamps(void **state) {
        Google__Protobuf__Timestamp created = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        COMPUTE_T(InstanceMetadata) md = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__INIT;
        COMPUTE_T(DescribeInstanceResponse) resp = NAMESPACE__CLOUD__COMPUTE__V1BETA__DESCRIBE_INSTANCE_RESPONSE__INIT;
        char *j;

        created.seconds = 1764964800;  /* 2025-12-05T20:00:00Z */
        created.nanos = 500000000;
        md.instance_id = "i-1";
        md.created_at = &created;
        md.status = NAMESPACE__CLOUD__COMPUTE__V1BETA__INSTANCE_METADATA__STATUS__RUNNING;
        md.creator_id = "user:alice";
        resp.metadata = &md;
        resp.instance_url = "";  /* default: omitted */
        j = to_json(&resp.base);
        assert_string_equal(j, "{\"metadata\":{\"instanceId\":\"i-1\",\"createdAt\":\"2025-12-05T20:00:00.500Z\","
                               "\"status\":\"RUNNING\",\"creatorId\":\"user:alice\"}}");
        free(j);
}

static void test_json_round_trip_int64_bytes_maps_durations(void **state) {
        char *j;

        /* int64 as a number or a string comes back as a string; bytes as base64. */
        j = round_trip(&COMPUTE(list_instances_request__descriptor),
                       "{\"maxEntries\":5,\"paginationCursor\":\"AAEC\",\"includeCompleteRuns\":true}");
        assert_string_equal(j, "{\"paginationCursor\":\"AAEC\",\"maxEntries\":\"5\",\"includeCompleteRuns\":true}");
        free(j);
        j = round_trip(&COMPUTE(list_instances_request__descriptor),
                       "{\"max_entries\":\"-9223372036854775808\",\"notOlderThan\":\"2026-01-02T04:04:05.000001+01:00\","
                       "\"labelFilter\":[{\"name\":\"a\",\"op\":\"NOT_EQUAL\"},{\"name\":\"b\",\"op\":3}]}");
        assert_string_equal(j, "{\"maxEntries\":\"-9223372036854775808\",\"notOlderThan\":\"2026-01-02T03:04:05.000001Z\","
                               "\"labelFilter\":[{\"name\":\"a\",\"op\":\"NOT_EQUAL\"},{\"name\":\"b\",\"op\":\"EXIST\"}]}");
        free(j);
        j = round_trip(&COMPUTE(extend_instance_request__descriptor),
                       "{\"instanceId\":\"x\",\"extendBy\":\"-1.5s\",\"ensureMinimum\":\"3600s\"}");
        assert_string_equal(j, "{\"instanceId\":\"x\",\"extendBy\":\"-1.500s\",\"ensureMinimum\":\"3600s\"}");
        free(j);
        j = round_trip(&COMPUTE(log_block__descriptor),
                       "{\"labels\":{\"stream\":\"stdout\",\"b\":\"\"},\"lines\":[{\"content\":\"hi\"}]}");
        assert_string_equal(j, "{\"labels\":{\"stream\":\"stdout\",\"b\":\"\"},\"lines\":[{\"content\":\"hi\"}]}");
        free(j);
        /* null means default; an empty object is a valid request. */
        j = round_trip(&COMPUTE(create_instance_request__descriptor), "{\"shape\":null,\"region\":null}");
        assert_string_equal(j, "{}");
        free(j);
}

static void test_json_refusals_name_the_field(void **state) {
        char *e;

        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"volumes\":[{\"name\":\"x\"}]}");
        assert_string_equal(e, "unknown field \"volumes\" in namespace.cloud.compute.v1beta.CreateInstanceRequest");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"shape\":{\"virtualCpu\":\"many\"}}");
        assert_string_equal(e, "shape.virtualCpu: \"many\" is not an integer in range");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"shape\":{\"virtualCpu\":4294967296}}");
        assert_string_equal(e, "shape.virtualCpu: 4294967296 is out of range");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"shape\":{\"virtualCpu\":1.5}}");
        assert_string_equal(e, "shape.virtualCpu: 1.5 is not an integer in range");
        free(e);
        e = refusal(&COMPUTE(list_instances_request__descriptor), "{\"labelFilter\":[{\"op\":\"LIKE\"}]}");
        assert_string_equal(e, "labelFilter[0].op: \"LIKE\" is not a value of enum namespace.stdlib.LabelFilterEntry.LabelFilterOp");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"deadline\":\"2026-02-30T00:00:00Z\"}");
        assert_string_equal(e, "deadline: expected an RFC 3339 timestamp (\"2026-01-02T03:04:05Z\")");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"deadline\":\"2026-01-01T00:00:00\"}");
        free(e);
        e = refusal(&COMPUTE(extend_instance_request__descriptor), "{\"extendBy\":\"5m\"}");
        assert_string_equal(e, "extendBy: expected a duration (\"1.5s\")");
        free(e);
        e = refusal(&COMPUTE(list_instances_request__descriptor), "{\"paginationCursor\":\"a*b\"}");
        assert_string_equal(e, "paginationCursor: not valid base64");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"interactive\":\"yes\"}");
        assert_string_equal(e, "interactive: expected true or false");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"labels\":{}}");
        assert_string_equal(e, "labels: expected an array");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "[]");
        assert_string_equal(e, "the request body must be a JSON object");
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"region\":\"a\",\"region\":\"b\"}");
        assert_non_null(strstr(e, "invalid JSON"));
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"region\":");
        assert_non_null(strstr(e, "invalid JSON at line 1"));
        free(e);
        e = refusal(&COMPUTE(create_instance_request__descriptor), "{\"region\":\"a\\u0000b\"}");
        assert_non_null(strstr(e, "is not allowed"));  /* jansson refuses \\u0000 itself */
        free(e);
}

static void test_binary_that_does_not_decode_is_refused(void **state) {
        char *out;
        size_t len;
        /* field 1 (string), length 5, but only 2 bytes follow */
        const uint8_t bad[] = { 0x0a, 0x05, 'a', 'b' };
        assert_int_equal(proto_binary_to_json(&COMPUTE(describe_instance_request__descriptor), bad, sizeof(bad), &out,
                                              &len), -EBADMSG);
}

static void expect_binary_refusal(const uint8_t *data, size_t len, const char *words) {
        char *error = NULL;
        assert_int_equal(proto_binary_check(&COMPUTE(create_instance_request__descriptor), data, len, &error), -EINVAL);
        assert_non_null(error);
        if (!strstr(error, words))
                fail_msg("'%s' does not say '%s'", error, words);
        free(error);
}

static void test_binary_check_names_fields_by_json_path(void **state) {
        char *error = NULL;
        /* CreateInstanceRequest { shape (1) { virtual_cpu (1) = 2, memory_megabytes (2) = 2048 },
         * labels (5) [ { name (1) = "a" } ], containers (9) [ { args (3) = "x", environment (4) { "k": "v" } } ] } */
        const uint8_t good[] = { 0x0a, 0x05, 0x08, 0x02, 0x10, 0x80, 0x10,
                                 0x2a, 0x03, 0x0a, 0x01, 'a',
                                 0x4a, 0x0b, 0x1a, 0x01, 'x', 0x22, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 'v' };
        assert_int_equal(proto_binary_check(&COMPUTE(create_instance_request__descriptor), good, sizeof(good), &error), 0);
        assert_null(error);

        /* shape { virtual_cpu as LEN, empty } */
        expect_binary_refusal((const uint8_t[]){ 0x0a, 0x02, 0x0a, 0x00 }, 4,
                              "shape.virtualCpu: length-delimited bytes where a varint (virtual_cpu) is expected");
        /* labels [ {}, { name as varint } ] */
        expect_binary_refusal((const uint8_t[]){ 0x2a, 0x00, 0x2a, 0x02, 0x08, 0x01 }, 6, "labels[1].name: a varint");
        /* field 12 (volumes, not in hostmesh's copy), and field 15 inside containers[0] */
        expect_binary_refusal((const uint8_t[]){ 0x62, 0x00 }, 2,
                              "field 12 of namespace.cloud.compute.v1beta.CreateInstanceRequest is not supported");
        expect_binary_refusal((const uint8_t[]){ 0x4a, 0x02, 0x78, 0x01 }, 4,
                              "containers[0]: field 15 of namespace.cloud.compute.v1beta.ContainerRequest");
        /* a length past the end; a truncated varint; a group; field number 0 */
        expect_binary_refusal((const uint8_t[]){ 0x22, 0x09, 'a' }, 3, "documentedPurpose: the length runs past");
        expect_binary_refusal((const uint8_t[]){ 0x38, 0x80 }, 2, "interactive: a truncated varint");
        expect_binary_refusal((const uint8_t[]){ 0x0b }, 1, "shape: a group start where length-delimited");
        expect_binary_refusal((const uint8_t[]){ 0x00, 0x00 }, 2, "a broken field key");
}

static void test_unknown_fields_are_found_nested_and_allowed_by_name(void **state) {
        /* CreateInstanceRequest { shape (1) { field 9 = 1 }, field 12 (volumes) = "" } */
        const uint8_t nested[] = { 0x0a, 0x02, 0x48, 0x01, 0x62, 0x00 };
        const char *const allow[] = { "namespace.cloud.compute.v1beta.CreateInstanceRequest:12", NULL };
        ProtobufCMessage *m = protobuf_c_message_unpack(&COMPUTE(create_instance_request__descriptor), NULL,
                                                        sizeof(nested), nested);
        const char *type;
        uint32_t number;

        assert_non_null(m);
        assert_true(proto_find_unknown_field(m, NULL, &type, &number));
        assert_string_equal(type, "namespace.cloud.compute.v1beta.CreateInstanceRequest");
        assert_int_equal(number, 12);
        assert_true(proto_find_unknown_field(m, allow, &type, &number));
        assert_string_equal(type, "namespace.cloud.compute.v1beta.InstanceShape");
        assert_int_equal(number, 9);
        protobuf_c_message_free_unpacked(m, NULL);
        /* Only the allowed one: nothing left. */
        m = protobuf_c_message_unpack(&COMPUTE(create_instance_request__descriptor), NULL, 2, nested + 4);
        assert_non_null(m);
        assert_false(proto_find_unknown_field(m, allow, &type, &number));
        protobuf_c_message_free_unpacked(m, NULL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_message_to_json_uses_camel_case_enum_names_and_timestamps),
                cmocka_unit_test(test_json_round_trip_int64_bytes_maps_durations),
                cmocka_unit_test(test_json_refusals_name_the_field),
                cmocka_unit_test(test_binary_that_does_not_decode_is_refused),
                cmocka_unit_test(test_binary_check_names_fields_by_json_path),
                cmocka_unit_test(test_unknown_fields_are_found_nested_and_allowed_by_name),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
