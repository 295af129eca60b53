/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmm-instance.h"
#include "vmm-manager.h"
#include "vmm-net.h"

/* A manager with just what the address pool looks at. */
static Manager *manager_with_pool(const char *pool) {
        Manager *m = calloc(1, sizeof(*m));

        assert_non_null(m);
        m->config.network = true;
        m->config.network_pool = strdup(pool);
        m->config.network_bridge = strdup("hm0");
        m->config.network_dns_port = 53;
        m->config.dns_zone = strdup("hostmesh.internal");
        return m;
}

static Instance *add_instance(Manager *m, const char *id, const char *address, const char *tap) {
        Instance *i = instance_new(m, id);

        assert_non_null(i);
        i->address = address ? strdup(address) : NULL;
        i->tap = tap ? strdup(tap) : NULL;
        m->instances = realloc(m->instances, (m->n_instances + 1) * sizeof(Instance *));
        m->instances[m->n_instances++] = i;
        return i;
}

static void manager_done(Manager *m) {
        for (size_t k = 0; k < m->n_instances; k++)
                instance_free(m->instances[k]);
        free(m->instances);
        free(m->config.network_pool);
        free(m->config.network_bridge);
        free(m->config.dns_zone);
        free(m);
}

static void test_pool_gives_the_lowest_free_address_after_the_gateway(void **state) {
        Manager *m = manager_with_pool("10.88.0.0/29"); /* .1 gateway, .2–.6 instances */
        char *a = NULL;

        (void) state;
        assert_int_equal(vmm_net_configure(m), 0);
        assert_int_equal(vmm_net_allocate_address(m, &a), 0);
        assert_string_equal(a, "10.88.0.2");
        free(a);
        add_instance(m, "i1", "10.88.0.2", "hmi1");
        add_instance(m, "i2", "10.88.0.3", "hmi2");
        /* An instance that gave its network back does not hold its address. */
        add_instance(m, "i3", "10.88.0.4", NULL);
        assert_int_equal(vmm_net_allocate_address(m, &a), 0);
        assert_string_equal(a, "10.88.0.4");
        free(a);
        add_instance(m, "i4", "10.88.0.4", "hmi4");
        add_instance(m, "i5", "10.88.0.5", "hmi5");
        add_instance(m, "i6", "10.88.0.6", "hmi6");
        /* .7 is the broadcast address: the pool is exhausted. */
        assert_int_equal(vmm_net_allocate_address(m, &a), -ENOSPC);
        manager_done(m);
}

static void test_bad_pools_are_refused(void **state) {
        static const char *const bad[] = { "10.88.0.1/16", "10.88.0.0/30", "10.0.0.0/7", "10.88.0.0", "nope", NULL };

        (void) state;
        for (size_t k = 0; bad[k]; k++) {
                Manager *m = manager_with_pool(bad[k]);
                assert_int_equal(vmm_net_configure(m), -EINVAL);
                manager_done(m);
        }
}

static void test_mac_and_guest_command_line_follow_the_address(void **state) {
        Manager *m = manager_with_pool("10.88.0.0/16");
        uint8_t mac[6];
        char *cmdline;

        (void) state;
        assert_int_equal(vmm_net_configure(m), 0);
        Instance *i = add_instance(m, "i1", "10.88.1.10", "hmi1");
        vmm_net_mac(i, mac);
        assert_memory_equal(mac, ((uint8_t[]){ 0x02, 0x68, 0x6d, 0x58, 0x01, 0x0a }), 6);
        cmdline = vmm_net_guest_cmdline(m, i);
        assert_string_equal(cmdline, "hostmesh.ip=10.88.1.10 hostmesh.gw=10.88.0.1 hostmesh.dns=10.88.0.1 "
                                     "hostmesh.domain=hostmesh.internal");
        free(cmdline);
        /* Without a tap there is no network to describe. */
        free(i->tap);
        i->tap = NULL;
        assert_null(vmm_net_guest_cmdline(m, i));
        manager_done(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pool_gives_the_lowest_free_address_after_the_gateway),
                cmocka_unit_test(test_bad_pools_are_refused),
                cmocka_unit_test(test_mac_and_guest_command_line_follow_the_address),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
