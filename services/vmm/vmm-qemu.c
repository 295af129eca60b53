/* SPDX-License-Identifier: MIT */
#include <elf.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "macro.h"
#include "agent-protocol.h"
#include "vmm-qemu.h"

extern char **environ;

typedef struct Argv {
        char **v;
        size_t n;
        bool oom;
} Argv;

static void argv_add(Argv *a, const char *format, ...) _printf_(2, 3);
static void argv_add(Argv *a, const char *format, ...) {
        va_list ap;
        char *s, **v;

        if (a->oom)
                return;
        va_start(ap, format);
        if (vasprintf(&s, format, ap) < 0)
                s = NULL;
        va_end(ap);
        v = s ? realloc(a->v, (a->n + 2) * sizeof(char *)) : NULL;
        if (!v) {
                free(s);
                a->oom = true;
                return;
        }
        a->v = v;
        a->v[a->n++] = s;
        a->v[a->n] = NULL;
}

void qemu_argv_free(char **argv) {
        if (!argv)
                return;
        for (char **i = argv; *i; i++)
                free(*i);
        free(argv);
}

int qemu_build_argv(const QemuConfig *c, char ***ret) {
        bool microvm = streq(c->machine, "microvm");
        Argv a = {};

        argv_add(&a, "%s", c->binary);
        /* DESIGN.md: microvm is the fastest boot here (no option ROMs, an
         * RTC for the guest clock); pc is the fallback. No ACPI on microvm:
         * its interpreter, the GED device and PnP took ~90 ms of a TCG
         * guest's boot (bench/vmm/RESULTS.md); the guest finds its CPUs in
         * the MP table and its virtio-mmio devices on the command line,
         * where QEMU puts them then, and it ends itself with a reset (see
         * hostmesh.poweroff below). */
        argv_add(&a, "-M");
        bool no_acpi = microvm && c->no_acpi;
        argv_add(&a, "%s",
                 !microvm  ? "pc"
                 : no_acpi ? "microvm,x-option-roms=off,rtc=on,acpi=off"
                           : "microvm,x-option-roms=off,rtc=on");
        argv_add(&a, "-accel");
        argv_add(&a, "%s", c->kvm ? "kvm" : "tcg");
        argv_add(&a, "-cpu");
        argv_add(&a, "%s", c->cpu ?: (c->kvm ? "host" : "max"));
        argv_add(&a, "-smp");
        argv_add(&a, "%u", c->vcpus);
        argv_add(&a, "-m");
        argv_add(&a, "%" PRIu64 "M", c->memory_mb);
        argv_add(&a, "-nodefaults");
        argv_add(&a, "-no-user-config");
        argv_add(&a, "-nographic");
        /* A guest reset ends the VM: hostmesh-init falls back to a reboot
         * when ACPI power-off is not there. */
        argv_add(&a, "-no-reboot");
        argv_add(&a, "-kernel");
        argv_add(&a, "%s", c->kernel);
        argv_add(&a, "-initrd");
        argv_add(&a, "%s", c->initrd);
        argv_add(&a, "-append");
        /* tsc_early_khz: the TSC rate, so that the guest neither calibrates
         * it (~1 boot in 6 hung doing so under TCG, DESIGN.md) nor runs its
         * clock at a wrong rate. lpj: the delay loop value for that rate at
         * HZ 250, given so that the secondary CPUs skip their calibration
         * (~0.25 s per boot under TCG, bench/vmm/RESULTS.md).
         * tsc=reliable, under TCG only: the guest's TSC is the host's
         * invariant one, but without it the guest sees the vCPUs' TSCs
         * disagree, marks the TSC unstable and keeps time in 4 ms jiffies
         * (every guest timing, the boot phases included, then moves in 4 ms
         * steps). lapic_timer_khz, under TCG only: QEMU's emulated local
         * APIC counts at 1 GHz but says so nowhere, and the guest would
         * spend 100 ms measuring it (guest/kernel-patches/; under KVM the
         * TSC deadline timer needs no measuring, and Debian's kernel
         * ignores the option). 8250.nr_uarts=1 and pty.legacy_count=0: one
         * serial port to probe and no legacy ptys to create, ~5% of the
         * kernel's boot under TCG. random.trust_cpu=on: the random pool is seeded from
         * RDRAND at once (QEMU's RDRAND is the host's getrandom under TCG,
         * the host's CPU under KVM; the host is the guest's root of trust
         * anyway), 4 M instructions less before init. panic=-1: a guest
         * panic ends the VM. On microvm, acpi=off (there are no tables to
         * look for), reboot=t (the reset that ends the VM, by triple fault:
         * no keyboard controller to try first) and hostmesh.poweroff=reset
         * (hostmesh-init resets instead of powering off, which without ACPI
         * would halt the guest and leave QEMU running). */
        uint32_t tsc_khz = c->tsc_khz ?: QEMU_TSC_KHZ_DEFAULT;
        argv_add(&a,
                 "console=ttyS0 quiet tsc_early_khz=%" PRIu32 " lpj=%" PRIu64 "%s 8250.nr_uarts=1 pty.legacy_count=0 "
                 "random.trust_cpu=on panic=-1%s hostmesh.hostname=%s%s%s%s",
                 tsc_khz, (uint64_t) tsc_khz * 4, c->kvm ? "" : " tsc=reliable lapic_timer_khz=1000000",
                 no_acpi ? " acpi=off reboot=t hostmesh.poweroff=reset" : "", c->hostname,
                 /* With more disks, the order of virtio-mmio probing decides
                  * which is vda: the guest finds its disk by serial. */
                 !c->disk_path ? "" : c->n_drives > 0 ? " hostmesh.disk=serial:hm-disk" : " hostmesh.disk=vda",
                 c->extra_cmdline ? " " : "",
                 c->extra_cmdline ?: "");

        argv_add(&a, "-chardev");
        argv_add(&a, "socket,id=qmp,fd=%d,server=on,wait=off", QEMU_FD_QMP);
        argv_add(&a, "-mon");
        argv_add(&a, "chardev=qmp,mode=control");
        argv_add(&a, "-chardev");
        argv_add(&a, "socket,id=console,fd=%d,server=on,wait=off", QEMU_FD_CONSOLE);
        argv_add(&a, "-serial");
        argv_add(&a, "chardev:console");

        argv_add(&a, "-device");
        /* max_ports=2: port 0 (reserved for a console) and the agent's.
         * QEMU's default of 31 makes the guest set up 64 virtqueues and
         * fill each receive queue at boot: ~4 M instructions, 4% of the
         * kernel's boot under TCG (bench/vmm/RESULTS.md). */
        argv_add(&a, "%s,max_ports=2", microvm ? "virtio-serial-device" : "virtio-serial-pci");
        argv_add(&a, "-chardev");
        argv_add(&a, "socket,id=agent,fd=%d,server=on,wait=off", QEMU_FD_AGENT);
        argv_add(&a, "-device");
        argv_add(&a, "virtserialport,chardev=agent,name=%s", AGENT_PORT_NAME);

        if (c->disk_path) {
                argv_add(&a, "-drive");
                argv_add(&a, "id=disk0,if=none,file=%s,format=%s,discard=unmap", c->disk_path,
                         c->disk_format ?: "raw");
                argv_add(&a, "-device");
                argv_add(&a, "%s,drive=disk0%s", microvm ? "virtio-blk-device" : "virtio-blk-pci",
                         c->n_drives > 0 ? ",serial=hm-disk" : "");
        }
        for (size_t k = 0; k < c->n_drives; k++) {
                const QemuDrive *d = &c->drives[k];
                /* Paths with a comma would split QEMU's option string. */
                if (strchr(d->path, ',') || strchr(d->serial, ',')) {
                        qemu_argv_free(a.v);
                        return -EINVAL;
                }
                argv_add(&a, "-drive");
                argv_add(&a, "id=disk%zu,if=none,file=%s,format=%s%s", k + 1, d->path, d->format ?: "raw",
                         d->read_only ? ",readonly=on" : ",discard=unmap");
                argv_add(&a, "-device");
                argv_add(&a, "%s,drive=disk%zu,serial=%s", microvm ? "virtio-blk-device" : "virtio-blk-pci", k + 1,
                         d->serial);
        }
        if (c->net_mac) {
                /* The tap comes from the network helper as an open fd:
                 * QEMU needs no privilege to use it. */
                argv_add(&a, "-netdev");
                argv_add(&a, "tap,id=net0,fd=%d", QEMU_FD_TAP);
                argv_add(&a, "-device");
                argv_add(&a, "%s,netdev=net0,mac=%02x:%02x:%02x:%02x:%02x:%02x",
                         microvm ? "virtio-net-device" : "virtio-net-pci", c->net_mac[0], c->net_mac[1],
                         c->net_mac[2], c->net_mac[3], c->net_mac[4], c->net_mac[5]);
        }

        if (a.oom) {
                qemu_argv_free(a.v);
                return -ENOMEM;
        }
        *ret = a.v;
        return 0;
}

int qemu_listen_socket(const char *path, int *ret_fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        if (listen(fd, 4) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int qemu_spawn(const QemuConfig *c, int qmp_fd, int agent_fd, int console_fd, int tap_fd, pid_t *ret_pid,
               int *ret_pidfd) {
        char **argv = NULL;
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        pid_t pid;
        int r, pidfd;

        if (!!c->net_mac != (tap_fd >= 0))
                return -EINVAL;
        r = qemu_build_argv(c, &argv);
        if (r < 0)
                return r;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, c->log_path, O_WRONLY | O_CREAT | O_APPEND, 0640);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
        /* dup2 clears O_CLOEXEC on the target fds. */
        posix_spawn_file_actions_adddup2(&fa, qmp_fd, QEMU_FD_QMP);
        posix_spawn_file_actions_adddup2(&fa, agent_fd, QEMU_FD_AGENT);
        posix_spawn_file_actions_adddup2(&fa, console_fd, QEMU_FD_CONSOLE);
        if (tap_fd >= 0)
                posix_spawn_file_actions_adddup2(&fa, tap_fd, QEMU_FD_TAP);
        /* A session of its own: not in vmmd's process group, so signals
         * for vmmd's group and vmmd's death leave the VM running. */
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

        r = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        qemu_argv_free(argv);
        if (r != 0)
                return -r;

        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                r = -errno;
                (void) kill(pid, SIGKILL);
                return r;
        }
        *ret_pid = pid;
        *ret_pidfd = pidfd;
        return 0;
}

int qemu_find_binary(const char *name, char **ret) {
        const char *path;
        _cleanup_free_ char *copy = NULL;

        if (strchr(name, '/')) {
                if (access(name, X_OK) < 0)
                        return -errno;
                *ret = strdup(name);
                return *ret ? 0 : -ENOMEM;
        }
        path = getenv("PATH") ?: "/usr/local/bin:/usr/bin:/bin";
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        for (char *save = NULL, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                char *p;
                if (asprintf(&p, "%s/%s", d, name) < 0)
                        return -ENOMEM;
                if (access(p, X_OK) == 0) {
                        *ret = p;
                        return 0;
                }
                free(p);
        }
        return -ENOENT;
}

/* Where in an ELF64 image its .rodata is (the parameter's name is one of
 * its strings): 0 and the range, or -ENOENT when the file is not such an
 * image (the whole file is searched then). */
static int elf_rodata(int fd, uint64_t file_size, uint64_t *ret_offset, uint64_t *ret_size) {
        _cleanup_free_ Elf64_Shdr *sh = NULL;
        _cleanup_free_ char *names = NULL;
        Elf64_Ehdr eh;

        if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t) sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
            eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 ||
            eh.e_shstrndx >= eh.e_shnum || eh.e_shoff > file_size ||
            (uint64_t) eh.e_shnum * sizeof(Elf64_Shdr) > file_size - eh.e_shoff)
                return -ENOENT;
        sh = calloc(eh.e_shnum, sizeof(Elf64_Shdr));
        if (!sh)
                return -ENOMEM;
        if (pread(fd, sh, eh.e_shnum * sizeof(Elf64_Shdr), (off_t) eh.e_shoff) !=
            (ssize_t) (eh.e_shnum * sizeof(Elf64_Shdr)))
                return -ENOENT;
        const Elf64_Shdr *strs = &sh[eh.e_shstrndx];
        if (strs->sh_size == 0 || strs->sh_size > 1 << 20 || strs->sh_offset > file_size ||
            strs->sh_size > file_size - strs->sh_offset)
                return -ENOENT;
        names = malloc(strs->sh_size + 1);
        if (!names)
                return -ENOMEM;
        if (pread(fd, names, strs->sh_size, (off_t) strs->sh_offset) != (ssize_t) strs->sh_size)
                return -ENOENT;
        names[strs->sh_size] = 0;
        for (unsigned k = 0; k < eh.e_shnum; k++)
                if (sh[k].sh_name < strs->sh_size && streq(names + sh[k].sh_name, ".rodata") &&
                    sh[k].sh_type == SHT_PROGBITS && sh[k].sh_offset <= file_size &&
                    sh[k].sh_size <= file_size - sh[k].sh_offset) {
                        *ret_offset = sh[k].sh_offset;
                        *ret_size = sh[k].sh_size;
                        return 0;
                }
        return -ENOENT;
}

int qemu_kernel_takes_mmio_cmdline(const char *path) {
        static const char name[] = "virtio_mmio.device";
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t offset = 0, size, page = (uint64_t) sysconf(_SC_PAGESIZE);
        struct stat st;
        void *p;
        bool found;
        int r;

        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        size = (uint64_t) st.st_size;
        /* Only .rodata when the image has one: 0.9 of our kernel's 20 MB,
         * 4.6 of Debian's 66 (the whole of Debian's took 60 ms here). */
        r = elf_rodata(fd, size, &offset, &size);
        if (r == -ENOMEM)
                return r;
        if (size == 0)
                return 0;
        uint64_t skip = offset % page;
        p = mmap(NULL, (size_t) (size + skip), PROT_READ, MAP_PRIVATE, fd, (off_t) (offset - skip));
        if (p == MAP_FAILED)
                return -errno;
        found = memmem((const char *) p + skip, (size_t) size, name, sizeof(name) - 1) != NULL;
        (void) munmap(p, (size_t) (size + skip));
        return found;
}

int qemu_has_machine(const char *binary, const char *machine) {
        char *argv[] = { (char *) binary, (char *) "-M", (char *) "help", NULL };
        posix_spawn_file_actions_t fa;
        _cleanup_free_ char *out = NULL;
        size_t size = 0, allocated = 0;
        int p[2], r, status;
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        r = posix_spawnp(&pid, binary, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(p[1]);
        if (r != 0) {
                close(p[0]);
                return -r;
        }
        for (;;) {
                if (size + 4096 + 1 > allocated) {
                        char *n = realloc(out, allocated + 65536);
                        if (!n)
                                break;
                        out = n;
                        allocated += 65536;
                }
                ssize_t k = read(p[0], out + size, allocated - size - 1);
                if (k <= 0 || size + (size_t) k > 1024 * 1024)
                        break;
                size += (size_t) k;
        }
        close(p[0]);
        (void) waitpid(pid, &status, 0);
        if (!out)
                return -ENOMEM;
        out[size] = 0;
        /* Lines are "NAME  description". */
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
                if (strncmp(line, machine, strlen(machine)) == 0 && (line[strlen(machine)] == ' ' || !line[strlen(machine)]))
                        return 1;
        return 0;
}

#if defined(__x86_64__) || defined(__i386__)
static uint64_t raw_nsec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

uint32_t qemu_host_tsc_khz(void) {
        uint64_t best = 0;

        /* Two 4 ms windows, the larger estimate wins: a preemption between
         * the paired reads only ever shrinks one. */
        for (int k = 0; k < 2; k++) {
                uint64_t t0 = raw_nsec(), c0 = __rdtsc();
                nanosleep(&(struct timespec){ .tv_nsec = 4 * 1000 * 1000 }, NULL);
                uint64_t c1 = __rdtsc(), t1 = raw_nsec();
                if (t1 <= t0 || c1 <= c0)
                        continue;
                uint64_t khz = (c1 - c0) * 1000000ULL / (t1 - t0);
                if (khz > best)
                        best = khz;
        }
        /* Outside 100 MHz..10 GHz the reading is not a TSC rate. */
        return best >= 100000 && best <= 10000000 ? (uint32_t) best : 0;
}
#else
uint32_t qemu_host_tsc_khz(void) {
        return 0;
}
#endif
