/* SPDX-License-Identifier: MIT */
#pragma once

/* Machine shapes, written CPUxGB ("4x8"). The platform's rule:
 *   vCPU ∈ {2,4,8,16,32}; RAM GB ∈ {2,4,8,16,32,64,80,96,112,128,256,384,512};
 *   RAM GB ≥ vCPU; more than 64 GB only for tenants allowed by config.
 *   units = max(vCPU, RAM_GB / 2); disk = 32 GiB + units × 8 GiB. */

#include <stdbool.h>
#include <stdint.h>

typedef struct Shape {
        unsigned vcpu;
        unsigned memory_gb;
} Shape;

/* -EINVAL when not of the form CPUxGB; -EDOM when well-formed but not an
 * allowed shape; -EPERM when above 64 GB and !allow_large. */
int shape_parse(const char *s, bool allow_large, Shape *ret);
int shape_validate(const Shape *shape, bool allow_large);
unsigned shape_units(const Shape *shape);
uint64_t shape_disk_bytes(const Shape *shape);
/* "2x4" into buf (at least 16 bytes). */
const char *shape_to_string(const Shape *shape, char *buf, unsigned len);
/* A human-readable list of the valid values, for error messages. */
const char *shape_valid_help(void);
