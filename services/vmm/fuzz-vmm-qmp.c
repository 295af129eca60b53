/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to the QMP message parser, as vmmd does with each
 * line QEMU sends. */
#include <stdint.h>
#include <string.h>

#include "vmm-qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        QmpMessage m;

        if (size > QMP_LINE_MAX)
                return 0;
        if (qmp_message_parse((const char *) data, size, &m) >= 0) {
                /* Touch what the client uses. */
                if (m.type == QMP_MESSAGE_EVENT && m.event)
                        (void) strlen(m.event);
                if (m.type == QMP_MESSAGE_ERROR && m.error_desc)
                        (void) strlen(m.error_desc);
                qmp_message_done(&m);
        }
        return 0;
}
