/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to the HTTP/1.1 request parser with small limits.
 * Whatever parses must hold together: the consumed length is within the
 * input, every header is found again by name, and parsing a prefix of the
 * consumed bytes never succeeds with a different result. */
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "http-server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        HttpLimits limits = { .head_max = 4096, .body_max = 4096 };
        HttpRequest req, again;
        size_t used, used_again;
        int r;

        if (size > 64 * 1024)
                return 0;
        r = http_request_parse((const char *) data, size, &limits, &req, &used);
        if (r != 0) {
                if (r != -EAGAIN && r != -EMSGSIZE && r != -EFBIG && r != -EBADMSG && r != -EOPNOTSUPP &&
                    r != -ENOMEM)
                        abort();
                return 0;
        }
        if (used > size || req.body_len > limits.body_max || strlen(req.body) > req.body_len)
                abort();
        for (size_t i = 0; i < req.n_headers; i++)
                if (!http_request_header(&req, req.headers[i].name))
                        abort();
        /* The same bytes alone parse the same way; one byte fewer does not complete. */
        if (http_request_parse((const char *) data, used, &limits, &again, &used_again) != 0 || used_again != used ||
            again.body_len != req.body_len || memcmp(again.body, req.body, req.body_len) != 0)
                abort();
        http_request_done(&again);
        if (used > 0 && http_request_parse((const char *) data, used - 1, &limits, &again, &used_again) == 0)
                abort();
        http_request_done(&req);
        return 0;
}
