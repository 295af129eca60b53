/* SPDX-License-Identifier: MIT */
/* Tar layers come from registries and from files users import: the header
 * parser, the PAX parser and the reader over whole (possibly gzip) streams
 * must take anything without reading out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "disk-tar.h"

typedef struct Mem {
        const uint8_t *data;
        size_t len, pos;
} Mem;

static ssize_t mem_read(void *userdata, void *buf, size_t n) {
        Mem *m = userdata;
        if (n > m->len - m->pos)
                n = m->len - m->pos;
        memcpy(buf, m->data + m->pos, n);
        m->pos += n;
        return (ssize_t) n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        TarLimits limits = { .max_bytes = 1 << 20, .max_entries = 1000, .max_header = 64 << 10 };
        Mem m = { .data = data, .len = size };
        TarReader *r = NULL;
        TarHeader h;
        TarPax pax;
        TarEntry *e = malloc(sizeof(*e));
        char *error = NULL;
        uint8_t buf[4096];

        if (size >= TAR_BLOCK && tar_header_parse(data, &h) == 0 &&
            (strlen(h.name) > 256 || strlen(h.linkname) > 100 || h.mode > 07777))
                abort();
        if (tar_pax_parse((const char *) data, size, &pax) == 0) {
                if ((pax.path && strlen(pax.path) >= TAR_PATH_MAX) || (pax.linkpath && strlen(pax.linkpath) >= TAR_PATH_MAX))
                        abort();
                tar_pax_done(&pax);
        }
        if (e && tar_reader_new(mem_read, &m, &limits, &r) == 0) {
                for (int i = 0; i < 1000 && tar_reader_next(r, e, &error) > 0; i++) {
                        if (strlen(e->path) >= TAR_PATH_MAX || !strchr("0123456", e->type))
                                abort();
                        if (i % 2)
                                while (tar_reader_read_data(r, buf, sizeof(buf)) > 0)
                                        ;
                }
                tar_reader_free(r);
        }
        free(error);
        free(e);
        return 0;
}
