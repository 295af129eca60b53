/* SPDX-License-Identifier: MIT */
#include <openssl/evp.h>
#include <strings.h>

#include "identity-http.h"

typedef struct HttpDocument {
        char *path;
        char *content_type;
        char *body;
        size_t body_len;
        char etag[48];        /* "\"<base16 of 16 bytes of SHA-256>\"" */
        unsigned max_age;
} HttpDocument;

struct IdentityHttp {
        HttpServer *server;
        HttpDocument *docs;
        size_t n_docs;
};

/* RFC 9110 §13.1.2: If-None-Match is "*" or a list of entity tags, weak
 * ones compared weakly. */
static bool etag_matches(const char *header, const char *etag) {
        const char *p = header;
        size_t elen = strlen(etag);

        if (streq(header, "*"))
                return true;
        while (*p) {
                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                if (strncmp(p, "W/", 2) == 0)
                        p += 2;
                if (strncmp(p, etag, elen) == 0 && (p[elen] == 0 || p[elen] == ',' || p[elen] == ' ' || p[elen] == '\t'))
                        return true;
                while (*p && *p != ',')
                        p++;
        }
        return false;
}

int identity_http_answer(IdentityHttp *s, const HttpRequest *req, IdentityHttpAnswer *ret) {
        static const char not_found[] = "Not Found\n", not_allowed[] = "Method Not Allowed\n",
                          too_large[] = "Content Too Large\n";
        const char *inm = http_request_header(req, "If-None-Match");
        const HttpDocument *d = NULL;
        size_t path_len = strcspn(req->target, "?");  /* the query does not select a document */

        *ret = (IdentityHttpAnswer){ .content_type = "text/plain; charset=utf-8" };
        if (!streq(req->method, "GET") && !streq(req->method, "HEAD")) {
                ret->status = 405;
                ret->body = not_allowed;
                ret->body_len = strlen(not_allowed);
                ret->headers = strdup("Allow: GET, HEAD\r\n");
                return ret->headers ? 0 : -ENOMEM;
        }
        if (req->body_len > 0) {
                ret->status = 413;
                ret->body = too_large;
                ret->body_len = strlen(too_large);
                return 0;
        }
        for (size_t i = 0; i < s->n_docs; i++)
                if (strlen(s->docs[i].path) == path_len && strncmp(s->docs[i].path, req->target, path_len) == 0)
                        d = &s->docs[i];
        if (!d) {
                ret->status = 404;
                ret->body = not_found;
                ret->body_len = strlen(not_found);
                return 0;
        }
        if (asprintf(&ret->headers, "ETag: %s\r\nCache-Control: public, max-age=%u\r\n%s", d->etag, d->max_age,
                     inm ? "" : "Access-Control-Allow-Origin: *\r\nX-Content-Type-Options: nosniff\r\n") < 0) {
                ret->headers = NULL;
                return -ENOMEM;
        }
        if (inm && etag_matches(inm, d->etag)) {
                ret->status = 304;
                ret->content_type = NULL;
                return 0;
        }
        if (inm) {
                free(ret->headers);
                if (asprintf(&ret->headers, "ETag: %s\r\nCache-Control: public, max-age=%u\r\n"
                             "Access-Control-Allow-Origin: *\r\nX-Content-Type-Options: nosniff\r\n",
                             d->etag, d->max_age) < 0) {
                        ret->headers = NULL;
                        return -ENOMEM;
                }
        }
        ret->status = 200;
        ret->content_type = d->content_type;
        ret->body = d->body;
        ret->body_len = d->body_len;
        return 0;
}

static void on_request(HttpExchange *x, const HttpRequest *req, void *userdata) {
        IdentityHttp *s = userdata;
        IdentityHttpAnswer a;

        if (identity_http_answer(s, req, &a) < 0) {
                (void) http_exchange_respond(x, 503, "text/plain", NULL, "Service Unavailable\n", 20);
                return;
        }
        /* 304 carries no body (RFC 9110 §15.4.5). */
        (void) http_exchange_respond(x, a.status, a.content_type, a.headers, a.body, a.status == 304 ? 0 : a.body_len);
        free(a.headers);
}

int identity_http_set_document(IdentityHttp *s, const char *path, const char *content_type, const char *body,
                               unsigned max_age) {
        HttpDocument *d = NULL, *a;
        uint8_t digest[32];
        unsigned dlen;
        char *b, *ct;

        for (size_t i = 0; i < s->n_docs; i++)
                if (streq(s->docs[i].path, path))
                        d = &s->docs[i];
        if (!d) {
                a = realloc(s->docs, (s->n_docs + 1) * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                s->docs = a;
                d = &s->docs[s->n_docs];
                *d = (HttpDocument){ .path = strdup(path) };
                if (!d->path)
                        return -ENOMEM;
                s->n_docs++;
        }
        b = strdup(body);
        ct = strdup(content_type);
        if (!b || !ct) {
                free(b);
                free(ct);
                return -ENOMEM;
        }
        free(d->body);
        free(d->content_type);
        d->body = b;
        d->content_type = ct;
        d->body_len = strlen(b);
        d->max_age = max_age;
        /* A strong validator derived from the bytes served (RFC 9110 §8.8.3). */
        if (!EVP_Digest(b, d->body_len, digest, &dlen, EVP_sha256(), NULL))
                return -EIO;
        d->etag[0] = '"';
        for (size_t i = 0; i < 16; i++)
                snprintf(d->etag + 1 + 2 * i, 3, "%02x", digest[i]);
        memcpy(d->etag + 33, "\"", 2);
        return 0;
}

int identity_http_new(sd_event *event, int fd, const char *tls_cert, const char *tls_key, uint64_t timeout_usec,
                      IdentityHttp **ret) {
        _cleanup_(identity_http_freep) IdentityHttp *s = NULL;
        HttpServerOptions opts = {
                /* Documents are fetched with GET: no body is expected. */
                .limits = { .head_max = 8192, .body_max = 1 },
                .request_timeout_usec = timeout_usec,
                .tls_cert = tls_cert,
                .tls_key = tls_key,
        };
        int r;

        s = calloc(1, sizeof(*s));
        if (!s) {
                safe_close(fd);
                return -ENOMEM;
        }
        r = http_server_new(event, fd, &opts, on_request, s, &s->server);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

IdentityHttp *identity_http_free(IdentityHttp *s) {
        if (!s)
                return NULL;
        http_server_free(s->server);
        for (size_t i = 0; i < s->n_docs; i++) {
                free(s->docs[i].path);
                free(s->docs[i].content_type);
                free(s->docs[i].body);
        }
        free(s->docs);
        free(s);
        return NULL;
}

unsigned identity_http_connections(const IdentityHttp *s) {
        return s->server ? http_server_connections(s->server) : 0;
}
