/* SPDX-License-Identifier: MIT */
/* References, manifests, indexes and docker save manifests: what parses,
 * and the exact message for what does not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "disk-oci.h"
#include "macro.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static void test_ref_parse_host_port_repo_tag(void **state) {
        _cleanup_free_ char *s = NULL;
        OciRef r;

        assert_int_equal(oci_ref_parse("127.0.0.1:5000/test/busybox:1", &r, NULL), 0);
        assert_string_equal(r.host, "127.0.0.1:5000");
        assert_string_equal(r.repository, "test/busybox");
        assert_string_equal(r.tag, "1");
        assert_string_equal(r.digest, "");
        assert_int_equal(oci_ref_parse("localhost:5000/busybox", &r, NULL), 0);
        assert_string_equal(r.tag, "latest");
        assert_int_equal(oci_ref_parse("registry.example:443/a/b@" D1, &r, NULL), 0);
        assert_string_equal(r.tag, "");
        assert_string_equal(r.digest, D1);
        assert_int_equal(oci_ref_format(&r, &s), 0);
        assert_string_equal(s, "registry.example:443/a/b@" D1);
}

static void test_ref_parse_refusals(void **state) {
        _cleanup_free_ char *e = NULL;
        OciRef r;

        assert_int_equal(oci_ref_parse("busybox:1", &r, &e), -EINVAL);
        assert_string_equal(e, "Invalid image reference 'busybox:1': it needs a registry host "
                               "(HOST[:PORT]/REPOSITORY[:TAG]); there is no default registry.");
        assert_int_equal(oci_ref_parse("127.0.0.1:5000/Test:1", &r, &e), -EINVAL);
        assert_string_equal(e, "Invalid image reference '127.0.0.1:5000/Test:1': bad repository name 'Test' "
                               "(lowercase letters, digits and . _ - / separators).");
        assert_int_equal(oci_ref_parse("127.0.0.1:5000/a@sha256:abc", &r, &e), -EINVAL);
        assert_string_equal(e, "Invalid image reference '127.0.0.1:5000/a@sha256:abc': the digest must be "
                               "sha256: and 64 lowercase hex digits.");
        assert_int_equal(oci_ref_parse("127.0.0.1:5000/a:-x", &r, &e), -EINVAL);
        assert_string_equal(e, "Invalid image reference '127.0.0.1:5000/a:-x': bad tag '-x'.");
}

static void test_loopback_hosts(void **state) {
        assert_true(oci_host_is_loopback("127.0.0.1:5000"));
        assert_true(oci_host_is_loopback("127.1.2.3"));
        assert_true(oci_host_is_loopback("[::1]:5000"));
        assert_true(oci_host_is_loopback("localhost:5000"));
        assert_false(oci_host_is_loopback("10.0.0.1:5000"));
        assert_false(oci_host_is_loopback("127.0.0.1.example:5000"));
        assert_false(oci_host_is_loopback("registry.example"));
}

static void test_index_picks_linux_amd64(void **state) {
        static const char json[] =
                "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MT_INDEX "\",\"manifests\":["
                "{\"mediaType\":\"" OCI_MT_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":10,"
                "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
                "{\"mediaType\":\"" OCI_MT_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":11,"
                "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";
        const OciDescriptor *pick;
        OciDocument d;

        assert_int_equal(oci_document_parse(json, strlen(json), NULL, &d, NULL), 0);
        assert_int_equal(d.kind, OCI_KIND_INDEX);
        assert_int_equal(oci_index_pick(&d, "linux", "amd64", &pick), 0);
        assert_string_equal(pick->digest, D2);
        assert_int_equal(oci_index_pick(&d, "linux", "s390x", &pick), -ENOENT);
        oci_document_done(&d);
}

static void test_docker_manifest_by_content_type(void **state) {
        static const char json[] =
                "{\"schemaVersion\":2,"
                "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"" D1
                "\",\"size\":5},"
                "\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"" D2
                "\",\"size\":7},{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"" D3
                "\",\"size\":8}]}";
        OciDocument d;

        assert_int_equal(oci_document_parse(json, strlen(json), DOCKER_MT_MANIFEST "; charset=utf-8", &d, NULL), 0);
        assert_int_equal(d.kind, OCI_KIND_MANIFEST);
        assert_string_equal(d.config.digest, D1);
        assert_int_equal(d.n_entries, 2);
        assert_int_equal(d.entries[0].size, 7);
        assert_int_equal(oci_layer_type_check(d.entries[0].media_type), 0);
        assert_int_equal(oci_layer_type_check(d.entries[1].media_type), -EOPNOTSUPP);
        oci_document_done(&d);
}

static void test_manifest_refusals(void **state) {
        _cleanup_free_ char *e = NULL;
        OciDocument d;
        static const char v1[] = "{\"schemaVersion\":1}";
        static const char bad_digest[] =
                "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MT_MANIFEST "\",\"config\":{\"mediaType\":\"x\","
                "\"digest\":\"sha512:00\",\"size\":1},\"layers\":[]}";

        assert_int_equal(oci_document_parse(v1, strlen(v1), NULL, &d, &e), -EINVAL);
        assert_string_equal(e, "The image manifest has schemaVersion other than 2 (Docker schema 1 is not supported).");
        assert_int_equal(oci_document_parse(bad_digest, strlen(bad_digest), NULL, &d, &e), -EINVAL);
        assert_string_equal(e, "Config descriptor 0 has no sha256 digest (other algorithms are not supported).");
        assert_int_equal(oci_document_parse("[", 1, NULL, &d, &e), -EINVAL);
        assert_string_equal(e, "The image manifest is not a JSON object.");
}

static void test_docker_save_paths_stay_inside(void **state) {
        static const char ok[] = "[{\"Config\":\"abc.json\",\"RepoTags\":[\"test/busybox:1\"],"
                                 "\"Layers\":[\"l1/layer.tar\",\"l2/layer.tar\"]}]";
        static const char evil[] = "[{\"Config\":\"abc.json\",\"Layers\":[\"../../etc/shadow\"]}]";
        _cleanup_free_ char *e = NULL;
        DockerSave s;

        assert_int_equal(docker_save_parse(ok, strlen(ok), &s, NULL), 0);
        assert_string_equal(s.tag, "test/busybox:1");
        assert_int_equal(s.n_layers, 2);
        assert_string_equal(s.layers[1], "l2/layer.tar");
        docker_save_done(&s);
        assert_int_equal(docker_save_parse(evil, strlen(evil), &s, &e), -EINVAL);
        assert_string_equal(e, "manifest.json layer 0 is not a path inside the archive.");
}

#define CONFIG_HEAD "{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"diff_ids\":[]}"

static void test_config_run_fields_round_trip(void **state) {
        static const char text[] = CONFIG_HEAD ",\"config\":{\"Entrypoint\":[\"/bin/app\",\"--serve\"],"
                                   "\"Cmd\":[\"-v\"],\"Env\":[\"PATH=/bin\",\"GREETING=a=b\"],"
                                   "\"WorkingDir\":\"/srv\",\"User\":\"1000:1000\"}}";
        _cleanup_free_ char *json = NULL;
        OciRunConfig again = {};
        OciConfig c;

        assert_int_equal(oci_config_parse(text, strlen(text), &c, NULL), 0);
        assert_string_equal(c.run.entrypoint[0], "/bin/app");
        assert_string_equal(c.run.entrypoint[1], "--serve");
        assert_null(c.run.entrypoint[2]);
        assert_string_equal(c.run.cmd[0], "-v");
        assert_string_equal(c.run.env[1], "GREETING=a=b");
        assert_string_equal(c.run.working_dir, "/srv");
        assert_string_equal(c.run.user, "1000:1000");
        assert_int_equal(oci_run_config_to_json(&c.run, &json), 0);
        assert_int_equal(oci_run_config_from_json(json, &again), 0);
        assert_string_equal(again.entrypoint[1], "--serve");
        assert_string_equal(again.env[0], "PATH=/bin");
        assert_string_equal(again.working_dir, "/srv");
        assert_string_equal(again.user, "1000:1000");
        oci_run_config_done(&again);
        oci_config_done(&c);
}

static void test_config_without_run_fields_reads_as_empty(void **state) {
        static const char none[] = CONFIG_HEAD "}";
        static const char nulls[] = CONFIG_HEAD ",\"config\":{\"Entrypoint\":null,\"Cmd\":null,\"Env\":null}}";
        OciConfig c;

        assert_int_equal(oci_config_parse(none, strlen(none), &c, NULL), 0);
        assert_non_null(c.run.entrypoint);
        assert_null(c.run.entrypoint[0]);
        assert_null(c.run.cmd[0]);
        assert_string_equal(c.run.working_dir, "");
        assert_string_equal(c.run.user, "");
        oci_config_done(&c);
        assert_int_equal(oci_config_parse(nulls, strlen(nulls), &c, NULL), 0);
        assert_null(c.run.env[0]);
        oci_config_done(&c);
}

static void test_config_run_field_refusals(void **state) {
        static const char cmd_string[] = CONFIG_HEAD ",\"config\":{\"Cmd\":\"/bin/sh -c true\"}}";
        static const char env_no_eq[] = CONFIG_HEAD ",\"config\":{\"Env\":[\"PATH\"]}}";
        static const char env_no_name[] = CONFIG_HEAD ",\"config\":{\"Env\":[\"=x\"]}}";
        static const char relative_dir[] = CONFIG_HEAD ",\"config\":{\"WorkingDir\":\"srv\"}}";
        static const char nul_in_arg[] = CONFIG_HEAD ",\"config\":{\"Entrypoint\":[\"/bin/a\\u0000b\"]}}";
        static const char user_number[] = CONFIG_HEAD ",\"config\":{\"User\":1000}}";
        _cleanup_free_ char *e = NULL;
        OciConfig c;

        assert_int_equal(oci_config_parse(cmd_string, strlen(cmd_string), &c, &e), -EINVAL);
        assert_string_equal(e, "The image config's config.Cmd is not a list of strings.");
        assert_int_equal(oci_config_parse(env_no_eq, strlen(env_no_eq), &c, &e), -EINVAL);
        assert_string_equal(e, "The image config's config.Env is not a list of NAME=VALUE strings.");
        assert_int_equal(oci_config_parse(env_no_name, strlen(env_no_name), &c, &e), -EINVAL);
        assert_string_equal(e, "The image config's config.Env is not a list of NAME=VALUE strings.");
        assert_int_equal(oci_config_parse(relative_dir, strlen(relative_dir), &c, &e), -EINVAL);
        assert_string_equal(e, "The image config's config.WorkingDir 'srv' is not absolute.");
        /* jansson refuses \u0000 without JSON_ALLOW_NUL: the whole document goes. */
        assert_int_equal(oci_config_parse(nul_in_arg, strlen(nul_in_arg), &c, &e), -EINVAL);
        assert_string_equal(e, "The image config is not a JSON object.");
        assert_int_equal(oci_config_parse(user_number, strlen(user_number), &c, &e), -EINVAL);
        assert_string_equal(e, "The image config's config.User is not a string.");
        assert_int_equal(oci_run_config_from_json("[]", &c.run), -EINVAL);
        assert_int_equal(oci_run_config_from_json("{\"Env\":[\"x\"]}", &c.run), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ref_parse_host_port_repo_tag),
                cmocka_unit_test(test_ref_parse_refusals),
                cmocka_unit_test(test_loopback_hosts),
                cmocka_unit_test(test_index_picks_linux_amd64),
                cmocka_unit_test(test_docker_manifest_by_content_type),
                cmocka_unit_test(test_manifest_refusals),
                cmocka_unit_test(test_docker_save_paths_stay_inside),
                cmocka_unit_test(test_config_run_fields_round_trip),
                cmocka_unit_test(test_config_without_run_fields_reads_as_empty),
                cmocka_unit_test(test_config_run_field_refusals),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
