/* SPDX-License-Identifier: MIT */
/* The image's User against a container's /etc/passwd and /etc/group: the
 * forms runc takes, and the exact refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "init-user.h"

static const char passwd[] =
        "# comment:x:7:7\n"
        "root:x:0:0:root:/root:/bin/sh\n"
        "broken line without fields\n"
        "bad:x:notanumber:1:::\n"
        "rel:x:2000:2000::home/rel:/bin/sh\n"   /* a relative home is "/" */
        "app:x:1000:1001:App:/home/app:/bin/sh\n"
        "big:x:2147483648:1:::\n"              /* over INT32_MAX: skipped */
        "web:x:33:33::/var/www:/usr/sbin/nologin"; /* no final newline */
static const char group[] =
        "root:x:0:\n"
        "staff:x:50:app,web\n"
        "apps:x:1001:\n"
        "audio:x:29:web,app\n"
        "other:x:77:application\n";            /* "application" is not "app" */

static void test_names_and_numbers(void **state) {
        const char *error = NULL;
        UserIds ids;

        (void) state;
        assert_int_equal(user_resolve("app", passwd, group, &ids, &error), 0);
        assert_int_equal(ids.uid, 1000);
        assert_int_equal(ids.gid, 1001);
        assert_int_equal(ids.n_groups, 2);
        assert_int_equal(ids.groups[0], 50);
        assert_int_equal(ids.groups[1], 29);
        assert_string_equal(ids.home, "/home/app");
        /* A uid in passwd is that user (and its groups). */
        assert_int_equal(user_resolve("33", passwd, group, &ids, &error), 0);
        assert_int_equal(ids.gid, 33);
        assert_int_equal(ids.n_groups, 2);
        assert_string_equal(ids.home, "/var/www");
        /* A uid not in passwd: gid 0, no groups. */
        assert_int_equal(user_resolve("4242", passwd, group, &ids, &error), 0);
        assert_int_equal(ids.uid, 4242);
        assert_int_equal(ids.gid, 0);
        assert_int_equal(ids.n_groups, 0);
        assert_string_equal(ids.home, "/");  /* not in passwd: "/", as runc */
        /* user:group sets the primary group and no supplementary ones. */
        assert_int_equal(user_resolve("app:staff", passwd, group, &ids, &error), 0);
        assert_int_equal(ids.uid, 1000);
        assert_int_equal(ids.gid, 50);
        assert_int_equal(ids.n_groups, 0);
        assert_int_equal(user_resolve("rel", passwd, group, &ids, &error), 0);
        assert_string_equal(ids.home, "/");
        assert_int_equal(user_resolve("1000:1000", "", "", &ids, &error), 0);
        assert_int_equal(ids.uid, 1000);
        assert_int_equal(ids.gid, 1000);
}

static void test_refusals(void **state) {
        const char *error = NULL;
        UserIds ids;

        (void) state;
        assert_int_equal(user_resolve("nobody", passwd, group, &ids, &error), -ENOENT);
        assert_string_equal(error, "no such user in the image's /etc/passwd");
        assert_int_equal(user_resolve("app:wheel", passwd, group, &ids, &error), -ENOENT);
        assert_string_equal(error, "no such group in the image's /etc/group");
        /* The skipped lines name no one. */
        assert_int_equal(user_resolve("bad", passwd, group, &ids, &error), -ENOENT);
        assert_int_equal(user_resolve("big", passwd, group, &ids, &error), -ENOENT);
        for (const char *s = "a:b:c\0:app\0app:\0a b\0../x/y\0" "99999999999\0"; *s; s += strlen(s) + 1) {
                int r = user_resolve(s, passwd, group, &ids, &error);
                assert_true(r == -EINVAL || (r == -ENOENT && strcmp(s, "99999999999") == 0));
        }
        assert_int_equal(user_resolve("", passwd, group, &ids, &error), -EINVAL);
        assert_string_equal(error, "not a user, uid, user:group or uid:gid");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names_and_numbers),
                cmocka_unit_test(test_refusals),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
