/* SPDX-License-Identifier: MIT */
#pragma once

/* Optional HTTP listener serving GET /metrics with every part's metrics,
 * for Prometheus or a metrics shipper to scrape. Scraping asks each part,
 * which starts parts that had exited on idle. */

typedef struct Manager Manager;

int gateway_http_start(Manager *m);
void gateway_http_stop(Manager *m);

/* The TCP listener (tcp_listen, or the socket systemd passes as "tcp") and
 * the unix socket's connections: HTTP/2 goes to gRPC, HTTP/1.1 to Connect. */
int gateway_listeners_start(Manager *m);
void gateway_listeners_stop(Manager *m);
