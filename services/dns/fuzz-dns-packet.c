/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to every parser that sees network input: the query
 * parser (client packets), the message parser and rdata formatter
 * (upstream replies), OPT stripping and truncation (replies to clients). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns-packet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t buf[DNS_PACKET_MAX];
        DnsQuery q;
        DnsMessage m;

        if (size > DNS_PACKET_MAX)
                return 0;
        if (dns_query_parse(data, size, &q) == 0) {
                uint8_t out[DNS_PACKET_MAX];
                (void) dns_reply_error(&q, DNS_RCODE_FORMERR, true, out, sizeof(out));
        }
        if (dns_message_parse(data, size, &m) == 0) {
                for (size_t i = 0; i < m.n_rrs; i++)
                        free(dns_rdata_to_string(data, size, &m.rrs[i]));
                memcpy(buf, data, size);
                (void) dns_message_strip_opt(buf, size, &m);
                dns_message_done(&m);
                memcpy(buf, data, size);
                (void) dns_reply_truncate(buf, size, size > 64 ? size / 2 : 12);
        }
        return 0;
}
