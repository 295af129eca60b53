/* SPDX-License-Identifier: MIT */
/* qcow2 overlay writer and header reader (QEMU docs/interop/qcow2.txt).
 *
 * Layout of an image we write (cluster size 64 KiB):
 *   cluster 0        header, header extensions, backing file name
 *   cluster 1        refcount table: entry 0 → cluster 2
 *   cluster 2        refcount block: clusters 0 .. 2+L1 clusters have refcount 1
 *   cluster 3 ..     L1 table, all zero (nothing allocated: every read goes
 *                    to the backing file, or reads zeros without one)
 * qemu-img check accepts exactly this: no leaks, no corruptions. */

#include <endian.h>
#include <fcntl.h>
#include <unistd.h>

#include "disk-qcow2.h"
#include "macro.h"

#define QCOW2_MAGIC 0x514649fbU         /* "QFI\xfb" */
#define CLUSTER_BITS 16U
#define CLUSTER_SIZE (1U << CLUSTER_BITS)
#define HEADER_LENGTH_V3 104U
#define EXT_BACKING_FORMAT 0xe2792acaU  /* "Backing file format name" */
#define EXT_END 0U
/* Refcount order 4: 16-bit refcounts, 32768 per refcount block, so one block
 * covers 2 GiB of image file: far more metadata than an empty image has. */
#define REFCOUNT_ORDER 4U
/* qcow2.txt: the virtual size must fit in the L1 table QEMU accepts (32 MiB
 * of L1 entries); we stop well before, at 64 TiB. */
#define QCOW2_SIZE_MAX (64ULL << 40)

static void put_be32(uint8_t *p, uint32_t v) {
        v = htobe32(v);
        memcpy(p, &v, 4);
}

static void put_be64(uint8_t *p, uint64_t v) {
        v = htobe64(v);
        memcpy(p, &v, 8);
}

static void put_be16(uint8_t *p, uint16_t v) {
        v = htobe16(v);
        memcpy(p, &v, 2);
}

static uint32_t get_be32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, 4);
        return be32toh(v);
}

static uint64_t get_be64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, 8);
        return be64toh(v);
}

/* The non-zero bytes of an image: the first cluster, the refcount table's
 * first entry and the refcount block's first entries. */
typedef struct Qcow2Layout {
        uint8_t header[CLUSTER_SIZE];
        uint64_t l1_clusters;
        uint64_t total_clusters;
} Qcow2Layout;

static int qcow2_layout(uint64_t size, const char *backing, const char *backing_format, Qcow2Layout *l) {
        uint64_t l2_entries = CLUSTER_SIZE / 8, bytes_per_l1 = (uint64_t) CLUSTER_SIZE * l2_entries;
        uint64_t l1_size;
        size_t backing_len = backing ? strlen(backing) : 0, fmt_len = backing_format ? strlen(backing_format) : 0;
        size_t off;

        if (size == 0 || size > QCOW2_SIZE_MAX || size % 512 != 0)
                return -EINVAL;
        if (backing && (backing_len == 0 || backing_len > QCOW2_BACKING_NAME_MAX))
                return -EINVAL;
        if (backing && (fmt_len == 0 || fmt_len >= 32))
                return -EINVAL;

        l1_size = (size + bytes_per_l1 - 1) / bytes_per_l1;
        l->l1_clusters = (l1_size * 8 + CLUSTER_SIZE - 1) / CLUSTER_SIZE;
        l->total_clusters = 3 + l->l1_clusters;

        uint8_t *h = l->header;
        memset(h, 0, sizeof(l->header));
        put_be32(h + 0, QCOW2_MAGIC);
        put_be32(h + 4, 3);                                    /* version */
        put_be32(h + 20, CLUSTER_BITS);                        /* cluster_bits */
        put_be64(h + 24, size);                                /* size */
        put_be32(h + 32, 0);                                   /* crypt_method: none */
        put_be32(h + 36, (uint32_t) l1_size);                  /* l1_size */
        put_be64(h + 40, 3ULL * CLUSTER_SIZE);                 /* l1_table_offset */
        put_be64(h + 48, 1ULL * CLUSTER_SIZE);                 /* refcount_table_offset */
        put_be32(h + 56, 1);                                   /* refcount_table_clusters */
        put_be32(h + 60, 0);                                   /* nb_snapshots */
        put_be64(h + 64, 0);                                   /* snapshots_offset */
        put_be64(h + 72, 0);                                   /* incompatible_features */
        put_be64(h + 80, 0);                                   /* compatible_features */
        put_be64(h + 88, 0);                                   /* autoclear_features */
        put_be32(h + 96, REFCOUNT_ORDER);                      /* refcount_order */
        put_be32(h + 100, HEADER_LENGTH_V3);                   /* header_length */

        off = HEADER_LENGTH_V3;
        if (backing) {
                /* Header extension: backing file format name, padded to 8 bytes. */
                put_be32(h + off, EXT_BACKING_FORMAT);
                put_be32(h + off + 4, (uint32_t) fmt_len);
                memcpy(h + off + 8, backing_format, fmt_len);
                off += 8 + ((fmt_len + 7) & ~(size_t) 7);
        }
        put_be32(h + off, EXT_END);                            /* end of extensions */
        put_be32(h + off + 4, 0);
        off += 8;
        if (backing) {
                /* The name follows the extensions, not NUL-terminated. */
                put_be64(h + 8, off);                          /* backing_file_offset */
                put_be32(h + 16, (uint32_t) backing_len);      /* backing_file_size */
                memcpy(h + off, backing, backing_len);
        }
        return 0;
}

int qcow2_build_image(uint64_t size, const char *backing, const char *backing_format, uint8_t **ret,
                      size_t *ret_len) {
        _cleanup_free_ Qcow2Layout *l = malloc(sizeof(*l));
        uint8_t *img;
        size_t len;
        int r;

        if (!l)
                return -ENOMEM;
        r = qcow2_layout(size, backing, backing_format, l);
        if (r < 0)
                return r;
        len = (size_t) l->total_clusters * CLUSTER_SIZE;
        img = calloc(1, len);
        if (!img)
                return -ENOMEM;
        memcpy(img, l->header, CLUSTER_SIZE);
        put_be64(img + CLUSTER_SIZE, 2ULL * CLUSTER_SIZE);
        for (uint64_t i = 0; i < l->total_clusters; i++)
                put_be16(img + 2 * CLUSTER_SIZE + 2 * i, 1);
        *ret = img;
        *ret_len = len;
        return 0;
}

static int pwrite_all(int fd, const void *data, size_t len, off_t off) {
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += n;
                len -= (size_t) n;
                off += n;
        }
        return 0;
}

int qcow2_write_image(int fd, uint64_t size, const char *backing, const char *backing_format) {
        _cleanup_free_ Qcow2Layout *l = malloc(sizeof(*l));
        uint8_t entry[8], counts[2 * 64];
        size_t header_used;
        int r;

        if (!l)
                return -ENOMEM;
        r = qcow2_layout(size, backing, backing_format, l);
        if (r < 0)
                return r;
        /* Everything past the header's used bytes is zero: write only what is
         * not, then give the file its full length (a hole). */
        header_used = CLUSTER_SIZE;
        while (header_used > 0 && l->header[header_used - 1] == 0)
                header_used--;
        r = pwrite_all(fd, l->header, header_used, 0);
        if (r < 0)
                return r;
        put_be64(entry, 2ULL * CLUSTER_SIZE);
        r = pwrite_all(fd, entry, sizeof(entry), CLUSTER_SIZE);
        if (r < 0)
                return r;
        if (l->total_clusters > ELEMENTSOF(counts) / 2)
                return -EFBIG; /* > 64 clusters of metadata: more than 2 PiB of L1 */
        for (uint64_t i = 0; i < l->total_clusters; i++)
                put_be16(counts + 2 * i, 1);
        r = pwrite_all(fd, counts, (size_t) l->total_clusters * 2, 2 * CLUSTER_SIZE);
        if (r < 0)
                return r;
        if (ftruncate(fd, (off_t) (l->total_clusters * CLUSTER_SIZE)) < 0)
                return negative_errno();
        return 0;
}

int qcow2_has_magic(const uint8_t *data, size_t len) {
        return len >= 4 && get_be32(data) == QCOW2_MAGIC;
}

int qcow2_parse_header(const uint8_t *data, size_t len, Qcow2Info *ret) {
        Qcow2Info info = {};
        uint64_t backing_offset, incompatible = 0;
        uint32_t backing_size, header_length = 72;
        size_t cluster_size;

        if (len < 72 || !qcow2_has_magic(data, len))
                return -EBADMSG;
        info.version = get_be32(data + 4);
        if (info.version != 2 && info.version != 3)
                return -EBADMSG;
        info.cluster_bits = get_be32(data + 20);
        /* qcow2.txt: 9 <= cluster_bits <= 21. */
        if (info.cluster_bits < 9 || info.cluster_bits > 21)
                return -EBADMSG;
        cluster_size = (size_t) 1 << info.cluster_bits;
        info.size = get_be64(data + 24);
        if (get_be32(data + 32) != 0)
                return -EBADMSG; /* encrypted images are not base images */
        if (info.version == 3) {
                if (len < 104)
                        return -EBADMSG;
                incompatible = get_be64(data + 72);
                header_length = get_be32(data + 100);
                if (header_length < 104 || header_length > cluster_size || header_length % 8 != 0)
                        return -EBADMSG;
                /* Bit 0 dirty, bit 1 corrupt: not a sound base. Unknown bits:
                 * we cannot know what they mean. Bit 3 (compression type) and
                 * bit 4 (extended L2) are fine to point a backing file at. */
                if (incompatible & ~((1ULL << 3) | (1ULL << 4)))
                        return -EBADMSG;
        }

        /* Header extensions, up to the end marker, within the first cluster. */
        if (info.version == 3) {
                size_t off = header_length;
                for (;;) {
                        uint32_t type, elen;
                        if (off + 8 > len || off + 8 > cluster_size)
                                return -EBADMSG;
                        type = get_be32(data + off);
                        elen = get_be32(data + off + 4);
                        off += 8;
                        if (type == EXT_END)
                                break;
                        if (elen > cluster_size || off + elen > len || off + elen > cluster_size)
                                return -EBADMSG;
                        if (type == EXT_BACKING_FORMAT) {
                                if (elen == 0 || elen >= sizeof(info.backing_format) ||
                                    memchr(data + off, 0, elen))
                                        return -EBADMSG;
                                memcpy(info.backing_format, data + off, elen);
                                info.backing_format[elen] = '\0';
                        }
                        off += ((size_t) elen + 7) & ~(size_t) 7;
                }
        }

        backing_offset = get_be64(data + 8);
        backing_size = get_be32(data + 16);
        if (backing_offset != 0) {
                if (backing_size == 0 || backing_size > QCOW2_BACKING_NAME_MAX ||
                    backing_offset > cluster_size || backing_offset + backing_size > cluster_size ||
                    backing_offset + backing_size > len)
                        return -EBADMSG;
                if (memchr(data + backing_offset, 0, backing_size))
                        return -EBADMSG;
                memcpy(info.backing_file, data + backing_offset, backing_size);
                info.backing_file[backing_size] = '\0';
        }
        *ret = info;
        return 0;
}
