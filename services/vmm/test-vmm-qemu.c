/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <elf.h>
#include <unistd.h>

#include "fs-util.h"
#include "vmm-qemu.h"

static char *joined(char **argv) {
        size_t n = 1;
        char *s;

        for (char **a = argv; *a; a++)
                n += strlen(*a) + 1;
        s = calloc(1, n);
        for (char **a = argv; *a; a++) {
                strcat(s, *a);
                strcat(s, " ");
        }
        return s;
}

static void test_microvm_command_line_has_the_fast_boot_flags(void **state) {
        QemuConfig c = {
                .binary = "/usr/bin/qemu-system-x86_64", .kernel = "/g/vmlinux", .initrd = "/g/initrd",
                .machine = "microvm", .vcpus = 2, .memory_mb = 4096, .hostname = "abc", .log_path = "/x/qemu.log",
                .no_acpi = true,
        };
        char **argv = NULL;
        char *s;

        (void) state;
        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        s = joined(argv);
        assert_non_null(strstr(s, "-M microvm,x-option-roms=off,rtc=on,acpi=off "));
        assert_non_null(strstr(s, "panic=-1 acpi=off reboot=t hostmesh.poweroff=reset hostmesh.hostname=abc"));
        assert_non_null(strstr(s, "-accel tcg "));
        assert_non_null(strstr(s, "-nodefaults -no-user-config -nographic"));
        assert_non_null(
                strstr(s, "tsc_early_khz=2000000 lpj=8000000 tsc=reliable lapic_timer_khz=1000000 8250.nr_uarts=1"));
        assert_non_null(strstr(s, "console=ttyS0 quiet"));
        assert_non_null(strstr(s, "hostmesh.hostname=abc"));
        assert_null(strstr(s, "hostmesh.disk"));
        assert_non_null(strstr(s, "-smp 2 -m 4096M"));
        /* One port besides the reserved port 0: 4 virtqueues, not 64. */
        assert_non_null(strstr(s, "virtio-serial-device,max_ports=2"));
        assert_non_null(strstr(s, "random.trust_cpu=on"));
        assert_non_null(strstr(s, "socket,id=qmp,fd=3,server=on,wait=off"));
        assert_non_null(strstr(s, "virtserialport,chardev=agent,name=org.hostmesh.agent.0"));
        assert_null(strstr(s, "virtio-blk"));
        assert_null(strstr(s, "-netdev"));
        free(s);
        qemu_argv_free(argv);
}

/* A kernel that needs ACPI to find its devices (Debian's) keeps it, and
 * powers off through it. */
static void test_microvm_keeps_acpi_for_a_kernel_that_needs_it(void **state) {
        QemuConfig c = {
                .binary = "qemu-system-x86_64", .kernel = "/g/vmlinux", .initrd = "/g/initrd", .machine = "microvm",
                .vcpus = 1, .memory_mb = 1024, .hostname = "abc", .log_path = "/x/qemu.log",
        };
        char **argv = NULL;
        char *s;

        (void) state;
        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        s = joined(argv);
        assert_non_null(strstr(s, "-M microvm,x-option-roms=off,rtc=on "));
        assert_null(strstr(s, "acpi=off"));
        assert_null(strstr(s, "hostmesh.poweroff"));
        free(s);
        qemu_argv_free(argv);
}

#define WRITE_LITERAL(path, s) write_file_atomic(path, s, sizeof(s) - 1, 0644)

static void test_kernel_probe_finds_the_mmio_command_line_parameter(void **state) {
        char dir[] = "/tmp/test-vmm-qemu-XXXXXX", with[64], without[64], empty[64];

        (void) state;
        assert_non_null(mkdtemp(dir));
        snprintf(with, sizeof(with), "%s/with", dir);
        snprintf(without, sizeof(without), "%s/without", dir);
        snprintf(empty, sizeof(empty), "%s/empty", dir);
        assert_int_equal(WRITE_LITERAL(with, "\177ELF...device\0virtio_mmio.device\0virtio_mmio..."), 0);
        assert_int_equal(WRITE_LITERAL(without, "\177ELF...virtio_mmio.devic\0virtio_mmio\0.device\0"), 0);
        assert_int_equal(WRITE_LITERAL(empty, ""), 0);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(with), 1);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(without), 0);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(empty), 0);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(dir), -EINVAL);
        assert_int_equal(unlink(with), 0);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(with), -ENOENT);
        assert_int_equal(unlink(without), 0);
        assert_int_equal(unlink(empty), 0);
        assert_int_equal(rmdir(dir), 0);
}

/* An ELF64 file with .shstrtab and a 32-byte .rodata at 320; the name is
 * written at `at`, inside .rodata or not. */
static int write_elf(const char *path, size_t at) {
        static const char names[] = "\0.shstrtab\0.rodata";
        uint8_t img[512] = {};
        Elf64_Ehdr eh = { .e_ident = { ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB, EV_CURRENT },
                          .e_shoff = 64, .e_shentsize = sizeof(Elf64_Shdr), .e_shnum = 3, .e_shstrndx = 1 };
        Elf64_Shdr sh[3] = {
                {},
                { .sh_name = 1, .sh_type = SHT_STRTAB, .sh_offset = 256, .sh_size = sizeof(names) },
                { .sh_name = 11, .sh_type = SHT_PROGBITS, .sh_offset = 320, .sh_size = 32 },
        };

        memcpy(img, &eh, sizeof(eh));
        memcpy(img + 64, sh, sizeof(sh));
        memcpy(img + 256, names, sizeof(names));
        memcpy(img + at, "virtio_mmio.device", 18);
        return write_file_atomic(path, img, sizeof(img), 0644);
}

/* In an ELF image only .rodata is read: the name elsewhere does not count. */
static void test_kernel_probe_reads_the_elf_images_rodata(void **state) {
        char dir[] = "/tmp/test-vmm-qemu-XXXXXX", inside[64], outside[64];

        (void) state;
        assert_non_null(mkdtemp(dir));
        snprintf(inside, sizeof(inside), "%s/inside", dir);
        snprintf(outside, sizeof(outside), "%s/outside", dir);
        assert_int_equal(write_elf(inside, 330), 0);
        assert_int_equal(write_elf(outside, 400), 0);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(inside), 1);
        assert_int_equal(qemu_kernel_takes_mmio_cmdline(outside), 0);
        assert_int_equal(unlink(inside), 0);
        assert_int_equal(unlink(outside), 0);
        assert_int_equal(rmdir(dir), 0);
}

static void test_host_tsc_rate_is_plausible(void **state) {
        uint32_t khz = qemu_host_tsc_khz();

        (void) state;
#if defined(__x86_64__)
        /* Any x86-64 host this runs on has a TSC between 100 MHz and 10 GHz,
         * and two readings agree within 10% (a
         * preempted window reads low, a busy test machine preempts). */
        uint32_t again = qemu_host_tsc_khz();
        assert_true(khz >= 100000 && khz <= 10000000);
        assert_true(again > khz - khz / 10 && again < khz + khz / 10);
#else
        assert_int_equal(khz, 0);
#endif
}

static void test_pc_with_disk_uses_pci_devices(void **state) {
        QemuConfig c = {
                .binary = "qemu-system-x86_64", .kernel = "k", .initrd = "i", .machine = "pc", .kvm = true,
                .vcpus = 4, .memory_mb = 8192, .hostname = "h", .disk_path = "/d/disk.qcow2", .disk_format = "qcow2",
                .log_path = "l", .tsc_khz = 2694138,
        };
        char **argv = NULL;
        char *s;

        (void) state;
        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        s = joined(argv);
        assert_non_null(strstr(s, "-M pc "));
        /* pc keeps its ACPI, and powers off through it. */
        assert_null(strstr(s, "acpi=off"));
        assert_null(strstr(s, "hostmesh.poweroff"));
        /* The measured rate and its delay loop; the TSC is left to KVM's
         * own judgement. */
        assert_non_null(strstr(s, "tsc_early_khz=2694138 lpj=10776552 8250.nr_uarts=1"));
        assert_null(strstr(s, "tsc=reliable"));
        assert_null(strstr(s, "lapic_timer_khz"));
        assert_non_null(strstr(s, "-accel kvm -cpu host"));
        assert_non_null(strstr(s, "virtio-serial-pci,max_ports=2"));
        assert_non_null(strstr(s, "file=/d/disk.qcow2,format=qcow2"));
        assert_non_null(strstr(s, "virtio-blk-pci,drive=disk0"));
        assert_non_null(strstr(s, "hostmesh.disk=vda"));
        free(s);
        qemu_argv_free(argv);
}

static void test_nic_on_the_passed_tap_fd_with_its_mac(void **state) {
        static const uint8_t mac[6] = { 0x02, 0x68, 0x6d, 0x00, 0x01, 0x0a };
        QemuConfig c = {
                .binary = "q", .kernel = "k", .initrd = "i", .machine = "microvm", .vcpus = 1, .memory_mb = 1024,
                .hostname = "h", .net_mac = mac, .extra_cmdline = "hostmesh.ip=10.88.1.10", .log_path = "l",
        };
        char **argv = NULL;
        char *s;

        (void) state;
        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        s = joined(argv);
        assert_non_null(strstr(s, "-netdev tap,id=net0,fd=6 "));
        assert_non_null(strstr(s, "-device virtio-net-device,netdev=net0,mac=02:68:6d:00:01:0a "));
        assert_non_null(strstr(s, "hostmesh.hostname=h hostmesh.ip=10.88.1.10 "));
        free(s);
        qemu_argv_free(argv);
        c.machine = "pc";
        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        s = joined(argv);
        assert_non_null(strstr(s, "-device virtio-net-pci,netdev=net0,mac=02:68:6d:00:01:0a "));
        free(s);
        qemu_argv_free(argv);
        /* A MAC without a tap (or the reverse) is a caller's bug. */
        assert_int_equal(qemu_spawn(&c, 0, 0, 0, /* tap_fd= */ -1, NULL, NULL), -EINVAL);
}

static void test_find_binary_reports_missing(void **state) {
        char *p = NULL;

        (void) state;
        assert_int_equal(qemu_find_binary("hostmesh-no-such-qemu", &p), -ENOENT);
        assert_int_equal(qemu_find_binary("sh", &p), 0);
        assert_non_null(strstr(p, "/sh"));
        free(p);
}

static void test_qemu_lists_microvm_and_pc_but_not_a_made_up_machine(void **state) {
        (void) state;
        if (access("/usr/bin/qemu-system-x86_64", X_OK) < 0)
                skip();
        assert_int_equal(qemu_has_machine("qemu-system-x86_64", "microvm"), 1);
        assert_int_equal(qemu_has_machine("qemu-system-x86_64", "pc"), 1);
        assert_int_equal(qemu_has_machine("qemu-system-x86_64", "micro"), 0);
        assert_true(qemu_has_machine("hostmesh-no-such-qemu", "pc") < 0);
}

static void test_container_disks_are_found_by_serial_and_the_system_disk_is_read_only(void **state) {
        QemuDrive drives[] = {
                { .path = "/g/system.img", .format = "raw", .serial = "hm-system", .read_only = true },
                { .path = "/p/c1.qcow2", .format = "qcow2", .serial = "hm-c0123456789abcdef" },
        };
        QemuConfig c = {
                .binary = "qemu-system-x86_64", .kernel = "k", .initrd = "i", .machine = "microvm", .vcpus = 2,
                .memory_mb = 2048, .hostname = "h", .disk_path = "/d/disk.raw", .disk_format = "raw",
                .log_path = "l", .drives = drives, .n_drives = 2,
        };
        QemuDrive bad = { .path = "/p/a,b.qcow2", .format = "qcow2", .serial = "hm-x" };
        char **argv = NULL;
        char *s;

        (void) state;
        assert_int_equal(qemu_build_argv(&c, &argv), 0);
        s = joined(argv);
        /* With more disks, the instance disk is named by serial too. */
        assert_non_null(strstr(s, "hostmesh.disk=serial:hm-disk"));
        assert_non_null(strstr(s, "virtio-blk-device,drive=disk0,serial=hm-disk "));
        assert_non_null(strstr(s, "id=disk1,if=none,file=/g/system.img,format=raw,readonly=on "));
        assert_non_null(strstr(s, "virtio-blk-device,drive=disk1,serial=hm-system "));
        assert_non_null(strstr(s, "id=disk2,if=none,file=/p/c1.qcow2,format=qcow2,discard=unmap "));
        assert_non_null(strstr(s, "virtio-blk-device,drive=disk2,serial=hm-c0123456789abcdef "));
        free(s);
        qemu_argv_free(argv);

        /* A comma would split QEMU's option string: refused. */
        c.drives = &bad;
        c.n_drives = 1;
        assert_int_equal(qemu_build_argv(&c, &argv), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_microvm_command_line_has_the_fast_boot_flags),
                cmocka_unit_test(test_microvm_keeps_acpi_for_a_kernel_that_needs_it),
                cmocka_unit_test(test_kernel_probe_finds_the_mmio_command_line_parameter),
                cmocka_unit_test(test_kernel_probe_reads_the_elf_images_rodata),
                cmocka_unit_test(test_host_tsc_rate_is_plausible),
                cmocka_unit_test(test_pc_with_disk_uses_pci_devices),
                cmocka_unit_test(test_container_disks_are_found_by_serial_and_the_system_disk_is_read_only),
                cmocka_unit_test(test_nic_on_the_passed_tap_fd_with_its_mac),
                cmocka_unit_test(test_find_binary_reports_missing),
                cmocka_unit_test(test_qemu_lists_microvm_and_pc_but_not_a_made_up_machine),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
