/* SPDX-License-Identifier: MIT */
#pragma once

/* Config files: `key = value` lines in `[section]`s, `#` comments. Each
 * daemon declares one table (section, key → type → offset in its config
 * struct). Unknown sections or keys are errors, so a typo is never silently
 * ignored. A key given twice replaces the earlier value, except for list
 * types, which append. config_print() writes the normalized config, which
 * config_load() parses back to the same values. */

#include <stddef.h>
#include <stdio.h>

typedef struct ConfigType {
        const char *name;                                  /* "string", "bool", ... */
        int (*parse)(const char *value, void *field);      /* negative errno */
        void (*print)(FILE *f, const void *field);         /* value only */
        void (*done)(void *field);                         /* frees the field's memory */
} ConfigType;

extern const ConfigType config_type_string;  /* char * */
extern const ConfigType config_type_strv;    /* char ** (NULL-terminated), whitespace separated, appends */
extern const ConfigType config_type_bool;    /* bool */
extern const ConfigType config_type_uint64;  /* uint64_t */
extern const ConfigType config_type_uint32;  /* uint32_t */
extern const ConfigType config_type_usec;    /* uint64_t microseconds, written "10m" */
extern const ConfigType config_type_size;    /* uint64_t bytes, written "64G" */
extern const ConfigType config_type_double;  /* double, finite and >= 0 ("1.5") */

typedef struct ConfigItem {
        const char *section;
        const char *key;
        const ConfigType *type;
        size_t offset;
        const char *help;
} ConfigItem;

#define CONFIG_ITEM(sec, k, t, structtype, member, h) \
        { .section = (sec), .key = (k), .type = &(t), .offset = offsetof(structtype, member), .help = (h) }

/* Parses `path` into `cfg` (which holds defaults already). A missing file is
 * -ENOENT. On a parse error returns -EINVAL and, when ret_error is not NULL,
 * a message "PATH:LINE: what is wrong" to be freed by the caller. */
int config_load(const ConfigItem *table, size_t n_items, void *cfg, const char *path, char **ret_error);
/* Same, from a string (tests, fuzzers); `name` is used in messages. */
int config_load_string(const ConfigItem *table, size_t n_items, void *cfg, const char *name,
                       const char *text, char **ret_error);
void config_print(const ConfigItem *table, size_t n_items, const void *cfg, FILE *f);
void config_done(const ConfigItem *table, size_t n_items, void *cfg);
