/* SPDX-License-Identifier: MIT */
#pragma once

/* nsc: the user's command line tool. It talks only to the gateway.
 *
 * Adding a subcommand is one new file: define its verbs with NSC_COMMAND()
 * and they appear in `nsc --help` and the dispatcher. A verb gets the
 * arguments after its own name (argv[0] is the verb) and returns an exit
 * code (see nsc_exit_code()). */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "rpc.h"

typedef struct Nsc {
        const char *endpoint;     /* "unix:/run/hostmesh/gateway.sock" */
        bool json;                /* -o json */
        uint64_t timeout_usec;    /* --timeout, default 30 s */
        bool tty;                 /* stderr is a terminal: progress lines allowed */
        RpcClient *client;        /* connected lazily by nsc_client() */
} Nsc;

typedef struct NscCommand {
        const char *name;         /* "status", "dns stats", "auth issue-id-token" */
        const char *usage;        /* "[--audience AUD] ..." */
        const char *summary;      /* one line for --help */
        int (*run)(Nsc *n, int argc, char **argv);
} NscCommand;

#define NSC_COMMAND(id, ...)                                                              \
        static const NscCommand nsc_command_##id = { __VA_ARGS__ };                       \
        __attribute__((used, section("nsc_commands"), aligned(8)))                        \
        static const NscCommand *const nsc_command_ptr_##id = &nsc_command_##id

/* Exit codes, documented in `nsc --help`. */
enum {
        NSC_EXIT_OK = 0,
        NSC_EXIT_FAILURE = 1,          /* the service refused or failed; message printed */
        NSC_EXIT_USAGE = 2,            /* bad command line */
        NSC_EXIT_UNAVAILABLE = 3,      /* gateway or a service not reachable */
        NSC_EXIT_NOT_FOUND = 4,
        NSC_EXIT_DENIED = 5,           /* PERMISSION_DENIED or UNAUTHENTICATED */
        NSC_EXIT_INVALID = 6,          /* INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE */
        NSC_EXIT_EXHAUSTED = 7,        /* RESOURCE_EXHAUSTED */
        NSC_EXIT_TIMEOUT = 8,          /* DEADLINE_EXCEEDED */
};
int nsc_exit_code(RpcCode code);

RpcClient *nsc_client(Nsc *n);

/* Unary call through the gateway. On failure prints the error (plain: what
 * went wrong and what to do; JSON: {"error":{"code":..,"message":..}} on
 * stdout) and returns the exit code to use (> 0); 0 on success. */
int nsc_call(Nsc *n, const char *method, const ProtobufCMessage *request,
             const ProtobufCMessageDescriptor *response_type, ProtobufCMessage **ret_response);
/* Server-streaming call, same error handling. */
int nsc_call_stream(Nsc *n, const char *method, const ProtobufCMessage *request,
                    const ProtobufCMessageDescriptor *response_type, RpcStreamCallback on_message,
                    void *userdata);

/* Prints a usage or local error the same way as service errors; returns the exit code. */
int nsc_fail(Nsc *n, int exit_code, const char *code_name, const char *format, ...) _printf_(4, 5);
int nsc_usage(Nsc *n, const NscCommand *cmd, const char *format, ...) _printf_(3, 4);
/* Prints a JSON value (steals the reference) on stdout, indented. */
void nsc_print_json(json_t *v);
/* Formats a protobuf Timestamp-like seconds value as RFC 3339 UTC. */
char *nsc_format_time(int64_t seconds, int32_t nanos);
