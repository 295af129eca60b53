/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <sys/stat.h>

#include "dockerproxy-translate.h"

static char root[] = "/tmp/test-dockerproxy-root-XXXXXX";
static char outside[] = "/tmp/test-dockerproxy-outside-XXXXXX";
static DockerPolicy policy = {};
static char *ancestors[] = { (char *) "grandparent", NULL };
static DockerCaller caller = { .id = "ctr-a", .root = root, .ancestors = ancestors, .policy = &policy };
static OwnedSet *owned;

static void mk(const char *rel) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", root, rel);
        assert_int_equal(mkdir(p, 0755), 0);
}

static void ln(const char *target, const char *rel) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", root, rel);
        assert_int_equal(symlink(target, p), 0);
}

static int setup(void **state) {
        (void) state;
        assert_non_null(mkdtemp(root));
        assert_non_null(mkdtemp(outside));
        assert_int_equal(owned_set_new(&owned), 0);
        assert_int_equal(owned_set_add(owned, OWNED_CONTAINER, "abc"), 1);
        assert_int_equal(owned_set_add(owned, OWNED_VOLUME, "myvol"), 1);
        assert_int_equal(owned_set_add(owned, OWNED_IMAGE, "docker.io/library/mine:v2"), 1);
        caller.owned = owned;
        mk("mydata");
        mk("mydata/sub");
        mk("proc");
        mk("etc");
        ln("/", "escape-root");           /* absolute: would be the host's / */
        ln("../../../../..", "escape-up"); /* relative, climbing out */
        ln("mydata/sub", "inside");        /* relative, staying inside */
        ln("sub/../../etc", "mydata/back");
        ln(outside, "escape-abs");
        return 0;
}

static int teardown(void **state) {
        char cmd[600];
        (void) state;
        owned = owned_set_free(owned);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", root, outside);
        return system(cmd) == 0 ? 0 : -1;
}

static void assert_denied(const char *body, unsigned status, const char *rule, const char *msg_part) {
        DockerDecision d = {};
        assert_int_equal(docker_translate_create(&caller, body, strlen(body), &d), 0);
        if (d.status != status || !streq(d.rule, rule) || !d.message || !strstr(d.message, msg_part))
                fail_msg("body %s: got %u %s \"%s\", want %u %s ~\"%s\"", body, d.status, d.rule, d.message ?: "",
                         status, rule, msg_part);
        docker_decision_done(&d);
}

static json_t *allowed(const char *body, DockerDecision *d) {
        json_t *j;
        assert_int_equal(docker_translate_create(&caller, body, strlen(body), d), 0);
        if (d->status != 0)
                fail_msg("body %s denied: %s", body, d->message);
        assert_non_null(d->new_body);
        j = json_loadb(d->new_body, d->new_body_len, 0, NULL);
        assert_non_null(j);
        return j;
}

static void test_bind_source_is_rewritten_into_the_root(void **state) {
        DockerDecision d = {};
        char want[600];
        json_t *j;
        (void) state;
        j = allowed("{\"Image\":\"ubuntu\",\"HostConfig\":{\"Binds\":[\"/mydata:/parent:ro\",\"namedvol:/v\",\"/anon\"]}}", &d);
        snprintf(want, sizeof(want), "%s/mydata:/parent:ro", root);
        assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(j, "HostConfig"), "Binds"), 0)), want);
        /* Named and anonymous volumes are untouched. */
        assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(j, "HostConfig"), "Binds"), 1)), "namedvol:/v");
        assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(j, "HostConfig"), "Binds"), 2)), "/anon");
        /* Ownership labels: own id and every ancestor. */
        json_t *labels = json_object_get(j, "Labels");
        assert_non_null(json_object_get(labels, DOCKER_LABEL_OWNER_PREFIX "ctr-a"));
        assert_non_null(json_object_get(labels, DOCKER_LABEL_OWNER_PREFIX "grandparent"));
        assert_string_equal(json_string_value(json_object_get(labels, DOCKER_LABEL_CREATOR)), "ctr-a");
        json_decref(j);
        docker_decision_done(&d);
}

static void test_symlinks_inside_the_root_are_followed(void **state) {
        DockerDecision d = {};
        char want[600];
        json_t *j;
        (void) state;
        j = allowed("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"/inside\",\"Target\":\"/x\"},"
                    "{\"Type\":\"bind\",\"Source\":\"/mydata/back\",\"Target\":\"/y\"},"
                    "{\"Type\":\"volume\",\"Source\":\"v1\",\"Target\":\"/z\"}]}}", &d);
        snprintf(want, sizeof(want), "%s/mydata/sub", root);
        json_t *m = json_object_get(json_object_get(j, "HostConfig"), "Mounts");
        assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "Source")), want);
        snprintf(want, sizeof(want), "%s/etc", root);
        assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "Source")), want);
        assert_string_equal(json_string_value(json_object_get(json_array_get(m, 2), "Source")), "v1");
        json_decref(j);
        docker_decision_done(&d);
}

static void test_escapes_are_refused_naming_the_mount(void **state) {
        (void) state;
        assert_denied("{\"HostConfig\":{\"Binds\":[\"/../../etc:/x\"]}}", 403, "bind-escape", "contains \"..\"");
        assert_denied("{\"HostConfig\":{\"Binds\":[\"/escape-root:/x\"]}}", 403, "bind-escape", "absolute path \"/\"");
        assert_denied("{\"HostConfig\":{\"Binds\":[\"/escape-root/etc:/x\"]}}", 403, "bind-escape", "/escape-root/etc");
        assert_denied("{\"HostConfig\":{\"Binds\":[\"/escape-up/etc:/x\"]}}", 403, "bind-escape", "outside the container's root");
        assert_denied("{\"HostConfig\":{\"Binds\":[\"/escape-abs:/x\"]}}", 403, "bind-escape", "absolute path");
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"/proc/1/root\",\"Target\":\"/x\"}]}}",
                      403, "bind-escape", "/proc");
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"/nonexistent\",\"Target\":\"/x\"}]}}",
                      403, "bind-escape", "does not exist");
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"relative\",\"Target\":\"/x\"}]}}",
                      403, "bind-escape", "not an absolute path");
        assert_denied("{\"HostConfig\":{\"Binds\":[\"/a:/b:c:d\"]}}", 400, "invalid-bind", "src:dst");
}

static void test_json_tricks_are_refused(void **state) {
        (void) state;
        /* Duplicate keys: the engine keeps the last. */
        assert_denied("{\"HostConfig\":{\"Privileged\":false,\"Privileged\":true}}", 400, "invalid-json", "duplicate");
        /* \u escapes decode to the real name and are checked as such. */
        assert_denied("{\"Hos\\u0074Config\":{\"Privileged\":true}}", 403, "privileged", "Privileged");
        assert_denied("{\"HostConfig\":{\"Bind\\u0073\":[\"/../x:/y\"]}}", 403, "bind-escape", "..");
        /* Case variants the engine's decoder would accept. */
        assert_denied("{\"hostconfig\":{\"Privileged\":true}}", 400, "case-variant-key", "hostconfig");
        assert_denied("{\"HostConfig\":{\"BINDS\":[\"/etc:/x\"]}}", 400, "case-variant-key", "BINDS");
        /* U+017F LATIN SMALL LETTER LONG S folds to 's' in Go. */
        assert_denied("{\"HostConfig\":{\"Bind\xc5\xbf\":[\"/etc:/x\"]}}", 400, "case-variant-key", "Binds");
        /* U+212A KELVIN SIGN folds to 'k'. */
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"volume\",\"Target\":\"/x\",\"VolumeOptions\":"
                      "{\"DriverConfig\":{\"Options\":{}}}}],\"Lin\xe2\x84\xaas\":[\"x:y\"]}}", 400, "case-variant-key", "Links");
        /* Deprecated top-level HostConfig fields. */
        assert_denied("{\"Image\":\"x\",\"Binds\":[\"/etc:/x\"]}", 400, "toplevel-hostconfig", "Binds");
        assert_denied("{\"privileged\":true}", 400, "toplevel-hostconfig", "privileged");
        assert_denied("[1]", 400, "invalid-json", "object");
        assert_denied("{\"a\":1} {\"b\":2}", 400, "invalid-json", "");
        /* Forged ownership labels. */
        assert_denied("{\"Labels\":{\"io.hostmesh.dockerproxy.owner.other\":\"\"}}", 403, "reserved-label", "reserved");
}

static void test_policy_denies_by_default(void **state) {
        (void) state;
        assert_denied("{\"HostConfig\":{\"Privileged\":true}}", 403, "privileged", "Privileged");
        assert_denied("{\"HostConfig\":{\"CapAdd\":[\"SYS_ADMIN\"]}}", 403, "cap-add", "SYS_ADMIN");
        assert_denied("{\"HostConfig\":{\"Devices\":[{\"PathOnHost\":\"/dev/sda\"}]}}", 403, "devices", "Devices");
        assert_denied("{\"HostConfig\":{\"DeviceRequests\":[{\"Count\":-1}]}}", 403, "devices", "DeviceRequests");
        assert_denied("{\"HostConfig\":{\"PidMode\":\"host\"}}", 403, "host-namespace", "PidMode");
        assert_denied("{\"HostConfig\":{\"IpcMode\":\"host\"}}", 403, "host-namespace", "IpcMode");
        assert_denied("{\"HostConfig\":{\"UTSMode\":\"host\"}}", 403, "host-namespace", "UTSMode");
        assert_denied("{\"HostConfig\":{\"UsernsMode\":\"host\"}}", 403, "host-namespace", "UsernsMode");
        assert_denied("{\"HostConfig\":{\"NetworkMode\":\"host\"}}", 403, "host-network", "NetworkMode");
        assert_denied("{\"HostConfig\":{\"SecurityOpt\":[\"seccomp=unconfined\"]}}", 403, "unconfined", "seccomp");
        assert_denied("{\"HostConfig\":{\"SecurityOpt\":[\"apparmor:unconfined\"]}}", 403, "unconfined", "apparmor");
        assert_denied("{\"HostConfig\":{\"SecurityOpt\":[\"label=disable\"]}}", 403, "unconfined", "label");
        assert_denied("{\"HostConfig\":{\"MaskedPaths\":[]}}", 403, "unconfined", "MaskedPaths");
        assert_denied("{\"HostConfig\":{\"Sysctls\":{\"kernel.x\":\"1\"}}}", 403, "sysctls", "Sysctls");
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"volume\",\"Target\":\"/x\",\"VolumeOptions\":"
                      "{\"DriverConfig\":{\"Options\":{\"type\":\"none\",\"o\":\"bind\",\"device\":\"/etc\"}}}}]}}",
                      403, "volume-driver-opts", "DriverConfig");
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"npipe\",\"Source\":\"x\",\"Target\":\"/x\"}]}}",
                      403, "mount-type", "npipe");
}

static void test_policy_allows_what_the_registration_grants(void **state) {
        DockerPolicy p = { .allow_privileged = true, .cap_add_allow = (char *[]){ (char *) "NET_ADMIN", NULL },
                           .allow_host_network = true };
        DockerCaller c2 = caller;
        DockerDecision d = {};
        const char *body = "{\"HostConfig\":{\"Privileged\":true,\"CapAdd\":[\"CAP_NET_ADMIN\"],\"NetworkMode\":\"host\"}}";
        (void) state;
        c2.policy = &p;
        assert_int_equal(docker_translate_create(&c2, body, strlen(body), &d), 0);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);
}

static void test_container_references_must_be_owned(void **state) {
        DockerDecision d = {};
        json_t *j;
        (void) state;
        j = allowed("{\"HostConfig\":{\"VolumesFrom\":[\"b:ro\"],\"PidMode\":\"container:c\",\"NetworkMode\":\"container:d\"}}", &d);
        assert_int_equal(d.n_checks, 3);
        assert_string_equal(d.checks[0].ref, "c");
        assert_string_equal(d.checks[1].ref, "d");
        assert_string_equal(d.checks[2].ref, "b");
        assert_int_equal(d.checks[2].kind, DOCKER_CHECK_CONTAINER);
        assert_false(d.checks[0].in_path);
        json_decref(j);
        docker_decision_done(&d);
}

static void test_routes(void **state) {
        DockerDecision d = {};
        (void) state;
        assert_int_equal(docker_decide_request(&caller, "HEAD", "/_ping", "", &d), 0);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "GET", "/events", "since=1", &d), 0);
        assert_int_equal(d.status, 0);
        assert_string_equal(d.new_query, "since=1&filters=%7B%22label%22%3A%5B%22io.hostmesh.dockerproxy.owner.ctr-a%22%5D%7D");
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "GET", "/events",
                                               "filters=%7B%22label%22%3A%5B%22x%22%5D%7D&filters=%7B%7D", &d), 0);
        assert_string_equal(d.new_query, "filters=%7B%22label%22%3A%5B%22x%22%2C%22io.hostmesh.dockerproxy.owner.ctr-a%22%5D%7D");
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "GET", "/containers/abc/json", "", &d), 0);
        assert_int_equal(d.n_checks, 1);
        assert_string_equal(d.checks[0].ref, "abc");
        assert_true(d.checks[0].in_path);
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "POST", "/containers/abc/attach", "stream=1", &d), 0);
        assert_true(d.hijack);
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "POST", "/exec/e1/start", "", &d), 0);
        assert_true(d.hijack);
        assert_int_equal(d.checks[0].kind, DOCKER_CHECK_EXEC);
        assert_string_equal(d.checks[0].ref, "e1");
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "GET", "/images/library/ubuntu/json", "", &d), 0);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "POST", "/plugins/pull", "", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "POST", "/swarm/init", "", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "POST", "/volumes/prune", "", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
}

static void test_other_bodies(void **state) {
        DockerDecision d = {};
        const char *pe = "{\"Cmd\":[\"sh\"],\"Privileged\":true}";
        const char *vol = "{\"Name\":\"v\",\"DriverOpts\":{\"type\":\"none\",\"o\":\"bind\",\"device\":\"/etc\"}}";
        const char *svc = "{\"TaskTemplate\":{\"ContainerSpec\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"/\"}]}}}";
        (void) state;
        assert_int_equal(docker_decide_body(&caller, "POST", "/containers/x/exec", pe, strlen(pe), &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "privileged-exec");
        docker_decision_done(&d);
        assert_int_equal(docker_decide_body(&caller, "POST", "/volumes/create", vol, strlen(vol), &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "volume-driver-opts");
        docker_decision_done(&d);
        assert_int_equal(docker_decide_body(&caller, "POST", "/services/create", svc, strlen(svc), &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "endpoint"); /* services are not on the route table */
        docker_decision_done(&d);
}

static void check_answer(DockerDecision *d, const char *body, unsigned status) {
        assert_int_equal(docker_check_answer(&caller, d, 0, status, body, strlen(body)), 0);
}

static void test_ownership_is_decided_by_records(void **state) {
        /* Both carry ctr-a's owner label; only "abc" is in ctr-a's records. */
        const char *mine = "{\"Id\":\"abc\",\"Config\":{\"Labels\":{\"io.hostmesh.dockerproxy.owner.ctr-a\":\"\"}}}";
        const char *forged = "{\"Id\":\"def\",\"Config\":{\"Labels\":{\"io.hostmesh.dockerproxy.owner.ctr-a\":\"\"}}}";
        DockerDecision d = {};
        (void) state;

        assert_int_equal(docker_decide_request(&caller, "POST", "/containers/web/stop", "", &d), 0);
        check_answer(&d, mine, 200);
        assert_int_equal(d.status, 0);
        assert_string_equal(d.path_id, "abc");
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "POST", "/containers/web/stop", "", &d), 0);
        check_answer(&d, forged, 200);
        assert_int_equal(d.status, 404);
        assert_string_equal(d.rule, "not-owned");
        assert_non_null(strstr(d.message, "No such container: web"));
        docker_decision_done(&d);

        /* An exec names its container, which must be owned in turn. */
        assert_int_equal(docker_decide_request(&caller, "POST", "/exec/e1/start", "", &d), 0);
        check_answer(&d, "{\"ContainerID\":\"def\"}", 200);
        assert_int_equal(d.status, 0);
        assert_int_equal(d.n_checks, 2);
        assert_int_equal(docker_check_answer(&caller, &d, 1, 200, forged, strlen(forged)), 0);
        assert_int_equal(d.status, 404);
        docker_decision_done(&d);

        /* Engine failures are errors, not verdicts. */
        assert_int_equal(docker_decide_request(&caller, "GET", "/containers/web/json", "", &d), 0);
        assert_int_equal(docker_check_answer(&caller, &d, 0, 500, "", 0), -EIO);
        docker_decision_done(&d);

        /* The container list is the records' ids. */
        assert_int_equal(docker_decide_request(&caller, "GET", "/containers/json", "all=1", &d), 0);
        assert_string_equal(d.new_query, "all=1&filters=%7B%22id%22%3A%5B%22abc%22%5D%7D");
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "GET", "/containers/json", "filters=%7B%22id%22%3A%5B%22.%22%5D%7D", &d), 0);
        assert_int_equal(d.status, 400);
        docker_decision_done(&d);
}

static void test_images_with_reserved_labels_make_no_containers(void **state) {
        const char *evil = "{\"Id\":\"sha256:1\",\"Config\":{\"Labels\":{\"io.hostmesh.dockerproxy.owner.ctr-b\":\"\"}}}";
        const char *fine = "{\"Id\":\"sha256:2\",\"Config\":{\"Labels\":{\"maintainer\":\"x\"}}}";
        _cleanup_free_ char *path = NULL;
        DockerDecision d = {};
        json_t *j;
        (void) state;
        j = allowed("{\"Image\":\"evil:v1\"}", &d);
        json_decref(j);
        assert_int_equal(d.n_checks, 1);
        assert_int_equal(d.checks[0].kind, DOCKER_CHECK_IMAGE_LABELS);
        assert_int_equal(docker_check_path(&d, 0, &path), 0);
        assert_string_equal(path, "/images/evil:v1/json");
        check_answer(&d, evil, 200);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "reserved-label");
        docker_decision_done(&d);
        j = allowed("{\"Image\":\"fine\"}", &d);
        json_decref(j);
        check_answer(&d, fine, 200);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);
        /* Not there yet: the engine's 404 makes the CLI pull, then create again. */
        j = allowed("{\"Image\":\"fine\"}", &d);
        json_decref(j);
        check_answer(&d, "", 404);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);
        assert_denied("{\"Image\":\"a b\"}", 400, "invalid-field", "Image");
}

static void test_routes_are_exact(void **state) {
        static const char *const refused[][2] = {
                { "POST", "/containers/web/x/exec" },   /* a link name: /web/x */
                { "GET", "/containers/web/x/json" },
                { "GET", "/containers/web/json/extra" },
                { "GET", "/containers/web/bogus" },
                { "PUT", "/containers/web/start" },
                { "DELETE", "/exec/e1/start" },
                { "POST", "/containers/web:x/exec" },   /* not one name */
                { "POST", "/services/create" },
                { "POST", "/images/load" },
                { "POST", "/images/prune" },
                { "POST", "/containers/prune" },
                { "POST", "/build/prune" },
                { "POST", "/networks/prune" },
                { "POST", "/session" },
                { "GET", "/" },
        };
        DockerDecision d = {};
        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                assert_int_equal(docker_decide_request(&caller, refused[i][0], refused[i][1], "", &d), 0);
                if (d.status != 403)
                        fail_msg("%s %s: got %u", refused[i][0], refused[i][1], d.status);
                docker_decision_done(&d);
        }
        assert_int_equal(docker_decide_request(&caller, "POST", "/containers/web/x/exec", "", &d), 0);
        assert_non_null(strstr(d.message, "POST /containers/web/x/exec"));
        docker_decision_done(&d);
        /* The exact route gets its body checked. */
        assert_int_equal(docker_decide_request(&caller, "POST", "/containers/web/exec", "", &d), 0);
        assert_true(d.needs_body);
        docker_decision_done(&d);
        /* Link aliases are single names. */
        assert_denied("{\"HostConfig\":{\"Links\":[\"web:a/b\"]}}", 403, "links", "single names");
        assert_denied("{\"HostConfig\":{\"Links\":[\"we/b:a\"]}}", 403, "links", "single names");
        assert_denied("{\"HostConfig\":{\"VolumesFrom\":[\"we/b:ro\"]}}", 400, "invalid-field", "one container");
}

static void test_volume_options_allow_list(void **state) {
        static const char *const refused[] = {
                "{\"type\":\"proc\",\"device\":\"proc\"}",
                "{\"type\":\"cgroup\",\"device\":\"cgroup\"}",
                "{\"type\":\"ext4\",\"device\":\"/dev/sda1\"}",
                "{\"type\":\"overlay\",\"device\":\"overlay\",\"o\":\"lowerdir=/etc\"}",
                "{\"o\":\"bind\"}",
                "{\"type\":\"tmpfs\",\"device\":\"tmpfs\",\"o\":\"size=1m,bind\"}",
                "{\"type\":\"tmpfs\",\"device\":\"/etc\"}",
                "{\"type\":\"tmpfs\",\"device\":\"tmpfs\",\"o\":\"size=1x\"}",
                "{\"type\":\"tmpfs\",\"device\":\"tmpfs\",\"o\":\"mode=0999\"}",
                "{\"device\":\"tmpfs\"}",
                "{\"uid\":\"0\"}",
                "{\"size\":1}",
        };
        static const char *const allowed_opts[] = {
                "{}", "{\"size\":\"10G\"}",
                "{\"type\":\"tmpfs\",\"device\":\"tmpfs\",\"o\":\"size=64m,nr_inodes=1000,mode=0700,uid=1000,gid=1000\"}",
                "{\"type\":\"tmpfs\",\"device\":\"tmpfs\",\"o\":\"size=50%\"}",
        };
        DockerDecision d = {};
        char body[512];
        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                snprintf(body, sizeof(body), "{\"Name\":\"v\",\"DriverOpts\":%s}", refused[i]);
                assert_int_equal(docker_decide_body(&caller, "POST", "/volumes/create", body, strlen(body), &d), 0);
                if (d.status < 400 || !d.message || !strstr(d.message, "DriverOpts"))
                        fail_msg("%s: got %u %s", body, d.status, d.message ?: "");
                docker_decision_done(&d);
        }
        for (size_t i = 0; i < ELEMENTSOF(allowed_opts); i++) {
                snprintf(body, sizeof(body), "{\"Name\":\"v\",\"DriverOpts\":%s}", allowed_opts[i]);
                assert_int_equal(docker_decide_body(&caller, "POST", "/volumes/create", body, strlen(body), &d), 0);
                if (d.status != 0)
                        fail_msg("%s: refused: %s", body, d.message);
                /* "v" is not ctr-a's: the engine is asked whether it exists. */
                assert_int_equal(d.n_checks, 1);
                assert_int_equal(d.checks[0].kind, DOCKER_CHECK_VOLUME_FREE);
                assert_int_equal(d.record_answer, OWNED_VOLUME);
                docker_decision_done(&d);
        }
        assert_denied("{\"HostConfig\":{\"Mounts\":[{\"Type\":\"volume\",\"Source\":\"v\",\"Target\":\"/x\",\"VolumeOptions\":"
                      "{\"DriverConfig\":{\"Name\":\"local\",\"Options\":{\"size\":\"1m\"}}}}]}}", 403, "volume-driver-opts", "DriverConfig");
        assert_denied("{\"HostConfig\":{\"VolumeDriver\":\"convoy\"}}", 403, "volume-driver-opts", "VolumeDriver");
}

/* Inside an instance whose host answers pulls, the proxy answers a pull
 * itself: the reference is checked and normalized first (a malformed one
 * never leaves the guest); imports and digests stay refused. */
static void test_pull_inside_instance_is_answered_through_the_host(void **state) {
        DockerPolicy via_host = { .refuse_pull = true, .pull_via_host = true };
        DockerCaller c = { .id = "c1", .root = "/", .policy = &via_host };
        DockerDecision d = {};
        (void) state;

        assert_int_equal(docker_decide_request(&c, "POST", "/images/create", "fromImage=127.0.0.1%3A5000%2Ftest%2Fb&tag=2", &d), 0);
        assert_int_equal(d.status, 0);
        assert_string_equal(d.rule, "image-pull-host");
        assert_string_equal(d.pull_ref, "127.0.0.1:5000/test/b:2");
        docker_decision_done(&d);
        /* docker run of a missing image sends the same; no tag means latest. */
        assert_int_equal(docker_decide_request(&c, "POST", "/images/create", "fromImage=busybox", &d), 0);
        assert_int_equal(d.status, 0);
        assert_string_equal(d.pull_ref, "docker.io/library/busybox:latest");
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&c, "POST", "/images/create", "fromImage=Bad%20Name&tag=1", &d), 0);
        assert_int_equal(d.status, 400);
        assert_string_equal(d.rule, "invalid-reference");
        assert_null(d.pull_ref);
        assert_non_null(strstr(d.message, "invalid reference format"));
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&c, "POST", "/images/create", "fromImage=busybox&tag=-x", &d), 0);
        assert_int_equal(d.status, 400);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&c, "POST", "/images/create",
                                               "fromImage=busybox&tag=sha256%3A0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &d), 0);
        assert_int_equal(d.status, 400);
        assert_non_null(strstr(d.message, "digest"));
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&c, "POST", "/images/create", "fromSrc=-&repo=busybox", &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "image-import");
        assert_null(d.pull_ref);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&c, "POST", "/images/create", "fromSrc=http%3A%2F%2F10.0.0.1%2Fx.tar&repo=x", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
}

/* The end of the progress stream: success, or an error line the docker
 * CLI prints and exits 1 on, saying what to do. */
static void test_pull_result_lines(void **state) {
        _cleanup_free_ char *ok = NULL, *missing = NULL, *down = NULL, *denied = NULL, *start = NULL;
        (void) state;

        assert_int_equal(docker_pull_started("127.0.0.1:5000/test/b:2", &start), 0);
        assert_non_null(strstr(start, "{\"status\":\"Pulling 127.0.0.1:5000/test/b:2 through the host"));
        assert_true(start[strlen(start) - 1] == '\n');
        assert_int_equal(docker_pull_result("127.0.0.1:5000/test/b:2", 0, "", &ok), 0);
        assert_string_equal(ok, "{\"status\":\"Status: Downloaded newer image for 127.0.0.1:5000/test/b:2\"}\n");
        assert_int_equal(docker_pull_result("127.0.0.1:5000/test/b:9", 2, "manifest unknown", &missing), 0);
        assert_non_null(strstr(missing, "{\"errorDetail\":{\"message\":\"127.0.0.1:5000/test/b:9: repository or tag not found in 127.0.0.1:5000"));
        assert_non_null(strstr(missing, "\"error\":\"127.0.0.1:5000/test/b:9: repository or tag not found"));
        assert_int_equal(docker_pull_result("127.0.0.1:5999/x:1", 4, "connection refused", &down), 0);
        assert_non_null(strstr(down, "registry 127.0.0.1:5999 is not reachable from the host (connection refused); is it up?"));
        assert_int_equal(docker_pull_result("10.1.2.3:5000/x:1", 3, "plain HTTP only to loopback", &denied), 0);
        assert_non_null(strstr(denied, "refused by the host's registry policy: plain HTTP only to loopback"));
}

static void test_images_and_volumes_of_others(void **state) {
        DockerDecision d = {};
        _cleanup_free_ char *n = NULL;
        (void) state;
        assert_int_equal(docker_image_ref_normalize("ubuntu", &n), 0);
        assert_string_equal(n, "docker.io/library/ubuntu:latest");
        free(n);
        n = NULL;
        assert_int_equal(docker_image_ref_normalize("localhost:5000/a/b:v1", &n), 0);
        assert_string_equal(n, "localhost:5000/a/b:v1");
        free(n);
        n = NULL;
        assert_int_equal(docker_image_ref_normalize("Upper", &n), -EINVAL);
        assert_int_equal(docker_image_ref_normalize("3a4cc772", &n), -EINVAL);     /* an id prefix */
        assert_int_equal(docker_image_ref_normalize("x@sha256:00", &n), -EINVAL);

        /* build -t of a name that exists and is not ctr-a's: refused on the engine's 200. */
        assert_int_equal(docker_decide_request(&caller, "POST", "/build", "t=busybox&t=mine%3Av2", &d), 0);
        assert_int_equal(d.status, 0);
        assert_int_equal(d.n_checks, 1); /* mine:v2 is ctr-a's already */
        assert_string_equal(d.checks[0].ref, "docker.io/library/busybox:latest");
        assert_int_equal(d.n_records, 2);
        check_answer(&d, "{}", 200);
        assert_int_equal(d.status, 403);
        assert_non_null(strstr(d.message, "busybox"));
        docker_decision_done(&d);

        assert_int_equal(docker_decide_request(&caller, "DELETE", "/images/busybox", "", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "DELETE", "/images/mine:v2", "", &d), 0);
        assert_int_equal(d.status, 0);
        assert_false(d.records[0].add);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "POST", "/images/busybox/push", "tag=latest", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "POST", "/images/create", "fromSrc=-&repo=busybox", &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "POST", "/images/create", "fromImage=busybox&tag=latest", &d), 0);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);
        /* Inside an instance pulls are refused, imports still are, with their own words. */
        DockerPolicy no_pull = { .refuse_pull = true };
        DockerCaller in_instance = caller;
        in_instance.policy = &no_pull;
        assert_int_equal(docker_decide_request(&in_instance, "POST", "/images/create", "fromImage=busybox&tag=latest", &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "image-pull");
        assert_non_null(strstr(d.message, "never reach it over the network"));
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&in_instance, "POST", "/images/create", "fromSrc=-&repo=busybox", &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "image-import");
        docker_decision_done(&d);

        /* Volumes by name: the records answer without asking. */
        assert_int_equal(docker_decide_request(&caller, "DELETE", "/volumes/theirs", "", &d), 0);
        assert_int_equal(d.status, 404);
        docker_decision_done(&d);
        assert_int_equal(docker_decide_request(&caller, "DELETE", "/volumes/myvol", "", &d), 0);
        assert_int_equal(d.status, 0);
        docker_decision_done(&d);
        /* Joining a network that is not ctr-a's is asked about. */
        assert_int_equal(docker_decide_request(&caller, "POST", "/networks/n1/connect", "", &d), 0);
        assert_int_equal(d.checks[0].kind, DOCKER_CHECK_NETWORK);
        docker_decision_done(&d);
        {
                json_t *j = allowed("{\"HostConfig\":{\"Binds\":[\"myvol:/x\",\"newvol:/y\"]}}", &d);
                assert_int_equal(d.n_checks, 1);
                assert_int_equal(d.checks[0].kind, DOCKER_CHECK_VOLUME_FREE);
                assert_string_equal(d.checks[0].ref, "newvol");
                assert_int_equal(d.record_answer, OWNED_CONTAINER);
                json_decref(j);
                docker_decision_done(&d);
        }
}

static void test_start_rechecks_bind_sources(void **state) {
        char ok[700], swapped[700], outside[700];
        DockerDecision d = {};
        (void) state;
        /* As written at create time: still a plain directory. */
        snprintf(ok, sizeof(ok), "{\"HostConfig\":{\"Binds\":[\"%s/mydata:/p\",\"vol:/v\"],"
                 "\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"%s/mydata/sub\"}]}}", root, root);
        assert_int_equal(docker_verify_mounts(&caller, ok, strlen(ok), &d), 0);
        assert_int_equal(d.status, 0);
        /* A component became a symlink after create. */
        snprintf(swapped, sizeof(swapped), "{\"HostConfig\":{\"Binds\":[\"%s/inside:/p\"]}}", root);
        assert_int_equal(docker_verify_mounts(&caller, swapped, strlen(swapped), &d), 0);
        assert_int_equal(d.status, 403);
        assert_string_equal(d.rule, "bind-escape");
        docker_decision_done(&d);
        /* A source outside the root (not written by us). */
        snprintf(outside, sizeof(outside), "{\"HostConfig\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"/etc\"}]}}");
        assert_int_equal(docker_verify_mounts(&caller, outside, strlen(outside), &d), 0);
        assert_int_equal(d.status, 403);
        docker_decision_done(&d);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bind_source_is_rewritten_into_the_root),
                cmocka_unit_test(test_symlinks_inside_the_root_are_followed),
                cmocka_unit_test(test_escapes_are_refused_naming_the_mount),
                cmocka_unit_test(test_json_tricks_are_refused),
                cmocka_unit_test(test_policy_denies_by_default),
                cmocka_unit_test(test_policy_allows_what_the_registration_grants),
                cmocka_unit_test(test_container_references_must_be_owned),
                cmocka_unit_test(test_routes),
                cmocka_unit_test(test_other_bodies),
                cmocka_unit_test(test_ownership_is_decided_by_records),
                cmocka_unit_test(test_routes_are_exact),
                cmocka_unit_test(test_images_with_reserved_labels_make_no_containers),
                cmocka_unit_test(test_volume_options_allow_list),
                cmocka_unit_test(test_images_and_volumes_of_others),
                cmocka_unit_test(test_pull_inside_instance_is_answered_through_the_host),
                cmocka_unit_test(test_pull_result_lines),
                cmocka_unit_test(test_start_rechecks_bind_sources),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
