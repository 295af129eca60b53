/* SPDX-License-Identifier: MIT */
#pragma once

/* The federation listener: serves a fixed set of documents (the OpenID
 * discovery document and the JWKS) over the project's HTTP/1.1 server
 * (plain TCP or TLS) with Cache-Control max-age and a strong ETag. GET and
 * HEAD only; anything else is 404 or 405; request bodies are refused. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "http-server.h"
#include "macro.h"

typedef struct IdentityHttp IdentityHttp;

/* `fd` is a listening TCP socket (from systemd or bound by the caller);
 * the server owns it. cert/key NULL → plain HTTP. */
int identity_http_new(sd_event *event, int fd, const char *tls_cert, const char *tls_key, uint64_t timeout_usec,
                      IdentityHttp **ret);
IdentityHttp *identity_http_free(IdentityHttp *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(IdentityHttp *, identity_http_free);
/* Serves `body` at `path` (replacing what was there) with max-age seconds. */
int identity_http_set_document(IdentityHttp *h, const char *path, const char *content_type, const char *body,
                               unsigned max_age);
unsigned identity_http_connections(const IdentityHttp *h);

/* ---- pure part (unit tests) ----------------------------------------------- */

typedef struct IdentityHttpAnswer {
        int status;
        const char *content_type;   /* NULL for none */
        char *headers;              /* extra header lines; owned */
        const char *body;           /* borrowed from the document or static */
        size_t body_len;
} IdentityHttpAnswer;

/* The answer to a parsed request. */
int identity_http_answer(IdentityHttp *h, const HttpRequest *req, IdentityHttpAnswer *ret);
