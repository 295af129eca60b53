/* SPDX-License-Identifier: MIT */
/* Fuzzes the POST /containers/create translator (JSON, policy, bind
 * resolution against a small fixed root) and the other body checks. */
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "dockerproxy-translate.h"

static char root[] = "/tmp/fuzz-dockerproxy-root-XXXXXX";

static void make_root(void) {
        char p[256];
        if (!mkdtemp(root))
                abort();
        snprintf(p, sizeof(p), "%s/mydata", root);
        (void) mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/up", root);
        (void) symlink("../..", p);
        snprintf(p, sizeof(p), "%s/abs", root);
        (void) symlink("/etc", p);
        snprintf(p, sizeof(p), "%s/in", root);
        (void) symlink("mydata", p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool initialized = false;
        static DockerPolicy policy = {};
        DockerCaller c = { .id = "fuzz", .root = root, .policy = &policy };
        DockerDecision d = {};

        if (!initialized) {
                make_root();
                initialized = true;
        }
        if (size > DOCKER_BODY_MAX)
                return 0;
        if (docker_translate_create(&c, (const char *) data, size, &d) >= 0 && d.status == 0 && !d.new_body)
                __builtin_trap();
        docker_decision_done(&d);
        (void) docker_decide_body(&c, "POST", "/containers/x/exec", (const char *) data, size, &d);
        docker_decision_done(&d);
        (void) docker_decide_body(&c, "POST", "/volumes/create", (const char *) data, size, &d);
        docker_decision_done(&d);
        /* The same bytes as an engine answer: inspect and exec descriptions. */
        (void) docker_verify_mounts(&c, (const char *) data, size, &d);
        docker_decision_done(&d);
        {
                bool owned;
                char *id = NULL, *ctr = NULL, **owners = NULL;
                if (docker_inspect_is_owned(&c, (const char *) data, size, &owned, &id) >= 0)
                        free(id);
                if (docker_exec_inspect_container((const char *) data, size, &ctr) >= 0)
                        free(ctr);
                if (docker_inspect_owners((const char *) data, size, &owners) >= 0) {
                        for (char **o = owners; *o; o++)
                                free(*o);
                        free(owners);
                }
        }
        return 0;
}
