/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <unistd.h>

#include "disk-qcow2.h"
#include "macro.h"

#define GIB (1ULL << 30)

static uint32_t be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) {
        return (uint64_t) be32(p) << 32 | be32(p + 4);
}

static void test_overlay_header_fields(void **state) {
        uint8_t *img;
        size_t len;

        assert_int_equal(qcow2_build_image(64 * GIB, "/pool/images/base.raw", "raw", &img, &len), 0);
        /* 64 GiB / 512 MiB per L1 entry = 128 entries: one L1 cluster. */
        assert_int_equal(len, 4 * 65536);
        assert_int_equal(be32(img + 0), 0x514649fb);        /* magic "QFI\xfb" */
        assert_int_equal(be32(img + 4), 3);                 /* version */
        assert_int_equal(be32(img + 20), 16);               /* cluster_bits */
        assert_true(be64(img + 24) == 64 * GIB);            /* size */
        assert_int_equal(be32(img + 36), 128);              /* l1_size */
        assert_true(be64(img + 40) == 3 * 65536);           /* l1_table_offset */
        assert_true(be64(img + 48) == 65536);               /* refcount_table_offset */
        assert_int_equal(be32(img + 56), 1);                /* refcount_table_clusters */
        assert_int_equal(be32(img + 96), 4);                /* refcount_order: 16 bit */
        assert_int_equal(be32(img + 100), 104);             /* header_length */
        assert_int_equal(be32(img + 104), 0xe2792aca);      /* backing format extension */
        assert_int_equal(be32(img + 108), 3);
        assert_memory_equal(img + 112, "raw", 3);
        assert_int_equal(be32(img + 120), 0);               /* end of extensions */
        assert_true(be64(img + 8) == 128);                  /* backing_file_offset */
        assert_int_equal(be32(img + 16), strlen("/pool/images/base.raw"));
        assert_memory_equal(img + 128, "/pool/images/base.raw", strlen("/pool/images/base.raw"));
        assert_true(be64(img + 65536) == 2 * 65536);        /* refcount table[0] → block */
        for (int i = 0; i < 4; i++)
                assert_int_equal(img[2 * 65536 + 2 * i + 1], 1); /* clusters 0..3 used once */
        assert_int_equal(img[2 * 65536 + 2 * 4 + 1], 0);
        for (size_t i = 3 * 65536; i < len; i++)            /* L1 all zero: nothing allocated */
                assert_int_equal(img[i], 0);

        Qcow2Info info;
        assert_int_equal(qcow2_parse_header(img, len, &info), 0);
        assert_int_equal(info.version, 3);
        assert_true(info.size == 64 * GIB);
        assert_string_equal(info.backing_file, "/pool/images/base.raw");
        assert_string_equal(info.backing_format, "raw");
        free(img);
}

static void test_written_file_equals_built_image(void **state) {
        char path[] = "/tmp/test-disk-qcow2-XXXXXX";
        uint8_t *img, *file;
        size_t len;
        struct stat st;
        int fd = mkostemp(path, O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(qcow2_write_image(fd, 288 * GIB, "/b.qcow2", "qcow2"), 0);
        assert_int_equal(qcow2_build_image(288 * GIB, "/b.qcow2", "qcow2", &img, &len), 0);
        assert_int_equal(fstat(fd, &st), 0);
        assert_int_equal(st.st_size, len);
        file = malloc(len);
        assert_int_equal(pread(fd, file, len, 0), (ssize_t) len);
        assert_memory_equal(file, img, len);
        /* Sparse: far fewer blocks than the 256 KiB of length. */
        assert_true(st.st_blocks * 512 < (blkcnt_t) len);
        free(file);
        free(img);
        close(fd);
        unlink(path);
}

static void test_blank_image_and_limits(void **state) {
        uint8_t *img;
        size_t len;
        Qcow2Info info;

        assert_int_equal(qcow2_build_image(GIB, NULL, NULL, &img, &len), 0);
        assert_int_equal(qcow2_parse_header(img, len, &info), 0);
        assert_string_equal(info.backing_file, "");
        assert_string_equal(info.backing_format, "");
        free(img);

        assert_int_equal(qcow2_build_image(0, NULL, NULL, &img, &len), -EINVAL);
        assert_int_equal(qcow2_build_image(GIB + 1, NULL, NULL, &img, &len), -EINVAL);  /* not a sector multiple */
        assert_int_equal(qcow2_build_image(65ULL << 40, NULL, NULL, &img, &len), -EINVAL);
        assert_int_equal(qcow2_build_image(GIB, "/b", NULL, &img, &len), -EINVAL);     /* backing needs a format */
        char longname[1100];
        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        assert_int_equal(qcow2_build_image(GIB, longname, "raw", &img, &len), -EINVAL);
}

static void test_parse_refuses_bad_headers(void **state) {
        uint8_t *img;
        size_t len;
        Qcow2Info info;

        assert_int_equal(qcow2_build_image(GIB, "/base", "raw", &img, &len), 0);
        assert_int_equal(qcow2_parse_header(img, 50, &info), -EBADMSG);       /* truncated */
        img[4 + 3] = 4;                                                       /* version 4 */
        assert_int_equal(qcow2_parse_header(img, len, &info), -EBADMSG);
        img[4 + 3] = 3;
        img[72 + 7] = 1;                                                      /* dirty bit */
        assert_int_equal(qcow2_parse_header(img, len, &info), -EBADMSG);
        img[72 + 7] = 0;
        img[32 + 3] = 1;                                                      /* encrypted */
        assert_int_equal(qcow2_parse_header(img, len, &info), -EBADMSG);
        img[32 + 3] = 0;
        img[16 + 2] = 0xff;                                                   /* backing name past the cluster */
        assert_int_equal(qcow2_parse_header(img, len, &info), -EBADMSG);
        img[16 + 2] = 0;
        img[108] = 0x7f;                                                      /* extension length huge */
        assert_int_equal(qcow2_parse_header(img, len, &info), -EBADMSG);
        img[108] = 0;
        img[0] = 'X';
        assert_int_equal(qcow2_parse_header(img, len, &info), -EBADMSG);
        assert_false(qcow2_has_magic(img, len));
        free(img);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_overlay_header_fields),
                cmocka_unit_test(test_written_file_equals_built_image),
                cmocka_unit_test(test_blank_image_and_limits),
                cmocka_unit_test(test_parse_refuses_bad_headers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
