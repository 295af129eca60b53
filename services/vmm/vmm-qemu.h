/* SPDX-License-Identifier: MIT */
#pragma once

/* QEMU as the VM backend: the command line of a micro-VM and its start in
 * a session of its own, so that vmmd can die and come back without taking
 * the VM with it.
 *
 * The three sockets (QMP, guest agent, serial console) are created and put
 * into listening state by vmmd and handed to QEMU as file descriptors:
 * vmmd can connect to them right after the spawn, without waiting for
 * QEMU to create them, and after a restart it connects to the same paths. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct QemuDrive {
        const char *path;
        const char *format;        /* "raw", "qcow2" */
        const char *serial;        /* [a-z0-9-], at most 20 bytes */
        bool read_only;
} QemuDrive;

typedef struct QemuConfig {
        const char *binary;        /* qemu-system-x86_64 (PATH lookup) or a path */
        const char *kernel;        /* vmlinux */
        const char *initrd;        /* initramfs.cpio */
        const char *machine;       /* "microvm" or "pc" */
        bool kvm;                  /* KVM instead of TCG */
        const char *cpu;           /* -cpu model; NULL: host under KVM, max under TCG */
        unsigned vcpus;
        uint64_t memory_mb;
        const char *hostname;
        const char *disk_path;     /* NULL: no disk */
        const char *disk_format;   /* "raw", "qcow2" */
        const char *extra_cmdline; /* appended to the kernel command line, may be NULL */
        const uint8_t *net_mac;    /* NIC on the tap passed as QEMU_FD_TAP; NULL: no NIC */
        const char *log_path;      /* QEMU's own stdout/stderr */
        const QemuDrive *drives;   /* more virtio-blk disks, found by serial in the guest */
        size_t n_drives;
        uint32_t tsc_khz;          /* the guest's TSC rate; 0: QEMU_TSC_KHZ_DEFAULT */
        bool no_acpi;              /* microvm without ACPI (qemu_kernel_takes_mmio_cmdline) */
} QemuConfig;

/* Whether the kernel image at path finds virtio-mmio devices on its command
 * line (virtio_mmio.device=, built in; Debian's kernel has virtio_mmio as
 * a module without that option): only such a guest can run on a microvm
 * without ACPI, where QEMU describes the devices that way. Looks for the
 * parameter's name in the ELF image's .rodata (the whole file when it has
 * none). 1, 0 or a negative errno. */
int qemu_kernel_takes_mmio_cmdline(const char *path);

/* Used when the host's TSC rate cannot be measured. */
#define QEMU_TSC_KHZ_DEFAULT 2000000u

/* The host's TSC rate in kHz, measured against CLOCK_MONOTONIC_RAW over a
 * few ms: under TCG the guest's TSC is the host's and runs at this rate,
 * under KVM too unless scaled. 0 where there is no TSC to read. */
uint32_t qemu_host_tsc_khz(void);

/* fd numbers the sockets get in QEMU. */
#define QEMU_FD_QMP 3
#define QEMU_FD_AGENT 4
#define QEMU_FD_CONSOLE 5
#define QEMU_FD_TAP 6

/* Builds the argv (NULL-terminated, free with strv_free-style loop via
 * qemu_argv_free()). */
int qemu_build_argv(const QemuConfig *c, char ***ret);
void qemu_argv_free(char **argv);

/* Binds and listens on a unix socket path (removing a stale one). */
int qemu_listen_socket(const char *path, int *ret_fd);

/* Starts QEMU with the three listening sockets as fds 3, 4, 5 (and the tap
 * as fd 6 when tap_fd >= 0), in a new session, stdout/stderr to
 * c->log_path. Returns its pid and a pidfd. */
int qemu_spawn(const QemuConfig *c, int qmp_fd, int agent_fd, int console_fd, int tap_fd, pid_t *ret_pid,
               int *ret_pidfd);

/* Finds qemu binary in PATH (or checks the given path). -ENOENT if absent. */
int qemu_find_binary(const char *name, char **ret);
/* Whether `qemu -M help` lists the machine type (microvm may be compiled
 * out of a QEMU build). */
int qemu_has_machine(const char *binary, const char *machine);
