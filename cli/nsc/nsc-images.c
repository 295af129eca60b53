/* SPDX-License-Identifier: MIT */
/* nsc images: container images pulled or imported by diskd. */
#include <getopt.h>
#include <stdio.h>

#include "hostmesh/disk/v1/disk.pb-c.h"
#include "nsc.h"

#define DISK_METHOD(m) "/hostmesh.disk.v1.Disk/" m
#define OUTPUT_OPTION { "output", required_argument, NULL, 'o' }
/* Pulling and unpacking a large image takes longer than a unary call's
 * usual 30 s. */
#define PULL_TIMEOUT_USEC (600 * USEC_PER_SEC)

static int verb_pull(Nsc *n, int argc, char **argv);
static int verb_import(Nsc *n, int argc, char **argv);
static int verb_list(Nsc *n, int argc, char **argv);
static int verb_rm(Nsc *n, int argc, char **argv);
static int verb_gc(Nsc *n, int argc, char **argv);

NSC_COMMAND(images_pull, .name = "images pull", .usage = "HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]",
            .summary = "Pull a container image and unpack it into a base image", .run = verb_pull);
NSC_COMMAND(images_import, .name = "images import", .usage = "PATH [--name NAME]",
            .summary = "Import an OCI layout directory, or a tar of one or of docker save", .run = verb_import);
NSC_COMMAND(images_list, .name = "images list", .usage = "", .summary = "List container images",
            .run = verb_list);
NSC_COMMAND(images_rm, .name = "images rm", .usage = "REF|DIGEST",
            .summary = "Remove an image ref; images nothing holds are collected", .run = verb_rm);
NSC_COMMAND(images_gc, .name = "images gc", .usage = "", .summary = "Collect images no ref and no disk holds",
            .run = verb_gc);

static json_t *strings_to_json(char **l, size_t n) {
        json_t *a = json_array();
        for (size_t k = 0; k < n; k++)
                json_array_append_new(a, json_string(l[k]));
        return a;
}

static json_t *image_to_json(const Hostmesh__Disk__V1__ContainerImage *i) {
        json_t *refs = strings_to_json(i->refs, i->n_refs), *j;
        j = json_pack("{s:s,s:o,s:s,s:s,s:I,s:I,s:i,s:s,s:I,s:i}", "digest", i->digest, "refs", refs, "image",
                         i->image, "path", i->path, "file_size", (json_int_t) i->file_size, "content_bytes",
                         (json_int_t) i->content_bytes, "layers", (int) i->layers, "source", i->source,
                         "created_unix", (json_int_t) i->created_unix, "disks", (int) i->disks);
        if (j && i->config)
                json_object_set_new(j, "config",
                                    json_pack("{s:o,s:o,s:o,s:s,s:s}", "entrypoint",
                                              strings_to_json(i->config->entrypoint, i->config->n_entrypoint), "cmd",
                                              strings_to_json(i->config->cmd, i->config->n_cmd), "env",
                                              strings_to_json(i->config->env, i->config->n_env), "working_dir",
                                              i->config->working_dir, "user", i->config->user));
        return j;
}

static int args(Nsc *n, const NscCommand *cmd, int argc, char **argv, int want, const char **ret, const char **name) {
        static const struct option options[] = { OUTPUT_OPTION, { "name", required_argument, NULL, 'n' }, {} };
        int c;

        while ((c = getopt_long(argc, argv, "o:n:", options, NULL)) >= 0) {
                if (c == 'n' && name)
                        *name = optarg;
                else if (c != 'o')
                        return nsc_usage(n, cmd, "Unknown option.");
        }
        if (argc - optind != want)
                return nsc_usage(n, cmd, want ? "Expected exactly one argument." : "Unexpected argument.");
        if (want)
                *ret = argv[optind];
        return 0;
}

static void print_image(Nsc *n, const Hostmesh__Disk__V1__ContainerImage *im, bool cached, bool coalesced,
                        int64_t blobs) {
        if (n->json) {
                json_t *j = image_to_json(im);
                json_object_set_new(j, "cached", json_boolean(cached));
                json_object_set_new(j, "coalesced", json_boolean(coalesced));
                if (blobs >= 0)
                        json_object_set_new(j, "blobs_fetched", json_integer(blobs));
                nsc_print_json(j);
        } else
                printf("%s %s %s%s%s\n", im->n_refs ? im->refs[0] : "-", im->digest, im->image,
                       cached ? " (cached)" : "", coalesced ? " (joined a pull in flight)" : "");
}

/* Pull and import answer alike: the image, whether it was cached, whether
 * the call waited for another one's pull; blobs fetched (pulls only, else -1). */
static int print_reply_image(Nsc *n, const Hostmesh__Disk__V1__ContainerImage *image, bool cached, bool coalesced,
                             int64_t blobs) {
        if (!image)
                return nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "diskd sent no image.");
        print_image(n, image, cached, coalesced, blobs);
        return 0;
}

static int verb_pull(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__PullImageRequest req = HOSTMESH__DISK__V1__PULL_IMAGE_REQUEST__INIT;
        Hostmesh__Disk__V1__PullImageResponse *resp = NULL;
        const char *ref;
        int r;

        if ((r = args(n, &nsc_command_images_pull, argc, argv, 1, &ref, NULL)) != 0)
                return r;
        req.ref = (char *) ref;
        if (n->timeout_usec < PULL_TIMEOUT_USEC)
                n->timeout_usec = PULL_TIMEOUT_USEC;
        r = nsc_call(n, DISK_METHOD("PullImage"), &req.base, &hostmesh__disk__v1__pull_image_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        r = print_reply_image(n, resp->image, resp->cached, resp->coalesced, resp->blobs_fetched);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

static int verb_import(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__ImportImageRequest req = HOSTMESH__DISK__V1__IMPORT_IMAGE_REQUEST__INIT;
        Hostmesh__Disk__V1__ImportImageResponse *resp = NULL;
        _cleanup_free_ char *abs = NULL;
        const char *path, *name = NULL;
        int r;

        if ((r = args(n, &nsc_command_images_import, argc, argv, 1, &path, &name)) != 0)
                return r;
        /* diskd resolves nothing relative to its own directory. */
        abs = realpath(path, NULL);
        if (!abs)
                return nsc_fail(n, NSC_EXIT_INVALID, "INVALID_ARGUMENT", "Cannot open %s: %m.", path);
        req.path = abs;
        req.name = (char *) (name ? name : "");
        if (n->timeout_usec < PULL_TIMEOUT_USEC)
                n->timeout_usec = PULL_TIMEOUT_USEC;
        r = nsc_call(n, DISK_METHOD("ImportImage"), &req.base, &hostmesh__disk__v1__import_image_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        r = print_reply_image(n, resp->image, resp->cached, resp->coalesced, -1);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

static int verb_list(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__ListImagesRequest req = HOSTMESH__DISK__V1__LIST_IMAGES_REQUEST__INIT;
        Hostmesh__Disk__V1__ListImagesResponse *resp = NULL;
        int r;

        if ((r = args(n, &nsc_command_images_list, argc, argv, 0, NULL, NULL)) != 0)
                return r;
        r = nsc_call(n, DISK_METHOD("ListImages"), &req.base, &hostmesh__disk__v1__list_images_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *a = json_array();
                for (size_t i = 0; i < resp->n_container_images; i++)
                        json_array_append_new(a, image_to_json(resp->container_images[i]));
                nsc_print_json(json_pack("{s:o}", "images", a));
        } else {
                printf("%-40s %-20s %-12s %-6s %s\n", "REF", "DIGEST", "SIZE", "DISKS", "IMAGE");
                for (size_t i = 0; i < resp->n_container_images; i++) {
                        const Hostmesh__Disk__V1__ContainerImage *im = resp->container_images[i];
                        printf("%-40s %-20.19s %-12llu %-6u %s\n", im->n_refs ? im->refs[0] : "-", im->digest,
                               (unsigned long long) im->file_size, im->disks, im->image);
                }
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_rm(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__DeleteImageRequest req = HOSTMESH__DISK__V1__DELETE_IMAGE_REQUEST__INIT;
        Hostmesh__Disk__V1__DeleteImageResponse *resp = NULL;
        const char *ref;
        int r;

        if ((r = args(n, &nsc_command_images_rm, argc, argv, 1, &ref, NULL)) != 0)
                return r;
        req.ref = (char *) ref;
        r = nsc_call(n, DISK_METHOD("DeleteImage"), &req.base, &hostmesh__disk__v1__delete_image_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:s,s:i}", "removed", ref, "collected", (int) resp->collected));
        else
                printf("Removed %s; collected %u image(s).\n", ref, resp->collected);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_gc(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__CollectImagesRequest req = HOSTMESH__DISK__V1__COLLECT_IMAGES_REQUEST__INIT;
        Hostmesh__Disk__V1__CollectImagesResponse *resp = NULL;
        int r;

        if ((r = args(n, &nsc_command_images_gc, argc, argv, 0, NULL, NULL)) != 0)
                return r;
        r = nsc_call(n, DISK_METHOD("CollectImages"), &req.base,
                     &hostmesh__disk__v1__collect_images_response__descriptor, (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:i}", "collected", (int) resp->collected));
        else
                printf("Collected %u image(s).\n", resp->collected);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}
