/* SPDX-License-Identifier: MIT */
/* nsc disk: instance disks and base images served by diskd. */
#include <getopt.h>
#include <stdio.h>

#include "hostmesh/disk/v1/disk.pb-c.h"
#include "nsc.h"
#include "parse-util.h"

#define DISK_METHOD(m) "/hostmesh.disk.v1.Disk/" m

static int verb_create(Nsc *n, int argc, char **argv);
static int verb_list(Nsc *n, int argc, char **argv);
static int verb_describe(Nsc *n, int argc, char **argv);
static int verb_delete(Nsc *n, int argc, char **argv);
static int verb_resize(Nsc *n, int argc, char **argv);
static int verb_pool(Nsc *n, int argc, char **argv);
static int verb_images_add(Nsc *n, int argc, char **argv);
static int verb_images_list(Nsc *n, int argc, char **argv);
static int verb_images_remove(Nsc *n, int argc, char **argv);

NSC_COMMAND(disk_create, .name = "disk create",
            .usage = "--machine_type CPUxGB | --size SIZE [--image NAME] [--instance ID] [--format qcow2|raw] "
                     "[--tenant ID]",
            .summary = "Create a disk sized by the machine shape (prints its id and path)", .run = verb_create);
NSC_COMMAND(disk_list, .name = "disk list", .usage = "[--instance ID]", .summary = "List disks", .run = verb_list);
NSC_COMMAND(disk_describe, .name = "disk describe", .usage = "DISK_ID", .summary = "Show one disk",
            .run = verb_describe);
NSC_COMMAND(disk_delete, .name = "disk delete", .usage = "DISK_ID",
            .summary = "Delete a disk and reclaim its space (deleting twice is fine)", .run = verb_delete);
NSC_COMMAND(disk_resize, .name = "disk resize", .usage = "DISK_ID --size SIZE", .summary = "Grow a disk",
            .run = verb_resize);
NSC_COMMAND(disk_pool, .name = "disk pool", .usage = "",
            .summary = "Pool capacity, allocation and the backend in use", .run = verb_pool);
NSC_COMMAND(disk_images_add, .name = "disk images add", .usage = "NAME PATH [--format raw|qcow2] [--size SIZE]",
            .summary = "Register a base image from a raw/qcow2 file or a directory (made into ext4)",
            .run = verb_images_add);
NSC_COMMAND(disk_images_list, .name = "disk images list", .usage = "", .summary = "List base images",
            .run = verb_images_list);
NSC_COMMAND(disk_images_remove, .name = "disk images remove", .usage = "NAME",
            .summary = "Remove a base image no disk uses", .run = verb_images_remove);

/* Options every verb accepts: -o/--output is handled by nsc itself. */
#define OUTPUT_OPTION { "output", required_argument, NULL, 'o' }

static json_t *disk_to_json(const Hostmesh__Disk__V1__DiskInfo *d) {
        return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "disk_id", d->disk_id, "path", d->path,
                         "size_bytes", (json_int_t) d->size_bytes, "backing", d->backing, "format", d->format,
                         "backend", d->backend, "instance_id", d->instance_id, "base_image", d->base_image,
                         "allocated_bytes", (json_int_t) d->allocated_bytes, "created_unix",
                         (json_int_t) d->created_unix);
}

static json_t *image_to_json(const Hostmesh__Disk__V1__Image *i) {
        return json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:I,s:i}", "name", i->name, "path", i->path, "format", i->format,
                         "virtual_size", (json_int_t) i->virtual_size, "file_size", (json_int_t) i->file_size,
                         "digest", i->digest, "created_unix", (json_int_t) i->created_unix, "disks", (int) i->disks);
}

static void print_disk_plain(const Hostmesh__Disk__V1__DiskInfo *d) {
        printf("disk_id:     %s\npath:        %s\nsize_bytes:  %llu\nformat:      %s\nbackend:     %s\n"
               "backing:     %s\ninstance_id: %s\nbase_image:  %s\nallocated:   %llu\n",
               d->disk_id, d->path, (unsigned long long) d->size_bytes, d->format, d->backend,
               isempty(d->backing) ? "-" : d->backing, isempty(d->instance_id) ? "-" : d->instance_id,
               isempty(d->base_image) ? "-" : d->base_image, (unsigned long long) d->allocated_bytes);
}

static int parse_size_arg(Nsc *n, const NscCommand *cmd, const char *s, uint64_t *ret) {
        if (parse_size(s, ret) < 0 || *ret == 0)
                return nsc_usage(n, cmd, "Invalid size '%s'; use e.g. 64G or 512M.", s);
        return 0;
}

static int verb_create(Nsc *n, int argc, char **argv) {
        enum { ARG_SIZE = 0x100, ARG_IMAGE, ARG_INSTANCE, ARG_FORMAT, ARG_TENANT };
        static const struct option options[] = {
                { "machine_type", required_argument, NULL, 'm' },
                { "machine-type", required_argument, NULL, 'm' },
                { "size", required_argument, NULL, ARG_SIZE },
                { "image", required_argument, NULL, ARG_IMAGE },
                { "instance", required_argument, NULL, ARG_INSTANCE },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "tenant", required_argument, NULL, ARG_TENANT },
                OUTPUT_OPTION,
                {},
        };
        Hostmesh__Disk__V1__CreateDiskRequest req = HOSTMESH__DISK__V1__CREATE_DISK_REQUEST__INIT;
        Hostmesh__Disk__V1__CreateDiskResponse *resp = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "m:o:", options, NULL)) >= 0) {
                switch (c) {
                case 'm':
                        req.shape = optarg;
                        break;
                case ARG_SIZE:
                        if ((r = parse_size_arg(n, &nsc_command_disk_create, optarg, &req.size_bytes)) != 0)
                                return r;
                        break;
                case ARG_IMAGE:
                        req.base_image = optarg;
                        break;
                case ARG_INSTANCE:
                        req.instance_id = optarg;
                        break;
                case ARG_FORMAT:
                        req.format = optarg;
                        break;
                case ARG_TENANT:
                        req.tenant_id = optarg;
                        break;
                case 'o':
                        break;
                default:
                        return nsc_usage(n, &nsc_command_disk_create, "Unknown option.");
                }
        }
        if (optind < argc)
                return nsc_usage(n, &nsc_command_disk_create, "Unexpected argument '%s'.", argv[optind]);
        if (isempty(req.shape) == (req.size_bytes == 0))
                return nsc_usage(n, &nsc_command_disk_create, "Give exactly one of --machine_type or --size.");

        r = nsc_call(n, DISK_METHOD("CreateDisk"), &req.base, &hostmesh__disk__v1__create_disk_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "disk_id", resp->disk_id, "path",
                                         resp->path, "size_bytes", (json_int_t) resp->size_bytes, "backing",
                                         resp->backing, "format", resp->format, "backend", resp->backend,
                                         "instance_id", resp->instance_id, "base_image", resp->base_image));
        else
                printf("%s %s\n", resp->disk_id, resp->path);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_list(Nsc *n, int argc, char **argv) {
        static const struct option options[] = {
                { "instance", required_argument, NULL, 'i' },
                OUTPUT_OPTION,
                {},
        };
        Hostmesh__Disk__V1__ListDisksRequest req = HOSTMESH__DISK__V1__LIST_DISKS_REQUEST__INIT;
        Hostmesh__Disk__V1__ListDisksResponse *resp = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "i:o:", options, NULL)) >= 0) {
                if (c == 'i')
                        req.instance_id = optarg;
                else if (c != 'o')
                        return nsc_usage(n, &nsc_command_disk_list, "Unknown option.");
        }
        if (optind < argc)
                return nsc_usage(n, &nsc_command_disk_list, "Unexpected argument '%s'.", argv[optind]);
        r = nsc_call(n, DISK_METHOD("ListDisks"), &req.base, &hostmesh__disk__v1__list_disks_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *a = json_array();
                for (size_t i = 0; i < resp->n_disks; i++)
                        json_array_append_new(a, disk_to_json(resp->disks[i]));
                nsc_print_json(json_pack("{s:o}", "disks", a));
        } else {
                printf("%-22s %-14s %-6s %-14s %-16s %s\n", "DISK", "SIZE", "FORMAT", "BACKEND", "INSTANCE", "IMAGE");
                for (size_t i = 0; i < resp->n_disks; i++) {
                        const Hostmesh__Disk__V1__DiskInfo *d = resp->disks[i];
                        printf("%-22s %-14llu %-6s %-14s %-16s %s\n", d->disk_id, (unsigned long long) d->size_bytes,
                               d->format, d->backend, isempty(d->instance_id) ? "-" : d->instance_id,
                               isempty(d->base_image) ? "-" : d->base_image);
                }
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

/* Verbs taking exactly one positional argument and -o. */
static int one_argument(Nsc *n, const NscCommand *cmd, int argc, char **argv, const char *what, const char **ret) {
        static const struct option options[] = { OUTPUT_OPTION, {} };
        int c;

        while ((c = getopt_long(argc, argv, "o:", options, NULL)) >= 0)
                if (c != 'o')
                        return nsc_usage(n, cmd, "Unknown option.");
        if (argc - optind != 1)
                return nsc_usage(n, cmd, "Expected exactly one %s.", what);
        *ret = argv[optind];
        return 0;
}

static int verb_describe(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__DescribeDiskRequest req = HOSTMESH__DISK__V1__DESCRIBE_DISK_REQUEST__INIT;
        Hostmesh__Disk__V1__DescribeDiskResponse *resp = NULL;
        const char *id;
        int r;

        if ((r = one_argument(n, &nsc_command_disk_describe, argc, argv, "DISK_ID", &id)) != 0)
                return r;
        req.disk_id = (char *) id;
        r = nsc_call(n, DISK_METHOD("DescribeDisk"), &req.base, &hostmesh__disk__v1__describe_disk_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (!resp->disk)
                r = nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "diskd sent no disk.");
        else if (n->json)
                nsc_print_json(disk_to_json(resp->disk));
        else
                print_disk_plain(resp->disk);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

static int verb_delete(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__DeleteDiskRequest req = HOSTMESH__DISK__V1__DELETE_DISK_REQUEST__INIT;
        Hostmesh__Disk__V1__DeleteDiskResponse *resp = NULL;
        const char *id;
        int r;

        if ((r = one_argument(n, &nsc_command_disk_delete, argc, argv, "DISK_ID", &id)) != 0)
                return r;
        req.disk_id = (char *) id;
        r = nsc_call(n, DISK_METHOD("DeleteDisk"), &req.base, &hostmesh__disk__v1__delete_disk_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:s,s:b}", "disk_id", id, "deleted", resp->deleted));
        else
                printf(resp->deleted ? "Deleted %s.\n" : "%s did not exist.\n", id);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_resize(Nsc *n, int argc, char **argv) {
        static const struct option options[] = { { "size", required_argument, NULL, 's' }, OUTPUT_OPTION, {} };
        Hostmesh__Disk__V1__ResizeDiskRequest req = HOSTMESH__DISK__V1__RESIZE_DISK_REQUEST__INIT;
        Hostmesh__Disk__V1__ResizeDiskResponse *resp = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "s:o:", options, NULL)) >= 0) {
                if (c == 's') {
                        if ((r = parse_size_arg(n, &nsc_command_disk_resize, optarg, &req.size_bytes)) != 0)
                                return r;
                } else if (c != 'o')
                        return nsc_usage(n, &nsc_command_disk_resize, "Unknown option.");
        }
        if (argc - optind != 1 || req.size_bytes == 0)
                return nsc_usage(n, &nsc_command_disk_resize, "Expected DISK_ID and --size.");
        req.disk_id = argv[optind];
        r = nsc_call(n, DISK_METHOD("ResizeDisk"), &req.base, &hostmesh__disk__v1__resize_disk_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (!resp->disk)
                r = nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "diskd sent no disk.");
        else if (n->json)
                nsc_print_json(disk_to_json(resp->disk));
        else
                print_disk_plain(resp->disk);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

static int no_arguments(Nsc *n, const NscCommand *cmd, int argc, char **argv) {
        static const struct option options[] = { OUTPUT_OPTION, {} };
        int c;

        while ((c = getopt_long(argc, argv, "o:", options, NULL)) >= 0)
                if (c != 'o')
                        return nsc_usage(n, cmd, "Unknown option.");
        if (optind < argc)
                return nsc_usage(n, cmd, "Unexpected argument '%s'.", argv[optind]);
        return 0;
}

static int verb_pool(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__GetPoolStatsRequest req = HOSTMESH__DISK__V1__GET_POOL_STATS_REQUEST__INIT;
        Hostmesh__Disk__V1__GetPoolStatsResponse *resp = NULL;
        int r;

        if ((r = no_arguments(n, &nsc_command_disk_pool, argc, argv)) != 0)
                return r;
        r = nsc_call(n, DISK_METHOD("GetPoolStats"), &req.base, &hostmesh__disk__v1__get_pool_stats_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json)
                nsc_print_json(json_pack("{s:s,s:s,s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:i,s:i}", "path", resp->path,
                                         "filesystem", resp->filesystem, "reflink", resp->reflink, "backend",
                                         resp->backend, "capacity_bytes", (json_int_t) resp->capacity_bytes,
                                         "free_bytes", (json_int_t) resp->free_bytes, "allocated_bytes",
                                         (json_int_t) resp->allocated_bytes, "virtual_bytes",
                                         (json_int_t) resp->virtual_bytes, "reserve_bytes",
                                         (json_int_t) resp->reserve_bytes, "overcommit_ratio", resp->overcommit_ratio,
                                         "disks", (int) resp->disks, "images", (int) resp->images));
        else
                printf("path:        %s\nfilesystem:  %s (reflink %s)\nbackend:     %s\ncapacity:    %llu\n"
                       "free:        %llu\nallocated:   %llu\nvirtual:     %llu\nreserve:     %llu\n"
                       "overcommit:  %g\ndisks:       %u\nimages:      %u\n",
                       resp->path, resp->filesystem, resp->reflink ? "yes" : "no", resp->backend,
                       (unsigned long long) resp->capacity_bytes, (unsigned long long) resp->free_bytes,
                       (unsigned long long) resp->allocated_bytes, (unsigned long long) resp->virtual_bytes,
                       (unsigned long long) resp->reserve_bytes, resp->overcommit_ratio, resp->disks, resp->images);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_images_add(Nsc *n, int argc, char **argv) {
        static const struct option options[] = {
                { "format", required_argument, NULL, 'f' },
                { "size", required_argument, NULL, 's' },
                OUTPUT_OPTION,
                {},
        };
        Hostmesh__Disk__V1__AddImageRequest req = HOSTMESH__DISK__V1__ADD_IMAGE_REQUEST__INIT;
        Hostmesh__Disk__V1__AddImageResponse *resp = NULL;
        _cleanup_free_ char *abs = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "f:s:o:", options, NULL)) >= 0) {
                if (c == 'f')
                        req.format = optarg;
                else if (c == 's') {
                        if ((r = parse_size_arg(n, &nsc_command_disk_images_add, optarg, &req.size_bytes)) != 0)
                                return r;
                } else if (c != 'o')
                        return nsc_usage(n, &nsc_command_disk_images_add, "Unknown option.");
        }
        if (argc - optind != 2)
                return nsc_usage(n, &nsc_command_disk_images_add, "Expected NAME and PATH.");
        req.name = argv[optind];
        /* diskd resolves nothing relative to its own directory: send an absolute path. */
        abs = realpath(argv[optind + 1], NULL);
        if (!abs)
                return nsc_fail(n, NSC_EXIT_INVALID, "INVALID_ARGUMENT", "Cannot open %s: %m.", argv[optind + 1]);
        req.source_path = abs;
        r = nsc_call(n, DISK_METHOD("AddImage"), &req.base, &hostmesh__disk__v1__add_image_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (!resp->image)
                r = nsc_fail(n, NSC_EXIT_FAILURE, "INTERNAL", "diskd sent no image.");
        else if (n->json)
                nsc_print_json(image_to_json(resp->image));
        else
                printf("%s %s %s\n", resp->image->name, resp->image->format, resp->image->digest);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

static int verb_images_list(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__ListImagesRequest req = HOSTMESH__DISK__V1__LIST_IMAGES_REQUEST__INIT;
        Hostmesh__Disk__V1__ListImagesResponse *resp = NULL;
        int r;

        if ((r = no_arguments(n, &nsc_command_disk_images_list, argc, argv)) != 0)
                return r;
        r = nsc_call(n, DISK_METHOD("ListImages"), &req.base, &hostmesh__disk__v1__list_images_response__descriptor,
                     (ProtobufCMessage **) &resp);
        if (r != 0)
                return r;
        if (n->json) {
                json_t *a = json_array();
                for (size_t i = 0; i < resp->n_images; i++)
                        json_array_append_new(a, image_to_json(resp->images[i]));
                nsc_print_json(json_pack("{s:o}", "images", a));
        } else {
                printf("%-20s %-6s %-14s %-6s %s\n", "NAME", "FORMAT", "SIZE", "DISKS", "DIGEST");
                for (size_t i = 0; i < resp->n_images; i++) {
                        const Hostmesh__Disk__V1__Image *im = resp->images[i];
                        printf("%-20s %-6s %-14llu %-6u %s\n", im->name, im->format,
                               (unsigned long long) im->virtual_size, im->disks, im->digest);
                }
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return NSC_EXIT_OK;
}

static int verb_images_remove(Nsc *n, int argc, char **argv) {
        Hostmesh__Disk__V1__RemoveImageRequest req = HOSTMESH__DISK__V1__REMOVE_IMAGE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        const char *name;
        int r;

        if ((r = one_argument(n, &nsc_command_disk_images_remove, argc, argv, "NAME", &name)) != 0)
                return r;
        req.name = (char *) name;
        r = nsc_call(n, DISK_METHOD("RemoveImage"), &req.base, &hostmesh__disk__v1__remove_image_response__descriptor,
                     &resp);
        if (r != 0)
                return r;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (n->json)
                nsc_print_json(json_pack("{s:s}", "removed", name));
        else
                printf("Removed image %s.\n", name);
        return NSC_EXIT_OK;
}
