/* SPDX-License-Identifier: MIT */
#pragma once

/* HTTP/1.1 message framing (RFC 9112) for the Docker proxy: request and
 * response heads, how long the body is, and an incremental chunked-body
 * scanner. Strict on purpose: anything two parsers could read differently
 * (CL+TE, duplicated CL or TE, obs-fold, bare LF, whitespace before the colon,
 * odd chunk sizes) is refused, so that the proxy and the engine always agree
 * on where a message ends. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define HTTP_HEAD_MAX      (64U * 1024U)  /* request line + headers */
#define HTTP_HEADERS_MAX   100U
#define HTTP_TRAILER_MAX   (8U * 1024U)

typedef enum HttpBody {
        HTTP_BODY_NONE,         /* no body at all */
        HTTP_BODY_LENGTH,       /* Content-Length bytes */
        HTTP_BODY_CHUNKED,      /* Transfer-Encoding: chunked */
        HTTP_BODY_UNTIL_CLOSE,  /* response without framing: read until EOF */
} HttpBody;

typedef struct HttpHeader {
        char *name;   /* as sent */
        char *value;  /* leading/trailing whitespace stripped */
} HttpHeader;

typedef struct HttpMessage {
        bool is_request;
        char *method;           /* requests */
        char *target;           /* requests: origin-form "/v1.41/containers/json?all=1" */
        unsigned status;        /* responses */
        char *reason;           /* responses */
        unsigned version_minor; /* HTTP/1.0 → 0, HTTP/1.1 → 1 */
        HttpHeader *headers;
        size_t n_headers;
        HttpBody body;
        uint64_t content_length; /* HTTP_BODY_LENGTH */
        bool keep_alive;         /* after this message the connection stays usable */
        bool upgrade;            /* request carries Connection: Upgrade + Upgrade: */
        size_t head_len;         /* bytes of the head including the blank line */
} HttpMessage;

HttpMessage *http_message_free(HttpMessage *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpMessage *, http_message_free);

/* Parses a request head at the start of buf. Returns 0 when more bytes are
 * needed, 1 with *ret set when a whole head was parsed, or a negative errno:
 * -EBADMSG malformed or ambiguous, -E2BIG head too large, -EMSGSIZE body
 * larger than max_body, -EOPNOTSUPP unsupported version or transfer coding. */
int http_parse_request(const char *buf, size_t len, uint64_t max_body, HttpMessage **ret);
/* Same for a response to a request with `request_method` (HEAD has no body). */
int http_parse_response(const char *buf, size_t len, const char *request_method, HttpMessage **ret);

/* First header with that name (case-insensitive), NULL when absent. */
const char *http_message_header(const HttpMessage *m, const char *name);
/* Replaces (or adds) a header; value NULL removes every header of that name. */
int http_message_set_header(HttpMessage *m, const char *name, const char *value);
/* Serializes the head (request or status line, headers, blank line). */
int http_message_format_head(const HttpMessage *m, char **ret, size_t *ret_len);

/* Incremental scanner of a chunked body (RFC 9112 §7.1). Feed it the bytes
 * as they arrive; it says how many belong to the body and, optionally,
 * hands out the decoded data. */
typedef struct HttpChunked {
        int state;
        uint64_t remaining;     /* of the current chunk */
        unsigned size_digits;
        size_t line_len;        /* chunk-ext / trailer line bytes so far */
        size_t trailer_len;
        bool line_empty;
} HttpChunked;

typedef int (*HttpDataCallback)(const char *data, size_t len, void *userdata);

/* Consumes from buf; *ret_consumed is how many bytes belong to the body.
 * Returns 1 when the body ended (the rest of buf is the next message), 0
 * when it needs more, -EBADMSG on a framing error, or what `cb` returned. */
int http_chunked_feed(HttpChunked *c, const char *buf, size_t len, size_t *ret_consumed,
                      HttpDataCallback cb, void *userdata);

/* Splits a request target into the API path with any /vX.Y prefix removed
 * ("/containers/json"), the version ("1.41" or "" when unversioned) and the
 * query ("all=1" or ""). -EBADMSG for targets that are not origin-form. */
int http_split_target(const char *target, char **ret_path, char **ret_version, char **ret_query);

/* Percent-decoding of a query value ('+' is a space); -EBADMSG on bad escapes
 * or an embedded NUL. */
int http_unescape(const char *s, size_t len, char **ret);
/* Looks up a query parameter; returns 1 and the decoded value, 0 when absent. */
int http_query_get(const char *query, const char *key, char **ret);
