/* SPDX-License-Identifier: MIT */
/* Strict parsers for the values found in config files and on command lines.
 * Every parser consumes the whole string and range-checks the result, so
 * "10x", " 10", "-1" for an unsigned, or a value that wraps are refused
 * rather than silently truncated. */

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>

#include "macro.h"
#include "parse-util.h"

/* Parses a run of decimal digits at *p (at least one) into *ret, advancing
 * *p. -ERANGE on overflow, -EINVAL when there is no digit. */
static int parse_digits(const char **p, uint64_t *ret) {
        const char *s = *p;
        uint64_t v = 0;

        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        for (; isdigit((unsigned char) *s); s++) {
                unsigned d = (unsigned) (*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *p = s;
        *ret = v;
        return 0;
}

int unhexchar(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int safe_atou64(const char *s, uint64_t *ret) {
        uint64_t v;
        int r;

        if (!s)
                return -EINVAL;
        r = parse_digits(&s, &v);
        if (r < 0)
                return r;
        if (*s)
                return -EINVAL;
        *ret = v;
        return 0;
}

int safe_atou32(const char *s, uint32_t *ret) {
        uint64_t v;
        int r;

        r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

int safe_atoi64(const char *s, int64_t *ret) {
        bool negative = false;
        uint64_t v;
        int r;

        if (!s)
                return -EINVAL;
        if (*s == '-' || *s == '+')
                negative = *s++ == '-';
        r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (negative) {
                if (v > (uint64_t) INT64_MAX + 1)
                        return -ERANGE;
                *ret = v == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) v;
        } else {
                if (v > (uint64_t) INT64_MAX)
                        return -ERANGE;
                *ret = (int64_t) v;
        }
        return 0;
}

int safe_atoi32(const char *s, int32_t *ret) {
        int64_t v;
        int r;

        r = safe_atoi64(s, &v);
        if (r < 0)
                return r;
        if (v < INT32_MIN || v > INT32_MAX)
                return -ERANGE;
        *ret = (int32_t) v;
        return 0;
}

int parse_range_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        uint64_t v;
        int r;

        r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

/* a * b + c without wrapping. */
static int mul_add_u64(uint64_t a, uint64_t b, uint64_t c, uint64_t *ret) {
        uint64_t m;

        if (__builtin_mul_overflow(a, b, &m) || __builtin_add_overflow(m, c, &m))
                return -ERANGE;
        *ret = m;
        return 0;
}

/* Parses an optional ".digits" fraction scaled by `factor`: "5" with factor
 * 1000 gives 500. Digits beyond what the factor can represent are refused
 * when they are not zero, so that the value stays exact. */
static int parse_fraction(const char **p, uint64_t factor, uint64_t *ret) {
        const char *s = *p;
        uint64_t num = 0, den = 1;

        *ret = 0;
        if (*s != '.')
                return 0;
        s++;
        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        for (; isdigit((unsigned char) *s); s++) {
                if (den > UINT64_MAX / 10 / 16) {
                        /* More digits than we can carry: accept only zeros. */
                        if (*s != '0')
                                return -EINVAL;
                        continue;
                }
                num = num * 10 + (uint64_t) (*s - '0');
                den *= 10;
        }
        /* num/den < 1, so num * factor / den < factor: compute without overflow
         * by splitting factor. */
        *ret = (uint64_t) (((unsigned __int128) num * factor) / den);
        *p = s;
        return 0;
}

static const struct {
        const char *suffix;
        uint64_t usec;
} time_units[] = {
        /* Longest suffixes first, so that "ms" is not read as "m" + "s". */
        { "usec", 1 },
        { "msec", USEC_PER_MSEC },
        { "us", 1 },
        { "µs", 1 },
        { "ms", USEC_PER_MSEC },
        { "seconds", USEC_PER_SEC },
        { "second", USEC_PER_SEC },
        { "sec", USEC_PER_SEC },
        { "s", USEC_PER_SEC },
        { "minutes", 60 * USEC_PER_SEC },
        { "minute", 60 * USEC_PER_SEC },
        { "min", 60 * USEC_PER_SEC },
        { "m", 60 * USEC_PER_SEC },
        { "hours", 3600 * USEC_PER_SEC },
        { "hour", 3600 * USEC_PER_SEC },
        { "hr", 3600 * USEC_PER_SEC },
        { "h", 3600 * USEC_PER_SEC },
        { "days", 86400 * USEC_PER_SEC },
        { "day", 86400 * USEC_PER_SEC },
        { "d", 86400 * USEC_PER_SEC },
        { "weeks", 7 * 86400 * USEC_PER_SEC },
        { "week", 7 * 86400 * USEC_PER_SEC },
        { "w", 7 * 86400 * USEC_PER_SEC },
};

int parse_usec(const char *s, uint64_t *ret) {
        uint64_t total = 0;
        bool any = false;

        if (!s)
                return -EINVAL;
        for (;;) {
                uint64_t n, frac, unit = USEC_PER_SEC, v;
                size_t ul = 0;
                int r;

                while (*s == ' ')
                        s++;
                if (!*s)
                        break;
                r = parse_digits(&s, &n);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(time_units); i++) {
                        size_t l = strlen(time_units[i].suffix);
                        /* The fraction comes before the unit: peek past it. */
                        const char *q = s;
                        if (*q == '.')
                                for (q++; isdigit((unsigned char) *q); q++)
                                        ;
                        if (strncmp(q, time_units[i].suffix, l) == 0 && !isalpha((unsigned char) q[l])) {
                                unit = time_units[i].usec;
                                ul = l;
                                break;
                        }
                }
                r = parse_fraction(&s, unit, &frac);
                if (r < 0)
                        return r;
                if (ul == 0) {
                        /* A bare number is seconds, but only as the whole value:
                         * "1h30" is ambiguous and refused. */
                        if (any || *s)
                                return -EINVAL;
                }
                s += ul;
                r = mul_add_u64(n, unit, frac, &v);
                if (r < 0)
                        return r;
                if (__builtin_add_overflow(total, v, &total))
                        return -ERANGE;
                any = true;
        }
        if (!any)
                return -EINVAL;
        *ret = total;
        return 0;
}

char *format_usec(uint64_t usec) {
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                { "d", 86400 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC }, { "m", 60 * USEC_PER_SEC },
                { "s", USEC_PER_SEC },         { "ms", USEC_PER_MSEC },      { "us", 1 },
        };
        char buf[128];
        size_t n = 0;

        if (usec == 0)
                return strdup("0");
        for (size_t i = 0; i < ELEMENTSOF(units) && usec > 0; i++) {
                uint64_t k = usec / units[i].usec;
                if (k == 0)
                        continue;
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%llu%s", (unsigned long long) k, units[i].suffix);
                usec -= k * units[i].usec;
        }
        return strdup(buf);
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                char letter;
                uint64_t factor;
        } units[] = {
                { 'K', 1ULL << 10 }, { 'M', 1ULL << 20 }, { 'G', 1ULL << 30 },
                { 'T', 1ULL << 40 }, { 'P', 1ULL << 50 }, { 'E', 1ULL << 60 },
        };
        uint64_t n, frac = 0, factor = 1;
        const char *frac_start;
        int r;

        if (!s)
                return -EINVAL;
        r = parse_digits(&s, &n);
        if (r < 0)
                return r;
        frac_start = s;
        if (*s == '.')
                for (s++; isdigit((unsigned char) *s); s++)
                        ;
        if (*s) {
                bool found = false;
                for (size_t i = 0; i < ELEMENTSOF(units); i++)
                        if (toupper((unsigned char) *s) == units[i].letter) {
                                factor = units[i].factor;
                                found = true;
                                break;
                        }
                if (found) {
                        s++;
                        if (streq(s, "iB") || streq(s, "B") || streq(s, "ib") || streq(s, "b"))
                                s += strlen(s);
                } else if (streq(s, "B") || streq(s, "b"))
                        s++;
                if (*s)
                        return -EINVAL;
        }
        if (*frac_start == '.') {
                const char *p = frac_start;
                if (factor == 1)
                        return -EINVAL; /* a fraction of a byte */
                r = parse_fraction(&p, factor, &frac);
                if (r < 0)
                        return r;
        }
        return mul_add_u64(n, factor, frac, ret);
}

char *format_size(uint64_t bytes) {
        static const char letters[] = "KMGTPE";
        char buf[32];
        int unit = -1;

        /* The largest binary unit that divides the value exactly, so that
         * parse_size() gives back the same number. */
        while (unit + 1 < (int) strlen(letters) && bytes != 0 && bytes % (1ULL << (10 * (unit + 2))) == 0)
                unit++;
        if (unit < 0)
                snprintf(buf, sizeof(buf), "%llu", (unsigned long long) bytes);
        else
                snprintf(buf, sizeof(buf), "%llu%c", (unsigned long long) (bytes >> (10 * (unit + 1))), letters[unit]);
        return strdup(buf);
}

int parse_boolean(const char *s, bool *ret) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return *ret = true, 0;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return *ret = false, 0;
        return -EINVAL;
}

int parse_sockaddr(const char *s, uint16_t default_port, struct sockaddr_storage *ret, unsigned *ret_len) {
        _cleanup_free_ char *host = NULL;
        const char *port_str = NULL;
        bool bracketed = *s == '[';
        uint64_t port = default_port;
        int r;

        if (!s || !*s)
                return -EINVAL;
        if (*s == '[') {
                const char *e = strchr(s, ']');
                if (!e)
                        return -EINVAL;
                host = strndup(s + 1, (size_t) (e - s - 1));
                if (e[1] == ':')
                        port_str = e + 2;
                else if (e[1])
                        return -EINVAL;
        } else {
                const char *c = strchr(s, ':');
                if (c && strchr(c + 1, ':'))
                        /* Several colons without brackets: a bare IPv6 address. */
                        host = strdup(s);
                else if (c) {
                        host = strndup(s, (size_t) (c - s));
                        port_str = c + 1;
                } else
                        host = strdup(s);
        }
        if (!host)
                return -ENOMEM;
        if (port_str) {
                r = parse_range_u64(port_str, 0, UINT16_MAX, &port);
                if (r < 0)
                        return r;
        }

        memset(ret, 0, sizeof(*ret));
        struct sockaddr_in *sin = (struct sockaddr_in *) ret;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) ret;
        if (!bracketed && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
                sin->sin_family = AF_INET;
                sin->sin_port = htons((uint16_t) port);
                *ret_len = sizeof(*sin);
                return 0;
        }
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons((uint16_t) port);
                *ret_len = sizeof(*sin6);
                return 0;
        }
        return -EINVAL;
}

int parse_ipv4_prefix(const char *s, struct in_addr *ret_network, unsigned *ret_prefixlen) {
        _cleanup_free_ char *addr = NULL;
        const char *slash = strchr(s, '/');
        struct in_addr a;
        uint64_t len;
        uint32_t mask;

        if (!slash)
                return -EINVAL;
        addr = strndup(s, (size_t) (slash - s));
        if (!addr)
                return -ENOMEM;
        if (inet_pton(AF_INET, addr, &a) != 1 || parse_range_u64(slash + 1, 0, 32, &len) < 0)
                return -EINVAL;
        mask = len == 0 ? 0 : htonl(~(uint32_t) 0 << (32 - len));
        if ((a.s_addr & ~mask) != 0)
                return -EINVAL; /* "10.88.0.1/16" is an address, not a network */
        *ret_network = a;
        *ret_prefixlen = (unsigned) len;
        return 0;
}
