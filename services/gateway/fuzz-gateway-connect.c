/* SPDX-License-Identifier: MIT */
/* The Connect request parser, as the gateway runs it on untrusted input:
 * bytes → HTTP/1.1 request → Connect protocol parts → for JSON, the proto3
 * JSON mapping into the method's request type, or for binary the check of
 * the wire bytes against it. The GET form's query is decoded on the way.
 * Whatever succeeds must hold together; every refusal must carry a status,
 * a code and a message. */
#include <stdint.h>
#include <stdlib.h>

#include "gateway-connect.h"
#include "proto-json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        HttpLimits limits = { .head_max = 8192, .body_max = 65536 };
        HttpRequest req;
        ConnectRequest creq;
        RpcCode code;
        char *message = NULL;
        int status;

        if (size > 128 * 1024)
                return 0;
        if (http_request_parse((const char *) data, size, &limits, &req, NULL) != 0)
                return 0;
        status = connect_request_parse(&req, &creq, &code, &message);
        if (status != 0) {
                if (status < 200 || status > 599 || code == RPC_OK || !message || !*message)
                        abort();
                if (!connect_code_name(code) || connect_code_http_status(code) < 400)
                        abort();
                free(message);
        } else {
                const ProtobufCMethodDescriptor *md = connect_method_find(creq.method);
                /* The message lies in the body, or for GET in the request's own storage. */
                if (message || creq.method[0] != '/' ||
                    (!creq.get && creq.message + creq.message_len > (const uint8_t *) req.body + req.body_len) ||
                    (creq.get && (creq.message != creq.storage || creq.storage[creq.message_len] != 0)))
                        abort();
                if (md && creq.json) {
                        uint8_t *bin = NULL;
                        size_t n = 0;
                        char *error = NULL, *json = NULL, *again = NULL;
                        size_t jlen;
                        int r = proto_json_to_binary(md->input, (const char *) creq.message, creq.message_len, &bin,
                                                     &n, &error);
                        if (r == -EINVAL && !error)
                                abort();
                        /* What was accepted prints as JSON that is accepted again, to the same bytes. */
                        if (r >= 0 && proto_binary_to_json(md->input, bin, n, &json, &jlen) >= 0) {
                                uint8_t *bin2 = NULL;
                                size_t n2 = 0;
                                if (proto_json_to_binary(md->input, json, jlen, &bin2, &n2, &again) < 0 || n2 != n ||
                                    memcmp(bin, bin2, n) != 0)
                                        abort();
                                free(bin2);
                        }
                        free(json);
                        free(again);
                        free(error);
                        free(bin);
                } else if (md) {
                        char *json = NULL, *error = NULL;
                        size_t jlen;
                        /* The binary check refuses with a message naming where; what it
                         * accepts has only fields the descriptor knows. */
                        int r = proto_binary_check(md->input, creq.message, creq.message_len, &error);
                        if ((r == -EINVAL) != (error != NULL) || (r < 0 && r != -EINVAL))
                                abort();
                        free(error);
                        (void) proto_binary_to_json(md->input, creq.message, creq.message_len, &json, &jlen);
                        free(json);
                }
                connect_request_done(&creq);
        }
        http_request_done(&req);
        return 0;
}
