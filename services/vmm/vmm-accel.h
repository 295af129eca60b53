/* SPDX-License-Identifier: MIT */
#pragma once

/* The accelerator: KVM or TCG, decided by measurement.
 *
 * A /dev/kvm that opens is not a KVM that runs guests: on nested hosts it
 * can answer every ioctl and still abort QEMU on an MSR, or run a guest so
 * slowly that nothing boots. So under `accel = auto` vmmd proves KVM once
 * per start: a few ioctls on the device, then a tiny probe guest (an ELF
 * of a few dozen bytes booted the way instances are) that must print a
 * first line, run a counted loop and print a second line within a bound.
 * A QEMU that dies on a CPU model (say, `-cpu host` on MSR 0x10a) makes the
 * probe try the next model; a guest that is too slow ends the probe: the
 * accelerator itself is at fault. The decision is cached for the life of
 * the process and can be revised once at run time, when an instance's QEMU
 * dies of a KVM error in its first second. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef enum AccelMode {
        ACCEL_AUTO,
        ACCEL_KVM,
        ACCEL_TCG,
} AccelMode;

int accel_mode_from_string(const char *s, AccelMode *ret);
const char *accel_mode_to_string(AccelMode m);

/* One run of the probe guest under KVM with a CPU model has ended: r = 0
 * when it printed both lines in time; -ENOEXEC when QEMU exited before
 * (words: what it said); -ETIMEDOUT when the guest was too slow (words: how
 * far it got). */
typedef void (*AccelRunDone)(int r, const char *words, void *userdata);

/* How the probe reaches the machine; tests inject their own. */
typedef struct AccelProbeOps {
        /* Opens /dev/kvm and asks it for a VM: 0, or a negative errno and
         * what failed. */
        int (*device_check)(void *userdata, char **ret_error);
        /* Starts the probe guest with the CPU model; done() is called
         * exactly once, later, from the event loop (unless start fails). */
        int (*run_start)(void *userdata, sd_event *e, const char *cpu, AccelRunDone done, void *done_userdata);
        /* Stops a run in flight (vmmd is going away). */
        void (*run_cancel)(void *userdata);
} AccelProbeOps;

typedef struct Accel Accel;

int accel_new(sd_event *e, AccelMode mode, const AccelProbeOps *ops, void *ops_userdata, Accel **ret);
Accel *accel_free(Accel *a);

/* Starts deciding (at once for tcg; the probe otherwise). */
int accel_start(Accel *a);
bool accel_decided(const Accel *a);
/* Called once when the decision is there (at once if it already is). */
typedef void (*AccelDecided)(Accel *a, void *userdata);
int accel_when_decided(Accel *a, AccelDecided cb, void *userdata);

/* The decision. */
bool accel_use_kvm(const Accel *a);
/* The -cpu model for KVM ("host", or the model that worked). */
const char *accel_cpu(const Accel *a);
/* Why: "KVM probe passed with -cpu host in 84 ms", "KVM probe failed: ...". */
const char *accel_reason(const Accel *a);
AccelMode accel_mode(const Accel *a);
/* accel = kvm and the probe says KVM cannot run guests: instances fail at
 * once with this reason rather than hang. NULL otherwise. */
const char *accel_kvm_broken(const Accel *a);
uint64_t accel_probe_usec(const Accel *a);

/* An instance's QEMU that ran under KVM exited while booting, after
 * `ran_usec`, saying `words`. When that is a KVM failure in its first
 * second under auto, KVM is given up for the rest of the process and the
 * caller retries the instance under TCG (true). */
#define ACCEL_EARLY_DEATH_USEC 1000000ULL /* 1 s */
bool accel_retry_under_tcg(Accel *a, const char *words, uint64_t ran_usec);

/* Whether what QEMU printed names a KVM failure. */
bool accel_words_name_kvm(const char *words);

/* The real probe: device ioctls, then QEMU with the probe guest. */
typedef struct AccelQemuProbe AccelQemuProbe;
int accel_qemu_probe_new(const char *qemu, const char *machine, const char *work_dir, AccelQemuProbe **ret);
AccelQemuProbe *accel_qemu_probe_free(AccelQemuProbe *p);
extern const AccelProbeOps accel_qemu_probe_ops;
/* Which accelerator the QEMU runs use ("kvm"; tests use "tcg" to check
 * the probe guest on machines without KVM) and the bound of one run. */
void accel_qemu_probe_set(AccelQemuProbe *p, const char *accel, uint64_t timeout_usec);

/* Writes the probe guest: an ELF64 with a PVH entry note. */
int accel_probe_image_write(const char *path);
