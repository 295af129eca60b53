/* SPDX-License-Identifier: MIT */
/* gRPC surface of diskd: decode → disk-ops → encode. Every verb's input is
 * validated in disk-ops; errors map to status codes in rpc-status (one
 * place), with disk-ops' message. */

#include "disk-containers.h"
#include "disk-grpc.h"
#include "disk-manager.h"
#include "disk-oci.h"
#include "disk-ops.h"
#include "hostmesh/disk/v1/disk.pb-c.h"
#include "log.h"

#define METHOD(m) "/hostmesh.disk.v1.Disk/" m

static void fail(RpcCall *c, int r, char *error) {
        if (r == -ENOMEM && !error)
                rpc_call_fail_errno(c, r, "Out of memory.");
        else
                rpc_call_fail_errno(c, r, "%s", error ? error : strerror(-r));
        free(error);
}

static void disk_to_proto(const DiskRecord *d, Hostmesh__Disk__V1__DiskInfo *p) {
        uint64_t allocated = 0;

        (void) pool_file_allocated(d->path, &allocated);
        p->disk_id = d->id;
        p->path = d->path;
        p->size_bytes = d->size;
        p->backing = d->backing;
        p->format = d->format;
        p->instance_id = d->instance_id;
        p->base_image = d->base_image;
        p->backend = d->backend;
        p->allocated_bytes = allocated;
        p->created_unix = d->created;
}

static void on_disk_created(int r, const DiskRecord *rec, const char *error, void *userdata) {
        Hostmesh__Disk__V1__CreateDiskResponse resp = HOSTMESH__DISK__V1__CREATE_DISK_RESPONSE__INIT;
        Hostmesh__Disk__V1__DiskInfo d = HOSTMESH__DISK__V1__DISK_INFO__INIT;
        RpcCall *c = userdata;

        if (r < 0) {
                rpc_call_fail_errno(c, r, "%s", error ? error : strerror(-r));
                rpc_call_unref(c);
                return;
        }
        /* CreateDiskResponse carries DiskInfo's fields with the same numbers. */
        disk_to_proto(rec, &d);
        resp.disk_id = d.disk_id;
        resp.path = d.path;
        resp.size_bytes = d.size_bytes;
        resp.backing = d.backing;
        resp.format = d.format;
        resp.instance_id = d.instance_id;
        resp.base_image = d.base_image;
        resp.backend = d.backend;
        resp.allocated_bytes = d.allocated_bytes;
        resp.created_unix = d.created_unix;
        rpc_call_reply(c, &resp.base);
        rpc_call_unref(c);
}

static void handle_create_disk(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__CreateDiskRequest *req = (const void *) msg;
        char *error = NULL;
        int r;

        DiskCreateParams p = {
                .instance_id = req->instance_id,
                .shape = req->shape,
                .size_bytes = req->size_bytes,
                .base_image = req->base_image,
                .format = req->format,
                .tenant_id = req->tenant_id,
        };
        r = disk_create_async(userdata, &p, on_disk_created, rpc_call_ref(c), &error);
        if (r < 0) {
                rpc_call_unref(c);
                return fail(c, r, error);
        }
}

static void handle_describe_disk(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__DescribeDiskRequest *req = (const void *) msg;
        Hostmesh__Disk__V1__DescribeDiskResponse resp = HOSTMESH__DISK__V1__DESCRIBE_DISK_RESPONSE__INIT;
        Hostmesh__Disk__V1__DiskInfo d = HOSTMESH__DISK__V1__DISK_INFO__INIT;
        _cleanup_(disk_record_done) DiskRecord rec = {};
        char *error = NULL;
        int r;

        r = disk_describe(userdata, req->disk_id, &rec, &error);
        if (r < 0)
                return fail(c, r, error);
        disk_to_proto(&rec, &d);
        resp.disk = &d;
        rpc_call_reply(c, &resp.base);
}

static void handle_list_disks(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__ListDisksRequest *req = (const void *) msg;
        Hostmesh__Disk__V1__ListDisksResponse resp = HOSTMESH__DISK__V1__LIST_DISKS_RESPONSE__INIT;
        _cleanup_free_ Hostmesh__Disk__V1__DiskInfo *items = NULL;
        _cleanup_free_ Hostmesh__Disk__V1__DiskInfo **ptrs = NULL;
        DiskRecord *recs = NULL;
        char *error = NULL;
        size_t n = 0;
        int r;

        r = disk_list(userdata, req->instance_id, &recs, &n, &error);
        if (r < 0)
                return fail(c, r, error);
        items = calloc(n + 1, sizeof(*items));
        ptrs = calloc(n + 1, sizeof(*ptrs));
        if (!items || !ptrs) {
                disk_records_free(recs, n);
                return fail(c, -ENOMEM, NULL);
        }
        for (size_t i = 0; i < n; i++) {
                hostmesh__disk__v1__disk_info__init(&items[i]);
                disk_to_proto(&recs[i], &items[i]);
                ptrs[i] = &items[i];
        }
        resp.disks = ptrs;
        resp.n_disks = n;
        rpc_call_reply(c, &resp.base);
        disk_records_free(recs, n);
}

static void handle_resize_disk(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__ResizeDiskRequest *req = (const void *) msg;
        Hostmesh__Disk__V1__ResizeDiskResponse resp = HOSTMESH__DISK__V1__RESIZE_DISK_RESPONSE__INIT;
        Hostmesh__Disk__V1__DiskInfo d = HOSTMESH__DISK__V1__DISK_INFO__INIT;
        _cleanup_(disk_record_done) DiskRecord rec = {};
        char *error = NULL;
        int r;

        r = disk_resize(userdata, req->disk_id, req->size_bytes, &rec, &error);
        if (r < 0)
                return fail(c, r, error);
        disk_to_proto(&rec, &d);
        resp.disk = &d;
        rpc_call_reply(c, &resp.base);
}

static void handle_delete_disk(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__DeleteDiskRequest *req = (const void *) msg;
        Hostmesh__Disk__V1__DeleteDiskResponse resp = HOSTMESH__DISK__V1__DELETE_DISK_RESPONSE__INIT;
        char *error = NULL;
        int r;

        r = disk_delete(userdata, req->disk_id, &error);
        if (r < 0)
                return fail(c, r, error);
        resp.deleted = r > 0;
        rpc_call_reply(c, &resp.base);
}

static void handle_get_pool_stats(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Disk__V1__GetPoolStatsResponse resp = HOSTMESH__DISK__V1__GET_POOL_STATS_RESPONSE__INIT;
        char *error = NULL;
        PoolStats s;
        int r;

        (void) msg;
        r = disk_pool_stats(userdata, &s, &error);
        if (r < 0)
                return fail(c, r, error);
        resp.path = (char *) s.path;
        resp.filesystem = (char *) s.filesystem;
        resp.reflink = s.reflink;
        resp.backend = (char *) s.backend;
        resp.capacity_bytes = s.capacity;
        resp.free_bytes = s.free;
        resp.allocated_bytes = s.allocated;
        resp.virtual_bytes = s.virtual_total;
        resp.reserve_bytes = s.reserve;
        resp.overcommit_ratio = s.overcommit;
        resp.disks = (uint32_t) s.disks;
        resp.images = (uint32_t) s.images;
        rpc_call_reply(c, &resp.base);
}

static void image_to_proto(Manager *m, const ImageRecord *i, Hostmesh__Disk__V1__Image *p) {
        uint64_t users = 0;

        (void) image_users(m, i->name, &users);
        p->name = i->name;
        p->path = i->path;
        p->format = i->format;
        p->virtual_size = i->virtual_size;
        p->file_size = i->file_size;
        p->digest = i->digest;
        p->created_unix = i->created;
        p->disks = (uint32_t) users;
}

typedef struct AddImageCall {
        RpcCall *call;
        Manager *manager;
} AddImageCall;

static void on_image_added(int r, const ImageRecord *rec, const char *error, void *userdata) {
        Hostmesh__Disk__V1__AddImageResponse resp = HOSTMESH__DISK__V1__ADD_IMAGE_RESPONSE__INIT;
        Hostmesh__Disk__V1__Image img = HOSTMESH__DISK__V1__IMAGE__INIT;
        AddImageCall *a = userdata;

        if (r < 0)
                rpc_call_fail_errno(a->call, r, "%s", error ? error : strerror(-r));
        else {
                image_to_proto(a->manager, rec, &img);
                resp.image = &img;
                rpc_call_reply(a->call, &resp.base);
        }
        rpc_call_unref(a->call);
        free(a);
}

static void handle_add_image(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__AddImageRequest *req = (const void *) msg;
        AddImageCall *a;
        char *error = NULL;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return fail(c, -ENOMEM, NULL);
        a->manager = userdata;
        a->call = rpc_call_ref(c);
        /* Copying a large image or running mkfs takes seconds: a worker
         * thread does it and the reply comes when it is done. */
        r = image_add_async(userdata, req->name, req->source_path, req->format, req->size_bytes, on_image_added, a,
                            &error);
        if (r < 0) {
                rpc_call_unref(a->call);
                free(a);
                return fail(c, r, error);
        }
}

/* The run config a record keeps, as the proto's ImageConfig; left absent
 * for records older than the config column (and for one that does not
 * read back, which only a hand-edited database has). */
typedef struct ConfigProto {
        OciRunConfig run;
        Hostmesh__Disk__V1__ImageConfig msg;
} ConfigProto;

static void config_proto_done(ConfigProto *c) {
        oci_run_config_done(&c->run);
}

static void container_config_to_proto(const ContainerRecord *r, ConfigProto *c, Hostmesh__Disk__V1__ContainerImage *p) {
        hostmesh__disk__v1__image_config__init(&c->msg);
        if (isempty(r->config) || oci_run_config_from_json(r->config, &c->run) < 0)
                return;
        c->msg.entrypoint = c->run.entrypoint;
        c->msg.n_entrypoint = strv_length(c->run.entrypoint);
        c->msg.cmd = c->run.cmd;
        c->msg.n_cmd = strv_length(c->run.cmd);
        c->msg.env = c->run.env;
        c->msg.n_env = strv_length(c->run.env);
        c->msg.working_dir = c->run.working_dir;
        c->msg.user = c->run.user;
        p->config = &c->msg;
}

static void container_to_proto(Manager *m, const ContainerRecord *r, Hostmesh__Disk__V1__ContainerImage *p) {
        uint64_t users = 0;

        (void) image_users(m, r->image, &users);
        p->digest = r->digest;
        p->refs = r->refs;
        for (p->n_refs = 0; r->refs && r->refs[p->n_refs]; p->n_refs++)
                ;
        p->image = r->image;
        p->path = r->path;
        p->file_size = r->file_size;
        p->content_bytes = r->content_bytes;
        p->layers = (uint32_t) r->layers;
        p->source = r->source;
        p->created_unix = r->created;
        p->disks = (uint32_t) users;
}

typedef struct ContainerCall {
        RpcCall *call;
        Manager *manager;
        bool import;
} ContainerCall;

static void on_container_done(int r, const ContainerRecord *rec, ContainerOutcome outcome, const char *error,
                              void *userdata) {
        Hostmesh__Disk__V1__ContainerImage img = HOSTMESH__DISK__V1__CONTAINER_IMAGE__INIT;
        _cleanup_(config_proto_done) ConfigProto config = {};
        ContainerCall *a = userdata;

        if (r >= 0) {
                container_to_proto(a->manager, rec, &img);
                container_config_to_proto(rec, &config, &img);
        }
        if (r < 0)
                rpc_call_fail_errno(a->call, r, "%s", error ? error : strerror(-r));
        else if (a->import) {
                Hostmesh__Disk__V1__ImportImageResponse resp = HOSTMESH__DISK__V1__IMPORT_IMAGE_RESPONSE__INIT;
                resp.image = &img;
                resp.cached = outcome.cached;
                resp.coalesced = outcome.coalesced;
                rpc_call_reply(a->call, &resp.base);
        } else {
                Hostmesh__Disk__V1__PullImageResponse resp = HOSTMESH__DISK__V1__PULL_IMAGE_RESPONSE__INIT;
                resp.image = &img;
                resp.cached = outcome.cached;
                resp.coalesced = outcome.coalesced;
                resp.blobs_fetched = (uint32_t) outcome.blobs;
                rpc_call_reply(a->call, &resp.base);
        }
        rpc_call_unref(a->call);
        free(a);
}

static void start_container_call(RpcCall *c, Manager *m, bool import, const char *arg, const char *name) {
        ContainerCall *a;
        char *error = NULL;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return fail(c, -ENOMEM, NULL);
        *a = (ContainerCall){ .call = rpc_call_ref(c), .manager = m, .import = import };
        /* Fetching and unpacking take seconds: worker threads do it, the
         * reply comes when it is done. */
        r = import ? container_import_async(m, arg, name, on_container_done, a, &error)
                   : container_pull_async(m, arg, on_container_done, a, &error);
        if (r < 0) {
                rpc_call_unref(a->call);
                free(a);
                return fail(c, r, error);
        }
}

static void handle_pull_image(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__PullImageRequest *req = (const void *) msg;
        start_container_call(c, userdata, /* import= */ false, req->ref, NULL);
}

static void handle_import_image(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__ImportImageRequest *req = (const void *) msg;
        start_container_call(c, userdata, /* import= */ true, req->path, req->name);
}

static void handle_delete_image(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__DeleteImageRequest *req = (const void *) msg;
        Hostmesh__Disk__V1__DeleteImageResponse resp = HOSTMESH__DISK__V1__DELETE_IMAGE_RESPONSE__INIT;
        char *error = NULL;
        unsigned n = 0;
        int r;

        r = container_delete(userdata, req->ref, &n, &error);
        if (r < 0)
                return fail(c, r, error);
        resp.collected = n;
        rpc_call_reply(c, &resp.base);
}

static void handle_collect_images(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Disk__V1__CollectImagesResponse resp = HOSTMESH__DISK__V1__COLLECT_IMAGES_RESPONSE__INIT;
        char *error = NULL;
        unsigned n = 0;
        int r;

        (void) msg;
        r = container_gc(userdata, &n, &error);
        if (r < 0)
                return fail(c, r, error);
        resp.collected = n;
        rpc_call_reply(c, &resp.base);
}

static void handle_list_images(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        Hostmesh__Disk__V1__ListImagesResponse resp = HOSTMESH__DISK__V1__LIST_IMAGES_RESPONSE__INIT;
        _cleanup_free_ Hostmesh__Disk__V1__Image *items = NULL;
        _cleanup_free_ Hostmesh__Disk__V1__Image **ptrs = NULL;
        ImageRecord *recs = NULL;
        char *error = NULL;
        size_t n = 0;
        int r;

        (void) msg;
        r = image_list(userdata, &recs, &n, &error);
        if (r < 0)
                return fail(c, r, error);
        items = calloc(n + 1, sizeof(*items));
        ptrs = calloc(n + 1, sizeof(*ptrs));
        if (!items || !ptrs) {
                image_records_free(recs, n);
                return fail(c, -ENOMEM, NULL);
        }
        for (size_t i = 0; i < n; i++) {
                hostmesh__disk__v1__image__init(&items[i]);
                image_to_proto(userdata, &recs[i], &items[i]);
                ptrs[i] = &items[i];
        }
        resp.images = ptrs;
        resp.n_images = n;

        ContainerRecord *crecs = NULL;
        size_t cn = 0;
        _cleanup_free_ Hostmesh__Disk__V1__ContainerImage *citems = NULL;
        _cleanup_free_ Hostmesh__Disk__V1__ContainerImage **cptrs = NULL;
        r = container_list(userdata, &crecs, &cn, &error);
        if (r < 0) {
                image_records_free(recs, n);
                return fail(c, r, error);
        }
        citems = calloc(cn + 1, sizeof(*citems));
        cptrs = calloc(cn + 1, sizeof(*cptrs));
        if (!citems || !cptrs) {
                image_records_free(recs, n);
                container_records_free(crecs, cn);
                return fail(c, -ENOMEM, NULL);
        }
        for (size_t i = 0; i < cn; i++) {
                hostmesh__disk__v1__container_image__init(&citems[i]);
                container_to_proto(userdata, &crecs[i], &citems[i]);
                cptrs[i] = &citems[i];
        }
        resp.container_images = cptrs;
        resp.n_container_images = cn;
        rpc_call_reply(c, &resp.base);
        image_records_free(recs, n);
        container_records_free(crecs, cn);
}

static void handle_remove_image(RpcCall *c, const ProtobufCMessage *msg, void *userdata) {
        const Hostmesh__Disk__V1__RemoveImageRequest *req = (const void *) msg;
        Hostmesh__Disk__V1__RemoveImageResponse resp = HOSTMESH__DISK__V1__REMOVE_IMAGE_RESPONSE__INIT;
        char *error = NULL;
        int r;

        r = image_remove(userdata, req->name, &error);
        if (r < 0)
                return fail(c, r, error);
        rpc_call_reply(c, &resp.base);
}

#define UNARY(name, snake, handler)                                                                         \
        { METHOD(name), RPC_UNARY, &hostmesh__disk__v1__##snake##_request__descriptor,                       \
          &hostmesh__disk__v1__##snake##_response__descriptor, handler }

static const RpcMethod methods[] = {
        UNARY("CreateDisk", create_disk, handle_create_disk),
        UNARY("DescribeDisk", describe_disk, handle_describe_disk),
        UNARY("ListDisks", list_disks, handle_list_disks),
        UNARY("ResizeDisk", resize_disk, handle_resize_disk),
        UNARY("DeleteDisk", delete_disk, handle_delete_disk),
        UNARY("GetPoolStats", get_pool_stats, handle_get_pool_stats),
        UNARY("AddImage", add_image, handle_add_image),
        UNARY("ListImages", list_images, handle_list_images),
        UNARY("RemoveImage", remove_image, handle_remove_image),
        UNARY("PullImage", pull_image, handle_pull_image),
        UNARY("ImportImage", import_image, handle_import_image),
        UNARY("DeleteImage", delete_image, handle_delete_image),
        UNARY("CollectImages", collect_images, handle_collect_images),
};

int disk_grpc_register(Manager *m) {
        return rpc_server_add_methods(m->server, methods, ELEMENTSOF(methods), m);
}
