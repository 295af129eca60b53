/* SPDX-License-Identifier: MIT */
/* The batches build, and the scope check accepts ours and refuses anything
 * touching another table or family, and malformed bytes. No privilege. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/table.h>

#include "vmm-nft.h"

static NftNetwork net(void) {
        NftNetwork n = { .bridge = "hm0", .prefixlen = 16, .dns_port = 5353 };

        inet_pton(AF_INET, "10.88.0.1", &n.gateway);
        inet_pton(AF_INET, "10.88.0.0", &n.pool);
        return n;
}

static NftInstance inst(const char *tap, const char *address, uint8_t last) {
        NftInstance i = { .tap = tap, .mac = { 0x02, 0x48, 0x4d, 0, 0, last } };

        inet_pton(AF_INET, address, &i.address);
        return i;
}

static NftPair pair(const char *a, const char *b) {
        NftPair p;

        inet_pton(AF_INET, a, &p.a);
        inet_pton(AF_INET, b, &p.b);
        return p;
}

static NftBatch *replace_batch(void) {
        NftNetwork n = net();
        NftInstance is[] = { inst("hmt0", "10.88.0.2", 2), inst("hmt1", "10.88.0.3", 3) };
        NftPair ps[] = { pair("10.88.0.2", "10.88.0.3"), pair("10.88.0.3", "10.88.0.2") };
        NftBatch *b = NULL;

        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_replace_table(b, &n, is, 2, ps, 2), 0);
        return b;
}

static void test_replace_table_batch_is_in_scope(void **state) {
        NftBatch *b = replace_batch();

        (void) state;
        assert_true(nft_batch_size(b) > 1000);
        assert_int_equal(nft_batch_check_scope(nft_batch_data(b), nft_batch_size(b)), 0);
        nft_batch_free(b);
}

static void test_instance_batches_are_in_scope(void **state) {
        NftNetwork n = net();
        NftInstance i = inst("hmt7", "10.88.0.9", 9);
        NftPair ps[] = { pair("10.88.0.9", "10.88.0.3") };
        NftBatch *b = NULL;

        (void) state;
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_add_instance(b, &n, &i, ps, 1), 0);
        assert_int_equal(nft_batch_check_scope(nft_batch_data(b), nft_batch_size(b)), 0);
        nft_batch_free(b);

        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_remove_instance(b, &n, &i, ps, 1), 0);
        assert_int_equal(nft_batch_check_scope(nft_batch_data(b), nft_batch_size(b)), 0);
        nft_batch_free(b);
}

static void test_one_batch_is_one_transaction(void **state) {
        NftNetwork n = net();
        NftInstance i = inst("hmt7", "10.88.0.9", 9);
        NftBatch *b = NULL;

        (void) state;
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_add_instance(b, &n, &i, NULL, 0), 0);
        assert_int_equal(nft_batch_add_instance(b, &n, &i, NULL, 0), -EBUSY);
        nft_batch_free(b);
}

static void test_bad_arguments_are_refused(void **state) {
        NftNetwork n = net();
        NftInstance long_name = inst("a-tap-name-too-long", "10.88.0.9", 9);
        NftInstance bad = inst("x\"y", "10.88.0.9", 9);
        NftBatch *b = NULL;
        char *text = NULL;

        (void) state;
        assert_int_equal(nft_batch_new(&b), 0);
        assert_int_equal(nft_batch_add_instance(b, &n, &long_name, NULL, 0), -EINVAL);
        assert_int_equal(nft_batch_add_instance(b, &n, &bad, NULL, 0), -EINVAL);
        n.prefixlen = 31;
        assert_int_equal(nft_batch_replace_table(b, &n, NULL, 0, NULL, 0), -EINVAL);
        assert_int_equal(nft_text_replace_table(&n, NULL, 0, NULL, 0, &text), -EINVAL);
        nft_batch_free(b);
}

/* A batch of one DELTABLE (or NEWTABLE) message, with the given family and
 * name, and optionally a table handle or flags. */
static size_t table_batch(char *buf, uint16_t type, uint16_t family, const char *name, bool handle, bool flags) {
        struct nftnl_table *t = nftnl_table_alloc();
        struct nlmsghdr *nlh;
        size_t off = 0;

        nlh = nftnl_batch_begin(buf, 1);
        off += nlh->nlmsg_len;
        nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, family);
        nftnl_table_set_str(t, NFTNL_TABLE_NAME, name);
        if (handle)
                nftnl_table_set_u64(t, NFTNL_TABLE_HANDLE, 7);
        if (flags)
                nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, NFT_TABLE_F_OWNER);
        nlh = nftnl_nlmsg_build_hdr(buf + off, type, family, NLM_F_ACK, 2);
        nftnl_table_nlmsg_build_payload(nlh, t);
        off += MNL_ALIGN(nlh->nlmsg_len);
        nlh = nftnl_batch_end(buf + off, 3);
        off += nlh->nlmsg_len;
        nftnl_table_free(t);
        return off;
}

static void test_scope_refuses_other_table_family_handle_and_flags(void **state) {
        char buf[4096] = {};
        size_t n;

        (void) state;
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_INET, "hostmesh", false, false);
        assert_int_equal(nft_batch_check_scope(buf, n), 0);

        memset(buf, 0, sizeof(buf));
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_INET, "filter", false, false);
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);

        memset(buf, 0, sizeof(buf));
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_IPV4, "hostmesh", false, false);
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);

        memset(buf, 0, sizeof(buf));
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_INET, "hostmeshx", false, false);
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);

        /* The kernel would delete the table with handle 7, whatever its name. */
        memset(buf, 0, sizeof(buf));
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_INET, "hostmesh", true, false);
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);

        /* An owner flag would tie the table to the helper's socket. */
        memset(buf, 0, sizeof(buf));
        n = table_batch(buf, NFT_MSG_NEWTABLE, NFPROTO_INET, "hostmesh", false, false);
        assert_int_equal(nft_batch_check_scope(buf, n), 0);
        memset(buf, 0, sizeof(buf));
        n = table_batch(buf, NFT_MSG_NEWTABLE, NFPROTO_INET, "hostmesh", false, true);
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);
}

static void test_scope_refuses_a_second_table_attribute(void **state) {
        char buf[4096] = {};
        struct nlmsghdr *msg;
        size_t n;

        (void) state;
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_INET, "hostmesh", false, false);
        /* Append NFTA_TABLE_NAME "filter" to the DELTABLE message and move
         * the end marker behind it: the kernel would use the last one. */
        msg = (struct nlmsghdr *) (buf + MNL_ALIGN(((struct nlmsghdr *) buf)->nlmsg_len));
        {
                char end[64];
                size_t end_len = n - ((char *) msg - buf) - MNL_ALIGN(msg->nlmsg_len);

                memcpy(end, (char *) msg + MNL_ALIGN(msg->nlmsg_len), end_len);
                mnl_attr_put_strz(msg, NFTA_TABLE_NAME, "filter");
                memcpy((char *) msg + MNL_ALIGN(msg->nlmsg_len), end, end_len);
                n = ((char *) msg - buf) + MNL_ALIGN(msg->nlmsg_len) + end_len;
        }
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);
}

static void test_scope_refuses_other_subsystems_and_gets(void **state) {
        char buf[4096] = {};
        struct nlmsghdr *begin = (struct nlmsghdr *) buf, *msg;
        size_t n;

        (void) state;
        n = table_batch(buf, NFT_MSG_DELTABLE, NFPROTO_INET, "hostmesh", false, false);
        msg = (struct nlmsghdr *) (buf + MNL_ALIGN(begin->nlmsg_len));

        msg->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);
        msg->nlmsg_type = (NFNL_SUBSYS_IPSET << 8) | NFT_MSG_DELTABLE;
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);
        msg->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE;
        assert_int_equal(nft_batch_check_scope(buf, n), 0);

        /* The begin marker names the subsystem the whole batch goes to. */
        ((struct nfgenmsg *) mnl_nlmsg_get_payload(begin))->res_id = htons(NFNL_SUBSYS_IPSET);
        assert_int_equal(nft_batch_check_scope(buf, n), -EPERM);
}

static void test_scope_refuses_truncated_and_garbled_batches(void **state) {
        NftBatch *b = replace_batch();
        const char *data = nft_batch_data(b);
        size_t size = nft_batch_size(b);
        char *copy;

        (void) state;
        assert_int_equal(nft_batch_check_scope(NULL, 0), -EBADMSG);
        for (size_t k = 0; k < size; k++)
                assert_int_equal(nft_batch_check_scope(data, k), -EBADMSG);

        copy = malloc(size + 8);
        /* Trailing bytes after the end marker. */
        memcpy(copy, data, size);
        memset(copy + size, 0, 8);
        assert_int_equal(nft_batch_check_scope(copy, size + 8), -EBADMSG);

        /* nlmsg_len of the first object message shorter than a header. */
        memcpy(copy, data, size);
        ((struct nlmsghdr *) (copy + MNL_ALIGN(((struct nlmsghdr *) copy)->nlmsg_len)))->nlmsg_len = 3;
        assert_int_equal(nft_batch_check_scope(copy, size), -EBADMSG);

        /* Every single byte flipped: refused or accepted, never a crash, and
         * never accepted with another table name. */
        for (size_t k = 0; k < size; k++) {
                int r;

                memcpy(copy, data, size);
                copy[k] ^= 0x5a;
                r = nft_batch_check_scope(copy, size);
                assert_true(r == 0 || r == -EPERM || r == -EBADMSG);
        }
        free(copy);
        nft_batch_free(b);
}

static void test_text_has_the_rules(void **state) {
        NftNetwork n = net();
        NftInstance is[] = { inst("hmt0", "10.88.0.2", 2) };
        NftPair ps[] = { pair("10.88.0.2", "10.88.0.3") };
        char *t = NULL;

        (void) state;
        assert_int_equal(nft_text_replace_table(&n, is, 1, ps, 1, &t), 0);
        assert_non_null(strstr(t, "delete table inet hostmesh\n"));
        assert_non_null(strstr(t, "elements = { 10.88.0.2 . 10.88.0.3 }"));
        assert_non_null(strstr(t, "dnat ip to 10.88.0.1:5353"));
        assert_non_null(strstr(t, "ip saddr 10.88.0.0/16 counter masquerade"));
        assert_non_null(strstr(t, "chain guard-hmt0 {\n\t\ttype filter hook ingress device \"hmt0\" priority -500;"));
        assert_non_null(strstr(t, "ether saddr != 02:48:4d:00:00:02 counter drop"));
        free(t);

        assert_int_equal(nft_text_add_instance(&n, &is[0], ps, 1, &t), 0);
        assert_non_null(strstr(t, "add rule inet hostmesh guard-hmt0 meta nfproto ipv4 ip saddr != 10.88.0.2"));
        assert_non_null(strstr(t, "add element inet hostmesh peers { 10.88.0.2 . 10.88.0.3 }"));
        free(t);

        assert_int_equal(nft_text_remove_instance(&n, &is[0], ps, 1, &t), 0);
        assert_non_null(strstr(t, "delete element inet hostmesh peers { 10.88.0.2 . 10.88.0.3 }\n"
                                  "flush chain inet hostmesh guard-hmt0\ndelete chain inet hostmesh guard-hmt0\n"));
        free(t);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_replace_table_batch_is_in_scope),
                cmocka_unit_test(test_instance_batches_are_in_scope),
                cmocka_unit_test(test_one_batch_is_one_transaction),
                cmocka_unit_test(test_bad_arguments_are_refused),
                cmocka_unit_test(test_scope_refuses_other_table_family_handle_and_flags),
                cmocka_unit_test(test_scope_refuses_a_second_table_attribute),
                cmocka_unit_test(test_scope_refuses_other_subsystems_and_gets),
                cmocka_unit_test(test_scope_refuses_truncated_and_garbled_batches),
                cmocka_unit_test(test_text_has_the_rules),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
