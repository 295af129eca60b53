/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>

#include "config.h"
#include "fs-util.h"
#include "macro.h"

typedef struct TestConfig {
        char *name;
        char *empty;
        char **list;
        bool enabled;
        uint64_t count;
        uint32_t small;
        uint64_t timeout;
        uint64_t size;
        char *other;
        double ratio;
} TestConfig;

static const ConfigItem table[] = {
        CONFIG_ITEM("main", "name", config_type_string, TestConfig, name, "A name"),
        CONFIG_ITEM("main", "empty", config_type_string, TestConfig, empty, "Unset by default"),
        CONFIG_ITEM("main", "list", config_type_strv, TestConfig, list, "Some words"),
        CONFIG_ITEM("main", "enabled", config_type_bool, TestConfig, enabled, "On or off"),
        CONFIG_ITEM("limits", "count", config_type_uint64, TestConfig, count, "A count"),
        CONFIG_ITEM("limits", "small", config_type_uint32, TestConfig, small, "A small count"),
        CONFIG_ITEM("limits", "timeout", config_type_usec, TestConfig, timeout, "A duration"),
        CONFIG_ITEM("limits", "size", config_type_size, TestConfig, size, "A size"),
        CONFIG_ITEM("limits", "ratio", config_type_double, TestConfig, ratio, "A ratio"),
        /* Interleaved on purpose: printed under the first [main]. */
        CONFIG_ITEM("main", "other", config_type_string, TestConfig, other, "Another string"),
};

static void defaults(TestConfig *c) {
        *c = (TestConfig){ .count = 7, .small = 3, .timeout = 10 * USEC_PER_SEC, .size = 1024 };
        c->name = strdup("default");
        c->list = calloc(3, sizeof(char *));
        c->list[0] = strdup("d1");
        c->list[1] = strdup("d2");
}

static char *print(const TestConfig *c) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        config_print(table, ELEMENTSOF(table), c, f);
        assert_int_equal(fclose(f), 0);
        return text;
}

static void assert_same(const TestConfig *a, const TestConfig *b) {
        assert_true(streq_ptr(a->name, b->name));
        assert_true(streq_ptr(a->empty, b->empty));
        assert_true(streq_ptr(a->other, b->other));
        assert_int_equal(a->enabled, b->enabled);
        assert_true(a->count == b->count);
        assert_int_equal(a->small, b->small);
        assert_true(a->timeout == b->timeout);
        assert_true(a->size == b->size);
        assert_true(a->ratio == b->ratio);
        assert_int_equal(!a->list, !b->list);
        if (a->list) {
                size_t i;
                for (i = 0; a->list[i]; i++)
                        assert_string_equal(a->list[i], b->list[i]);
                assert_null(b->list[i]);
        }
}

static int load(TestConfig *c, const char *text, char **error) {
        return config_load_string(table, ELEMENTSOF(table), c, "test.conf", text, error);
}

static void test_config_parses_every_type(void **state) {
        TestConfig c;
        char *error = NULL;

        defaults(&c);
        assert_int_equal(load(&c,
                              "# a comment\n"
                              "\n"
                              "[main]\n"
                              "  name =  hello world  \n"
                              "enabled = yes\n"
                              "list = a b\n"
                              "list = c\n"
                              "[limits]\n"
                              "count=18446744073709551615\n"
                              "small = 4294967295\n"
                              "timeout = 1h30m\n"
                              "size = 64G\r\n",
                              &error),
                         0);
        assert_null(error);
        assert_string_equal(c.name, "hello world");
        assert_true(c.enabled);
        /* The first list line replaces the default, the next one appends. */
        assert_string_equal(c.list[0], "a");
        assert_string_equal(c.list[1], "b");
        assert_string_equal(c.list[2], "c");
        assert_null(c.list[3]);
        assert_true(c.count == UINT64_MAX);
        assert_true(c.small == UINT32_MAX);
        assert_true(c.timeout == 5400 * USEC_PER_SEC);
        assert_true(c.size == 64ULL << 30);
        assert_null(c.empty);
        config_done(table, ELEMENTSOF(table), &c);
        assert_null(c.name);
        assert_null(c.list);
}

static void test_config_later_value_replaces_and_empty_unsets(void **state) {
        TestConfig c;

        defaults(&c);
        assert_int_equal(load(&c, "[main]\nname = one\nname = two\nlist =\nempty = \"\"\n", NULL), 0);
        assert_string_equal(c.name, "two");
        assert_null(c.list);
        assert_string_equal(c.empty, "");
        assert_int_equal(load(&c, "[main]\nname =\n", NULL), 0);
        assert_null(c.name);
        config_done(table, ELEMENTSOF(table), &c);
}

static void test_config_print_is_normalized(void **state) {
        TestConfig c;
        char *text;

        defaults(&c);
        text = print(&c);
        assert_string_equal(text,
                            "[main]\n"
                            "name = default\n"
                            "empty =\n"
                            "list = d1 d2\n"
                            "enabled = no\n"
                            "other =\n"
                            "\n"
                            "[limits]\n"
                            "count = 7\n"
                            "small = 3\n"
                            "timeout = 10s\n"
                            "size = 1K\n"
                            "ratio = 0\n");
        free(text);
        config_done(table, ELEMENTSOF(table), &c);
}

static void test_config_print_parses_back_to_the_same_values(void **state) {
        TestConfig c, back;
        char *text, *text2, *error = NULL;

        defaults(&c);
        assert_int_equal(load(&c,
                              "[main]\n"
                              "name = \"  leading and trailing  \"\n"
                              "empty = \"\"\n"
                              "other = \"quote \\\" backslash \\\\ newline \\n tab \\t\"\n"
                              "list = plain \"with space\" \"\" \"q\\\"uote\" x\"y\n"
                              "enabled = on\n"
                              "[limits]\n"
                              "timeout = 1d1us\n"
                              "size = 1.5G\n"
                              "ratio = 0.1\n"
                              "count = 0\n",
                              &error),
                         0);
        assert_null(error);
        assert_string_equal(c.other, "quote \" backslash \\ newline \n tab \t");
        assert_string_equal(c.list[1], "with space");
        assert_string_equal(c.list[2], "");
        assert_string_equal(c.list[3], "q\"uote");
        assert_string_equal(c.list[4], "x\"y");

        text = print(&c);
        /* Parse into different defaults: the printed config must say everything. */
        defaults(&back);
        back.enabled = false;
        back.count = 99;
        assert_int_equal(load(&back, text, &error), 0);
        assert_null(error);
        assert_same(&c, &back);
        /* And printing again is a fixed point. */
        text2 = print(&back);
        assert_string_equal(text, text2);

        free(text);
        free(text2);
        config_done(table, ELEMENTSOF(table), &c);
        config_done(table, ELEMENTSOF(table), &back);
}

static void test_config_errors_name_file_and_line(void **state) {
        static const struct {
                const char *text;
                const char *error;
        } cases[] = {
                { "[main]\nname = x\n[nope]\n", "test.conf:3: Unknown section [nope]" },
                { "\n[main]\nnmae = x\n", "test.conf:3: Unknown key 'nmae' in section [main]" },
                { "[limits]\nname = x\n", "test.conf:2: Unknown key 'name' in section [limits]" },
                { "name = x\n", "test.conf:1: Key 'name' outside of any [section]" },
                { "[main]\njust words\n", "test.conf:2: Expected 'key = value', got 'just words'" },
                { "[main\n", "test.conf:1: Invalid section header '[main'" },
                { "[]\n", "test.conf:1: Invalid section header '[]'" },
                { "[main] x\n", "test.conf:1: Invalid section header '[main] x'" },
                { "[main]\n= x\n", "test.conf:2: Missing key before '='" },
                { "[main]\nenabled = maybe\n", "test.conf:2: Invalid boolean for 'enabled' in [main]: 'maybe' (Invalid argument)" },
                { "#\n#\n[limits]\ncount = 18446744073709551616\n",
                  "test.conf:4: Invalid unsigned integer for 'count' in [limits]: '18446744073709551616' (out of range)" },
                { "[limits]\nsmall = -1\n", "test.conf:2: Invalid unsigned 32-bit integer for 'small' in [limits]: '-1' (Invalid argument)" },
                { "[limits]\ntimeout = 5 parsecs\n", "test.conf:2: Invalid duration for 'timeout' in [limits]: '5 parsecs' (Invalid argument)" },
                { "[limits]\nsize = 12Q\n", "test.conf:2: Invalid size for 'size' in [limits]: '12Q' (Invalid argument)" },
                { "[limits]\nratio = -1\n", "test.conf:2: Invalid number for 'ratio' in [limits]: '-1' (Invalid argument)" },
                { "[limits]\nratio = nan\n", "test.conf:2: Invalid number for 'ratio' in [limits]: 'nan' (Invalid argument)" },
                { "[limits]\nratio = 0x10\n", "test.conf:2: Invalid number for 'ratio' in [limits]: '0x10' (Invalid argument)" },
                { "[limits]\nratio = 1e999\n", "test.conf:2: Invalid number for 'ratio' in [limits]: '1e999' (out of range)" },
                { "[main]\nname = \"unterminated\n", "test.conf:2: Invalid string for 'name' in [main]: '\"unterminated' (Invalid argument)" },
                { "[main]\nlist = \"a\"b\n", "test.conf:2: Invalid list for 'list' in [main]: '\"a\"b' (Invalid argument)" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TestConfig c;
                char *error = NULL;

                defaults(&c);
                assert_int_equal(load(&c, cases[i].text, &error), -EINVAL);
                assert_non_null(error);
                assert_string_equal(error, cases[i].error);
                free(error);
                /* Without an error pointer the result is the same. */
                assert_int_equal(load(&c, cases[i].text, NULL), -EINVAL);
                config_done(table, ELEMENTSOF(table), &c);
        }
}

static void test_config_load_file(void **state) {
        char dir[] = "/tmp/test-config-XXXXXX", *path, *error = NULL;
        TestConfig c;

        assert_non_null(mkdtemp(dir));
        path = path_join(dir, "x.conf");
        defaults(&c);
        assert_int_equal(config_load(table, ELEMENTSOF(table), &c, path, &error), -ENOENT);
        assert_null(error);

        static const char bad[] = "[main]\nname = a\0b\n";
        assert_int_equal(write_file_atomic(path, bad, sizeof(bad) - 1, 0644), 0);
        assert_int_equal(config_load(table, ELEMENTSOF(table), &c, path, &error), -EINVAL);
        assert_non_null(strstr(error, ":2: NUL byte in config file"));
        assert_true(strncmp(error, path, strlen(path)) == 0);
        free(error);

        static const char good[] = "[limits]\ncount = 12\n";
        assert_int_equal(write_file_atomic(path, good, sizeof(good) - 1, 0644), 0);
        assert_int_equal(config_load(table, ELEMENTSOF(table), &c, path, &error), 0);
        assert_true(c.count == 12);

        assert_int_equal(unlink(path), 0);
        assert_int_equal(rmdir(dir), 0);
        free(path);
        config_done(table, ELEMENTSOF(table), &c);
}

static void test_config_refuses_overlong_lists(void **state) {
        TestConfig c;
        char *text = malloc(5000 * 2 + 32), *error = NULL;
        size_t n = 0;

        n += (size_t) sprintf(text, "[main]\nlist =");
        for (int i = 0; i < 5000; i++)
                n += (size_t) sprintf(text + n, " a");
        text[n] = '\0';
        defaults(&c);
        assert_int_equal(load(&c, text, &error), -EINVAL);
        assert_non_null(strstr(error, "test.conf:2: Invalid list for 'list' in [main]"));
        free(error);
        free(text);
        config_done(table, ELEMENTSOF(table), &c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config_parses_every_type),
                cmocka_unit_test(test_config_later_value_replaces_and_empty_unsets),
                cmocka_unit_test(test_config_print_is_normalized),
                cmocka_unit_test(test_config_print_parses_back_to_the_same_values),
                cmocka_unit_test(test_config_errors_name_file_and_line),
                cmocka_unit_test(test_config_load_file),
                cmocka_unit_test(test_config_refuses_overlong_lists),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
