/* SPDX-License-Identifier: MIT */
/* OCI Distribution pulls with libcurl. libcurl rather than our own HTTP:
 * registries redirect blob GETs to object stores, speak HTTP/1.1 with
 * chunked encoding and keep-alive, and sit behind TLS with the system's CA
 * store; all of that is libcurl's well-tested job, and the parts that are
 * ours (digests, token flow, size caps) stay small. */

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>

#include "disk-registry.h"
#include "error-util.h"
#include "macro.h"

#define TOKEN_MAX (16U << 10)
#define HEADER_MAX 4096

struct Registry {
        CURL *curl;
        OciRef ref;
        bool plain_http;
        char *token;                /* bearer token; never logged */
        uint64_t blobs_fetched;
};

/* One request's state for the callbacks. */
typedef struct Request {
        CURL *curl;
        char *body;                 /* manifests, token replies and error bodies */
        size_t len, max;
        int fd;                     /* blobs: the file, or -1 */
        EVP_MD_CTX *md;
        uint64_t written, max_size;
        bool too_big, write_failed;
        char www_authenticate[HEADER_MAX];
        char content_type[256];
} Request;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
        (void) curl_global_init(CURL_GLOBAL_DEFAULT);
}

int registry_new(const OciRef *ref, Registry **ret) {
        Registry *r;

        pthread_once(&curl_once, curl_init_once);
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->ref = *ref;
        r->plain_http = oci_host_is_loopback(ref->host);
        r->curl = curl_easy_init();
        if (!r->curl) {
                free(r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

Registry *registry_free(Registry *r) {
        if (!r)
                return NULL;
        curl_easy_cleanup(r->curl);
        free(r->token);
        free(r);
        return NULL;
}

uint64_t registry_blobs_fetched(const Registry *r) {
        return r->blobs_fetched;
}

static void header_value(const char *line, size_t len, const char *name, char *dst, size_t size) {
        size_t nl = strlen(name);

        if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
                return;
        line += nl + 1;
        len -= nl + 1;
        while (len > 0 && (*line == ' ' || *line == '\t')) {
                line++;
                len--;
        }
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
                len--;
        if (len < size) {
                memcpy(dst, line, len);
                dst[len] = '\0';
        }
}

static size_t on_header(char *data, size_t size, size_t n, void *userdata) {
        Request *q = userdata;
        size_t len = size * n;

        /* A redirect's headers come first: only the last response counts. */
        if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
                q->www_authenticate[0] = q->content_type[0] = '\0';
                return len;
        }
        header_value(data, len, "WWW-Authenticate", q->www_authenticate, sizeof(q->www_authenticate));
        header_value(data, len, "Content-Type", q->content_type, sizeof(q->content_type));
        return len;
}

static size_t on_data(char *data, size_t size, size_t n, void *userdata) {
        Request *q = userdata;
        size_t len = size * n;
        long code = 0;

        (void) curl_easy_getinfo(q->curl, CURLINFO_RESPONSE_CODE, &code);
        if (q->fd >= 0 && code == 200) {
                if (q->written + len > q->max_size) {
                        q->too_big = true;
                        return 0; /* aborts the transfer */
                }
                if (EVP_DigestUpdate(q->md, data, len) != 1) {
                        q->write_failed = true;
                        return 0;
                }
                for (size_t w = 0; w < len;) {
                        ssize_t k = write(q->fd, data + w, len - w);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                q->write_failed = true;
                                return 0;
                        }
                        w += (size_t) k;
                }
                q->written += len;
                return len;
        }
        /* Manifests and token replies are kept whole; error bodies only
         * in part. */
        if (q->len + len > q->max) {
                if (q->fd >= 0 || code != 200)
                        return len;
                q->too_big = true;
                return 0;
        }
        char *t = realloc(q->body, q->len + len + 1);
        if (!t)
                return 0;
        q->body = t;
        memcpy(q->body + q->len, data, len);
        q->len += len;
        q->body[q->len] = '\0';
        return len;
}

static void request_done(Request *q) {
        free(q->body);
        EVP_MD_CTX_free(q->md);
        *q = (Request){ .fd = -1 };
}

/* Maps a transport failure to an errno and a message. */
static int transport_error(Registry *r, CURLcode c, char **ret_error) {
        int e;

        switch (c) {
        case CURLE_COULDNT_CONNECT:
                e = -ECONNREFUSED;
                break;
        case CURLE_COULDNT_RESOLVE_HOST:
                e = -EHOSTUNREACH;
                break;
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
                e = -EHOSTDOWN;
                break;
        default:
                e = -EPROTO;
        }
        return error_set(ret_error, e, "Registry %s is unavailable (%s): %s.", r->ref.host,
                    r->plain_http ? "http, loopback" : "https", curl_easy_strerror(c));
}

/* Performs one GET of `url`, with the token when there is one. */
static int perform(Registry *r, const char *url, const char *accept, Request *q, long *ret_code, char **ret_error) {
        struct curl_slist *headers = NULL;
        _cleanup_free_ char *auth = NULL;
        CURLcode c;

        curl_easy_reset(r->curl);
        q->curl = r->curl;
        if (accept)
                headers = curl_slist_append(headers, accept);
        if (r->token) {
                if (asprintf(&auth, "Authorization: Bearer %s", r->token) < 0)
                        return -ENOMEM;
                headers = curl_slist_append(headers, auth);
        }
        curl_easy_setopt(r->curl, CURLOPT_URL, url);
        curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(r->curl, CURLOPT_PROTOCOLS_STR, r->plain_http ? "http,https" : "https");
        curl_easy_setopt(r->curl, CURLOPT_REDIR_PROTOCOLS_STR, r->plain_http ? "http,https" : "https");
        curl_easy_setopt(r->curl, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(r->curl, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT, 10L);
        /* A stalled transfer (under 1 byte/s for 30 s) is a dead registry. */
        curl_easy_setopt(r->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(r->curl, CURLOPT_LOW_SPEED_TIME, 30L);
        curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(r->curl, CURLOPT_USERAGENT, "hostmesh-diskd");
        curl_easy_setopt(r->curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(r->curl, CURLOPT_HEADERDATA, q);
        curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, q);
        c = curl_easy_perform(r->curl);
        curl_slist_free_all(headers);
        if (c == CURLE_WRITE_ERROR && q->too_big)
                return error_set(ret_error, -ESTALE, "Registry %s sent more than the %llu bytes expected for %s.",
                            r->ref.host, (unsigned long long) (q->fd >= 0 ? q->max_size : q->max), url);
        if (c == CURLE_WRITE_ERROR && q->write_failed)
                return error_set(ret_error, -EIO, "Writing what registry %s sent failed: %m.", r->ref.host);
        if (c != CURLE_OK)
                return transport_error(r, c, ret_error);
        (void) curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, ret_code);
        return 0;
}

/* key="value" from a WWW-Authenticate challenge (RFC 6750 §3). */
static void challenge_param(const char *ch, const char *key, char *dst, size_t size) {
        size_t kl = strlen(key);

        dst[0] = '\0';
        for (const char *p = ch; (p = strstr(p, key)); p += kl) {
                const char *v, *end;
                if ((p != ch && p[-1] != ' ' && p[-1] != ',') || strncmp(p + kl, "=\"", 2) != 0)
                        continue;
                v = p + kl + 2;
                end = strchr(v, '"');
                if (end && (size_t) (end - v) < size) {
                        memcpy(dst, v, (size_t) (end - v));
                        dst[end - v] = '\0';
                }
                return;
        }
}

/* The registry asked for a token (distribution "token authentication"):
 * GET realm?service=...&scope=... anonymously, keep {"token"} or
 * {"access_token"}. */
static int fetch_token(Registry *r, const char *challenge, char **ret_error) {
        char realm[1024], service[256], scope[512];
        _cleanup_free_ char *url = NULL;
        Request q = { .fd = -1, .max = TOKEN_MAX };
        json_t *root, *tok;
        long code = 0;
        int k;

        if (strncasecmp(challenge, "Bearer ", 7) != 0)
                return error_set(ret_error, -EACCES, "Registry %s wants '%.*s' authentication, which diskd does not speak.",
                            r->ref.host, (int) strcspn(challenge, " "), challenge);
        challenge_param(challenge + 7, "realm", realm, sizeof(realm));
        challenge_param(challenge + 7, "service", service, sizeof(service));
        challenge_param(challenge + 7, "scope", scope, sizeof(scope));
        if (strncmp(realm, "https://", 8) != 0 && !(strncmp(realm, "http://", 7) == 0 && r->plain_http))
                return error_set(ret_error, -EACCES, "Registry %s names token realm '%s'; only https (or http for a "
                            "loopback registry) is used.", r->ref.host, realm);
        {
                char *es = curl_easy_escape(r->curl, service, 0), *sc = curl_easy_escape(r->curl, scope, 0);
                k = asprintf(&url, "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?", es ? es : "",
                             sc ? sc : "");
                curl_free(es);
                curl_free(sc);
                if (k < 0)
                        return -ENOMEM;
        }
        k = perform(r, url, NULL, &q, &code, ret_error);
        if (k < 0) {
                request_done(&q);
                return k;
        }
        if (code != 200) {
                request_done(&q);
                return error_set(ret_error, -EACCES, "The token service of registry %s answered HTTP %ld.", r->ref.host, code);
        }
        root = json_loadb(q.body ? q.body : "", q.len, 0, NULL);
        tok = json_object_get(root, "token");
        if (!json_is_string(tok))
                tok = json_object_get(root, "access_token");
        free(r->token);
        r->token = json_is_string(tok) ? strdup(json_string_value(tok)) : NULL;
        json_decref(root);
        request_done(&q);
        if (!r->token)
                return error_set(ret_error, -EACCES, "The token service of registry %s sent no token.", r->ref.host);
        return 0;
}

/* GET with one retry after a bearer challenge. */
static int get(Registry *r, const char *path, const char *accept, Request *q, long *ret_code, char **ret_error) {
        _cleanup_free_ char *url = NULL;
        int k;

        if (asprintf(&url, "%s://%s/v2/%s/%s", r->plain_http ? "http" : "https", r->ref.host, r->ref.repository,
                     path) < 0)
                return -ENOMEM;
        for (int attempt = 0;; attempt++) {
                k = perform(r, url, accept, q, ret_code, ret_error);
                if (k < 0)
                        return k;
                if (*ret_code != 401 || attempt > 0 || !q->www_authenticate[0])
                        return 0;
                char challenge[HEADER_MAX];
                snprintf(challenge, sizeof(challenge), "%s", q->www_authenticate);
                k = fetch_token(r, challenge, ret_error);
                if (k < 0)
                        return k;
                /* Start the answer afresh. */
                free(q->body);
                q->body = NULL;
                q->len = 0;
                q->written = 0;
                if (q->md && EVP_DigestInit_ex(q->md, EVP_sha256(), NULL) != 1)
                        return -EIO;
                if (q->fd >= 0 && (ftruncate(q->fd, 0) < 0 || lseek(q->fd, 0, SEEK_SET) < 0))
                        return negative_errno();
        }
}

static int http_error(Registry *r, long code, const char *what, char **ret_error) {
        if (code == 404)
                return error_set(ret_error, -ENOENT, "Registry %s has no %s in repository '%s'.", r->ref.host, what,
                            r->ref.repository);
        if (code == 401 || code == 403)
                return error_set(ret_error, -EACCES, "Registry %s refused access to %s of '%s' (HTTP %ld).", r->ref.host,
                            what, r->ref.repository, code);
        if (code == 429 || code >= 500)
                return error_set(ret_error, -EAGAIN, "Registry %s is unavailable (HTTP %ld for %s).", r->ref.host, code,
                            what);
        return error_set(ret_error, -EPROTO, "Registry %s answered HTTP %ld for %s.", r->ref.host, code, what);
}

static void digest_hex(const unsigned char *md, unsigned len, char ret[OCI_DIGEST_MAX]) {
        memcpy(ret, "sha256:", 7);
        for (unsigned i = 0; i < len && i < 32; i++)
                snprintf(ret + 7 + 2 * i, 3, "%02x", md[i]);
}

int registry_get_manifest(Registry *r, const char *reference, char **ret_body, size_t *ret_len,
                          char **ret_content_type, char ret_digest[OCI_DIGEST_MAX], char **ret_error) {
        static const char accept[] = "Accept: " OCI_MT_INDEX ", " OCI_MT_MANIFEST ", " DOCKER_MT_LIST ", "
                                     DOCKER_MT_MANIFEST;
        _cleanup_free_ char *path = NULL, *what = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        Request q = { .fd = -1, .max = OCI_DOCUMENT_MAX };
        long code = 0;
        int k;

        if (asprintf(&path, "manifests/%s", reference) < 0 || asprintf(&what, "manifest '%s'", reference) < 0)
                return -ENOMEM;
        k = get(r, path, accept, &q, &code, ret_error);
        if (k < 0) {
                request_done(&q);
                return k;
        }
        if (code != 200) {
                request_done(&q);
                return http_error(r, code, what, ret_error);
        }
        if (EVP_Digest(q.body ? q.body : "", q.len, md, &md_len, EVP_sha256(), NULL) != 1) {
                request_done(&q);
                return -EIO;
        }
        digest_hex(md, md_len, ret_digest);
        if (oci_digest_is_valid(reference) && !streq(reference, ret_digest)) {
                request_done(&q);
                return error_set(ret_error, -ESTALE, "Registry %s sent a manifest whose digest is %s, not the %s asked for.",
                            r->ref.host, ret_digest, reference);
        }
        *ret_content_type = strdup(q.content_type);
        if (!*ret_content_type) {
                request_done(&q);
                return -ENOMEM;
        }
        *ret_len = q.len;
        *ret_body = q.body ? q.body : strdup("");
        q.body = NULL;
        request_done(&q);
        return *ret_body ? 0 : -ENOMEM;
}

int registry_get_blob(Registry *r, const OciDescriptor *blob, int fd, uint64_t max_size, char **ret_error) {
        _cleanup_free_ char *path = NULL, *what = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        char got[OCI_DIGEST_MAX];
        unsigned md_len = 0;
        Request q = { .fd = fd, .max = 4096, .max_size = MIN(blob->size, max_size) };
        long code = 0;
        int k;

        if (blob->size > max_size)
                return error_set(ret_error, -E2BIG, "Blob %s is %llu bytes, more than the %llu allowed.", blob->digest,
                            (unsigned long long) blob->size, (unsigned long long) max_size);
        q.md = EVP_MD_CTX_new();
        if (!q.md || EVP_DigestInit_ex(q.md, EVP_sha256(), NULL) != 1) {
                request_done(&q);
                return -ENOMEM;
        }
        if (asprintf(&path, "blobs/%s", blob->digest) < 0 || asprintf(&what, "blob %s", blob->digest) < 0) {
                request_done(&q);
                return -ENOMEM;
        }
        r->blobs_fetched++;
        k = get(r, path, NULL, &q, &code, ret_error);
        if (k >= 0 && code != 200)
                k = http_error(r, code, what, ret_error);
        if (k >= 0 && q.written != blob->size)
                k = error_set(ret_error, -ESTALE, "Blob %s from registry %s is %llu bytes, not the %llu its descriptor says.",
                         blob->digest, r->ref.host, (unsigned long long) q.written, (unsigned long long) blob->size);
        if (k >= 0 && EVP_DigestFinal_ex(q.md, md, &md_len) != 1)
                k = -EIO;
        if (k >= 0) {
                digest_hex(md, md_len, got);
                if (!streq(got, blob->digest))
                        k = error_set(ret_error, -ESTALE, "Blob %s from registry %s has digest %s: its content is not what "
                                 "the manifest names; nothing was kept.", blob->digest, r->ref.host, got);
        }
        request_done(&q);
        return k;
}
