/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to the agent frame decoder and every payload
 * decoder, as vmmd and hostmesh-init do with what the other side sends. */
#include <stdint.h>
#include <stdlib.h>

#include "agent-protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        while (size > 0) {
                AgentFrame f;
                size_t used;
                int r = agent_frame_decode(data, size, &f, &used);

                if (r <= 0)
                        break;
                AgentExec e = {};
                if (agent_exec_decode(&f, &e) >= 0)
                        agent_exec_done(&e);
                AgentReady rd = {};
                if (agent_ready_decode(&f, &rd) >= 0)
                        agent_ready_done(&rd);
                AgentContainer c = {};
                if (agent_container_decode(&f, &c) >= 0)
                        agent_container_done(&c);
                char *ref = NULL;
                if (agent_image_pull_decode(&f, &ref) >= 0)
                        free(ref);
                uint64_t offset;
                const uint8_t *bytes;
                size_t n;
                (void) agent_image_data_decode(&f, &offset, &bytes, &n);
                AgentImageEnd end = {};
                if (agent_image_end_decode(&f, &end) >= 0)
                        agent_image_end_done(&end);
                int32_t v;
                (void) agent_int_decode(&f, &v);
                char *s = NULL;
                if (agent_string_decode(&f, &s) >= 0)
                        free(s);
                data += used;
                size -= used;
        }
        return 0;
}
