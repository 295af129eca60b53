/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "fs-util.h"
#include "log.h"
#include "macro.h"
#include "vmm-accel.h"

extern char **environ;

/* CPU models tried in order. `-cpu host` is the fast one; nested hosts
 * that advertise features they cannot set (MSR 0x10a, IA32_ARCH_CAPABILITIES)
 * make QEMU abort on it, and a named model does not ask for those. */
static const char *const cpu_models[] = { "host", "host,-arch-capabilities", "qemu64" };

/* The probe guest's loop: ~20 ms on a KVM that runs guests at native
 * speed, so the bound of a run is two orders of magnitude above it. */
#define PROBE_LOOP_ITERATIONS 50000000u
#define PROBE_TIMEOUT_USEC (3 * USEC_PER_SEC)
#define PROBE_OUTPUT_MAX (64 * 1024)
#define WORDS_MAX 600

static const char probe_line_started[] = "HMPROBE1";
static const char probe_line_finished[] = "HMPROBE2";

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

int accel_mode_from_string(const char *s, AccelMode *ret) {
        if (streq(s, "auto"))
                *ret = ACCEL_AUTO;
        else if (streq(s, "kvm"))
                *ret = ACCEL_KVM;
        else if (streq(s, "tcg"))
                *ret = ACCEL_TCG;
        else
                return -EINVAL;
        return 0;
}

const char *accel_mode_to_string(AccelMode m) {
        switch (m) {
        case ACCEL_AUTO:
                return "auto";
        case ACCEL_KVM:
                return "kvm";
        case ACCEL_TCG:
                return "tcg";
        }
        return "?";
}

bool accel_words_name_kvm(const char *words) {
        if (!words)
                return false;
        for (const char *c = words; c[0] && c[1] && c[2]; c++)
                if ((c[0] | 0x20) == 'k' && (c[1] | 0x20) == 'v' && (c[2] | 0x20) == 'm')
                        return true;
        return false;
}

/* ---- the decision ------------------------------------------------------ */

typedef struct AccelWaiter {
        AccelDecided cb;
        void *userdata;
} AccelWaiter;

struct Accel {
        sd_event *event;
        AccelMode mode;
        const AccelProbeOps *ops;
        void *ops_userdata;
        bool started, decided, kvm, running, failed_at_run_time;
        size_t model;             /* index in cpu_models of the run in flight */
        char *cpu, *reason, *broken;
        char *model_failures;     /* "-cpu host: <words>" of models QEMU refused */
        uint64_t start_usec, probe_usec;
        AccelWaiter *waiters;
        size_t n_waiters;
};

int accel_new(sd_event *e, AccelMode mode, const AccelProbeOps *ops, void *ops_userdata, Accel **ret) {
        Accel *a = calloc(1, sizeof(*a));

        if (!a)
                return -ENOMEM;
        a->event = sd_event_ref(e);
        a->mode = mode;
        a->ops = ops;
        a->ops_userdata = ops_userdata;
        *ret = a;
        return 0;
}

Accel *accel_free(Accel *a) {
        if (!a)
                return NULL;
        if (a->running && a->ops && a->ops->run_cancel)
                a->ops->run_cancel(a->ops_userdata);
        free(a->cpu);
        free(a->reason);
        free(a->broken);
        free(a->model_failures);
        free(a->waiters);
        sd_event_unref(a->event);
        free(a);
        return NULL;
}

static void accel_notify(Accel *a) {
        /* Callbacks may register new waiters: take the list first. */
        AccelWaiter *w = TAKE_PTR(a->waiters);
        size_t n = a->n_waiters;

        a->n_waiters = 0;
        for (size_t k = 0; k < n; k++)
                w[k].cb(a, w[k].userdata);
        free(w);
}

static void accel_decide(Accel *a, bool kvm, const char *cpu, const char *reason) {
        a->decided = true;
        a->running = false;
        a->probe_usec = a->start_usec ? now_usec() - a->start_usec : 0;
        free(a->cpu);
        free(a->reason);
        a->cpu = cpu ? strdup(cpu) : NULL;
        a->reason = strdup(reason);
        if (a->mode == ACCEL_KVM && !kvm) {
                /* Forced and broken: instances fail at once with this, rather
                 * than boot for minutes or abort in QEMU. */
                free(a->broken);
                if (asprintf(&a->broken,
                             "accel = kvm, but KVM cannot run guests on this machine (%s); set [vmm] accel = tcg "
                             "(or auto) in vmm.conf and restart vmmd",
                             reason) < 0)
                        a->broken = NULL;
                log_warning("accel = kvm, but %s; instances will fail until [vmm] accel is tcg or auto.", reason);
                kvm = true;
                if (!a->cpu)
                        a->cpu = strdup("host");
        } else if (kvm)
                log_info("Using KVM: %s.", reason);
        else
                log_info("Using TCG: %s.", reason);
        a->kvm = kvm;
        accel_notify(a);
}

static void accel_probe_failed(Accel *a, const char *what) {
        _cleanup_free_ char *reason = NULL;

        if (asprintf(&reason, "KVM probe failed: %s%s%s", what, a->model_failures ? "; before that " : "",
                     a->model_failures ?: "") < 0)
                reason = NULL;
        accel_decide(a, false, NULL, reason ?: "KVM probe failed");
}

static void accel_run_next(Accel *a);

static void accel_on_run_done(int r, const char *words, void *userdata) {
        Accel *a = userdata;
        const char *cpu = cpu_models[a->model];
        _cleanup_free_ char *what = NULL;

        a->running = false;
        if (r == 0) {
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "KVM probe passed with -cpu %s in %" PRIu64 " ms%s%s%s", cpu,
                             (uint64_t) ((now_usec() - a->start_usec) / USEC_PER_MSEC), a->model_failures ? " (" : "",
                             a->model_failures ?: "", a->model_failures ? ")" : "") < 0)
                        reason = NULL;
                accel_decide(a, true, cpu, reason ?: "KVM probe passed");
                return;
        }
        if (r == -ENOEXEC && a->model + 1 < ELEMENTSOF(cpu_models)) {
                /* QEMU refused this CPU model: the next one may do. */
                _cleanup_free_ char *prev = TAKE_PTR(a->model_failures);
                if (asprintf(&a->model_failures, "%s%s-cpu %s: QEMU said: %s", prev ?: "", prev ? "; " : "", cpu,
                             isempty(words) ? "(nothing)" : words) < 0)
                        a->model_failures = NULL;
                a->model++;
                accel_run_next(a);
                return;
        }
        if (r == -ENOEXEC)
                r = asprintf(&what, "QEMU exited with -cpu %s before the probe guest finished; QEMU said: %s", cpu,
                             isempty(words) ? "(nothing)" : words);
        else
                r = asprintf(&what, "with -cpu %s, %s", cpu, isempty(words) ? "the probe guest did not finish" : words);
        if (r < 0)
                what = NULL;
        accel_probe_failed(a, what ?: "the probe guest did not finish");
}

static void accel_run_next(Accel *a) {
        int r;

        a->running = true;
        r = a->ops->run_start(a->ops_userdata, a->event, cpu_models[a->model], accel_on_run_done, a);
        if (r < 0) {
                _cleanup_free_ char *what = NULL;
                a->running = false;
                if (asprintf(&what, "cannot start QEMU for the probe: %s", strerror(-r)) < 0)
                        what = NULL;
                accel_probe_failed(a, what ?: "cannot start QEMU for the probe");
        }
}

int accel_start(Accel *a) {
        _cleanup_free_ char *error = NULL;
        int r;

        if (a->started)
                return 0;
        a->started = true;
        if (a->mode == ACCEL_TCG) {
                accel_decide(a, false, NULL, "accel = tcg in the config");
                return 0;
        }
        a->start_usec = now_usec();
        r = a->ops->device_check(a->ops_userdata, &error);
        if (r < 0) {
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "KVM unavailable: %s", error ?: strerror(-r)) < 0)
                        reason = NULL;
                accel_decide(a, false, NULL, reason ?: "KVM unavailable");
                return 0;
        }
        a->model = 0;
        accel_run_next(a);
        return 0;
}

bool accel_decided(const Accel *a) {
        return a->decided;
}

int accel_when_decided(Accel *a, AccelDecided cb, void *userdata) {
        AccelWaiter *w;

        if (a->decided) {
                cb(a, userdata);
                return 0;
        }
        w = realloc(a->waiters, (a->n_waiters + 1) * sizeof(*w));
        if (!w)
                return -ENOMEM;
        a->waiters = w;
        a->waiters[a->n_waiters++] = (AccelWaiter){ cb, userdata };
        return 0;
}

bool accel_use_kvm(const Accel *a) {
        return a->decided && a->kvm;
}

const char *accel_cpu(const Accel *a) {
        return a->kvm ? a->cpu ?: "host" : "max";
}

const char *accel_reason(const Accel *a) {
        return a->reason ?: "not decided yet";
}

AccelMode accel_mode(const Accel *a) {
        return a->mode;
}

const char *accel_kvm_broken(const Accel *a) {
        return a->broken;
}

uint64_t accel_probe_usec(const Accel *a) {
        return a->probe_usec;
}

bool accel_retry_under_tcg(Accel *a, const char *words, uint64_t ran_usec) {
        _cleanup_free_ char *reason = NULL;

        /* Later deaths are the guest's or the host's business, and a forced
         * KVM is not second-guessed. */
        if (a->mode != ACCEL_AUTO || !a->kvm || a->failed_at_run_time || ran_usec >= ACCEL_EARLY_DEATH_USEC ||
            !accel_words_name_kvm(words))
                return false;
        a->failed_at_run_time = true;
        a->kvm = false;
        if (asprintf(&reason, "KVM failed at run time: an instance's QEMU died in its first second (%s)",
                     isempty(words) ? "no words" : words) < 0)
                reason = NULL;
        free(a->reason);
        a->reason = reason ? TAKE_PTR(reason) : strdup("KVM failed at run time");
        log_warning("Using TCG from now on: %s.", a->reason ?: "KVM failed at run time");
        return true;
}

/* ---- the probe guest ---------------------------------------------------- */

/* Where the probe is loaded: 1 MiB, above the firmware's low memory. */
#define PROBE_LOAD_ADDR 0x100000u

/* The probe's code, entered in 32-bit protected mode with paging off (the
 * PVH boot ABI). It writes a line to COM1, counts ECX down from
 * PROBE_LOOP_ITERATIONS, writes a second line and ends the VM with a triple
 * fault (an empty IDT, then int3), which QEMU's -no-reboot turns into an
 * exit. */
static size_t probe_code(uint8_t *p, uint32_t base) {
        size_t n = 0, idt_operand;

#define EMIT(b) (p[n++] = (uint8_t) (b))
#define EMIT32(v)                                                       \
        do {                                                            \
                uint32_t _v = (v);                                      \
                for (int _k = 0; _k < 4; _k++)                          \
                        EMIT(_v >> (8 * _k));                           \
        } while (0)
#define EMIT_LINE(s)                                                    \
        do {                                                            \
                for (const char *_c = (s); *_c; _c++) {                 \
                        EMIT(0xb0); /* mov al, imm8 */                  \
                        EMIT(*_c);                                      \
                        EMIT(0xee); /* out dx, al */                    \
                }                                                       \
                EMIT(0xb0);                                             \
                EMIT('\n');                                             \
                EMIT(0xee);                                             \
        } while (0)

        EMIT(0xba); /* mov edx, 0x3f8: COM1's data register */
        EMIT32(0x3f8);
        EMIT_LINE(probe_line_started);
        EMIT(0xb9); /* mov ecx, imm32 */
        EMIT32(PROBE_LOOP_ITERATIONS);
        EMIT(0x49); /* loop: dec ecx */
        EMIT(0x75); /* jnz loop */
        EMIT(0xfd);
        EMIT_LINE(probe_line_finished);
        EMIT(0x0f); /* lidt [idt]: limit 0, base 0 */
        EMIT(0x01);
        EMIT(0x1d);
        idt_operand = n;
        EMIT32(0);
        EMIT(0xcc); /* int3: no IDT, so a triple fault */
        EMIT(0xf4); /* hlt, should the fault not end the VM */
        EMIT(0xeb); /* jmp hlt */
        EMIT(0xfd);
        /* The IDT pseudo-descriptor: 6 zero bytes. */
        uint32_t idt = base + (uint32_t) n;
        for (int k = 0; k < 6; k++)
                EMIT(0);
        for (int k = 0; k < 4; k++)
                p[idt_operand + (size_t) k] = (uint8_t) (idt >> (8 * k));
#undef EMIT_LINE
#undef EMIT32
#undef EMIT
        return n;
}

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
        put16(p, (uint16_t) v);
        put16(p + 2, (uint16_t) (v >> 16));
}

static void put64(uint8_t *p, uint64_t v) {
        put32(p, (uint32_t) v);
        put32(p + 4, (uint32_t) (v >> 32));
}

int accel_probe_image_write(const char *path) {
        /* ELF64 header (64 bytes), two program headers (56 each: PT_LOAD of
         * the whole file, PT_NOTE), the Xen PHYS32_ENTRY note (24), code. */
        enum { EHDR = 64, PHDR = 56, NOTE_OFF = EHDR + 2 * PHDR, NOTE_SIZE = 24, CODE_OFF = NOTE_OFF + NOTE_SIZE };
        uint8_t img[CODE_OFF + 512] = {};
        size_t size = CODE_OFF + probe_code(img + CODE_OFF, PROBE_LOAD_ADDR + CODE_OFF);
        uint8_t *ph;

        memcpy(img, "\177ELF", 4);
        img[4] = 2; /* ELFCLASS64 */
        img[5] = 1; /* ELFDATA2LSB */
        img[6] = 1; /* EV_CURRENT */
        put16(img + 16, 2);  /* e_type: ET_EXEC */
        put16(img + 18, 62); /* e_machine: EM_X86_64, as QEMU's PVH loader expects */
        put32(img + 20, 1);  /* e_version */
        put64(img + 24, PROBE_LOAD_ADDR + CODE_OFF); /* e_entry */
        put64(img + 32, EHDR);                       /* e_phoff */
        put16(img + 52, EHDR);                       /* e_ehsize */
        put16(img + 54, PHDR);                       /* e_phentsize */
        put16(img + 56, 2);                          /* e_phnum */

        ph = img + EHDR;
        put32(ph + 0, 1); /* PT_LOAD */
        put32(ph + 4, 7); /* PF_R | PF_W | PF_X */
        put64(ph + 8, 0); /* p_offset */
        put64(ph + 16, PROBE_LOAD_ADDR);
        put64(ph + 24, PROBE_LOAD_ADDR);
        put64(ph + 32, size);
        put64(ph + 40, size);
        put64(ph + 48, 0x1000);

        ph += PHDR;
        put32(ph + 0, 4); /* PT_NOTE */
        put32(ph + 4, 4); /* PF_R */
        put64(ph + 8, NOTE_OFF);
        put64(ph + 16, PROBE_LOAD_ADDR + NOTE_OFF);
        put64(ph + 24, PROBE_LOAD_ADDR + NOTE_OFF);
        put64(ph + 32, NOTE_SIZE);
        put64(ph + 40, NOTE_SIZE);
        put64(ph + 48, 4); /* QEMU pads the note name to this */

        /* Xen's elfnote.h: type 18, XEN_ELFNOTE_PHYS32_ENTRY, the 32-bit
         * physical entry of the PVH boot ABI. QEMU reads the descriptor of
         * an ELF64 note as 64 bits. */
        put32(img + NOTE_OFF + 0, 4);  /* n_namesz: "Xen\0" */
        put32(img + NOTE_OFF + 4, 8);  /* n_descsz */
        put32(img + NOTE_OFF + 8, 18); /* n_type */
        memcpy(img + NOTE_OFF + 12, "Xen", 4);
        put64(img + NOTE_OFF + 16, PROBE_LOAD_ADDR + CODE_OFF);

        return write_file_atomic(path, img, size, 0644);
}

/* ---- the real probe: /dev/kvm and QEMU ----------------------------------- */

struct AccelQemuProbe {
        char *qemu, *machine, *image;
        const char *accel;
        uint64_t timeout_usec;
        bool image_written;

        /* The run in flight. */
        sd_event *event;
        pid_t pid;
        int pidfd, out_fd;
        sd_event_source *exit_source, *out_source, *timer;
        char *out;
        size_t out_size;
        int stage;                /* 0: nothing yet, 1: first line, 2: both lines */
        AccelRunDone done;
        void *done_userdata;
};

int accel_qemu_probe_new(const char *qemu, const char *machine, const char *work_dir, AccelQemuProbe **ret) {
        AccelQemuProbe *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->pidfd = p->out_fd = -EBADF;
        p->accel = "kvm";
        p->timeout_usec = PROBE_TIMEOUT_USEC;
        p->qemu = strdup(qemu);
        p->machine = strdup(machine);
        p->image = path_join(work_dir, "accel-probe.elf");
        if (!p->qemu || !p->machine || !p->image) {
                accel_qemu_probe_free(p);
                return -ENOMEM;
        }
        *ret = p;
        return 0;
}

void accel_qemu_probe_set(AccelQemuProbe *p, const char *accel, uint64_t timeout_usec) {
        p->accel = accel;
        p->timeout_usec = timeout_usec;
}

static void probe_run_cleanup(AccelQemuProbe *p) {
        p->exit_source = sd_event_source_disable_unref(p->exit_source);
        p->out_source = sd_event_source_disable_unref(p->out_source);
        p->timer = sd_event_source_disable_unref(p->timer);
        if (p->pidfd >= 0) {
                siginfo_t si = {};
                (void) syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
                /* QEMU dies at once on SIGKILL: reap it so no zombie stays. */
                (void) waitid(P_PIDFD, (id_t) p->pidfd, &si, WEXITED);
        }
        p->pidfd = safe_close(p->pidfd);
        p->out_fd = safe_close(p->out_fd);
        p->pid = 0;
        p->event = sd_event_unref(p->event);
}

AccelQemuProbe *accel_qemu_probe_free(AccelQemuProbe *p) {
        if (!p)
                return NULL;
        probe_run_cleanup(p);
        if (p->image_written)
                (void) unlink(p->image);
        free(p->qemu);
        free(p->machine);
        free(p->image);
        free(p->out);
        free(p);
        return NULL;
}

static int probe_device_check(void *userdata, char **ret_error) {
        _cleanup_close_ int fd = -EBADF, vm = -EBADF;
        int r, version;

        (void) userdata;
        fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                if (r == -ENOENT)
                        *ret_error = strdup("no /dev/kvm on this machine");
                else if (asprintf(ret_error, "/dev/kvm cannot be opened: %s", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        version = ioctl(fd, KVM_GET_API_VERSION, 0);
        if (version != KVM_API_VERSION) {
                r = version < 0 ? -errno : -EPROTO;
                if (asprintf(ret_error, "/dev/kvm answers KVM_GET_API_VERSION with %d (%s), expected %d", version,
                             version < 0 ? strerror(-r) : "wrong version", KVM_API_VERSION) < 0)
                        *ret_error = NULL;
                return r;
        }
        vm = ioctl(fd, KVM_CREATE_VM, 0);
        if (vm < 0) {
                r = -errno;
                if (asprintf(ret_error, "KVM_CREATE_VM on /dev/kvm failed: %s", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        return 0;
}

/* What QEMU printed, without the probe's own lines, on one line. */
static char *probe_words(const AccelQemuProbe *p) {
        size_t n = 0;
        char *w = malloc(WORDS_MAX + 4);

        if (!w)
                return NULL;
        for (size_t k = 0; k < p->out_size && n < WORDS_MAX;) {
                const char *line = p->out + k, *end = memchr(line, '\n', p->out_size - k);
                size_t len = end ? (size_t) (end - line) : p->out_size - k;

                k += len + 1;
                while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
                        len--;
                if (len == 0 || (len == strlen(probe_line_started) && !memcmp(line, probe_line_started, len)) ||
                    (len == strlen(probe_line_finished) && !memcmp(line, probe_line_finished, len)))
                        continue;
                if (n > 0) {
                        w[n++] = ';';
                        w[n++] = ' ';
                }
                for (size_t c = 0; c < len && n < WORDS_MAX; c++)
                        w[n++] = (line[c] >= ' ' && line[c] < 0x7f) ? line[c] : '?';
        }
        w[n] = 0;
        return w;
}

static void probe_finish(AccelQemuProbe *p, int r, const char *words) {
        AccelRunDone done = p->done;
        void *ud = p->done_userdata;

        p->done = NULL;
        probe_run_cleanup(p);
        if (done)
                done(r, words, ud);
}

static bool probe_has_line(const AccelQemuProbe *p, const char *line) {
        size_t len = strlen(line);

        for (size_t k = 0; k + len <= p->out_size; k++)
                if ((k == 0 || p->out[k - 1] == '\n') && !memcmp(p->out + k, line, len) &&
                    (k + len == p->out_size || p->out[k + len] == '\n' || p->out[k + len] == '\r'))
                        return true;
        return false;
}

/* Reads what is there; returns true when the pipe is at its end. */
static bool probe_read(AccelQemuProbe *p) {
        for (;;) {
                char buf[4096];
                ssize_t n = read(p->out_fd, buf, sizeof(buf));
                if (n < 0)
                        return errno != EAGAIN && errno != EINTR;
                if (n == 0)
                        return true;
                if (p->out_size + (size_t) n > PROBE_OUTPUT_MAX)
                        continue; /* keep the beginning; QEMU's first words are the ones that matter */
                char *o = realloc(p->out, p->out_size + (size_t) n + 1);
                if (!o)
                        return true;
                p->out = o;
                memcpy(p->out + p->out_size, buf, (size_t) n);
                p->out_size += (size_t) n;
                p->out[p->out_size] = 0;
        }
}

static void probe_check(AccelQemuProbe *p) {
        if (p->stage < 1 && probe_has_line(p, probe_line_started))
                p->stage = 1;
        if (p->stage < 2 && probe_has_line(p, probe_line_finished)) {
                p->stage = 2;
                probe_finish(p, 0, NULL);
        }
}

static int probe_on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AccelQemuProbe *p = userdata;

        (void) fd;
        (void) revents;
        if (probe_read(p))
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        probe_check(p);
        return 0;
}

static int probe_on_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AccelQemuProbe *p = userdata;
        _cleanup_free_ char *words = NULL;

        (void) s;
        (void) fd;
        (void) revents;
        (void) probe_read(p);
        probe_check(p);
        if (!p->done)
                return 0;
        words = probe_words(p);
        probe_finish(p, -ENOEXEC, words);
        return 0;
}

static int probe_on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        AccelQemuProbe *p = userdata;
        _cleanup_free_ char *words = probe_words(p), *what = NULL;
        unsigned ms = (unsigned) (p->timeout_usec / USEC_PER_MSEC);

        (void) s;
        (void) usec;
        int r;

        if (p->stage == 0)
                r = asprintf(&what, "the probe guest printed nothing within %u ms%s%s", ms,
                             isempty(words) ? "" : "; QEMU said: ", words ?: "");
        else
                r = asprintf(&what,
                             "the probe guest started but did not finish a %u-iteration loop within %u ms: "
                             "KVM runs guests too slowly here",
                             PROBE_LOOP_ITERATIONS, ms);
        if (r < 0)
                what = NULL;
        probe_finish(p, -ETIMEDOUT, what ?: "the probe guest did not finish in time");
        return 0;
}

static int probe_run_start(void *userdata, sd_event *e, const char *cpu, AccelRunDone done, void *done_userdata) {
        AccelQemuProbe *p = userdata;
        bool microvm = streq(p->machine, "microvm");
        const char *machine = microvm ? "microvm,x-option-roms=off,rtc=off" : "pc";
        char *argv[] = {
                p->qemu, (char *) "-M", (char *) machine, (char *) "-accel", (char *) p->accel, (char *) "-cpu",
                (char *) cpu, (char *) "-smp", (char *) "1", (char *) "-m", (char *) "32M", (char *) "-nodefaults",
                (char *) "-no-user-config", (char *) "-display", (char *) "none", (char *) "-no-reboot",
                (char *) "-serial", (char *) "stdio", (char *) "-kernel", p->image, NULL,
        };
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        int pipefd[2], r;

        if (p->done)
                return -EBUSY;
        if (!p->image_written) {
                r = accel_probe_image_write(p->image);
                if (r < 0)
                        return r;
                p->image_written = true;
        }
        if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
        /* vmmd blocks the signals its loop handles: the child starts clean. */
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        r = posix_spawnp(&p->pid, p->qemu, &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        close(pipefd[1]);
        if (r != 0) {
                close(pipefd[0]);
                return -r;
        }
        p->out_fd = pipefd[0];
        p->pidfd = (int) syscall(SYS_pidfd_open, p->pid, 0);
        if (p->pidfd < 0) {
                r = -errno;
                (void) kill(p->pid, SIGKILL);
                (void) waitpid(p->pid, NULL, 0);
                p->out_fd = safe_close(p->out_fd);
                return r;
        }
        free(p->out);
        p->out = NULL;
        p->out_size = 0;
        p->stage = 0;
        p->event = sd_event_ref(e);
        r = sd_event_add_io(e, &p->out_source, p->out_fd, EPOLLIN, probe_on_output, p);
        if (r >= 0)
                r = sd_event_add_io(e, &p->exit_source, p->pidfd, EPOLLIN, probe_on_exit, p);
        if (r >= 0)
                r = sd_event_add_time_relative(e, &p->timer, CLOCK_MONOTONIC, p->timeout_usec, 10 * USEC_PER_MSEC,
                                               probe_on_timeout, p);
        if (r < 0) {
                probe_run_cleanup(p);
                return r;
        }
        p->done = done;
        p->done_userdata = done_userdata;
        return 0;
}

static void probe_run_cancel(void *userdata) {
        AccelQemuProbe *p = userdata;

        p->done = NULL;
        probe_run_cleanup(p);
}

const AccelProbeOps accel_qemu_probe_ops = {
        .device_check = probe_device_check,
        .run_start = probe_run_start,
        .run_cancel = probe_run_cancel,
};
