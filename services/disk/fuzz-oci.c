/* SPDX-License-Identifier: MIT */
/* Manifests, indexes, configs and docker save manifest.json files come from
 * registries and archives: parse anything; what parses must be in bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "disk-oci.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        OciDocument d;
        OciConfig c;
        DockerSave s;
        OciRef ref;
        char *error = NULL, *text;

        if (oci_document_parse((const char *) data, size, NULL, &d, &error) == 0) {
                const OciDescriptor *pick;
                if (d.kind == OCI_KIND_MANIFEST && !oci_digest_is_valid(d.config.digest))
                        abort();
                for (size_t i = 0; i < d.n_entries; i++)
                        if (!oci_digest_is_valid(d.entries[i].digest))
                                abort();
                (void) oci_index_pick(&d, "linux", "amd64", &pick);
                oci_document_done(&d);
        }
        if (oci_config_parse((const char *) data, size, &c, &error) == 0) {
                /* What diskd keeps of a config must read back. */
                char *json = NULL;
                OciRunConfig again;
                if (oci_run_config_to_json(&c.run, &json) == 0) {
                        if (oci_run_config_from_json(json, &again) < 0)
                                abort();
                        oci_run_config_done(&again);
                        free(json);
                }
                oci_config_done(&c);
        }
        if (size > 0 && data[0] == '{') {
                char *t = strndup((const char *) data, size);
                OciRunConfig r;
                if (t && oci_run_config_from_json(t, &r) == 0)
                        oci_run_config_done(&r);
                free(t);
        }
        if (docker_save_parse((const char *) data, size, &s, &error) == 0) {
                for (size_t i = 0; i < s.n_layers; i++)
                        if (s.layers[i][0] == '/')
                                abort();
                docker_save_done(&s);
        }
        text = strndup((const char *) data, size);
        if (text && oci_ref_parse(text, &ref, &error) == 0) {
                char *formatted = NULL;
                if (!ref.tag[0] && !oci_digest_is_valid(ref.digest))
                        abort();
                if (oci_ref_format(&ref, &formatted) == 0) {
                        OciRef again;
                        if (oci_ref_parse(formatted, &again, NULL) < 0)
                                abort();
                        free(formatted);
                }
        }
        free(text);
        free(error);
        return 0;
}
