/* SPDX-License-Identifier: MIT */
/* The layer unpacker against archives built here, hostile ones included:
 * every refusal is asserted with its exact message, and nothing may land
 * outside the tree. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cmocka.h>

#include "disk-tar.h"
#include "macro.h"

typedef struct Buf {
        uint8_t *data;
        size_t len, pos;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n) {
        b->data = realloc(b->data, b->len + n);
        assert_non_null(b->data);
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

/* One ustar header (POSIX.1-1988 layout) and its data, padded to blocks. */
static void tar_add(Buf *b, const char *name, char type, const char *data, size_t len, const char *link) {
        uint8_t h[512] = {};
        unsigned sum = 0;

        snprintf((char *) h, 100, "%s", name);                  /* name[100] */
        snprintf((char *) h + 100, 8, "%07o", type == '5' ? 0755 : 0644); /* mode */
        snprintf((char *) h + 108, 8, "%07o", 0);               /* uid */
        snprintf((char *) h + 116, 8, "%07o", 0);               /* gid */
        snprintf((char *) h + 124, 12, "%011o", (unsigned) len); /* size */
        snprintf((char *) h + 136, 12, "%011o", 1700000000);    /* mtime */
        h[156] = (uint8_t) type;                                /* typeflag */
        if (link)
                snprintf((char *) h + 157, 100, "%s", link);    /* linkname */
        memcpy(h + 257, "ustar\0" "00", 8);                     /* magic, version */
        memset(h + 148, ' ', 8);                                /* chksum counts as spaces */
        for (int i = 0; i < 512; i++)
                sum += h[i];
        snprintf((char *) h + 148, 8, "%06o", sum);
        buf_put(b, h, 512);
        if (len) {
                uint8_t pad[512] = {};
                buf_put(b, data, len);
                buf_put(b, pad, (512 - len % 512) % 512);
        }
}

static void tar_file(Buf *b, const char *name, const char *content) {
        tar_add(b, name, '0', content, strlen(content), NULL);
}

static void tar_end(Buf *b) {
        uint8_t z[1024] = {};
        buf_put(b, z, sizeof(z));
}

static ssize_t buf_read(void *userdata, void *p, size_t n) {
        Buf *b = userdata;
        n = MIN(n, b->len - b->pos);
        memcpy(p, b->data + b->pos, n);
        b->pos += n;
        return (ssize_t) n;
}

static Buf gzip(const Buf *in) {
        z_stream z = {};
        Buf out = { .data = malloc(in->len + 1024) };

        assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
        z.next_in = in->data;
        z.avail_in = (uInt) in->len;
        z.next_out = out.data;
        z.avail_out = (uInt) (in->len + 1024);
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        out.len = z.total_out;
        deflateEnd(&z);
        return out;
}

typedef struct Tree {
        char dir[64];      /* holds root/ and outside/ */
        char root[80];
        int root_fd;
} Tree;

static void tree_new(Tree *t) {
        char p[96];
        snprintf(t->dir, sizeof(t->dir), "/tmp/test-disk-tar-XXXXXX");
        assert_non_null(mkdtemp(t->dir));
        snprintf(t->root, sizeof(t->root), "%s/root", t->dir);
        assert_int_equal(mkdir(t->root, 0755), 0);
        snprintf(p, sizeof(p), "%s/outside", t->dir);
        assert_int_equal(mkdir(p, 0755), 0);
        t->root_fd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(t->root_fd >= 0);
}

static void tree_free(Tree *t) {
        close(t->root_fd);
        assert_int_equal(rm_rf_at(AT_FDCWD, t->dir), 0);
}

static int apply(Tree *t, Buf *b, const TarLimits *lim, TarStats *stats, char **error) {
        b->pos = 0;
        return tar_unpack_layer(t->root_fd, buf_read, b, lim, stats, error);
}

static bool exists(Tree *t, const char *rel) {
        struct stat st;
        return fstatat(t->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool outside_is_empty(Tree *t) {
        char p[128];
        snprintf(p, sizeof(p), "%s/outside", t->dir);
        return rmdir(p) == 0 && mkdir(p, 0755) == 0;
}

/* Unpacks a one-entry hostile layer and checks the exact refusal. */
static void assert_refused(Buf *b, int want_r, const char *want_error) {
        _cleanup_free_ char *error = NULL;
        TarStats stats = {};
        Tree t;

        tree_new(&t);
        assert_int_equal(apply(&t, b, NULL, &stats, &error), want_r);
        assert_non_null(error);
        assert_string_equal(error, want_error);
        assert_true(outside_is_empty(&t));
        tree_free(&t);
        free(b->data);
}

static void test_unpack_gzip_layer_makes_files_dirs_symlinks_and_hardlinks(void **state) {
        _cleanup_free_ char *error = NULL;
        char target[64] = {};
        TarStats stats = {};
        Buf b = {}, z;
        struct stat st1, st2;
        Tree t;

        tar_add(&b, "./", '5', NULL, 0, NULL);
        tar_add(&b, "bin/", '5', NULL, 0, NULL);
        tar_file(&b, "bin/busybox", "#!busybox\n");
        tar_add(&b, "bin/sh", '2', NULL, 0, "busybox");
        tar_add(&b, "bin/ls", '1', NULL, 0, "bin/busybox");
        tar_file(&b, "etc/deep/file", "no parent entries\n");
        tar_end(&b);
        z = gzip(&b);

        tree_new(&t);
        assert_int_equal(apply(&t, &z, NULL, &stats, &error), 0);
        assert_null(error);
        assert_int_equal(readlinkat(t.root_fd, "bin/sh", target, sizeof(target) - 1), 7);
        assert_string_equal(target, "busybox");
        assert_int_equal(fstatat(t.root_fd, "bin/busybox", &st1, 0), 0);
        assert_int_equal(fstatat(t.root_fd, "bin/ls", &st2, 0), 0);
        assert_int_equal(st1.st_ino, st2.st_ino);
        assert_int_equal(st1.st_size, 10);
        assert_true(exists(&t, "etc/deep/file"));
        assert_int_equal(stats.entries, 6);
        assert_int_equal(stats.bytes, 10 + 18);
        tree_free(&t);
        free(b.data);
        free(z.data);
}

static void test_whiteout_removes_lower_file_and_opaque_dir_keeps_only_this_layer(void **state) {
        _cleanup_free_ char *error = NULL;
        TarStats stats = {};
        Buf lower = {}, upper = {};
        Tree t;

        tar_file(&lower, "etc/motd", "hello\n");
        tar_file(&lower, "etc/keep", "keep\n");
        tar_file(&lower, "var/cache/a", "a\n");
        tar_file(&lower, "var/cache/sub/b", "b\n");
        tar_end(&lower);

        tar_add(&upper, "etc/.wh.motd", '0', NULL, 0, NULL);
        tar_add(&upper, "var/cache/", '5', NULL, 0, NULL);
        tar_file(&upper, "var/cache/new", "new\n");
        tar_add(&upper, "var/cache/.wh..wh..opq", '0', NULL, 0, NULL);
        tar_add(&upper, ".wh.nothing-here", '0', NULL, 0, NULL);
        tar_end(&upper);

        tree_new(&t);
        assert_int_equal(apply(&t, &lower, NULL, &stats, &error), 0);
        assert_int_equal(apply(&t, &upper, NULL, &stats, &error), 0);
        assert_false(exists(&t, "etc/motd"));
        assert_false(exists(&t, "etc/.wh.motd"));
        assert_true(exists(&t, "etc/keep"));
        assert_false(exists(&t, "var/cache/a"));
        assert_false(exists(&t, "var/cache/sub"));
        assert_true(exists(&t, "var/cache/new")); /* made by the same layer, before the marker */
        assert_false(exists(&t, "var/cache/.wh..wh..opq"));
        assert_int_equal(stats.whiteouts, 2);
        assert_int_equal(stats.opaque_dirs, 1);
        tree_free(&t);
        free(lower.data);
        free(upper.data);
}

static void test_refuses_absolute_path(void **state) {
        Buf b = {};
        tar_file(&b, "/etc/passwd", "root::0:0::/:/bin/sh\n");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry '/etc/passwd': refusing an absolute path.");
}

static void test_refuses_dotdot_component(void **state) {
        Buf b = {};
        tar_file(&b, "a/../../outside/x", "x");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'a/../../outside/x': refusing a '..' component.");
}

static void test_refuses_file_written_through_symlink(void **state) {
        Buf b = {};
        char link[128];
        /* The symlink itself is fine (never followed); the file after it is not. */
        snprintf(link, sizeof(link), "/tmp");
        tar_add(&b, "escape", '2', NULL, 0, link);
        tar_file(&b, "escape/pwned", "x");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'escape/pwned': 'escape' is a symlink; refusing to write through it.");
}

static void test_symlink_replaced_by_file_is_not_followed(void **state) {
        _cleanup_free_ char *error = NULL;
        TarStats stats = {};
        char link[128];
        struct stat st;
        Buf b = {};
        Tree t;

        tree_new(&t);
        snprintf(link, sizeof(link), "%s/outside/victim", t.dir);
        tar_add(&b, "f", '2', NULL, 0, link);
        tar_file(&b, "f", "replaced\n");
        tar_end(&b);
        assert_int_equal(apply(&t, &b, NULL, &stats, &error), 0);
        assert_int_equal(fstatat(t.root_fd, "f", &st, AT_SYMLINK_NOFOLLOW), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_true(outside_is_empty(&t));
        tree_free(&t);
        free(b.data);
}

static void test_refuses_hardlink_out_of_tree(void **state) {
        Buf b = {};
        tar_add(&b, "h", '1', NULL, 0, "../outside/shadow");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'h': refusing a hard link to '../outside/shadow', outside the tree.");
}

static void test_refuses_hardlink_absolute(void **state) {
        Buf b = {};
        tar_add(&b, "h", '1', NULL, 0, "/etc/shadow");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'h': refusing a hard link to '/etc/shadow', outside the tree.");
}

static void test_refuses_hardlink_to_missing_entry(void **state) {
        Buf b = {};
        tar_add(&b, "h", '1', NULL, 0, "not/there");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'h': refusing a hard link to 'not/there', which is not in the tree.");
}

static void test_refuses_hardlink_through_symlink(void **state) {
        Buf b = {};
        tar_add(&b, "s", '2', NULL, 0, "/etc");
        tar_add(&b, "h", '1', NULL, 0, "s/shadow");
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'h': 's' is a symlink; refusing to write through it.");
}

static void test_skips_device_nodes_and_fifos(void **state) {
        _cleanup_free_ char *error = NULL;
        TarStats stats = {};
        Buf b = {};
        Tree t;

        tar_add(&b, "dev/null", '3', NULL, 0, NULL);
        tar_add(&b, "dev/sda", '4', NULL, 0, NULL);
        tar_add(&b, "run/fifo", '6', NULL, 0, NULL);
        tar_end(&b);
        tree_new(&t);
        assert_int_equal(apply(&t, &b, NULL, &stats, &error), 0);
        assert_int_equal(stats.skipped_devices, 3);
        assert_false(exists(&t, "dev/null"));
        assert_false(exists(&t, "run/fifo"));
        tree_free(&t);
        free(b.data);
}

static void test_refuses_unsupported_entry_type(void **state) {
        Buf b = {};
        tar_add(&b, "sparse", 'S', NULL, 0, NULL);
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'sparse': unsupported entry type 'S'.");
}

static void test_refuses_huge_pax_header(void **state) {
        size_t n = (1 << 20) + 1;
        char *big = malloc(n);
        Buf b = {};

        memset(big, 'a', n);
        tar_add(&b, "PaxHeader/x", 'x', big, n, NULL);
        tar_file(&b, "x", "x");
        tar_end(&b);
        free(big);
        assert_refused(&b, -E2BIG, "Tar entry 'PaxHeader/x': a PAX header record of 1048577 bytes, more than 1048576 allowed.");
}

static void test_refuses_malformed_pax_record(void **state) {
        Buf b = {};
        tar_add(&b, "PaxHeader/x", 'x', "99 path=x\n", 10, NULL);
        tar_file(&b, "x", "x");
        tar_end(&b);
        assert_refused(&b, -EBADMSG, "Tar entry 'PaxHeader/x': a malformed PAX header.");
}

static void test_pax_path_and_gnu_long_name_apply(void **state) {
        _cleanup_free_ char *error = NULL;
        char longname[300], rec[400], rel[320];
        TarStats stats = {};
        Buf b = {};
        Tree t;

        memset(longname, 'n', 200);
        longname[200] = '\0';
        snprintf(rec, sizeof(rec), "%03zu path=d/%s\n", strlen(longname) + 12, longname); /* "212 path=d/<200>\n" */
        tar_add(&b, "PaxHeader/x", 'x', rec, strlen(rec), NULL);
        tar_file(&b, "truncated-name", "pax\n");
        tar_add(&b, "././@LongLink", 'L', "e/gnu-long-name", 16, NULL);
        tar_file(&b, "e/gnu-long", "gnu\n");
        tar_end(&b);
        tree_new(&t);
        assert_int_equal(apply(&t, &b, NULL, &stats, &error), 0);
        snprintf(rel, sizeof(rel), "d/%s", longname);
        assert_true(exists(&t, rel));
        assert_true(exists(&t, "e/gnu-long-name"));
        assert_false(exists(&t, "truncated-name"));
        tree_free(&t);
        free(b.data);
}

static void test_refuses_tar_bomb_by_bytes(void **state) {
        _cleanup_free_ char *error = NULL;
        TarLimits lim = TAR_LIMITS_DEFAULT;
        TarStats stats = {};
        Buf b = {};
        Tree t;

        lim.max_bytes = 10;
        tar_file(&b, "a", "123456");
        tar_file(&b, "b", "123456");
        tar_end(&b);
        tree_new(&t);
        assert_int_equal(apply(&t, &b, &lim, &stats, &error), -E2BIG);
        assert_string_equal(error, "Tar entry 'b': the image unpacks to more than 10 bytes (max_image_bytes in disk.conf).");
        assert_false(exists(&t, "b"));
        tree_free(&t);
        free(b.data);
}

static void test_refuses_tar_bomb_by_entries(void **state) {
        _cleanup_free_ char *error = NULL;
        TarLimits lim = TAR_LIMITS_DEFAULT;
        TarStats stats = {};
        Buf b = {};
        Tree t;

        lim.max_entries = 2;
        tar_add(&b, "d1/", '5', NULL, 0, NULL);
        tar_add(&b, "d2/", '5', NULL, 0, NULL);
        tar_add(&b, "d3/", '5', NULL, 0, NULL);
        tar_end(&b);
        tree_new(&t);
        assert_int_equal(apply(&t, &b, &lim, &stats, &error), -E2BIG);
        assert_string_equal(error, "Tar entry 'd3/': the image has more than 2 entries (max_image_entries in disk.conf).");
        tree_free(&t);
        free(b.data);
}

static void test_refuses_bad_checksum(void **state) {
        Buf b = {};
        tar_file(&b, "x", "x");
        b.data[0] ^= 1; /* the name changes, the checksum does not */
        tar_end(&b);
        assert_refused(&b, -EBADMSG, "Tar archive has a corrupt header (bad checksum or number).");
}

static void test_refuses_truncated_data(void **state) {
        Buf b = {};
        tar_add(&b, "x", '0', "0123456789", 10, NULL);
        b.len = 512 + 5; /* the data stops half way */
        assert_refused(&b, -EBADMSG, "Tar entry 'x': the archive ends inside its data.");
}

static void test_refuses_whiteout_without_name(void **state) {
        Buf b = {};
        tar_add(&b, "etc/.wh.", '0', NULL, 0, NULL);
        tar_end(&b);
        assert_refused(&b, -EINVAL, "Tar entry 'etc/.wh.': a whiteout without a name.");
}

static void test_header_parse_base256_size(void **state) {
        uint8_t h[512] = {};
        unsigned sum = 0;
        TarHeader th;

        memcpy(h, "big", 3);
        h[124] = 0x80;  /* size: base-256, 9 GiB */
        h[124 + 7] = 0x02;
        h[124 + 8] = 0x40;
        h[156] = '0';
        memset(h + 148, ' ', 8);
        for (int i = 0; i < 512; i++)
                sum += h[i];
        snprintf((char *) h + 148, 8, "%06o", sum);
        assert_int_equal(tar_header_parse(h, &th), 0);
        assert_int_equal(th.size, 9ULL << 30);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unpack_gzip_layer_makes_files_dirs_symlinks_and_hardlinks),
                cmocka_unit_test(test_whiteout_removes_lower_file_and_opaque_dir_keeps_only_this_layer),
                cmocka_unit_test(test_refuses_absolute_path),
                cmocka_unit_test(test_refuses_dotdot_component),
                cmocka_unit_test(test_refuses_file_written_through_symlink),
                cmocka_unit_test(test_symlink_replaced_by_file_is_not_followed),
                cmocka_unit_test(test_refuses_hardlink_out_of_tree),
                cmocka_unit_test(test_refuses_hardlink_absolute),
                cmocka_unit_test(test_refuses_hardlink_to_missing_entry),
                cmocka_unit_test(test_refuses_hardlink_through_symlink),
                cmocka_unit_test(test_skips_device_nodes_and_fifos),
                cmocka_unit_test(test_refuses_unsupported_entry_type),
                cmocka_unit_test(test_refuses_huge_pax_header),
                cmocka_unit_test(test_refuses_malformed_pax_record),
                cmocka_unit_test(test_pax_path_and_gnu_long_name_apply),
                cmocka_unit_test(test_refuses_tar_bomb_by_bytes),
                cmocka_unit_test(test_refuses_tar_bomb_by_entries),
                cmocka_unit_test(test_refuses_bad_checksum),
                cmocka_unit_test(test_refuses_truncated_data),
                cmocka_unit_test(test_refuses_whiteout_without_name),
                cmocka_unit_test(test_header_parse_base256_size),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
