/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to the loader of dnsd's state file (records.json):
 * whatever it accepts must dump and load again to the same records. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns-local.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        DnsLocal *a = NULL, *b = NULL;
        size_t loaded = 0, again = 0, skipped = 0;
        char *dump = NULL;

        if (size > 1 << 20 || dns_local_new(&a) < 0 || dns_local_new(&b) < 0)
                abort();
        (void) dns_local_add_zone(a, "hostmesh.internal");
        if (dns_local_load_json(a, (const char *) data, size, &loaded, &skipped) == 0) {
                if (dns_local_count(a) > loaded)
                        abort();
                if (dns_local_dump_json(a, &dump) < 0)
                        abort();
                if (dns_local_load_json(b, dump, strlen(dump), &again, &skipped) < 0 || skipped != 0 ||
                    dns_local_count(b) != dns_local_count(a))
                        abort();
                free(dump);
        }
        dns_local_free(a);
        dns_local_free(b);
        return 0;
}
