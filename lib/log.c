/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
/* We pass CODE_FILE/CODE_LINE/CODE_FUNC of the caller ourselves. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static const char *identifier = "hostmesh";
static bool use_journal = false;

/* systemd sets JOURNAL_STREAM=dev:ino when stderr is connected to journald;
 * only then do we switch to the native protocol, so that a daemon started by
 * hand with stderr redirected keeps writing plain lines. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *ident) {
        const char *lvl = getenv("HOSTMESH_LOG_LEVEL");

        if (ident)
                identifier = ident;
        use_journal = stderr_is_journal();
        if (lvl) {
                int l = log_parse_level(lvl);
                if (l >= 0)
                        max_level = l;
        }
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_parse_level(const char *s) {
        static const char *const names[] = {
                [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
                [LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
        };
        if (!s)
                return -EINVAL;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (int) i;
        return -EINVAL;
}

int log_internal(int level, int error, const char *const *fields, const char *file, int line,
                 const char *func, const char *format, ...) {
        int saved_errno = errno;
        char msg[2048];
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > max_level)
                goto finish;

        /* %m in formats refers to the error passed in, not to errno. */
        errno = error;
        va_start(ap, format);
        vsnprintf(msg, sizeof(msg), format, ap);
        va_end(ap);

        if (use_journal) {
                struct iovec iov[64];
                char prio[32], cfile[512], cline[32], cfunc[256], ident[128], errnostr[32], m[2100];
                size_t n = 0;

                snprintf(m, sizeof(m), "MESSAGE=%s", msg);
                snprintf(prio, sizeof(prio), "PRIORITY=%d", level);
                snprintf(cfile, sizeof(cfile), "CODE_FILE=%s", file);
                snprintf(cline, sizeof(cline), "CODE_LINE=%d", line);
                snprintf(cfunc, sizeof(cfunc), "CODE_FUNC=%s", func);
                snprintf(ident, sizeof(ident), "SYSLOG_IDENTIFIER=%s", identifier);
                iov[n++] = (struct iovec){ m, strlen(m) };
                iov[n++] = (struct iovec){ prio, strlen(prio) };
                iov[n++] = (struct iovec){ cfile, strlen(cfile) };
                iov[n++] = (struct iovec){ cline, strlen(cline) };
                iov[n++] = (struct iovec){ cfunc, strlen(cfunc) };
                iov[n++] = (struct iovec){ ident, strlen(ident) };
                if (error > 0) {
                        snprintf(errnostr, sizeof(errnostr), "ERRNO=%d", error);
                        iov[n++] = (struct iovec){ errnostr, strlen(errnostr) };
                }
                for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(iov); i++)
                        iov[n++] = (struct iovec){ (void *) fields[i], strlen(fields[i]) };
                if (sd_journal_sendv(iov, (int) n) >= 0)
                        goto finish;
                /* Journal gone: fall through to stderr so that nothing is lost. */
        }

        {
                char line_buf[4096];
                size_t len = (size_t) snprintf(line_buf, sizeof(line_buf), "%s[%d]: %s", identifier,
                                               (int) getpid(), msg);
                for (size_t i = 0; fields && fields[i] && len < sizeof(line_buf); i++)
                        len += (size_t) snprintf(line_buf + len, sizeof(line_buf) - len, " %s", fields[i]);
                if (len >= sizeof(line_buf) - 1)
                        len = sizeof(line_buf) - 2;
                line_buf[len++] = '\n';
                (void) !write(STDERR_FILENO, line_buf, len);
        }

finish:
        errno = saved_errno;
        return -error;
}
