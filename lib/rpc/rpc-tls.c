/* SPDX-License-Identifier: MIT */
/* TCP listeners, optionally with TLS. Kept apart from rpc-server.c so that
 * only executables that add one need the gRPC library with TLS. */

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "fs-util.h"
#include "macro.h"
#include "rpc-internal.h"

int rpc_server_add_tcp_listener(RpcServer *s, const char *address, const char *cert_path, const char *key_path) {
        grpc_server_credentials *creds;
        int port;

        if (isempty(address))
                return -EINVAL;
        if (!isempty(cert_path) || !isempty(key_path)) {
                _cleanup_free_ char *cert = NULL, *key = NULL;
                grpc_ssl_pem_key_cert_pair pair;
                int r;

                if (isempty(cert_path) || isempty(key_path))
                        return -EINVAL;
                r = read_full_file(cert_path, &cert, NULL, 1 << 20);
                if (r < 0)
                        return r;
                r = read_full_file(key_path, &key, NULL, 1 << 20);
                if (r < 0)
                        return r;
                pair = (grpc_ssl_pem_key_cert_pair){ .private_key = key, .cert_chain = cert };
                creds = grpc_ssl_server_credentials_create_ex(NULL, &pair, 1,
                                                              GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
                if (!creds)
                        return -EBADMSG;
        } else
                creds = grpc_insecure_server_credentials_create();
        port = grpc_server_add_http2_port(rpc_server_grpc(s), address, creds);
        grpc_server_credentials_release(creds);
        return port > 0 ? port : -EADDRNOTAVAIL;
}
