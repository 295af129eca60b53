/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary text to the config parser with a table holding every
 * type; whatever parses must print and parse back to the same text. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "macro.h"

typedef struct FuzzConfig {
        char *s;
        char **l;
        bool b;
        uint64_t u64;
        uint32_t u32;
        uint64_t usec;
        uint64_t size;
        double d;
} FuzzConfig;

static const ConfigItem table[] = {
        CONFIG_ITEM("a", "s", config_type_string, FuzzConfig, s, NULL),
        CONFIG_ITEM("a", "l", config_type_strv, FuzzConfig, l, NULL),
        CONFIG_ITEM("a", "b", config_type_bool, FuzzConfig, b, NULL),
        CONFIG_ITEM("b", "u64", config_type_uint64, FuzzConfig, u64, NULL),
        CONFIG_ITEM("b", "u32", config_type_uint32, FuzzConfig, u32, NULL),
        CONFIG_ITEM("b", "usec", config_type_usec, FuzzConfig, usec, NULL),
        CONFIG_ITEM("b", "size", config_type_size, FuzzConfig, size, NULL),
        CONFIG_ITEM("b", "d", config_type_double, FuzzConfig, d, NULL),
};

static char *print(const FuzzConfig *c) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                abort();
        config_print(table, ELEMENTSOF(table), c, f);
        fclose(f);
        return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzConfig c = {}, back = {};
        char *text, *error = NULL, *printed, *printed2;

        if (size > 64 * 1024)
                return 0;
        text = strndup((const char *) data, size);
        if (!text)
                return 0;

        if (config_load_string(table, ELEMENTSOF(table), &c, "fuzz", text, &error) == 0) {
                if (error)
                        abort();
                printed = print(&c);
                if (config_load_string(table, ELEMENTSOF(table), &back, "printed", printed, &error) != 0) {
                        fprintf(stderr, "printed config does not parse: %s\n", error);
                        abort();
                }
                printed2 = print(&back);
                if (strcmp(printed, printed2) != 0)
                        abort();
                free(printed);
                free(printed2);
        } else if (strncmp(error ? error : "", "fuzz:", 5) != 0)
                abort(); /* every parse error names the input and line */

        free(error);
        config_done(table, ELEMENTSOF(table), &c);
        config_done(table, ELEMENTSOF(table), &back);
        free(text);
        return 0;
}
