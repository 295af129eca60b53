/* SPDX-License-Identifier: MIT */
/* The resolver against a UDP socket played by the test itself: the test
 * reads dnsd's queries and writes the replies, including bad ones. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "dns-cache.h"
#include "dns-upstream.h"
#include "macro.h"

typedef struct Fixture {
        sd_event *event;
        DnsResolver *resolver;
        int upstream;              /* the test's "upstream" socket */
        char spec[64];
} Fixture;

typedef struct Result {
        DnsWaiter waiter;
        bool done;
        int error;
        uint8_t reply[512];
        size_t len;
} Result;

static void on_result(DnsWaiter *w, int error, const uint8_t *reply, size_t len, const DnsMessage *m) {
        Result *r = w->userdata;
        (void) m;
        r->done = true;
        r->error = error;
        if (reply && len <= sizeof(r->reply)) {
                memcpy(r->reply, reply, len);
                r->len = len;
        }
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof(a);

        assert_non_null(f);
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(dns_resolver_new(f->event, &f->resolver), 0);
        f->upstream = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(f->upstream >= 0);
        assert_int_equal(bind(f->upstream, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(getsockname(f->upstream, (struct sockaddr *) &a, &al), 0);
        snprintf(f->spec, sizeof(f->spec), "127.0.0.1:%u", ntohs(a.sin_port));
        assert_int_equal(dns_resolver_add_upstream(f->resolver, f->spec), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        dns_resolver_free(f->resolver);
        sd_event_unref(f->event);
        close(f->upstream);
        free(f);
        return 0;
}

static int start(Fixture *f, const char *name, Result *r) {
        uint8_t q[DNS_NAME_MAX], key[DNS_CACHE_KEY_MAX];
        size_t ql, kl;

        assert_int_equal(dns_name_from_string(name, q, &ql), 0);
        kl = dns_cache_key(q, ql, DNS_TYPE_A, DNS_CLASS_IN, false, false, key);
        memset(r, 0, sizeof(*r));
        r->waiter.callback = on_result;
        r->waiter.userdata = r;
        return dns_resolver_resolve(f->resolver, key, kl, /* hash= */ ql, q, ql, DNS_TYPE_A, DNS_CLASS_IN, false,
                                    false, &r->waiter);
}

/* Receives one query at the upstream. */
static size_t receive_query(Fixture *f, uint8_t *buf, size_t size, struct sockaddr_in *from) {
        socklen_t fl = sizeof(*from);
        ssize_t n = recvfrom(f->upstream, buf, size, 0, (struct sockaddr *) from, &fl);
        assert_true(n > DNS_HEADER_SIZE);
        return (size_t) n;
}

/* Turns a query into a reply "A 10.0.0.1" (the OPT record dropped). */
static size_t make_reply(const uint8_t *q, size_t qlen, uint8_t *out) {
        static const uint8_t a[4] = { 10, 0, 0, 1 };
        DnsWriter w;
        DnsQuery pq;

        assert_int_equal(dns_query_parse(q, qlen, &pq), 0);
        dns_writer_init(&w, out, 512);
        dns_write_header(&w, pq.id, DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA, 1, 1, 0, 0);
        dns_write_bytes(&w, q + DNS_HEADER_SIZE, pq.question_end - DNS_HEADER_SIZE);
        dns_write_rr(&w, NULL, 0, DNS_TYPE_A, DNS_CLASS_IN, 60, a, 4);
        return w.len;
}

static void run_until(Fixture *f, bool *done) {
        for (int i = 0; i < 200 && !*done; i++)
                assert_true(sd_event_run(f->event, 10 * USEC_PER_MSEC) >= 0);
        assert_true(*done);
}

static void test_resolver_coalesces_and_caps_clients_per_question(void **state) {
        Fixture *f = *state;
        Result r[3];
        uint8_t q[512], reply[512];
        struct sockaddr_in from;
        DnsResolverStats st;
        DnsQuery pq;
        size_t n, rl;

        dns_resolver_set_max_waiters(f->resolver, 2);
        assert_int_equal(start(f, "a.example.test", &r[0]), 0);   /* new transaction */
        assert_int_equal(start(f, "a.example.test", &r[1]), 1);   /* joined */
        assert_int_equal(start(f, "a.example.test", &r[2]), -EBUSY);

        n = receive_query(f, q, sizeof(q), &from);
        assert_int_equal(dns_query_parse(q, n, &pq), 0);
        assert_true(pq.edns);                         /* EDNS0 ... */
        assert_int_equal(pq.udp_size, DNS_EDNS_BUFFER); /* ... with 1232 bytes */
        assert_true(pq.flags & DNS_FLAG_RD);

        /* Wrong ID first: ignored. Then the real reply. */
        rl = make_reply(q, n, reply);
        dns_put_u16(reply, (uint16_t) (pq.id ^ 0x1234));
        assert_int_equal(sendto(f->upstream, reply, rl, 0, (struct sockaddr *) &from, sizeof(from)), (ssize_t) rl);
        dns_put_u16(reply, pq.id);
        assert_int_equal(sendto(f->upstream, reply, rl, 0, (struct sockaddr *) &from, sizeof(from)), (ssize_t) rl);
        run_until(f, &r[1].done);
        assert_true(r[0].done);
        assert_int_equal(r[0].error, 0);
        assert_int_equal(r[1].error, 0);
        assert_int_equal(r[0].len, rl);
        assert_false(r[2].done);

        dns_resolver_get_stats(f->resolver, &st);
        assert_int_equal(st.transactions, 1);
        assert_int_equal(st.coalesced, 1);
        assert_int_equal(st.coalesce_refused, 1);
        assert_int_equal(st.mismatched_replies, 1);
        assert_int_equal(st.in_flight, 0);
}

static void test_resolver_uses_fresh_port_and_id_per_query(void **state) {
        Fixture *f = *state;
        Result r[8];
        uint16_t ports[8], ids[8];
        unsigned distinct_ports = 0, distinct_ids = 0;

        for (int i = 0; i < 8; i++) {
                char name[32];
                uint8_t q[512];
                struct sockaddr_in from;
                size_t n;

                snprintf(name, sizeof(name), "n%d.example.test", i);
                assert_int_equal(start(f, name, &r[i]), 0);
                n = receive_query(f, q, sizeof(q), &from);
                ports[i] = ntohs(from.sin_port);
                ids[i] = dns_get_u16(q);
                (void) n;
        }
        for (int i = 0; i < 8; i++) {
                bool pseen = false, iseen = false;
                for (int j = 0; j < i; j++) {
                        pseen |= ports[j] == ports[i];
                        iseen |= ids[j] == ids[i];
                }
                distinct_ports += !pseen;
                distinct_ids += !iseen;
        }
        /* Eight random 16-bit values: a repeat has odds of ~1 in 2300. */
        assert_true(distinct_ports >= 7);
        assert_true(distinct_ids >= 7);
        /* The waiters live on this stack frame: detach them before it goes. */
        for (int i = 0; i < 8; i++)
                dns_waiter_cancel(&r[i].waiter);
}

static void test_resolver_rejects_reply_with_other_question(void **state) {
        Fixture *f = *state;
        Result r;
        uint8_t q[512], reply[512];
        struct sockaddr_in from;
        DnsResolverStats st;
        size_t n, rl;

        dns_resolver_set_timeout(f->resolver, 100 * USEC_PER_MSEC);
        assert_int_equal(start(f, "b.example.test", &r), 0);
        n = receive_query(f, q, sizeof(q), &from);
        rl = make_reply(q, n, reply);
        reply[DNS_HEADER_SIZE + 1] = 'x'; /* "x.example.test": same ID, other question */
        assert_int_equal(sendto(f->upstream, reply, rl, 0, (struct sockaddr *) &from, sizeof(from)), (ssize_t) rl);
        /* Nothing acceptable arrives: both attempts time out. */
        run_until(f, &r.done);
        assert_int_equal(r.error, -ETIMEDOUT);
        dns_resolver_get_stats(f->resolver, &st);
        assert_int_equal(st.mismatched_replies, 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_resolver_coalesces_and_caps_clients_per_question, setup, teardown),
                cmocka_unit_test_setup_teardown(test_resolver_uses_fresh_port_and_id_per_query, setup, teardown),
                cmocka_unit_test_setup_teardown(test_resolver_rejects_reply_with_other_question, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
