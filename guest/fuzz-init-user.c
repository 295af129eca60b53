/* SPDX-License-Identifier: MIT */
/* A container's /etc/passwd and /etc/group are the image author's: parse
 * anything. Input: SPEC '\0' PASSWD '\0' GROUP. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "init-user.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *buf = malloc(size + 3), *spec, *passwd, *group;
        const char *error = NULL;
        UserIds ids;

        if (!buf)
                return 0;
        memcpy(buf, data, size);
        buf[size] = buf[size + 1] = buf[size + 2] = '\0';
        spec = buf;
        passwd = spec + strlen(spec) + 1;
        group = passwd + strlen(passwd) + 1;
        if (passwd > buf + size)
                passwd = buf + size;
        if (group > buf + size + 1)
                group = buf + size + 1;
        if (user_resolve(spec, passwd, group, &ids, &error) == 0 && ids.n_groups > USER_GROUPS_MAX)
                abort();
        free(buf);
        return 0;
}
