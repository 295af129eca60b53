/* SPDX-License-Identifier: MIT */
/* Fuzzes the HTTP framing: request head, response head, chunked scanner and
 * target splitting. Input: first byte selects the parser. */
#include <stdint.h>

#include "dockerproxy-http.h"

static int sink(const char *data, size_t len, void *userdata) {
        size_t *total = userdata;
        (void) data;
        *total += len;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf = (const char *) data + 1;
        size_t len = size - 1;

        if (size < 1)
                return 0;
        switch (data[0] % 3) {
        case 0: {
                _cleanup_(http_message_freep) HttpMessage *m = NULL;
                if (http_parse_request(buf, len, 1 << 20, &m) == 1) {
                        _cleanup_free_ char *out = NULL, *p = NULL, *v = NULL, *q = NULL, *f = NULL;
                        size_t n;
                        if (m->head_len > len)
                                __builtin_trap();
                        (void) http_message_set_header(m, "Content-Length", "1");
                        (void) http_message_format_head(m, &out, &n);
                        if (http_split_target(m->target, &p, &v, &q) == 0)
                                (void) http_query_get(q, "filters", &f);
                }
                break;
        }
        case 1: {
                _cleanup_(http_message_freep) HttpMessage *m = NULL;
                (void) http_parse_response(buf, len, "GET", &m);
                break;
        }
        case 2: {
                HttpChunked c = {};
                size_t consumed = 0, total = 0, half = len / 2, n2 = 0;
                int r = http_chunked_feed(&c, buf, half, &consumed, sink, &total);
                if (r == 0)
                        r = http_chunked_feed(&c, buf + half, len - half, &n2, sink, &total);
                if (r >= 0 && consumed + n2 > len)
                        __builtin_trap();
                break;
        }
        }
        return 0;
}
