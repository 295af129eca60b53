/* SPDX-License-Identifier: MIT */
/* A container's process from its image's config and the request:
 * Entrypoint + (args, else Cmd), the image's Env under the request's,
 * WorkingDir; and the exact refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hostmesh/disk/v1/disk.pb-c.h"
#include "macro.h"
#include "vmm-containers.h"
#include "vmm-instance.h"
#include "vmm-pull.h"

#define IMAGE "127.0.0.1:5000/test/app:1"

static void container_new(VmmContainer *c, char *const *args, size_t n_args, char *const *env) {
        assert_int_equal(vmm_container_init(c, "main", IMAGE, args, n_args, env, AGENT_NETWORK_HOST), 0);
}

static void container_done(VmmContainer *c) {
        VmmContainer *copy = malloc(sizeof(*c));
        assert_non_null(copy);
        *copy = *c;
        vmm_container_free_all(copy, 1);
}

static void test_entrypoint_then_cmd_without_args(void **state) {
        char *entrypoint[] = { "/bin/app", "--serve" }, *cmd[] = { "-v", "x" }, *env[] = { "PATH=/bin", "A=1" };
        char *no_env[] = { NULL };
        Hostmesh__Disk__V1__ImageConfig config = HOSTMESH__DISK__V1__IMAGE_CONFIG__INIT;
        _cleanup_free_ char *error = NULL;
        VmmContainer c;

        (void) state;
        config.entrypoint = entrypoint;
        config.n_entrypoint = 2;
        config.cmd = cmd;
        config.n_cmd = 2;
        config.env = env;
        config.n_env = 2;
        config.working_dir = "/srv";
        container_new(&c, NULL, 0, no_env);
        assert_int_equal(vmm_container_resolve_process(&c, 0, &config, &error), 0);
        assert_string_equal(c.argv[0], "/bin/app");
        assert_string_equal(c.argv[1], "--serve");
        assert_string_equal(c.argv[2], "-v");
        assert_string_equal(c.argv[3], "x");
        assert_null(c.argv[4]);
        assert_string_equal(c.env[0], "PATH=/bin");
        assert_string_equal(c.env[1], "A=1");
        assert_null(c.env[2]);
        assert_string_equal(c.cwd, "/srv");
        container_done(&c);
}

static void test_args_replace_cmd_and_request_env_overrides(void **state) {
        char *entrypoint[] = { "/bin/app" }, *cmd[] = { "default" }, *env[] = { "A=image", "B=image", "C" };
        char *args[] = { "mine", "too" }, *req_env[] = { "B=request", "D=request", NULL };
        Hostmesh__Disk__V1__ImageConfig config = HOSTMESH__DISK__V1__IMAGE_CONFIG__INIT;
        _cleanup_free_ char *error = NULL;
        VmmContainer c;

        (void) state;
        config.entrypoint = entrypoint;
        config.n_entrypoint = 1;
        config.cmd = cmd;
        config.n_cmd = 1;
        config.env = env;
        config.n_env = 3;
        container_new(&c, args, 2, req_env);
        assert_int_equal(vmm_container_resolve_process(&c, 0, &config, &error), 0);
        assert_string_equal(c.argv[0], "/bin/app");
        assert_string_equal(c.argv[1], "mine");
        assert_string_equal(c.argv[2], "too");
        assert_null(c.argv[3]);
        /* The image's A, then the request's B (over the image's) and D; "C"
         * (no '=') from a sibling that should have refused it is dropped. */
        assert_string_equal(c.env[0], "A=image");
        assert_string_equal(c.env[1], "B=request");
        assert_string_equal(c.env[2], "D=request");
        assert_null(c.env[3]);
        assert_null(c.cwd);
        container_done(&c);
}

static void test_no_config_uses_the_request_alone(void **state) {
        char *args[] = { "sh", "-c", "true" }, *req_env[] = { "K=v", NULL };
        _cleanup_free_ char *error = NULL;
        VmmContainer c;

        (void) state;
        container_new(&c, args, 3, req_env);
        assert_int_equal(vmm_container_resolve_process(&c, 0, NULL, &error), 0);
        assert_string_equal(c.argv[2], "true");
        assert_string_equal(c.env[0], "K=v");
        container_done(&c);
}

static void test_refusals_name_the_container(void **state) {
        char *env[] = { NULL }, *cmd[] = { "/bin/sh" };
        Hostmesh__Disk__V1__ImageConfig config = HOSTMESH__DISK__V1__IMAGE_CONFIG__INIT;
        char *error = NULL;
        VmmContainer c;

        (void) state;
        container_new(&c, NULL, 0, env);
        assert_int_equal(vmm_container_resolve_process(&c, 2, &config, &error), -EINVAL);
        assert_string_equal(error, "containers[2].args: image " IMAGE " sets no Entrypoint or Cmd; give the "
                                   "command to run.");
        free(error);
        error = NULL;
        config.cmd = cmd;
        config.n_cmd = 1;
        config.working_dir = "relative";
        assert_int_equal(vmm_container_resolve_process(&c, 1, &config, &error), -EINVAL);
        assert_string_equal(error, "containers[1]: image " IMAGE " has a WorkingDir that is not an absolute path.");
        free(error);
        error = NULL;
        /* 40 KiB of variables from the image: over one agent frame. */
        char *big = malloc(41 * 1024), *many[] = { big };
        assert_non_null(big);
        memset(big, 'x', 41 * 1024 - 1);
        big[0] = 'V';
        big[1] = '=';
        big[41 * 1024 - 1] = '\0';
        config.working_dir = "";
        config.env = many;
        config.n_env = 1;
        assert_int_equal(vmm_container_resolve_process(&c, 0, &config, &error), -EINVAL);
        assert_string_equal(error, "containers[0]: the command and environment with image " IMAGE "'s config exceed "
                                   "30 KiB.");
        free(error);
        free(big);
        /* Refused calls leave the request as it was. */
        assert_null(c.argv[0]);
        container_done(&c);
}

/* Exported ports go into the store with the containers and come back; what
 * is stored is checked again (a port 0 or above 65535, an unknown proto
 * are dropped, not trusted). */
static void test_ports_are_stored_and_loaded_back_checked(void **state) {
        char *args[] = { "httpd" }, *env[] = { NULL };
        Instance i = {}, j = {};
        VmmContainer *c = calloc(1, sizeof(*c));
        _cleanup_free_ char *text = NULL;

        (void) state;
        assert_non_null(c);
        container_new(c, args, 1, env);
        c->ports[0] = (VmmPort){ .container_port = 8080, .host_port = 20001, .proto = 2 };
        c->ports[1] = (VmmPort){ .container_port = 443, .host_port = 20002, .proto = 1 };
        c->n_ports = 2;
        i.containers = c;
        i.n_containers = 1;
        text = vmm_containers_to_json(&i);
        assert_non_null(text);
        assert_int_equal(vmm_containers_from_json(&j, text), 0);
        assert_int_equal(j.n_containers, 1);
        assert_int_equal(j.containers[0].n_ports, 2);
        assert_int_equal(j.containers[0].ports[0].container_port, 8080);
        assert_int_equal(j.containers[0].ports[0].host_port, 20001);
        assert_int_equal(j.containers[0].ports[0].proto, 2);
        assert_int_equal(j.containers[0].ports[1].container_port, 443);
        assert_int_equal(j.containers[0].ports[1].host_port, 20002);
        assert_null(j.containers[0].ports[0].forward);
        assert_int_equal(vmm_containers_count_ports(&j), 2);
        j.containers = vmm_container_free_all(j.containers, j.n_containers);
        j.n_containers = 0;

        static const char hostile[] =
                "[{\"id\":\"c1\",\"name\":\"main\",\"image_ref\":\"r\",\"ports\":["
                "{\"container_port\":0,\"host_port\":20000,\"proto\":2},"
                "{\"container_port\":70000,\"host_port\":20000,\"proto\":2},"
                "{\"container_port\":80,\"host_port\":90000,\"proto\":2},"
                "{\"container_port\":80,\"host_port\":20000,\"proto\":9},"
                "{\"container_port\":\"80\"},"
                "{\"container_port\":81,\"host_port\":20003,\"proto\":1}]}]";
        assert_int_equal(vmm_containers_from_json(&j, hostile), 0);
        assert_int_equal(j.containers[0].n_ports, 1);
        assert_int_equal(j.containers[0].ports[0].container_port, 81);
        vmm_container_free_all(j.containers, j.n_containers);
        vmm_container_free_all(c, 1);
}

/* An image pulled from inside gets its config as `docker import --change`
 * instructions: exec form for Entrypoint and Cmd, quoted Env values whose
 * quotes, backslashes and $ survive the builder's parsing. */
static void test_pull_config_becomes_import_changes(void **state) {
        char *entrypoint[] = { "/bin/sh", "-c" }, *cmd[] = { "echo \"hi\"" },
             *env[] = { "PATH=/usr/bin:/bin", "GREETING=say \"$HOME\" \\o/" };
        Hostmesh__Disk__V1__ImageConfig config = HOSTMESH__DISK__V1__IMAGE_CONFIG__INIT;
        _cleanup_(strv_freep) char **l = NULL;

        (void) state;
        config.n_entrypoint = 2;
        config.entrypoint = entrypoint;
        config.n_cmd = 1;
        config.cmd = cmd;
        config.n_env = 2;
        config.env = env;
        config.working_dir = "/srv/my app";
        config.user = "1000:1000";
        assert_int_equal(vmm_pull_config_changes(&config, &l), 0);
        assert_string_equal(l[0], "ENTRYPOINT [\"/bin/sh\",\"-c\"]");
        assert_string_equal(l[1], "CMD [\"echo \\\"hi\\\"\"]");
        assert_string_equal(l[2], "ENV PATH=\"/usr/bin:/bin\"");
        assert_string_equal(l[3], "ENV GREETING=\"say \\\"\\$HOME\\\" \\\\o/\"");
        assert_string_equal(l[4], "WORKDIR /srv/my app");
        assert_string_equal(l[5], "USER 1000:1000");
        assert_null(l[6]);
        l = strv_free(l);

        /* No config: no instructions. */
        assert_int_equal(vmm_pull_config_changes(NULL, &l), 0);
        assert_null(l[0]);
        l = strv_free(l);

        /* A newline would start a second instruction: refused. */
        char *bad_env[] = { "A=1\nUSER root" };
        config.env = bad_env;
        config.n_env = 1;
        assert_int_equal(vmm_pull_config_changes(&config, &l), -EINVAL);
        config.env = env;
        config.n_env = 2;
        config.working_dir = "/srv/$HOME";
        assert_int_equal(vmm_pull_config_changes(&config, &l), -EINVAL);
        config.working_dir = "";
        config.user = "root;rm";
        assert_int_equal(vmm_pull_config_changes(&config, &l), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_entrypoint_then_cmd_without_args),
                cmocka_unit_test(test_ports_are_stored_and_loaded_back_checked),
                cmocka_unit_test(test_args_replace_cmd_and_request_env_overrides),
                cmocka_unit_test(test_no_config_uses_the_request_alone),
                cmocka_unit_test(test_refusals_name_the_container),
                cmocka_unit_test(test_pull_config_becomes_import_changes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
