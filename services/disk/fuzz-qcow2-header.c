/* SPDX-License-Identifier: MIT */
/* qcow2 headers come from files users register as base images: parse
 * anything without reading out of bounds; what parses must be sane. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "disk-qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Qcow2Info info;

        if (qcow2_parse_header(data, size, &info) == 0) {
                if (strlen(info.backing_file) > QCOW2_BACKING_NAME_MAX || info.cluster_bits < 9 ||
                    info.cluster_bits > 21)
                        abort();
        }
        return 0;
}
