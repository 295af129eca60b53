/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc-status.h"

static void test_errno_to_code(void **state) {
        static const struct {
                int error;
                RpcCode code;
        } table[] = {
                { 0, RPC_OK },
                { -EINVAL, RPC_INVALID_ARGUMENT },
                { -EDOM, RPC_INVALID_ARGUMENT },
                { -ENOENT, RPC_NOT_FOUND },
                { -EEXIST, RPC_ALREADY_EXISTS },
                { -EPERM, RPC_PERMISSION_DENIED },
                { -EACCES, RPC_PERMISSION_DENIED },
                { -ENOSPC, RPC_RESOURCE_EXHAUSTED },
                { -EBUSY, RPC_FAILED_PRECONDITION },
                { -ETIMEDOUT, RPC_DEADLINE_EXCEEDED },
                { -ECONNREFUSED, RPC_UNAVAILABLE },
                { -ECANCELED, RPC_CANCELLED },
                { -ERANGE, RPC_OUT_OF_RANGE },
                { -EOPNOTSUPP, RPC_UNIMPLEMENTED },
                { -EKEYREJECTED, RPC_UNAUTHENTICATED },
                { -EPROTO, RPC_DATA_LOSS },
                { -EIO, RPC_INTERNAL },
                { -EFAULT, RPC_INTERNAL },
        };
        (void) state;
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
                assert_int_equal(rpc_code_from_errno(table[i].error), table[i].code);
}

static void test_every_code_round_trips_through_errno(void **state) {
        (void) state;
        for (int c = 0; c < _RPC_CODE_MAX; c++) {
                if (c == RPC_UNKNOWN)
                        continue; /* UNKNOWN and INTERNAL share -EIO */
                assert_int_equal(rpc_code_from_errno(rpc_errno_from_code((RpcCode) c)), c);
        }
}

static void test_names(void **state) {
        (void) state;
        assert_string_equal(rpc_code_to_string(RPC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
        assert_string_equal(rpc_code_to_string((RpcCode) 99), "UNKNOWN");
        assert_int_equal(rpc_code_from_string("not_found"), RPC_NOT_FOUND);
        assert_int_equal(rpc_code_from_string("NOPE"), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_errno_to_code),
                cmocka_unit_test(test_every_code_round_trips_through_errno),
                cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
