/* SPDX-License-Identifier: MIT */
#include "gateway-grpc.h"
#include "gateway-manager.h"
#include "gateway-metrics.h"
#include "hostmesh/gateway/v1/gateway.pb-c.h"
#include "paths.h"

static void on_metrics(const char *text, json_t *errors, void *userdata) {
        Hostmesh__Gateway__V1__GetMetricsResponse resp = HOSTMESH__GATEWAY__V1__GET_METRICS_RESPONSE__INIT;
        Hostmesh__Gateway__V1__GetMetricsResponse__ErrorsEntry entries[HOSTMESH_PARTS_MAX], *ptrs[HOSTMESH_PARTS_MAX];
        RpcCall *c = userdata;
        const char *key;
        json_t *v;
        size_t n = 0;

        json_object_foreach(errors, key, v) {
                if (n >= HOSTMESH_PARTS_MAX)
                        break;
                entries[n] = (Hostmesh__Gateway__V1__GetMetricsResponse__ErrorsEntry)
                        HOSTMESH__GATEWAY__V1__GET_METRICS_RESPONSE__ERRORS_ENTRY__INIT;
                entries[n].key = (char *) key;
                entries[n].value = (char *) json_string_value(v);
                ptrs[n] = &entries[n];
                n++;
        }
        resp.text = (char *) text;
        resp.n_errors = n;
        resp.errors = ptrs;
        rpc_call_reply(c, &resp.base);
        rpc_call_unref(c);
}

static void handle_get_metrics(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        const Hostmesh__Gateway__V1__GetMetricsRequest *req = (const void *) request;
        Manager *m = userdata;
        bool known = isempty(req->part);
        int r;

        for (size_t i = 0; i < HOSTMESH_PARTS_MAX && !known; i++)
                known = streq(hostmesh_parts[i], req->part);
        if (!known) {
                rpc_call_fail(c, RPC_INVALID_ARGUMENT, "Unknown part '%s'; valid: identity, dns, disk, vmm, "
                              "dockerproxy, gateway.", req->part);
                return;
        }
        r = gateway_metrics_collect(m, req->part, on_metrics, rpc_call_ref(c));
        if (r < 0) {
                rpc_call_fail_errno(c, r, "Failed to collect metrics.");
                rpc_call_unref(c);
        }
}

static void handle_list_routes(RpcCall *c, const ProtobufCMessage *request, void *userdata) {
        Hostmesh__Gateway__V1__ListRoutesResponse resp = HOSTMESH__GATEWAY__V1__LIST_ROUTES_RESPONSE__INIT;
        Manager *m = userdata;
        _cleanup_free_ Hostmesh__Gateway__V1__Route *routes = calloc(m->n_routes + 1, sizeof(*routes));
        _cleanup_free_ Hostmesh__Gateway__V1__Route **ptrs = calloc(m->n_routes + 1, sizeof(*ptrs));

        (void) request;
        if (!routes || !ptrs) {
                rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED, "Out of memory.");
                return;
        }
        for (size_t i = 0; i < m->n_routes; i++) {
                routes[i] = (Hostmesh__Gateway__V1__Route) HOSTMESH__GATEWAY__V1__ROUTE__INIT;
                routes[i].service_prefix = m->routes[i].prefix;
                routes[i].backend = m->routes[i].backend->part ? m->routes[i].backend->part : (char *) "";
                routes[i].target = m->routes[i].backend->target;
                ptrs[i] = &routes[i];
        }
        resp.n_routes = m->n_routes;
        resp.routes = ptrs;
        rpc_call_reply(c, &resp.base);
}

static const RpcMethod methods[] = {
        { "/hostmesh.gateway.v1.Gateway/GetMetrics", RPC_UNARY, &hostmesh__gateway__v1__get_metrics_request__descriptor,
          &hostmesh__gateway__v1__get_metrics_response__descriptor, handle_get_metrics },
        { "/hostmesh.gateway.v1.Gateway/ListRoutes", RPC_UNARY, &hostmesh__gateway__v1__list_routes_request__descriptor,
          &hostmesh__gateway__v1__list_routes_response__descriptor, handle_list_routes },
};

int gateway_grpc_register(Manager *m) {
        return rpc_server_add_methods(m->server, methods, ELEMENTSOF(methods), m);
}
