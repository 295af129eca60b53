/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "proto-json.h"

#define DEPTH_MAX 32
/* RFC 3339 range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31. */
#define TIMESTAMP_SECONDS_MIN INT64_C(-62135596800)
#define TIMESTAMP_SECONDS_MAX INT64_C(253402300799)
#define DURATION_SECONDS_MAX INT64_C(315576000000)

typedef struct Ctx {
        char *error;
        int depth;
} Ctx;

_printf_(2, 3) static int fail(Ctx *c, const char *fmt, ...) {
        va_list ap;
        if (!c->error) {
                va_start(ap, fmt);
                if (vasprintf(&c->error, fmt, ap) < 0)
                        c->error = NULL;
                va_end(ap);
        }
        return -EINVAL;
}

/* protobuf-c names nested types "pkg.Outer.Inner"; its short name is the last part. */
static bool is_type(const ProtobufCMessageDescriptor *d, const char *full) {
        return streq(d->name, full);
}

static bool is_map_entry(const ProtobufCFieldDescriptor *f) {
        const ProtobufCMessageDescriptor *d = f->descriptor;
        size_t n;
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
                return false;
        n = strlen(d->short_name);
        return n > 5 && streq(d->short_name + n - 5, "Entry") && d->n_fields == 2 && d->fields[0].id == 1 &&
               d->fields[1].id == 2 && streq(d->fields[0].name, "key") && streq(d->fields[1].name, "value");
}

/* lowerCamelCase json_name as protoc derives it: drop '_', upper-case the next letter. */
static void json_name(const char *name, char *buf, size_t size) {
        size_t o = 0;
        bool up = false;
        for (const char *p = name; *p && o + 1 < size; p++) {
                if (*p == '_') {
                        up = true;
                        continue;
                }
                buf[o++] = up ? (char) toupper((unsigned char) *p) : *p;
                up = false;
        }
        buf[o] = 0;
}

/* ---- base64 (RFC 4648 §4 on output; §4 and §5, padded or not, on input) ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const uint8_t *data, size_t len) {
        char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t) data[i] << 16 | (i + 1 < len ? (uint32_t) data[i + 1] << 8 : 0) |
                             (i + 2 < len ? data[i + 2] : 0);
                *o++ = b64[v >> 18 & 63];
                *o++ = b64[v >> 12 & 63];
                *o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
                *o++ = i + 2 < len ? b64[v & 63] : '=';
        }
        *o = 0;
        return out;
}

static int b64_value(char ch) {
        if (ch >= 'A' && ch <= 'Z')
                return ch - 'A';
        if (ch >= 'a' && ch <= 'z')
                return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9')
                return ch - '0' + 52;
        if (ch == '+' || ch == '-')
                return 62;
        if (ch == '/' || ch == '_')
                return 63;
        return -1;
}

int proto_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len) {
        uint8_t *out;
        size_t o = 0;
        uint32_t acc = 0;
        unsigned bits = 0;

        while (len > 0 && s[len - 1] == '=')
                len--;
        if (len % 4 == 1)
                return -EINVAL;
        out = malloc(len * 3 / 4 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                int v = b64_value(s[i]);
                if (v < 0) {
                        free(out);
                        return -EINVAL;
                }
                acc = acc << 6 | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (uint8_t) (acc >> bits);
                }
        }
        *ret = out;
        *ret_len = o;
        return 0;
}

/* ---- Timestamp and Duration ------------------------------------------------ */

static int parse_digits(const char **p, int n, int *ret) {
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (!isdigit((unsigned char) (*p)[i]))
                        return -EINVAL;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return 0;
}

/* Up to 9 fraction digits after '.', as nanoseconds. */
static int parse_nanos(const char **p, int32_t *ret) {
        int32_t n = 0;
        int digits = 0;
        if (**p != '.') {
                *ret = 0;
                return 0;
        }
        (*p)++;
        while (isdigit((unsigned char) **p)) {
                if (++digits > 9)
                        return -EINVAL;
                n = n * 10 + (**p - '0');
                (*p)++;
        }
        if (digits == 0)
                return -EINVAL;
        for (; digits < 9; digits++)
                n *= 10;
        *ret = n;
        return 0;
}

/* RFC 3339: "2026-12-05T20:00:00.5Z" or with an offset "+01:00". */
static int timestamp_parse(const char *s, int64_t *ret_seconds, int32_t *ret_nanos) {
        int y, mo, d, h, mi, sec;
        const char *p = s;
        struct tm tm = {};
        int64_t t;
        int32_t nanos;

        if (parse_digits(&p, 4, &y) < 0 || *p++ != '-' || parse_digits(&p, 2, &mo) < 0 || *p++ != '-' ||
            parse_digits(&p, 2, &d) < 0 || (*p != 'T' && *p != 't') || !*p++ || parse_digits(&p, 2, &h) < 0 ||
            *p++ != ':' || parse_digits(&p, 2, &mi) < 0 || *p++ != ':' || parse_digits(&p, 2, &sec) < 0 ||
            parse_nanos(&p, &nanos) < 0)
                return -EINVAL;
        if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59)
                return -EINVAL;
        tm = (struct tm){ .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi,
                          .tm_sec = sec };
        t = (int64_t) timegm(&tm);
        if (tm.tm_mday != d || tm.tm_mon != mo - 1)
                return -EINVAL;  /* 31 February */
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                int sign = *p++ == '+' ? 1 : -1, oh, om;
                if (parse_digits(&p, 2, &oh) < 0 || *p++ != ':' || parse_digits(&p, 2, &om) < 0 || oh > 23 || om > 59)
                        return -EINVAL;
                t -= sign * (oh * 3600 + om * 60);
        } else
                return -EINVAL;
        if (*p || t < TIMESTAMP_SECONDS_MIN || t > TIMESTAMP_SECONDS_MAX)
                return -EINVAL;
        *ret_seconds = t;
        *ret_nanos = nanos;
        return 0;
}

/* 0, 3, 6 or 9 fraction digits, as the mapping asks. */
static void format_nanos(int32_t nanos, char *buf, size_t size) {
        if (nanos == 0)
                buf[0] = 0;
        else if (nanos % 1000000 == 0)
                snprintf(buf, size, ".%03d", nanos / 1000000);
        else if (nanos % 1000 == 0)
                snprintf(buf, size, ".%06d", nanos / 1000);
        else
                snprintf(buf, size, ".%09d", nanos);
}

static int timestamp_format(int64_t seconds, int32_t nanos, char *buf, size_t size) {
        struct tm tm;
        time_t t = (time_t) seconds;
        char frac[16];

        if (seconds < TIMESTAMP_SECONDS_MIN || seconds > TIMESTAMP_SECONDS_MAX || nanos < 0 || nanos > 999999999 ||
            !gmtime_r(&t, &tm))
                return -ERANGE;
        format_nanos(nanos, frac, sizeof(frac));
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        return 0;
}

static int duration_parse(const char *s, int64_t *ret_seconds, int32_t *ret_nanos) {
        const char *p = s;
        bool neg = false;
        int64_t secs = 0;
        int32_t nanos;

        if (*p == '-') {
                neg = true;
                p++;
        }
        if (!isdigit((unsigned char) *p))
                return -EINVAL;
        while (isdigit((unsigned char) *p)) {
                secs = secs * 10 + (*p++ - '0');
                if (secs > DURATION_SECONDS_MAX)
                        return -EINVAL;
        }
        if (parse_nanos(&p, &nanos) < 0 || *p++ != 's' || *p)
                return -EINVAL;
        *ret_seconds = neg ? -secs : secs;
        *ret_nanos = neg ? -nanos : nanos;
        return 0;
}

static int duration_format(int64_t seconds, int32_t nanos, char *buf, size_t size) {
        char frac[16];
        if (seconds > DURATION_SECONDS_MAX || seconds < -DURATION_SECONDS_MAX || nanos > 999999999 ||
            nanos < -999999999 || (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0))
                return -ERANGE;
        format_nanos(nanos < 0 ? -nanos : nanos, frac, sizeof(frac));
        snprintf(buf, size, "%s%" PRId64 "%ss", (seconds < 0 || nanos < 0) ? "-" : "",
                 seconds < 0 ? -seconds : seconds, frac);
        return 0;
}

/* Both well-known types are { int64 seconds = 1; int32 nanos = 2; }. */
static void *wkt_field(ProtobufCMessage *m, unsigned id) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, id);
        return f ? (char *) m + f->offset : NULL;
}

/* ---- JSON → message ------------------------------------------------------------ */

static int message_from_json(Ctx *c, const ProtobufCMessageDescriptor *d, json_t *j, const char *path,
                             ProtobufCMessage **ret);

static int int_from_json(Ctx *c, json_t *v, const char *path, int64_t min, uint64_t max, bool is_unsigned,
                         uint64_t *ret) {
        /* Numbers or strings holding an integer (the mapping accepts both). */
        if (json_is_integer(v)) {
                json_int_t n = json_integer_value(v);
                if (n < 0 && (is_unsigned || n < min))
                        return fail(c, "%s: %lld is out of range", path, (long long) n);
                if (n >= 0 && (uint64_t) n > max)
                        return fail(c, "%s: %lld is out of range", path, (long long) n);
                *ret = (uint64_t) n;
                return 0;
        }
        if (json_is_real(v)) {
                double x = json_real_value(v);
                if (x != floor(x) || x < (double) min || x > (double) max)
                        return fail(c, "%s: %g is not an integer in range", path, x);
                *ret = x < 0 ? (uint64_t) (int64_t) x : (uint64_t) x;
                return 0;
        }
        if (json_is_string(v)) {
                const char *s = json_string_value(v);
                char *end;
                errno = 0;
                if (!*s || isspace((unsigned char) *s))
                        return fail(c, "%s: \"%s\" is not an integer", path, s);
                if (is_unsigned) {
                        if (*s == '-')
                                return fail(c, "%s: \"%s\" is out of range", path, s);
                        unsigned long long n = strtoull(s, &end, 10);
                        if (*end || errno)
                                return fail(c, "%s: \"%s\" is not an integer in range", path, s);
                        if (n > max)
                                return fail(c, "%s: \"%s\" is out of range", path, s);
                        *ret = n;
                } else {
                        long long n = strtoll(s, &end, 10);
                        if (*end || errno)
                                return fail(c, "%s: \"%s\" is not an integer in range", path, s);
                        if (n < min || (n > 0 && (uint64_t) n > max))
                                return fail(c, "%s: \"%s\" is out of range", path, s);
                        *ret = (uint64_t) n;
                }
                return 0;
        }
        return fail(c, "%s: expected an integer", path);
}

static int scalar_from_json(Ctx *c, const ProtobufCFieldDescriptor *f, json_t *v, const char *path, void *out) {
        uint64_t u;
        int r;

        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
                r = int_from_json(c, v, path, INT32_MIN, INT32_MAX, false, &u);
                if (r >= 0)
                        *(int32_t *) out = (int32_t) (int64_t) u;
                return r;
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                r = int_from_json(c, v, path, 0, UINT32_MAX, true, &u);
                if (r >= 0)
                        *(uint32_t *) out = (uint32_t) u;
                return r;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
                r = int_from_json(c, v, path, INT64_MIN, INT64_MAX, false, &u);
                if (r >= 0)
                        *(int64_t *) out = (int64_t) u;
                return r;
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
                r = int_from_json(c, v, path, 0, UINT64_MAX, true, &u);
                if (r >= 0)
                        *(uint64_t *) out = u;
                return r;
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_DOUBLE: {
                double x;
                if (json_is_number(v))
                        x = json_number_value(v);
                else if (json_is_string(v) && streq(json_string_value(v), "NaN"))
                        x = NAN;
                else if (json_is_string(v) && streq(json_string_value(v), "Infinity"))
                        x = INFINITY;
                else if (json_is_string(v) && streq(json_string_value(v), "-Infinity"))
                        x = -INFINITY;
                else
                        return fail(c, "%s: expected a number", path);
                if (f->type == PROTOBUF_C_TYPE_FLOAT) {
                        if (isfinite(x) && fabs(x) > 3.4028234663852886e38)
                                return fail(c, "%s: %g is out of range for a float", path, x);
                        *(float *) out = (float) x;
                } else
                        *(double *) out = x;
                return 0;
        }
        case PROTOBUF_C_TYPE_BOOL:
                if (!json_is_boolean(v))
                        return fail(c, "%s: expected true or false", path);
                *(protobuf_c_boolean *) out = json_is_true(v);
                return 0;
        case PROTOBUF_C_TYPE_ENUM: {
                const ProtobufCEnumDescriptor *e = f->descriptor;
                if (json_is_string(v)) {
                        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(e, json_string_value(v));
                        if (!ev)
                                return fail(c, "%s: \"%s\" is not a value of enum %s", path, json_string_value(v),
                                            e->name);
                        *(int *) out = ev->value;
                        return 0;
                }
                r = int_from_json(c, v, path, INT32_MIN, INT32_MAX, false, &u);
                if (r >= 0)
                        *(int *) out = (int) (int64_t) u;
                return r;
        }
        case PROTOBUF_C_TYPE_STRING: {
                char *s;
                if (!json_is_string(v))
                        return fail(c, "%s: expected a string", path);
                if (strlen(json_string_value(v)) != json_string_length(v))
                        return fail(c, "%s: the string holds a NUL character", path);
                s = strdup(json_string_value(v));
                if (!s)
                        return -ENOMEM;
                *(char **) out = s;
                return 0;
        }
        case PROTOBUF_C_TYPE_BYTES: {
                ProtobufCBinaryData *b = out;
                if (!json_is_string(v))
                        return fail(c, "%s: expected a base64 string", path);
                r = proto_base64_decode(json_string_value(v), json_string_length(v), &b->data, &b->len);
                if (r == -EINVAL)
                        return fail(c, "%s: not valid base64", path);
                return r;
        }
        case PROTOBUF_C_TYPE_MESSAGE:
                return message_from_json(c, f->descriptor, v, path, (ProtobufCMessage **) out);
        }
        return fail(c, "%s: unsupported field type", path);
}

static size_t scalar_size(ProtobufCType t) {
        switch (t) {
        case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_FLOAT:
                return 4;
        case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
                return 8;
        case PROTOBUF_C_TYPE_BOOL:
                return sizeof(protobuf_c_boolean);
        case PROTOBUF_C_TYPE_ENUM:
                return sizeof(int);
        case PROTOBUF_C_TYPE_STRING:
                return sizeof(char *);
        case PROTOBUF_C_TYPE_BYTES:
                return sizeof(ProtobufCBinaryData);
        case PROTOBUF_C_TYPE_MESSAGE:
                return sizeof(ProtobufCMessage *);
        }
        return 0;
}

static int wkt_from_json(Ctx *c, const ProtobufCMessageDescriptor *d, json_t *j, const char *path,
                         ProtobufCMessage *m, bool *handled) {
        int64_t secs;
        int32_t nanos;

        *handled = true;
        if (is_type(d, "google.protobuf.Timestamp") || is_type(d, "google.protobuf.Duration")) {
                bool ts = is_type(d, "google.protobuf.Timestamp");
                if (!json_is_string(j) ||
                    (ts ? timestamp_parse(json_string_value(j), &secs, &nanos)
                        : duration_parse(json_string_value(j), &secs, &nanos)) < 0)
                        return fail(c, "%s: expected %s", path,
                                    ts ? "an RFC 3339 timestamp (\"2026-01-02T03:04:05Z\")" : "a duration (\"1.5s\")");
                *(int64_t *) wkt_field(m, 1) = secs;
                *(int32_t *) wkt_field(m, 2) = nanos;
                return 0;
        }
        *handled = false;
        return 0;
}

static int message_from_json(Ctx *c, const ProtobufCMessageDescriptor *d, json_t *j, const char *path,
                             ProtobufCMessage **ret) {
        ProtobufCMessage *m;
        const char *key;
        json_t *v;
        bool handled;
        int r;

        if (c->depth >= DEPTH_MAX)
                return fail(c, "%s: nested too deeply", path);
        m = malloc(d->sizeof_message);
        if (!m)
                return -ENOMEM;
        d->message_init(m);
        *ret = m;  /* freed by the caller on error, with what was filled in */

        c->depth++;
        r = wkt_from_json(c, d, j, path, m, &handled);
        if (handled) {
                c->depth--;
                return r;
        }
        if (!json_is_object(j)) {
                c->depth--;
                return fail(c, "%s: expected an object for %s", path, d->name);
        }
        json_object_foreach(j, key, v) {
                const ProtobufCFieldDescriptor *f = NULL;
                _cleanup_free_ char *fpath = NULL;
                char jname[128];
                void *field;

                for (unsigned i = 0; i < d->n_fields && !f; i++) {
                        json_name(d->fields[i].name, jname, sizeof(jname));
                        if (streq(key, jname) || streq(key, d->fields[i].name))
                                f = &d->fields[i];
                }
                if (!f) {
                        c->depth--;
                        return fail(c, "%s: unknown field \"%s\" in %s", path, key, d->name);
                }
                if (asprintf(&fpath, "%s.%s", path, key) < 0) {
                        fpath = NULL;
                        c->depth--;
                        return -ENOMEM;
                }
                if (json_is_null(v))
                        continue;  /* null is the default value */
                field = (char *) m + f->offset;

                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        size_t *n = (size_t *) ((char *) m + f->quantifier_offset);
                        size_t es = scalar_size(f->type), count;
                        void **arr = field;

                        if (is_map_entry(f)) {
                                /* map<K, V>: a JSON object; keys are strings in JSON. */
                                const ProtobufCMessageDescriptor *ed = f->descriptor;
                                const char *mk;
                                json_t *mv;
                                if (!json_is_object(v)) {
                                        c->depth--;
                                        return fail(c, "%s: expected an object (a map)", fpath);
                                }
                                count = json_object_size(v);
                                *arr = calloc(count ?: 1, sizeof(void *));
                                if (!*arr) {
                                        c->depth--;
                                        return -ENOMEM;
                                }
                                json_object_foreach(v, mk, mv) {
                                        ProtobufCMessage *e = malloc(ed->sizeof_message);
                                        json_t *kj;
                                        if (!e) {
                                                c->depth--;
                                                return -ENOMEM;
                                        }
                                        ed->message_init(e);
                                        ((ProtobufCMessage **) *arr)[(*n)++] = e;
                                        /* Integer and bool keys arrive as strings. */
                                        kj = ed->fields[0].type == PROTOBUF_C_TYPE_STRING ? json_string(mk)
                                             : ed->fields[0].type == PROTOBUF_C_TYPE_BOOL
                                                     ? (streq(mk, "true") ? json_true()
                                                        : streq(mk, "false") ? json_false() : json_null())
                                                     : json_string(mk);
                                        r = kj ? scalar_from_json(c, &ed->fields[0], kj, fpath,
                                                                  (char *) e + ed->fields[0].offset) : -ENOMEM;
                                        json_decref(kj);
                                        if (r >= 0)
                                                r = scalar_from_json(c, &ed->fields[1], mv, fpath,
                                                                     (char *) e + ed->fields[1].offset);
                                        if (r < 0) {
                                                c->depth--;
                                                return r;
                                        }
                                }
                                continue;
                        }
                        if (!json_is_array(v)) {
                                c->depth--;
                                return fail(c, "%s: expected an array", fpath);
                        }
                        count = json_array_size(v);
                        *arr = calloc(count ?: 1, es);
                        if (!*arr) {
                                c->depth--;
                                return -ENOMEM;
                        }
                        for (size_t i = 0; i < count; i++) {
                                json_t *item = json_array_get(v, i);
                                if (json_is_null(item)) {
                                        c->depth--;
                                        return fail(c, "%s[%zu]: null is not allowed in a list", fpath, i);
                                }
                                _cleanup_free_ char *ipath = NULL;
                                if (asprintf(&ipath, "%s[%zu]", fpath, i) < 0) {
                                        ipath = NULL;
                                        c->depth--;
                                        return -ENOMEM;
                                }
                                /* Counted before it is filled: what a failure leaves
                                 * half-built is freed with the message. */
                                (*n)++;
                                r = scalar_from_json(c, f, item, ipath, (char *) *arr + i * es);
                                if (r < 0) {
                                        c->depth--;
                                        return r;
                                }
                        }
                        continue;
                }
                if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                        uint32_t *which = (uint32_t *) ((char *) m + f->quantifier_offset);
                        if (*which != 0 && *which != f->id) {
                                c->depth--;
                                return fail(c, "%s: another field of the same oneof is set", fpath);
                        }
                        *which = f->id;
                } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                           f->type != PROTOBUF_C_TYPE_STRING)
                        *(protobuf_c_boolean *) ((char *) m + f->quantifier_offset) = true;
                /* A repeated key: jansson refused duplicates at load; replacing is safe anyway. */
                if (f->type == PROTOBUF_C_TYPE_STRING && *(char **) field &&
                    *(char **) field != (char *) f->default_value && *(char **) field != protobuf_c_empty_string)
                        free(*(char **) field);
                r = scalar_from_json(c, f, v, fpath, field);
                if (r < 0) {
                        c->depth--;
                        return r;
                }
        }
        c->depth--;
        return 0;
}

int proto_json_to_message(const ProtobufCMessageDescriptor *d, json_t *j, ProtobufCMessage **ret, char **ret_error) {
        Ctx c = {};
        ProtobufCMessage *m = NULL;
        int r;

        if (!json_is_object(j)) {
                if (ret_error)
                        *ret_error = strdup("the request body must be a JSON object");
                return -EINVAL;
        }
        r = message_from_json(&c, d, j, "", &m);
        if (r < 0) {
                if (m)
                        protobuf_c_message_free_unpacked(m, NULL);
                /* Paths are built as ".a.b"; the top level has none. */
                if (ret_error)
                        *ret_error = !c.error ? NULL
                                     : c.error[0] == '.' ? strdup(c.error + 1)
                                     : c.error[0] == ':' ? strdup(c.error + 2)
                                     : TAKE_PTR(c.error);
                free(c.error);
                return r;
        }
        *ret = m;
        return 0;
}

int proto_json_to_binary(const ProtobufCMessageDescriptor *d, const char *json, size_t len, uint8_t **ret,
                         size_t *ret_len, char **ret_error) {
        json_error_t err;
        json_t *j;
        ProtobufCMessage *m;
        uint8_t *out;
        size_t n;
        int r;

        /* Duplicate names are refused rather than resolved (last one wins or first?). */
        j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
        if (!j) {
                if (ret_error && asprintf(ret_error, "invalid JSON at line %d column %d: %s", err.line, err.column,
                                          err.text) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        r = proto_json_to_message(d, j, &m, ret_error);
        json_decref(j);
        if (r < 0)
                return r;
        n = protobuf_c_message_get_packed_size(m);
        out = malloc(n ?: 1);
        if (!out) {
                protobuf_c_message_free_unpacked(m, NULL);
                return -ENOMEM;
        }
        protobuf_c_message_pack(m, out);
        protobuf_c_message_free_unpacked(m, NULL);
        *ret = out;
        *ret_len = n;
        return 0;
}

/* ---- message → JSON ------------------------------------------------------------ */

static json_t *int64_json(int64_t v) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%" PRId64, v);
        return json_string(buf);
}

static json_t *uint64_json(uint64_t v) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%" PRIu64, v);
        return json_string(buf);
}

static json_t *double_json(double x) {
        if (isnan(x))
                return json_string("NaN");
        if (isinf(x))
                return json_string(x > 0 ? "Infinity" : "-Infinity");
        return json_real(x);
}

static int message_to_json(const ProtobufCMessage *m, int depth, json_t **ret);

static int scalar_to_json(const ProtobufCFieldDescriptor *f, const void *v, int depth, json_t **ret) {
        json_t *j = NULL;
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
                j = json_integer(*(const int32_t *) v);
                break;
        case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
                j = json_integer(*(const uint32_t *) v);
                break;
        case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
                j = int64_json(*(const int64_t *) v);
                break;
        case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
                j = uint64_json(*(const uint64_t *) v);
                break;
        case PROTOBUF_C_TYPE_FLOAT:
                j = double_json(*(const float *) v);
                break;
        case PROTOBUF_C_TYPE_DOUBLE:
                j = double_json(*(const double *) v);
                break;
        case PROTOBUF_C_TYPE_BOOL:
                j = json_boolean(*(const protobuf_c_boolean *) v);
                break;
        case PROTOBUF_C_TYPE_ENUM: {
                const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *) v);
                /* Values this build does not know go out as numbers. */
                j = ev ? json_string(ev->name) : json_integer(*(const int *) v);
                break;
        }
        case PROTOBUF_C_TYPE_STRING:
                j = json_string(*(char *const *) v ?: "");
                if (!j && *(char *const *) v)
                        return -EBADMSG;  /* not UTF-8 */
                break;
        case PROTOBUF_C_TYPE_BYTES: {
                const ProtobufCBinaryData *b = v;
                _cleanup_free_ char *s = base64_encode(b->data, b->len);
                if (!s)
                        return -ENOMEM;
                j = json_string(s);
                break;
        }
        case PROTOBUF_C_TYPE_MESSAGE:
                return message_to_json(*(ProtobufCMessage *const *) v, depth + 1, ret);
        }
        if (!j)
                return -ENOMEM;
        *ret = j;
        return 0;
}

static bool scalar_is_default(const ProtobufCFieldDescriptor *f, const void *v) {
        switch (scalar_size(f->type)) {
        case 0:
                return true;
        default:
                break;
        }
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING:
                return !*(char *const *) v || !**(char *const *) v;
        case PROTOBUF_C_TYPE_BYTES:
                return ((const ProtobufCBinaryData *) v)->len == 0;
        case PROTOBUF_C_TYPE_MESSAGE:
                return !*(ProtobufCMessage *const *) v;
        case PROTOBUF_C_TYPE_FLOAT:
                return *(const float *) v == 0 && !signbit(*(const float *) v);
        case PROTOBUF_C_TYPE_DOUBLE:
                return *(const double *) v == 0 && !signbit(*(const double *) v);
        case PROTOBUF_C_TYPE_BOOL:
                return !*(const protobuf_c_boolean *) v;
        case PROTOBUF_C_TYPE_ENUM:
                return *(const int *) v == 0;
        default: {
                const uint8_t *p = v;
                for (size_t i = 0; i < scalar_size(f->type); i++)
                        if (p[i])
                                return false;
                return true;
        }
        }
}

static int message_to_json(const ProtobufCMessage *m, int depth, json_t **ret) {
        const ProtobufCMessageDescriptor *d = m->descriptor;
        json_t *o;
        int r;

        if (depth > DEPTH_MAX)
                return -ELOOP;
        if (is_type(d, "google.protobuf.Timestamp") || is_type(d, "google.protobuf.Duration")) {
                char buf[64];
                int64_t s = *(int64_t *) wkt_field((ProtobufCMessage *) m, 1);
                int32_t n = *(int32_t *) wkt_field((ProtobufCMessage *) m, 2);
                r = is_type(d, "google.protobuf.Timestamp") ? timestamp_format(s, n, buf, sizeof(buf))
                                                            : duration_format(s, n, buf, sizeof(buf));
                if (r < 0)
                        return r;
                *ret = json_string(buf);
                return *ret ? 0 : -ENOMEM;
        }
        o = json_object();
        if (!o)
                return -ENOMEM;
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                const void *field = (const char *) m + f->offset;
                char jname[128];
                json_t *v = NULL;

                json_name(f->name, jname, sizeof(jname));
                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        size_t n = *(const size_t *) ((const char *) m + f->quantifier_offset);
                        const char *arr = *(char *const *) field;
                        size_t es = scalar_size(f->type);
                        if (n == 0)
                                continue;
                        if (is_map_entry(f)) {
                                const ProtobufCMessageDescriptor *ed = f->descriptor;
                                v = json_object();
                                for (size_t k = 0; v && k < n; k++) {
                                        const ProtobufCMessage *e = ((ProtobufCMessage *const *) arr)[k];
                                        json_t *kj = NULL, *vj = NULL;
                                        _cleanup_free_ char *key = NULL;
                                        r = scalar_to_json(&ed->fields[0], (const char *) e + ed->fields[0].offset,
                                                           depth, &kj);
                                        if (r >= 0)
                                                r = scalar_to_json(&ed->fields[1], (const char *) e + ed->fields[1].offset,
                                                                   depth, &vj);
                                        if (r >= 0) {
                                                key = json_is_string(kj) ? strdup(json_string_value(kj))
                                                                         : json_dumps(kj, JSON_ENCODE_ANY);
                                                r = key ? json_object_set_new(v, key, vj) : -ENOMEM;
                                                vj = NULL;
                                        }
                                        json_decref(kj);
                                        json_decref(vj);
                                        if (r < 0) {
                                                json_decref(v);
                                                json_decref(o);
                                                return r < -1 ? r : -ENOMEM;
                                        }
                                }
                        } else {
                                v = json_array();
                                for (size_t k = 0; v && k < n; k++) {
                                        json_t *item;
                                        r = scalar_to_json(f, arr + k * es, depth, &item);
                                        if (r < 0 || json_array_append_new(v, item) < 0) {
                                                json_decref(v);
                                                json_decref(o);
                                                return r < 0 ? r : -ENOMEM;
                                        }
                                }
                        }
                } else {
                        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                                if (*(const uint32_t *) ((const char *) m + f->quantifier_offset) != f->id)
                                        continue;
                        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                                   f->type != PROTOBUF_C_TYPE_STRING) {
                                if (!*(const protobuf_c_boolean *) ((const char *) m + f->quantifier_offset))
                                        continue;
                        } else if (scalar_is_default(f, field))
                                continue;
                        if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(ProtobufCMessage *const *) field)
                                continue;
                        r = scalar_to_json(f, field, depth, &v);
                        if (r < 0) {
                                json_decref(o);
                                return r;
                        }
                }
                if (!v || json_object_set_new(o, jname, v) < 0) {
                        json_decref(o);
                        return -ENOMEM;
                }
        }
        *ret = o;
        return 0;
}

int proto_message_to_json(const ProtobufCMessage *m, json_t **ret) {
        return message_to_json(m, 0, ret);
}

int proto_binary_to_json(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char **ret,
                         size_t *ret_len) {
        ProtobufCMessage *m;
        json_t *j;
        char *s;
        int r;

        m = protobuf_c_message_unpack(d, NULL, len, data);
        if (!m)
                return -EBADMSG;
        r = proto_message_to_json(m, &j);
        protobuf_c_message_free_unpacked(m, NULL);
        if (r < 0)
                return r;
        s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(j);
        if (!s)
                return -ENOMEM;
        *ret = s;
        *ret_len = strlen(s);
        return 0;
}

static bool unknown_allowed(const char *type, uint32_t number, const char *const *allowed) {
        size_t tl = strlen(type);
        for (const char *const *a = allowed; a && *a; a++)
                if (strncmp(*a, type, tl) == 0 && (*a)[tl] == ':' && strtoul(*a + tl + 1, NULL, 10) == number)
                        return true;
        return false;
}

static bool find_unknown(const ProtobufCMessage *m, const char *const *allowed, int depth, const char **ret_type,
                         uint32_t *ret_number) {
        const ProtobufCMessageDescriptor *d = m->descriptor;

        if (depth > DEPTH_MAX)
                return false;
        for (unsigned k = 0; k < m->n_unknown_fields; k++)
                if (!unknown_allowed(d->name, m->unknown_fields[k].tag, allowed)) {
                        *ret_type = d->name;
                        *ret_number = m->unknown_fields[k].tag;
                        return true;
                }
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                const char *field = (const char *) m + f->offset;
                if (f->type != PROTOBUF_C_TYPE_MESSAGE)
                        continue;
                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        size_t n = *(const size_t *) ((const char *) m + f->quantifier_offset);
                        ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *) field;
                        for (size_t k = 0; k < n; k++)
                                if (arr[k] && find_unknown(arr[k], allowed, depth + 1, ret_type, ret_number))
                                        return true;
                } else {
                        const ProtobufCMessage *sub = *(ProtobufCMessage *const *) field;
                        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                            *(const uint32_t *) ((const char *) m + f->quantifier_offset) != f->id)
                                continue;
                        if (sub && find_unknown(sub, allowed, depth + 1, ret_type, ret_number))
                                return true;
                }
        }
        return false;
}

bool proto_find_unknown_field(const ProtobufCMessage *m, const char *const *allowed, const char **ret_type,
                              uint32_t *ret_number) {
        return find_unknown(m, allowed, 0, ret_type, ret_number);
}

/* ---- checking wire bytes against a descriptor ------------------------------ */

/* Protobuf encoding ("Message Structure"): the wire type each field type
 * travels as; repeated numbers may also come packed (LEN). */
static int expected_wire_type(const ProtobufCFieldDescriptor *f) {
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_BOOL: case PROTOBUF_C_TYPE_ENUM:
                return 0;
        case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_DOUBLE:
                return 1;
        case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_FLOAT:
                return 5;
        default:
                return 2;
        }
}

static const char *wire_type_name(unsigned wt) {
        static const char *const names[] = { "a varint", "a fixed64", "length-delimited bytes", "a group start",
                                             "a group end", "a fixed32", "wire type 6", "wire type 7" };
        return names[wt & 7];
}

static int read_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *ret) {
        uint64_t v = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
                if (*pos >= len)
                        return -EBADMSG;
                uint8_t b = p[(*pos)++];
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

static int check_message(Ctx *c, const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, const char *path) {
        unsigned counts[128] = {};
        size_t pos = 0;

        if (++c->depth > DEPTH_MAX)
                return fail(c, "%s: messages nested too deep", *path ? path : "(top)");
        while (pos < len) {
                const ProtobufCFieldDescriptor *f;
                char name[128], sub[512];
                uint64_t key, n = 0;
                unsigned wt, idx = 0;
                size_t start;

                if (read_varint(p, len, &pos, &key) < 0 || (key >> 3) == 0 || (key >> 3) > 536870911)
                        return fail(c, "%s: not a valid %s message (a broken field key)", *path ? path : "(top)",
                                    d->name);
                wt = (unsigned) (key & 7);
                f = protobuf_c_message_descriptor_get_field(d, (unsigned) (key >> 3));
                if (!f)
                        return fail(c, "%s%sfield %u of %s is not supported by hostmesh; leave it unset", path,
                                    *path ? ": " : "", (unsigned) (key >> 3), d->name);
                json_name(f->name, name, sizeof(name));
                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        size_t k = (size_t) (f - d->fields);
                        if (k < ELEMENTSOF(counts))
                                idx = counts[k]++;
                        snprintf(sub, sizeof(sub), "%s%s%s[%u]", path, *path ? "." : "", name, idx);
                } else
                        snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", name);
                if ((int) wt != expected_wire_type(f) &&
                    !(wt == 2 && f->label == PROTOBUF_C_LABEL_REPEATED && expected_wire_type(f) != 2))
                        return fail(c, "%s: %s where %s (%s) is expected", sub, wire_type_name(wt),
                                    wire_type_name((unsigned) expected_wire_type(f)), f->name);
                start = pos;
                switch (wt) {
                case 0:
                        if (read_varint(p, len, &pos, &n) < 0)
                                return fail(c, "%s: a truncated varint", sub);
                        break;
                case 1:
                case 5:
                        if (len - pos < (wt == 1 ? 8U : 4U))
                                return fail(c, "%s: truncated", sub);
                        pos += wt == 1 ? 8 : 4;
                        break;
                case 2:
                        if (read_varint(p, len, &pos, &n) < 0 || n > len - pos)
                                return fail(c, "%s: the length runs past the end of the message", sub);
                        start = pos;
                        pos += (size_t) n;
                        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                                int r = check_message(c, f->descriptor, p + start, (size_t) n, sub);
                                if (r < 0)
                                        return r;
                        }
                        break;
                default:
                        return fail(c, "%s: %s is not used by proto3", sub, wire_type_name(wt));
                }
        }
        c->depth--;
        return 0;
}

int proto_binary_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char **ret_error) {
        Ctx c = {};
        int r = check_message(&c, d, data, len, "");
        if (r < 0) {
                *ret_error = TAKE_PTR(c.error);
                return r;
        }
        return 0;
}
