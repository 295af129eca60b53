/* SPDX-License-Identifier: MIT */
/* The platform's machine shapes and the disk size that follows from them.
 * diskd sizes disks with it and vmmd sizes guests with it, so the rule lives
 * here once. */

#include <stdio.h>

#include "macro.h"
#include "parse-util.h"
#include "shape.h"

#define GIB (1024ULL * 1024ULL * 1024ULL)
#define SHAPE_LARGE_GB 64U

static const unsigned valid_vcpus[] = { 2, 4, 8, 16, 32 };
static const unsigned valid_memory_gb[] = { 2, 4, 8, 16, 32, 64, 80, 96, 112, 128, 256, 384, 512 };

static bool in_set(unsigned v, const unsigned *set, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (set[i] == v)
                        return true;
        return false;
}

/* A positive decimal number without sign, spaces or leading zeros. */
static int parse_component(const char *s, size_t len, unsigned *ret) {
        char buf[8];
        uint32_t v;
        int r;

        if (len == 0 || len >= sizeof(buf) || s[0] == '0')
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        r = safe_atou32(buf, &v);
        if (r < 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int shape_parse(const char *s, bool allow_large, Shape *ret) {
        Shape shape;
        const char *x;
        int r;

        if (!s)
                return -EINVAL;
        x = strchr(s, 'x');
        if (!x)
                return -EINVAL;
        r = parse_component(s, (size_t) (x - s), &shape.vcpu);
        if (r < 0)
                return r;
        r = parse_component(x + 1, strlen(x + 1), &shape.memory_gb);
        if (r < 0)
                return r;
        r = shape_validate(&shape, allow_large);
        if (r < 0)
                return r;
        *ret = shape;
        return 0;
}

int shape_validate(const Shape *shape, bool allow_large) {
        if (!in_set(shape->vcpu, valid_vcpus, ELEMENTSOF(valid_vcpus)) ||
            !in_set(shape->memory_gb, valid_memory_gb, ELEMENTSOF(valid_memory_gb)) ||
            shape->memory_gb < shape->vcpu)
                return -EDOM;
        if (shape->memory_gb > SHAPE_LARGE_GB && !allow_large)
                return -EPERM;
        return 0;
}

unsigned shape_units(const Shape *shape) {
        return MAX(shape->vcpu, shape->memory_gb / 2);
}

uint64_t shape_disk_bytes(const Shape *shape) {
        return 32 * GIB + (uint64_t) shape_units(shape) * 8 * GIB;
}

const char *shape_to_string(const Shape *shape, char *buf, unsigned len) {
        snprintf(buf, len, "%ux%u", shape->vcpu, shape->memory_gb);
        return buf;
}

const char *shape_valid_help(void) {
        return "a shape is CPUxGB with vCPU one of 2, 4, 8, 16, 32 and RAM GB one of "
               "2, 4, 8, 16, 32, 64, 80, 96, 112, 128, 256, 384, 512, RAM GB at least vCPU; "
               "more than 64 GB only for tenants allowed by config (e.g. 2x4, 4x8, 8x16, 16x32, 32x64)";
}
