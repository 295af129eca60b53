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
        static OwnedSet *owned = NULL;
        DockerCaller c = { .id = "fuzz", .root = root, .policy = &policy };
        DockerDecision d = {};

        if (!initialized) {
                make_root();
                if (owned_set_new(&owned) < 0 || owned_set_add(owned, OWNED_CONTAINER, "abc") < 0)
                        abort();
                initialized = true;
        }
        c.owned = owned;
        if (size > DOCKER_BODY_MAX)
                return 0;
        if (docker_translate_create(&c, (const char *) data, size, &d) >= 0 && d.status == 0 && !d.new_body)
                __builtin_trap();
        docker_decision_done(&d);
        (void) docker_decide_body(&c, "POST", "/containers/x/exec", (const char *) data, size, &d);
        docker_decision_done(&d);
        (void) docker_decide_body(&c, "POST", "/volumes/create", (const char *) data, size, &d);
        docker_decision_done(&d);
        /* The same bytes as an engine answer to every kind of check. */
        (void) docker_verify_mounts(&c, (const char *) data, size, &d);
        docker_decision_done(&d);
        for (int k = DOCKER_CHECK_CONTAINER; k <= DOCKER_CHECK_IMAGE_FREE; k++) {
                static const char *const refs[] = { "web", "e1", "net", "vol", "docker.io/library/x:latest" };
                DockerCheck check = { .kind = (DockerCheckKind) k, .ref = strdup(refs[k]), .in_path = true };
                d = (DockerDecision){ .verify_mounts = true, .checks = malloc(sizeof(DockerCheck)), .n_checks = 1 };
                if (!check.ref || !d.checks)
                        abort();
                d.checks[0] = check;
                (void) docker_check_answer(&c, &d, 0, 200, (const char *) data, size);
                docker_decision_done(&d);
        }
        {
                char *id = NULL, *ctr = NULL;
                if (docker_created_id(OWNED_VOLUME, (const char *) data, size, &id) >= 0)
                        free(id);
                if (docker_exec_inspect_container((const char *) data, size, &ctr) >= 0)
                        free(ctr);
        }
        /* And as an image reference. */
        if (size < 512) {
                char ref[512], *norm = NULL;
                memcpy(ref, data, size);
                ref[size] = '\0';
                if (docker_image_ref_normalize(ref, &norm) >= 0)
                        free(norm);
        }
        return 0;
}
