/* SPDX-License-Identifier: MIT */
/* The config file parser: `[section]` headers, `key = value` lines, `#`
 * comments on lines of their own. Values are interpreted by the ConfigType
 * of the table entry. Strings and list elements may be written in double
 * quotes with C escapes (\" \\ \n \t) so that leading spaces, empty strings
 * and control characters survive config_print() → config_load(). */

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>

#include "config.h"
#include "fs-util.h"
#include "macro.h"
#include "parse-util.h"

#define CONFIG_FILE_MAX (4U * 1024U * 1024U)
#define CONFIG_STRV_MAX 4096U

/* ---- quoting shared by string and strv ---- */

/* Reads one word at *p: either a "quoted string" with escapes or a run of
 * non-space characters (when `whole` is false) / the rest of the input
 * (when `whole` is true). Advances *p past it. */
static int read_word(const char **p, bool whole, char **ret) {
        const char *s = *p;
        char *out, *o;

        if (*s != '"') {
                size_t n = whole ? strlen(s) : strcspn(s, " \t");
                out = strndup(s, n);
                if (!out)
                        return -ENOMEM;
                *p = s + n;
                *ret = out;
                return 0;
        }

        out = o = malloc(strlen(s) + 1);
        if (!out)
                return -ENOMEM;
        for (s++;; s++) {
                if (*s == '\0') {
                        free(out);
                        return -EINVAL; /* unterminated */
                }
                if (*s == '"')
                        break;
                if (*s != '\\') {
                        *o++ = *s;
                        continue;
                }
                switch (*++s) {
                case '\\': *o++ = '\\'; break;
                case '"':  *o++ = '"'; break;
                case 'n':  *o++ = '\n'; break;
                case 't':  *o++ = '\t'; break;
                case 'r':  *o++ = '\r'; break;
                default:
                        free(out);
                        return -EINVAL;
                }
        }
        *o = '\0';
        s++;
        if (whole ? *s != '\0' : (*s != '\0' && *s != ' ' && *s != '\t')) {
                free(out);
                return -EINVAL; /* garbage after the closing quote */
        }
        *p = s;
        *ret = out;
        return 0;
}

static bool needs_quotes(const char *s, bool in_list) {
        if (!*s || *s == '"' || *s == ' ' || *s == '\t' || s[strlen(s) - 1] == ' ' || s[strlen(s) - 1] == '\t')
                return true;
        for (const char *p = s; *p; p++) {
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        return true;
                if (in_list && (*p == ' ' || *p == '"'))
                        return true;
        }
        return false;
}

static void print_word(FILE *f, const char *s, bool in_list) {
        if (!needs_quotes(s, in_list)) {
                fputs(s, f);
                return;
        }
        fputc('"', f);
        for (const char *p = s; *p; p++)
                switch (*p) {
                case '"':  fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\n': fputs("\\n", f); break;
                case '\t': fputs("\\t", f); break;
                case '\r': fputs("\\r", f); break;
                default:   fputc(*p, f);
                }
        fputc('"', f);
}

/* ---- types ---- */

/* An empty value unsets a string (NULL); `""` is the empty string. */
static int string_parse(const char *value, void *field) {
        char **s = field, *v = NULL;
        int r;

        if (*value) {
                r = read_word(&value, /* whole= */ true, &v);
                if (r < 0)
                        return r;
                /* A string holds no NUL and no newline that a line could not carry:
                 * quotes handle those; nothing else to check. */
        }
        free(*s);
        *s = v;
        return 0;
}

static void string_print(FILE *f, const void *field) {
        const char *const *s = field;
        if (*s)
                print_word(f, *s, /* in_list= */ false);
}

static void string_done(void *field) {
        char **s = field;
        *s = (free(*s), NULL);
}

const ConfigType config_type_string = { "string", string_parse, string_print, string_done };

static void strv_done(void *field) {
        char ***l = field;
        if (*l)
                for (char **i = *l; *i; i++)
                        free(*i);
        *l = (free(*l), NULL);
}

/* Appends the whitespace-separated words; an empty value empties the list. */
static int strv_parse(const char *value, void *field) {
        char ***l = field;
        size_t n = 0;

        if (!*value) {
                strv_done(field);
                return 0;
        }
        if (*l)
                while ((*l)[n])
                        n++;
        for (;;) {
                char *w, **nl;
                int r;

                while (*value == ' ' || *value == '\t')
                        value++;
                if (!*value)
                        break;
                if (n >= CONFIG_STRV_MAX)
                        return -E2BIG;
                r = read_word(&value, /* whole= */ false, &w);
                if (r < 0)
                        return r;
                nl = realloc(*l, (n + 2) * sizeof(char *));
                if (!nl) {
                        free(w);
                        return -ENOMEM;
                }
                nl[n++] = w;
                nl[n] = NULL;
                *l = nl;
        }
        return 0;
}

static void strv_print(FILE *f, const void *field) {
        char *const *const *l = field;
        if (!*l)
                return;
        for (char *const *i = *l; *i; i++) {
                if (i != *l)
                        fputc(' ', f);
                print_word(f, *i, /* in_list= */ true);
        }
}

const ConfigType config_type_strv = { "list", strv_parse, strv_print, strv_done };

static int bool_parse(const char *value, void *field) {
        return parse_boolean(value, field);
}
static void bool_print(FILE *f, const void *field) {
        fputs(*(const bool *) field ? "yes" : "no", f);
}
const ConfigType config_type_bool = { "boolean", bool_parse, bool_print, NULL };

static int uint64_parse(const char *value, void *field) {
        return safe_atou64(value, field);
}
static void uint64_print(FILE *f, const void *field) {
        fprintf(f, "%llu", (unsigned long long) *(const uint64_t *) field);
}
const ConfigType config_type_uint64 = { "unsigned integer", uint64_parse, uint64_print, NULL };

static int uint32_parse(const char *value, void *field) {
        return safe_atou32(value, field);
}
static void uint32_print(FILE *f, const void *field) {
        fprintf(f, "%u", (unsigned) *(const uint32_t *) field);
}
const ConfigType config_type_uint32 = { "unsigned 32-bit integer", uint32_parse, uint32_print, NULL };

static int usec_parse(const char *value, void *field) {
        return parse_usec(value, field);
}
static void usec_print(FILE *f, const void *field) {
        _cleanup_free_ char *s = format_usec(*(const uint64_t *) field);
        fputs(s ? s : "", f);
}
const ConfigType config_type_usec = { "duration", usec_parse, usec_print, NULL };

static int size_parse(const char *value, void *field) {
        return parse_size(value, field);
}
static void size_print(FILE *f, const void *field) {
        _cleanup_free_ char *s = format_size(*(const uint64_t *) field);
        fputs(s ? s : "", f);
}
const ConfigType config_type_size = { "size", size_parse, size_print, NULL };

static int double_parse(const char *value, void *field) {
        char *end;
        double d;

        /* Plain decimal only: no hex floats, no "inf"/"nan", no sign. */
        if (!*value || strspn(value, "0123456789.eE+-") != strlen(value) || *value == '-' || *value == '+')
                return -EINVAL;
        errno = 0;
        d = strtod(value, &end);
        if (*end || errno == ERANGE || !(d >= 0) || d > 1e300)
                return errno == ERANGE ? -ERANGE : -EINVAL;
        *(double *) field = d;
        return 0;
}
static void double_print(FILE *f, const void *field) {
        double d = *(const double *) field;
        char buf[64];

        /* The shortest form that reads back as the same double. */
        for (int prec = 1; prec <= 17; prec++) {
                snprintf(buf, sizeof(buf), "%.*g", prec, d);
                if (strtod(buf, NULL) == d)
                        break;
        }
        fputs(buf, f);
}
const ConfigType config_type_double = { "number", double_parse, double_print, NULL };

/* ---- the parser ---- */

_printf_(4, 5) static int config_error(char **ret_error, const char *name, unsigned line, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int k;

        if (!ret_error)
                return -EINVAL;
        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        free(*ret_error);
        if (asprintf(ret_error, "%s:%u: %s", name, line, msg) < 0) {
                *ret_error = NULL;
                return -ENOMEM;
        }
        return -EINVAL;
}

static bool section_known(const ConfigItem *table, size_t n_items, const char *section) {
        for (size_t i = 0; i < n_items; i++)
                if (streq(table[i].section, section))
                        return true;
        return false;
}

static char *strip(char *s) {
        char *e;

        while (*s == ' ' || *s == '\t' || *s == '\r')
                s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
                *--e = '\0';
        return s;
}

/* Printable rendering of user input inside an error message: at most 64
 * bytes, control characters as '?'. */
static void sanitize(const char *in, char *out, size_t out_size) {
        size_t n = 0;
        for (; *in && n + 4 < out_size && n < 64; in++)
                out[n++] = ((unsigned char) *in < 0x20 || *in == 0x7f) ? '?' : *in;
        if (*in)
                out[n++] = '.', out[n++] = '.', out[n++] = '.';
        out[n] = '\0';
}

int config_load_string(const ConfigItem *table, size_t n_items, void *cfg, const char *name, const char *text,
                       char **ret_error) {
        _cleanup_free_ char *copy = strdup(text);
        _cleanup_free_ bool *seen = calloc(n_items ? n_items : 1, sizeof(bool));
        _cleanup_free_ char *section = NULL;
        unsigned line_no = 0;
        char *p;

        if (ret_error)
                *ret_error = NULL;
        if (!copy || !seen)
                return -ENOMEM;

        for (p = copy; p;) {
                char *line = p, *nl = strchr(p, '\n'), *l, *eq, *key, *value;
                char shown[80];
                size_t i;
                int r;

                if (nl)
                        *nl = '\0';
                p = nl ? nl + 1 : NULL;
                line_no++;

                l = strip(line);
                if (*l == '\0' || *l == '#')
                        continue;

                if (*l == '[') {
                        char *e = strchr(l, ']');
                        if (!e || e[1] != '\0' || e == l + 1)
                                return sanitize(l, shown, sizeof(shown)),
                                       config_error(ret_error, name, line_no, "Invalid section header '%s'", shown);
                        *e = '\0';
                        if (!section_known(table, n_items, l + 1))
                                return sanitize(l + 1, shown, sizeof(shown)),
                                       config_error(ret_error, name, line_no, "Unknown section [%s]", shown);
                        free(section);
                        section = strdup(l + 1);
                        if (!section)
                                return -ENOMEM;
                        continue;
                }

                eq = strchr(l, '=');
                if (!eq)
                        return sanitize(l, shown, sizeof(shown)),
                               config_error(ret_error, name, line_no, "Expected 'key = value', got '%s'", shown);
                *eq = '\0';
                key = strip(l);
                value = strip(eq + 1);
                if (!*key)
                        return config_error(ret_error, name, line_no, "Missing key before '='");
                if (!section)
                        return sanitize(key, shown, sizeof(shown)),
                               config_error(ret_error, name, line_no, "Key '%s' outside of any [section]", shown);

                for (i = 0; i < n_items; i++)
                        if (streq(table[i].section, section) && streq(table[i].key, key))
                                break;
                if (i >= n_items)
                        return sanitize(key, shown, sizeof(shown)),
                               config_error(ret_error, name, line_no, "Unknown key '%s' in section [%s]", shown,
                                            section);

                void *field = (char *) cfg + table[i].offset;
                /* The first assignment of a list in a file replaces the default;
                 * later ones append. */
                if (!seen[i] && table[i].type == &config_type_strv)
                        strv_done(field);
                seen[i] = true;

                r = table[i].type->parse(value, field);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        sanitize(value, shown, sizeof(shown));
                        return config_error(ret_error, name, line_no, "Invalid %s for '%s' in [%s]: '%s' (%s)",
                                            table[i].type->name, key, section, shown,
                                            r == -ERANGE ? "out of range" : strerror(-r));
                }
        }
        return 0;
}

int config_load(const ConfigItem *table, size_t n_items, void *cfg, const char *path, char **ret_error) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        if (ret_error)
                *ret_error = NULL;
        r = read_full_file(path, &text, &len, CONFIG_FILE_MAX);
        if (r == -EFBIG) {
                if (ret_error && asprintf(ret_error, "%s: file larger than %u bytes", path, CONFIG_FILE_MAX) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        if (r < 0)
                return r;
        if (strlen(text) != len) {
                size_t line = 1;
                for (size_t i = 0; i < len && text[i]; i++)
                        line += text[i] == '\n';
                return config_error(ret_error, path, (unsigned) line, "NUL byte in config file");
        }
        return config_load_string(table, n_items, cfg, path, text, ret_error);
}

void config_print(const ConfigItem *table, size_t n_items, const void *cfg, FILE *f) {
        /* Sections in the order they first appear in the table; every key of a
         * section under one header even when the table interleaves them. */
        for (size_t i = 0; i < n_items; i++) {
                for (size_t j = 0; j < i; j++)
                        if (streq(table[j].section, table[i].section))
                                goto next_section;

                fprintf(f, "%s[%s]\n", i > 0 ? "\n" : "", table[i].section);
                for (size_t j = i; j < n_items; j++) {
                        if (!streq(table[j].section, table[i].section))
                                continue;
                        _cleanup_free_ char *value = NULL;
                        size_t len = 0;
                        FILE *v = open_memstream(&value, &len);

                        if (!v)
                                continue;
                        table[j].type->print(v, (const char *) cfg + table[j].offset);
                        if (fclose(v) != 0)
                                continue;
                        /* An unset value is written "key =", without a trailing space. */
                        fprintf(f, "%s =%s%s\n", table[j].key, len > 0 ? " " : "", len > 0 ? value : "");
                }
        next_section:;
        }
}

void config_done(const ConfigItem *table, size_t n_items, void *cfg) {
        for (size_t i = 0; i < n_items; i++)
                if (table[i].type->done)
                        table[i].type->done((char *) cfg + table[i].offset);
}
