/* SPDX-License-Identifier: MIT */
/* nsc: global flags, verb dispatch, and the error reporting every verb shares. */

#include <getopt.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

#include "nsc.h"
#include "parse-util.h"
#include "paths.h"

extern const NscCommand *const __start_nsc_commands[];
extern const NscCommand *const __stop_nsc_commands[];

static const NscCommand *const *commands_begin(void) {
        return __start_nsc_commands;
}
static const NscCommand *const *commands_end(void) {
        return __stop_nsc_commands;
}

static char *default_endpoint(void) {
        const char *e = getenv("NSC_ENDPOINT");
        _cleanup_free_ char *path = NULL;
        char *t;

        if (!isempty(e))
                return strdup(e);
        path = hostmesh_socket_path("gateway");
        if (!path || asprintf(&t, "unix:%s", path) < 0)
                return NULL;
        return t;
}

static int cmp_commands(const void *a, const void *b) {
        return strcmp((*(const NscCommand *const *) a)->name, (*(const NscCommand *const *) b)->name);
}

static void help(void) {
        size_t n = (size_t) (commands_end() - commands_begin());
        const NscCommand **sorted = malloc(n * sizeof(*sorted));

        printf("nsc [GLOBAL OPTIONS] COMMAND [ARGS...]\n\n"
               "The hostmesh command line. Talks to the local gateway.\n\n"
               "Global options:\n"
               "  --endpoint unix:PATH  Gateway to talk to (default $NSC_ENDPOINT, else\n"
               "                        unix:$HOSTMESH_RUNTIME_DIR/gateway.sock, else\n"
               "                        unix:/run/hostmesh/gateway.sock)\n"
               "  -o, --output FORMAT   plain (default) or json\n"
               "  --timeout DURATION    Per-call timeout (default 30s; e.g. 500ms, 2m)\n"
               "  -h, --help            Show this help\n"
               "  --version             Show the version\n\n"
               "Commands:\n");
        if (sorted) {
                memcpy(sorted, commands_begin(), n * sizeof(*sorted));
                qsort(sorted, n, sizeof(*sorted), cmp_commands);
                for (size_t i = 0; i < n; i++)
                        printf("  %-34s %s\n", sorted[i]->name, sorted[i]->summary);
                free(sorted);
        }
        printf("\nExit codes:\n"
               "  0 success (exec/run: the command's own exit code)\n"
               "  1 the service refused or failed (message says why)\n"
               "  2 usage error\n"
               "  3 the gateway or a service is unavailable\n"
               "  4 not found\n"
               "  5 permission denied or not authenticated\n"
               "  6 invalid argument or failed precondition\n"
               "  7 resource exhausted (capacity, quota)\n"
               "  8 deadline exceeded\n");
}

int nsc_exit_code(RpcCode code) {
        switch (code) {
        case RPC_OK:
                return NSC_EXIT_OK;
        case RPC_UNAVAILABLE:
                return NSC_EXIT_UNAVAILABLE;
        case RPC_NOT_FOUND:
                return NSC_EXIT_NOT_FOUND;
        case RPC_PERMISSION_DENIED:
        case RPC_UNAUTHENTICATED:
                return NSC_EXIT_DENIED;
        case RPC_INVALID_ARGUMENT:
        case RPC_FAILED_PRECONDITION:
        case RPC_OUT_OF_RANGE:
                return NSC_EXIT_INVALID;
        case RPC_RESOURCE_EXHAUSTED:
                return NSC_EXIT_EXHAUSTED;
        case RPC_DEADLINE_EXCEEDED:
                return NSC_EXIT_TIMEOUT;
        default:
                return NSC_EXIT_FAILURE;
        }
}

void nsc_print_json(json_t *v) {
        char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
        if (s) {
                puts(s);
                free(s);
        }
        json_decref(v);
}

static int print_error(Nsc *n, int exit_code, const char *code_name, const char *message, const char *hint) {
        if (n->json) {
                json_t *e = json_pack("{s:{s:s, s:s}}", "error", "code", code_name, "message", message);
                if (e && hint)
                        json_object_set_new(json_object_get(e, "error"), "hint", json_string(hint));
                nsc_print_json(e);
        } else {
                fprintf(stderr, "nsc: %s\n", message);
                if (hint)
                        fprintf(stderr, "  %s\n", hint);
        }
        return exit_code;
}

int nsc_fail(Nsc *n, int exit_code, const char *code_name, const char *format, ...) {
        char buf[2048];
        va_list ap;

        va_start(ap, format);
        vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        return print_error(n, exit_code, code_name, buf, NULL);
}

int nsc_usage(Nsc *n, const NscCommand *cmd, const char *format, ...) {
        char buf[2048], hint[512];
        va_list ap;

        va_start(ap, format);
        vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        snprintf(hint, sizeof(hint), "Usage: nsc %s %s", cmd->name, cmd->usage ? cmd->usage : "");
        return print_error(n, NSC_EXIT_USAGE, "USAGE", buf, hint);
}

/* Turns a failed call into a message a person can act on. */
static int report_status(Nsc *n, const char *method, const RpcStatus *st) {
        const char *msg = st->message && *st->message ? st->message : rpc_code_to_string(st->code);
        const char *hint = NULL;
        char buf[4096], hintbuf[1024];

        switch (st->code) {
        case RPC_UNAVAILABLE:
                if (strstr(msg, "connect") || strstr(msg, "No such file") || strstr(msg, "Connection refused")) {
                        const char *path = n->endpoint + (strncmp(n->endpoint, "unix:", 5) == 0 ? 5 : 0);
                        struct stat sb;
                        if (stat(path, &sb) < 0)
                                snprintf(buf, sizeof(buf), "The hostmesh gateway is not running (no socket at %s).",
                                         path);
                        else
                                snprintf(buf, sizeof(buf), "Cannot connect to the hostmesh gateway at %s: %s", path,
                                         msg);
                        msg = buf;
                        snprintf(hintbuf, sizeof(hintbuf),
                                 "Start it with 'systemctl start hostmesh.target' (or 'scripts/hostmesh-dev up' in a "
                                 "checkout), or point nsc elsewhere with --endpoint unix:PATH.");
                        hint = hintbuf;
                } else
                        hint = "The service may be restarting; retry in a moment. 'nsc status' shows which parts serve.";
                break;
        case RPC_PERMISSION_DENIED:
                hint = "Run as root or as a member of the 'hostmesh' group.";
                break;
        case RPC_DEADLINE_EXCEEDED:
                hint = "The call took longer than --timeout; raise it (e.g. --timeout 2m) or check 'nsc status'.";
                break;
        case RPC_UNIMPLEMENTED:
                snprintf(hintbuf, sizeof(hintbuf), "The server does not implement %s; is it an older hostmesh?",
                         method);
                hint = hintbuf;
                break;
        default:
                break;
        }
        return print_error(n, nsc_exit_code(st->code), rpc_code_to_string(st->code), msg, hint);
}

RpcClient *nsc_client(Nsc *n) {
        if (!n->client && rpc_client_new(NULL, n->endpoint, &n->client) < 0)
                return NULL;
        return n->client;
}

int nsc_call(Nsc *n, const char *method, const ProtobufCMessage *request,
             const ProtobufCMessageDescriptor *response_type, ProtobufCMessage **ret_response) {
        RpcStatus st = {};
        int r, ec;

        if (!nsc_client(n))
                return nsc_fail(n, NSC_EXIT_USAGE, "INVALID_ARGUMENT", "Invalid endpoint '%s'.", n->endpoint);
        r = rpc_client_call(n->client, method, NULL, request, response_type, n->timeout_usec, ret_response, &st);
        if (r >= 0)
                return 0;
        ec = report_status(n, method, &st);
        rpc_status_done(&st);
        return ec;
}

int nsc_call_stream(Nsc *n, const char *method, const ProtobufCMessage *request,
                    const ProtobufCMessageDescriptor *response_type, RpcStreamCallback on_message, void *userdata) {
        RpcStatus st = {};
        int r, ec;

        if (!nsc_client(n))
                return nsc_fail(n, NSC_EXIT_USAGE, "INVALID_ARGUMENT", "Invalid endpoint '%s'.", n->endpoint);
        r = rpc_client_call_stream(n->client, method, NULL, request, response_type, n->timeout_usec, on_message,
                                   userdata, &st);
        if (r >= 0)
                return 0;
        ec = report_status(n, method, &st);
        rpc_status_done(&st);
        return ec;
}

char *nsc_format_time(int64_t seconds, int32_t nanos) {
        struct tm tm;
        time_t t = (time_t) seconds;
        char buf[64];

        (void) nanos;
        if (!gmtime_r(&t, &tm))
                return strdup("");
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return strdup(buf);
}

/* Finds the longest command whose words match argv[0..]; returns how many
 * words it took. */
static const NscCommand *find_command(int argc, char **argv, int *ret_words) {
        const NscCommand *best = NULL;
        int best_words = 0;

        for (const NscCommand *const *c = commands_begin(); c < commands_end(); c++) {
                const char *p = (*c)->name;
                int w = 0;
                bool match = true;

                while (*p && match) {
                        size_t len = strcspn(p, " ");
                        if (w >= argc || strlen(argv[w]) != len || strncmp(argv[w], p, len) != 0)
                                match = false;
                        else {
                                w++;
                                p += len;
                                p += strspn(p, " ");
                        }
                }
                if (match && w > best_words) {
                        best = *c;
                        best_words = w;
                }
        }
        *ret_words = best_words;
        return best;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "endpoint", required_argument, NULL, 'e' },
                { "output", required_argument, NULL, 'o' },
                { "timeout", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        _cleanup_free_ char *endpoint = NULL;
        Nsc n = { .timeout_usec = 30 * USEC_PER_SEC };
        const NscCommand *cmd;
        int c, words, r;

        n.tty = isatty(STDERR_FILENO);
        /* Global options come before the verb; "+" stops at the first non-option. */
        while ((c = getopt_long(argc, argv, "+o:h", options, NULL)) >= 0)
                switch (c) {
                case 'e':
                        free(endpoint);
                        endpoint = strdup(optarg);
                        break;
                case 'o':
                        if (streq(optarg, "json"))
                                n.json = true;
                        else if (streq(optarg, "plain"))
                                n.json = false;
                        else
                                return fprintf(stderr, "nsc: unknown output format '%s'; use plain or json.\n", optarg),
                                       NSC_EXIT_USAGE;
                        break;
                case 't':
                        if (parse_usec(optarg, &n.timeout_usec) < 0 || n.timeout_usec == 0)
                                return fprintf(stderr, "nsc: invalid --timeout '%s'; use e.g. 500ms, 30s, 2m.\n",
                                               optarg),
                                       NSC_EXIT_USAGE;
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("nsc %s\n", HOSTMESH_VERSION);
                        return 0;
                default:
                        return NSC_EXIT_USAGE;
                }

        if (optind >= argc) {
                help();
                return NSC_EXIT_USAGE;
        }
        cmd = find_command(argc - optind, argv + optind, &words);
        if (!cmd) {
                fprintf(stderr, "nsc: unknown command '%s'; see 'nsc --help'.\n", argv[optind]);
                return NSC_EXIT_USAGE;
        }
        if (!endpoint)
                endpoint = default_endpoint();
        if (!endpoint)
                return fprintf(stderr, "nsc: out of memory\n"), NSC_EXIT_FAILURE;
        n.endpoint = endpoint;

        /* The verb sees argv[0] = its last word, so that getopt works as usual.
         * "-o json" may also follow the verb: it is taken here and removed
         * from the verb's arguments (up to "--"), so no verb deals with it. */
        int vargc = argc - optind - words + 1;
        char **vargv = argv + optind + words - 1;
        int k = 1, i;
        for (i = 1; i < vargc && !streq(vargv[i], "--"); i++) {
                const char *fmt = NULL;
                if ((streq(vargv[i], "-o") || streq(vargv[i], "--output")) && i + 1 < vargc)
                        fmt = vargv[++i];
                else if (strncmp(vargv[i], "--output=", 9) == 0)
                        fmt = vargv[i] + 9;
                else if (strncmp(vargv[i], "-o", 2) == 0 && vargv[i][2])
                        fmt = vargv[i] + 2;
                if (!fmt) {
                        vargv[k++] = vargv[i];
                        continue;
                }
                if (!streq(fmt, "json") && !streq(fmt, "plain"))
                        return fprintf(stderr, "nsc: unknown output format '%s'; use plain or json.\n", fmt),
                               NSC_EXIT_USAGE;
                n.json = streq(fmt, "json");
        }
        while (i < vargc)
                vargv[k++] = vargv[i++];
        vargv[k] = NULL;
        vargc = k;
        optind = 0;
        r = cmd->run(&n, vargc, vargv);
        rpc_client_free(n.client);
        return r;
}
