/* SPDX-License-Identifier: MIT */
#pragma once

/* The ext4 base image of an unpacked container tree: `mkfs.ext4 -d` for
 * the tree's structure, libext2fs for the data of its large files. */

/* Makes dst (which must not exist) from tree. Consumes the tree: the data
 * of large files is moved into side (a new directory), so both are for
 * removing afterwards. Sized like image_make_ext4() with size 0. On error
 * *ret_output says what failed (mke2fs's output, or our own words), and
 * dst is removed. */
int ext4_image_from_staging(const char *tree, const char *side, const char *dst, char **ret_output);
