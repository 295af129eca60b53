/* SPDX-License-Identifier: MIT */
/* nsc status: the health of every part, asked through the gateway. */

#include "google/protobuf/empty.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "hostmesh/vmm/v1/vmm.pb-c.h"
#include "nsc.h"
#include "paths.h"

static const char *status_name(int s) {
        switch (s) {
        case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
                return "SERVING";
        case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
                return "NOT_SERVING";
        case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
                return "SERVICE_UNKNOWN";
        default:
                return "UNKNOWN";
        }
}

/* Asks one part for its overall health. The gateway routes
 * grpc.health.v1.Health calls by the x-hostmesh-part metadata (without it,
 * the gateway answers for itself). */
static int check_part(Nsc *n, const char *part, const char **ret_status, RpcStatus *st) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        Grpc__Health__V1__HealthCheckResponse *resp = NULL;
        const char *md[] = { "x-hostmesh-part", part, NULL };
        int r;

        req.service = (char *) "";
        r = rpc_client_call(n->client, "/grpc.health.v1.Health/Check", streq(part, "gateway") ? NULL : md, &req.base,
                            &grpc__health__v1__health_check_response__descriptor, n->timeout_usec,
                            (ProtobufCMessage **) &resp, st);
        if (r < 0) {
                *ret_status = st->code == RPC_UNAVAILABLE ? "UNAVAILABLE" : rpc_code_to_string(st->code);
                return r;
        }
        *ret_status = status_name(resp->status);
        r = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : -EBUSY;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return r;
}

/* vmmd's accelerator and why: what an operator asks first when instances
 * boot slowly. NULL when vmmd cannot say. */
static Hostmesh__Vmm__V1__Capacity *vmm_capacity(Nsc *n) {
        Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
        Hostmesh__Vmm__V1__Capacity *cap = NULL;
        _cleanup_(rpc_status_done) RpcStatus st = {};

        if (rpc_client_call(n->client, "/hostmesh.vmm.v1.Vmm/GetCapacity", NULL, &req.base,
                            &hostmesh__vmm__v1__capacity__descriptor, n->timeout_usec, (ProtobufCMessage **) &cap,
                            &st) < 0)
                return NULL;
        return cap;
}

static int run_status(Nsc *n, int argc, char **argv) {
        _cleanup_(rpc_status_done) RpcStatus gst = {};
        json_t *services;
        bool all_serving = true;
        const char *gstatus;
        int r;

        (void) argv;
        if (argc > 1)
                return nsc_fail(n, NSC_EXIT_USAGE, "USAGE", "'nsc status' takes no arguments.");
        if (!nsc_client(n))
                return nsc_fail(n, NSC_EXIT_USAGE, "INVALID_ARGUMENT", "Invalid endpoint '%s'.", n->endpoint);

        /* The gateway first: when it is down there is nobody to ask about the rest. */
        r = check_part(n, "gateway", &gstatus, &gst);
        if (r < 0 && gst.code == RPC_UNAVAILABLE)
                return nsc_call(n, "/grpc.health.v1.Health/Check",
                                &(Grpc__Health__V1__HealthCheckRequest) GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT.base,
                                &grpc__health__v1__health_check_response__descriptor, NULL);

        services = json_array();
        if (!n->json)
                printf("%-12s %-12s %s\n", "PART", "STATUS", "DETAIL");
        for (size_t i = 0; i < HOSTMESH_PARTS_MAX; i++) {
                const char *part = hostmesh_parts[i], *status;
                _cleanup_(rpc_status_done) RpcStatus st = {};

                _cleanup_free_ char *detail = NULL;
                Hostmesh__Vmm__V1__Capacity *cap = NULL;

                r = check_part(n, part, &status, &st);
                if (r < 0)
                        all_serving = false;
                if (r >= 0 && streq(part, "vmm") && (cap = vmm_capacity(n)) &&
                    asprintf(&detail, "accelerator %s (accel = %s): %s",
                             isempty(cap->accelerator) ? "undecided" : cap->accelerator, cap->accelerator_mode,
                             cap->accelerator_reason) < 0)
                        detail = NULL;
                if (n->json) {
                        json_t *o = json_pack("{s:s, s:s}", "name", part, "status", status);
                        if (st.message && *st.message)
                                json_object_set_new(o, "detail", json_string(st.message));
                        else if (detail)
                                json_object_set_new(o, "detail", json_string(detail));
                        if (cap) {
                                json_object_set_new(o, "accelerator", json_string(cap->accelerator));
                                json_object_set_new(o, "accelerator_mode", json_string(cap->accelerator_mode));
                                json_object_set_new(o, "accelerator_reason", json_string(cap->accelerator_reason));
                        }
                        json_array_append_new(services, o);
                } else
                        printf("%-12s %-12s %s\n", part, status, st.message ? st.message : detail ?: "");
                if (cap)
                        protobuf_c_message_free_unpacked(&cap->base, NULL);
        }
        if (n->json)
                nsc_print_json(json_pack("{s:o}", "services", services));
        else
                json_decref(services);
        return all_serving ? NSC_EXIT_OK : NSC_EXIT_FAILURE;
}

NSC_COMMAND(status, .name = "status", .usage = "", .summary = "Health of every hostmesh part (exit 0 when all serve)",
            .run = run_status);
