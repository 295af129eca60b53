/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include "dockerproxy-http.h"

enum {
        CHUNK_SIZE,
        CHUNK_EXT,
        CHUNK_SIZE_LF,
        CHUNK_DATA,
        CHUNK_DATA_CR,
        CHUNK_DATA_LF,
        CHUNK_TRAILER_START,
        CHUNK_TRAILER_LINE,
        CHUNK_TRAILER_LF,
        CHUNK_LAST_LF,
        CHUNK_DONE,
};

#define CHUNK_EXT_MAX 4096U

HttpMessage *http_message_free(HttpMessage *m) {
        if (!m)
                return NULL;
        free(m->method);
        free(m->target);
        free(m->reason);
        for (size_t i = 0; i < m->n_headers; i++) {
                free(m->headers[i].name);
                free(m->headers[i].value);
        }
        free(m->headers);
        free(m);
        return NULL;
}

/* RFC 9110 §5.6.2: tchar. */
static bool is_tchar(unsigned char c) {
        if (isalnum(c))
                return true;
        return c && strchr("!#$%&'*+-.^_`|~", c);
}

/* field-vchar / SP / HTAB / obs-text: everything but CTLs (except HTAB) and DEL. */
static bool is_field_char(unsigned char c) {
        return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_hexdigit(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned hexval(char c) {
        if (c >= '0' && c <= '9')
                return (unsigned) (c - '0');
        if (c >= 'a' && c <= 'f')
                return (unsigned) (c - 'a' + 10);
        return (unsigned) (c - 'A' + 10);
}

/* Finds the end of the head ("\r\n\r\n"). Returns the head length, 0 when
 * incomplete, or a negative errno. Every LF must be preceded by a CR and every
 * CR followed by an LF: RFC 9112 §2.2 allows a recipient to accept bare LF,
 * but the engine and we must split lines identically, so we refuse it. */
static ssize_t find_head_end(const char *buf, size_t len) {
        size_t n = MIN(len, (size_t) HTTP_HEAD_MAX);

        for (size_t i = 0; i < n; i++) {
                if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
                        return -EBADMSG;
                if (buf[i] == '\r') {
                        if (i + 1 >= n)
                                break;
                        if (buf[i + 1] != '\n')
                                return -EBADMSG;
                }
                if (buf[i] == '\n' && i >= 3 && buf[i - 2] == '\n')
                        return (ssize_t) (i + 1);
        }
        if (len >= HTTP_HEAD_MAX)
                return -E2BIG;
        return 0;
}

static int add_header(HttpMessage *m, const char *name, size_t name_len, const char *value, size_t value_len) {
        HttpHeader *h;

        if (m->n_headers >= HTTP_HEADERS_MAX)
                return -E2BIG;
        h = realloc(m->headers, (m->n_headers + 1) * sizeof(HttpHeader));
        if (!h)
                return -ENOMEM;
        m->headers = h;
        h = &m->headers[m->n_headers];
        h->name = strndup(name, name_len);
        h->value = strndup(value, value_len);
        if (!h->name || !h->value) {
                free(h->name);
                free(h->value);
                return -ENOMEM;
        }
        m->n_headers++;
        return 0;
}

/* Parses the header lines between `p` and `end` (which points at the final
 * empty line's CRLF). */
static int parse_header_lines(HttpMessage *m, const char *p, const char *end) {
        while (p < end) {
                const char *eol = memchr(p, '\r', (size_t) (end - p));
                const char *colon, *v, *ve;
                int r;

                if (!eol)
                        return -EBADMSG;
                /* RFC 9112 §5.2: obs-fold is refused (400). */
                if (*p == ' ' || *p == '\t')
                        return -EBADMSG;
                colon = p;
                while (colon < eol && is_tchar((unsigned char) *colon))
                        colon++;
                /* RFC 9112 §5.1: no whitespace between field name and colon. */
                if (colon == p || colon >= eol || *colon != ':')
                        return -EBADMSG;
                v = colon + 1;
                for (const char *q = v; q < eol; q++)
                        if (!is_field_char((unsigned char) *q))
                                return -EBADMSG;
                while (v < eol && (*v == ' ' || *v == '\t'))
                        v++;
                ve = eol;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                        ve--;
                r = add_header(m, p, (size_t) (colon - p), v, (size_t) (ve - v));
                if (r < 0)
                        return r;
                p = eol + 2;
        }
        return 0;
}

static int parse_version(const char *s, size_t len, unsigned *ret) {
        if (len != 8 || memcmp(s, "HTTP/", 5) != 0 || !isdigit((unsigned char) s[5]) || s[6] != '.' ||
            !isdigit((unsigned char) s[7]))
                return -EBADMSG;
        if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
                return -EOPNOTSUPP;
        *ret = (unsigned) (s[7] - '0');
        return 0;
}

/* Does a comma-separated header list contain `token` (case-insensitive)? */
static bool list_has_token(const char *list, const char *token) {
        size_t tl = strlen(token);

        for (const char *p = list; p && *p;) {
                const char *e;
                size_t n;

                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                e = p;
                while (*e && *e != ',')
                        e++;
                n = (size_t) (e - p);
                while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
                        n--;
                if (n == tl && strncasecmp(p, token, n) == 0)
                        return true;
                p = e;
        }
        return false;
}

static int parse_content_length(const char *v, uint64_t *ret) {
        uint64_t n = 0;

        /* RFC 9110 §8.6: 1*DIGIT. Lists ("5, 5"), signs and spaces are refused. */
        if (!*v || strlen(v) > 19)
                return -EBADMSG;
        for (const char *p = v; *p; p++) {
                if (!isdigit((unsigned char) *p))
                        return -EBADMSG;
                n = n * 10 + (uint64_t) (*p - '0');
        }
        *ret = n;
        return 0;
}

/* Counts the headers named `name` and returns the first one's value. */
static size_t header_count(const HttpMessage *m, const char *name, const char **ret_first) {
        size_t n = 0;

        *ret_first = NULL;
        for (size_t i = 0; i < m->n_headers; i++)
                if (strcasecmp(m->headers[i].name, name) == 0) {
                        if (n++ == 0)
                                *ret_first = m->headers[i].value;
                }
        return n;
}

static void compute_keep_alive(HttpMessage *m) {
        const char *conn = NULL;

        m->keep_alive = m->version_minor >= 1;
        for (size_t i = 0; i < m->n_headers; i++) {
                if (strcasecmp(m->headers[i].name, "Connection") != 0)
                        continue;
                conn = m->headers[i].value;
                if (list_has_token(conn, "close"))
                        m->keep_alive = false;
                else if (list_has_token(conn, "keep-alive"))
                        m->keep_alive = m->keep_alive || m->version_minor == 0;
                if (list_has_token(conn, "upgrade"))
                        m->upgrade = true;
        }
}

int http_parse_request(const char *buf, size_t len, uint64_t max_body, HttpMessage **ret) {
        _cleanup_(http_message_freep) HttpMessage *m = NULL;
        const char *p, *eol, *sp1, *sp2, *te, *cl, *host, *upgrade;
        size_t n_te, n_cl, n_host;
        ssize_t head;
        int r;

        head = find_head_end(buf, len);
        if (head <= 0)
                return (int) head;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->is_request = true;
        m->head_len = (size_t) head;

        /* request-line = method SP request-target SP HTTP-version (RFC 9112 §3) */
        eol = memchr(buf, '\r', (size_t) head);
        sp1 = buf;
        while (sp1 < eol && is_tchar((unsigned char) *sp1))
                sp1++;
        if (sp1 == buf || sp1 >= eol || *sp1 != ' ')
                return -EBADMSG;
        sp2 = sp1 + 1;
        while (sp2 < eol && (unsigned char) *sp2 > 0x20 && (unsigned char) *sp2 < 0x7f)
                sp2++;
        if (sp2 == sp1 + 1 || sp2 >= eol || *sp2 != ' ' || sp1[1] != '/')
                return -EBADMSG;
        r = parse_version(sp2 + 1, (size_t) (eol - sp2 - 1), &m->version_minor);
        if (r < 0)
                return r;
        m->method = strndup(buf, (size_t) (sp1 - buf));
        m->target = strndup(sp1 + 1, (size_t) (sp2 - sp1 - 1));
        if (!m->method || !m->target)
                return -ENOMEM;

        p = eol + 2;
        r = parse_header_lines(m, p, buf + head - 2);
        if (r < 0)
                return r;

        n_te = header_count(m, "Transfer-Encoding", &te);
        n_cl = header_count(m, "Content-Length", &cl);
        n_host = header_count(m, "Host", &host);

        /* RFC 9112 §3.2: exactly one Host in HTTP/1.1; never more than one. */
        if (n_host > 1 || (m->version_minor == 1 && n_host == 0))
                return -EBADMSG;

        if (n_te > 0) {
                /* RFC 9112 §6.1: TE in HTTP/1.0 is a framing fault; §6.3: TE
                 * with CL is a smuggling vector, so both are refused outright
                 * rather than letting TE win. Only a single "chunked" is
                 * understood; other codings are 501. */
                if (m->version_minor == 0 || n_cl > 0 || n_te > 1)
                        return -EBADMSG;
                if (strcasecmp(te, "chunked") != 0)
                        return list_has_token(te, "chunked") ? -EBADMSG : -EOPNOTSUPP;
                m->body = HTTP_BODY_CHUNKED;
        } else if (n_cl > 0) {
                if (n_cl > 1)
                        return -EBADMSG;
                r = parse_content_length(cl, &m->content_length);
                if (r < 0)
                        return r;
                if (m->content_length > max_body)
                        return -EMSGSIZE;
                m->body = m->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
        } else
                m->body = HTTP_BODY_NONE;

        compute_keep_alive(m);
        header_count(m, "Upgrade", &upgrade);
        m->upgrade = m->upgrade && upgrade;

        *ret = TAKE_PTR(m);
        return 1;
}

int http_parse_response(const char *buf, size_t len, const char *request_method, HttpMessage **ret) {
        _cleanup_(http_message_freep) HttpMessage *m = NULL;
        const char *eol, *te, *cl;
        size_t n_te, n_cl;
        ssize_t head;
        int r;

        head = find_head_end(buf, len);
        if (head <= 0)
                return (int) head;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->head_len = (size_t) head;

        /* status-line = HTTP-version SP status-code SP [ reason-phrase ] */
        eol = memchr(buf, '\r', (size_t) head);
        if (eol - buf < 12 || buf[8] != ' ' || !isdigit((unsigned char) buf[9]) ||
            !isdigit((unsigned char) buf[10]) || !isdigit((unsigned char) buf[11]) ||
            (eol - buf > 12 && buf[12] != ' '))
                return -EBADMSG;
        r = parse_version(buf, 8, &m->version_minor);
        if (r < 0)
                return r;
        m->status = (unsigned) ((buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0'));
        if (m->status < 100)
                return -EBADMSG;
        m->reason = eol - buf > 13 ? strndup(buf + 13, (size_t) (eol - buf - 13)) : strdup("");
        if (!m->reason)
                return -ENOMEM;
        for (const char *q = m->reason; *q; q++)
                if (!is_field_char((unsigned char) *q))
                        return -EBADMSG;

        r = parse_header_lines(m, eol + 2, buf + head - 2);
        if (r < 0)
                return r;

        compute_keep_alive(m);
        n_te = header_count(m, "Transfer-Encoding", &te);
        n_cl = header_count(m, "Content-Length", &cl);

        /* RFC 9112 §6.3, in order. */
        if ((request_method && streq(request_method, "HEAD")) || m->status < 200 || m->status == 204 ||
            m->status == 304) {
                m->body = HTTP_BODY_NONE;
                if (m->status == 101)
                        m->upgrade = true;
        } else if (n_te > 0) {
                if (n_te == 1 && strcasecmp(te, "chunked") == 0)
                        m->body = HTTP_BODY_CHUNKED;
                else {
                        m->body = HTTP_BODY_UNTIL_CLOSE;
                        m->keep_alive = false;
                }
                if (n_cl > 0)
                        m->keep_alive = false;
        } else if (n_cl > 0) {
                if (n_cl > 1)
                        return -EBADMSG;
                r = parse_content_length(cl, &m->content_length);
                if (r < 0)
                        return r;
                m->body = m->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
        } else {
                m->body = HTTP_BODY_UNTIL_CLOSE;
                m->keep_alive = false;
        }

        *ret = TAKE_PTR(m);
        return 1;
}

const char *http_message_header(const HttpMessage *m, const char *name) {
        for (size_t i = 0; i < m->n_headers; i++)
                if (strcasecmp(m->headers[i].name, name) == 0)
                        return m->headers[i].value;
        return NULL;
}

int http_message_set_header(HttpMessage *m, const char *name, const char *value) {
        size_t j = 0;

        for (size_t i = 0; i < m->n_headers; i++) {
                if (strcasecmp(m->headers[i].name, name) == 0) {
                        free(m->headers[i].name);
                        free(m->headers[i].value);
                        continue;
                }
                m->headers[j++] = m->headers[i];
        }
        m->n_headers = j;
        if (!value)
                return 0;
        return add_header(m, name, strlen(name), value, strlen(value));
}

int http_message_format_head(const HttpMessage *m, char **ret, size_t *ret_len) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        if (m->is_request)
                fprintf(f, "%s %s HTTP/1.%u\r\n", m->method, m->target, m->version_minor);
        else
                fprintf(f, "HTTP/1.%u %03u %s\r\n", m->version_minor, m->status, m->reason ?: "");
        for (size_t i = 0; i < m->n_headers; i++)
                fprintf(f, "%s: %s\r\n", m->headers[i].name, m->headers[i].value);
        fputs("\r\n", f);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

int http_chunked_feed(HttpChunked *c, const char *buf, size_t len, size_t *ret_consumed,
                      HttpDataCallback cb, void *userdata) {
        size_t i = 0;
        int r;

        while (i < len && c->state != CHUNK_DONE) {
                char ch = buf[i];

                switch (c->state) {
                case CHUNK_SIZE:
                        /* RFC 9112 §7.1: chunk-size = 1*HEXDIG. At most 16
                         * digits (as the engine's Go reader allows). */
                        if (is_hexdigit(ch)) {
                                if (++c->size_digits > 16)
                                        return -EBADMSG;
                                c->remaining = (c->remaining << 4) | hexval(ch);
                        } else if (c->size_digits > 0 && (ch == ';' || ch == '\r')) {
                                c->line_len = 0;
                                c->state = ch == ';' ? CHUNK_EXT : CHUNK_SIZE_LF;
                        } else
                                return -EBADMSG;
                        i++;
                        break;
                case CHUNK_EXT:
                        if (ch == '\r')
                                c->state = CHUNK_SIZE_LF;
                        else if (!is_field_char((unsigned char) ch) || ++c->line_len > CHUNK_EXT_MAX)
                                return -EBADMSG;
                        i++;
                        break;
                case CHUNK_SIZE_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        i++;
                        c->size_digits = 0;
                        if (c->remaining == 0) {
                                c->trailer_len = 0;
                                c->state = CHUNK_TRAILER_START;
                        } else
                                c->state = CHUNK_DATA;
                        break;
                case CHUNK_DATA: {
                        size_t n = (size_t) MIN((uint64_t) (len - i), c->remaining);

                        if (cb) {
                                r = cb(buf + i, n, userdata);
                                if (r < 0)
                                        return r;
                        }
                        i += n;
                        c->remaining -= n;
                        if (c->remaining == 0)
                                c->state = CHUNK_DATA_CR;
                        break;
                }
                case CHUNK_DATA_CR:
                        if (ch != '\r')
                                return -EBADMSG;
                        c->state = CHUNK_DATA_LF;
                        i++;
                        break;
                case CHUNK_DATA_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        c->state = CHUNK_SIZE;
                        i++;
                        break;
                case CHUNK_TRAILER_START:
                        if (ch == '\r')
                                c->state = CHUNK_LAST_LF;
                        else if (ch == ' ' || ch == '\t' || !is_tchar((unsigned char) ch))
                                return -EBADMSG; /* obs-fold or junk */
                        else
                                c->state = CHUNK_TRAILER_LINE;
                        if (++c->trailer_len > HTTP_TRAILER_MAX)
                                return -EBADMSG;
                        i++;
                        break;
                case CHUNK_TRAILER_LINE:
                        if (ch == '\r')
                                c->state = CHUNK_TRAILER_LF;
                        else if (!is_field_char((unsigned char) ch))
                                return -EBADMSG;
                        if (++c->trailer_len > HTTP_TRAILER_MAX)
                                return -EBADMSG;
                        i++;
                        break;
                case CHUNK_TRAILER_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        c->state = CHUNK_TRAILER_START;
                        i++;
                        break;
                case CHUNK_LAST_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        c->state = CHUNK_DONE;
                        i++;
                        break;
                default:
                        return -EBADMSG;
                }
        }
        *ret_consumed = i;
        return c->state == CHUNK_DONE;
}

int http_unescape(const char *s, size_t len, char **ret) {
        char *out, *o;

        out = o = malloc(len + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '%') {
                        if (i + 2 >= len) {
                                free(out);
                                return -EBADMSG;
                        }
                        if (!is_hexdigit(s[i + 1]) || !is_hexdigit(s[i + 2])) {
                                free(out);
                                return -EBADMSG;
                        }
                        *o = (char) (hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
                        if (*o == '\0') {
                                free(out);
                                return -EBADMSG;
                        }
                        o++;
                        i += 2;
                } else if (s[i] == '+')
                        *o++ = ' ';
                else
                        *o++ = s[i];
        }
        *o = '\0';
        *ret = out;
        return 0;
}

int http_split_target(const char *target, char **ret_path, char **ret_version, char **ret_query) {
        _cleanup_free_ char *path = NULL, *version = NULL, *query = NULL, *raw = NULL;
        const char *q, *p;
        size_t plen;
        int r;

        if (!target || target[0] != '/')
                return -EBADMSG;
        q = strchr(target, '?');
        plen = q ? (size_t) (q - target) : strlen(target);
        /* The engine's Go query parser drops pairs with ';' (Go ≥ 1.17) or
         * splits on it (older); either way we cannot agree with it, refuse. */
        if (q && strchr(q, ';'))
                return -EBADMSG;
        query = strdup(q ? q + 1 : "");
        if (!query)
                return -ENOMEM;

        /* The engine routes on the decoded path, so do we. '+' is literal in
         * paths, so decode by hand instead of http_unescape(). */
        raw = malloc(plen + 1);
        if (!raw)
                return -ENOMEM;
        {
                char *o = raw;
                for (size_t i = 0; i < plen; i++) {
                        if (target[i] == '%') {
                                if (i + 2 >= plen || !is_hexdigit(target[i + 1]) || !is_hexdigit(target[i + 2]))
                                        return -EBADMSG;
                                *o = (char) (hexval(target[i + 1]) << 4 | hexval(target[i + 2]));
                                if (*o == '\0')
                                        return -EBADMSG;
                                o++;
                                i += 2;
                        } else
                                *o++ = target[i];
                }
                *o = '\0';
        }

        /* Refuse "//", "/./" and "/../": the engine's router would clean and
         * redirect them, and an ownership check must see the same path. */
        for (p = raw; *p;) {
                const char *e = strchrnul(p + 1, '/');
                size_t n = (size_t) (e - p - 1);

                if ((n == 0 && *e) || (n == 1 && p[1] == '.') || (n == 2 && p[1] == '.' && p[2] == '.'))
                        return -EBADMSG;
                p = e;
        }

        /* /v{version:[0-9.]+}/... as in the engine's router. */
        p = raw;
        if (raw[0] == '/' && raw[1] == 'v' && isdigit((unsigned char) raw[2])) {
                const char *e = raw + 2;
                while (isdigit((unsigned char) *e) || *e == '.')
                        e++;
                if (*e == '/' || *e == '\0') {
                        version = strndup(raw + 2, (size_t) (e - raw - 2));
                        if (!version)
                                return -ENOMEM;
                        p = *e ? e : "/";
                }
        }
        if (!version) {
                version = strdup("");
                if (!version)
                        return -ENOMEM;
        }
        path = strdup(p);
        if (!path)
                return -ENOMEM;
        r = 0;

        *ret_path = TAKE_PTR(path);
        *ret_version = TAKE_PTR(version);
        *ret_query = TAKE_PTR(query);
        return r;
}

int http_query_get(const char *query, const char *key, char **ret) {
        for (const char *p = query; p && *p;) {
                const char *e = strchrnul(p, '&');
                const char *eq = memchr(p, '=', (size_t) (e - p));
                _cleanup_free_ char *k = NULL;
                int r;

                r = http_unescape(p, (size_t) ((eq ?: e) - p), &k);
                if (r < 0)
                        return r;
                if (streq(k, key)) {
                        if (eq)
                                return http_unescape(eq + 1, (size_t) (e - eq - 1), ret) ?: 1;
                        *ret = strdup("");
                        return *ret ? 1 : -ENOMEM;
                }
                p = *e ? e + 1 : e;
        }
        return 0;
}
