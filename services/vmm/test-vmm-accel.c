/* SPDX-License-Identifier: MIT */
/* The accelerator decision with the probe injected, and the real probe
 * guest booted under TCG (it must print both of its lines and exit). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>

#include "macro.h"
#include "vmm-accel.h"
#include "vmm-qemu.h"

/* A scripted probe: the device answer, then one outcome per CPU model. */
typedef struct Script {
        int device;
        const char *device_error;
        struct {
                int r;
                const char *words;
        } runs[4];
        size_t n_runs, next;
        char cpus[4][64];
        AccelRunDone done;
        void *done_userdata;
        sd_event_source *defer;
} Script;

static int fake_device_check(void *userdata, char **ret_error) {
        Script *s = userdata;
        if (s->device < 0)
                *ret_error = strdup(s->device_error);
        return s->device;
}

static int fake_run_deliver(sd_event_source *src, void *userdata) {
        Script *s = userdata;
        size_t k = s->next++;

        (void) src;
        s->defer = sd_event_source_unref(s->defer);
        s->done(s->runs[k].r, s->runs[k].words, s->done_userdata);
        return 0;
}

static int fake_run_start(void *userdata, sd_event *e, const char *cpu, AccelRunDone done, void *done_userdata) {
        Script *s = userdata;

        assert_true(s->next < s->n_runs);
        snprintf(s->cpus[s->next], sizeof(s->cpus[0]), "%s", cpu);
        s->done = done;
        s->done_userdata = done_userdata;
        /* Later, from the loop, as the real QEMU run does. */
        return sd_event_add_defer(e, &s->defer, fake_run_deliver, s);
}

static void fake_run_cancel(void *userdata) {
        Script *s = userdata;
        s->defer = sd_event_source_disable_unref(s->defer);
}

static const AccelProbeOps fake_ops = {
        .device_check = fake_device_check,
        .run_start = fake_run_start,
        .run_cancel = fake_run_cancel,
};

static void on_decided(Accel *a, void *userdata) {
        (void) a;
        (*(int *) userdata)++;
}

/* Runs the loop until the decision is there. */
static Accel *decide(AccelMode mode, Script *s, sd_event **ret_event) {
        sd_event *e = NULL;
        Accel *a = NULL;
        int calls = 0;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(accel_new(e, mode, &fake_ops, s, &a), 0);
        assert_int_equal(accel_when_decided(a, on_decided, &calls), 0);
        assert_int_equal(accel_start(a), 0);
        for (int k = 0; k < 100 && !accel_decided(a); k++)
                assert_true(sd_event_run(e, 100 * 1000) >= 0);
        assert_true(accel_decided(a));
        assert_int_equal(calls, 1);
        *ret_event = e;
        return a;
}

static void test_probe_ok_with_host_uses_kvm_and_host(void **state) {
        Script s = { .runs = { { 0, NULL } }, .n_runs = 1 };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);

        (void) state;
        assert_true(accel_use_kvm(a));
        assert_string_equal(accel_cpu(a), "host");
        assert_string_equal(s.cpus[0], "host");
        assert_non_null(strstr(accel_reason(a), "KVM probe passed with -cpu host"));
        assert_null(accel_kvm_broken(a));
        accel_free(a);
        sd_event_unref(e);
}

static void test_msr_abort_on_host_moves_to_the_next_model(void **state) {
        Script s = {
                .runs = { { -ENOEXEC, "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" }, { 0, NULL } },
                .n_runs = 2,
        };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);

        (void) state;
        assert_true(accel_use_kvm(a));
        assert_string_equal(s.cpus[1], "host,-arch-capabilities");
        assert_string_equal(accel_cpu(a), "host,-arch-capabilities");
        /* The reason keeps what the refused model said. */
        assert_non_null(strstr(accel_reason(a), "MSR 0x10a"));
        accel_free(a);
        sd_event_unref(e);
}

static void test_slow_guest_ends_the_probe_with_tcg(void **state) {
        Script s = {
                .runs = { { -ENOEXEC, "failed to set MSR 0x10a" },
                          { -ETIMEDOUT, "the probe guest printed nothing within 3000 ms" } },
                .n_runs = 2,
        };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);

        (void) state;
        assert_false(accel_use_kvm(a));
        assert_string_equal(accel_cpu(a), "max");
        /* A slow guest is the accelerator's fault: no third model. */
        assert_int_equal(s.next, 2);
        assert_non_null(strstr(accel_reason(a), "KVM probe failed: with -cpu host,-arch-capabilities, the probe guest "
                                                "printed nothing within 3000 ms"));
        assert_non_null(strstr(accel_reason(a), "MSR 0x10a"));
        accel_free(a);
        sd_event_unref(e);
}

static void test_every_model_refused_gives_tcg_with_qemus_words(void **state) {
        Script s = {
                .runs = { { -ENOEXEC, "one" }, { -ENOEXEC, "two" }, { -ENOEXEC, "three" } },
                .n_runs = 3,
        };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);

        (void) state;
        assert_false(accel_use_kvm(a));
        assert_string_equal(s.cpus[2], "qemu64");
        assert_non_null(strstr(accel_reason(a), "QEMU exited with -cpu qemu64 before the probe guest finished; QEMU "
                                                "said: three"));
        assert_non_null(strstr(accel_reason(a), "-cpu host: QEMU said: one"));
        accel_free(a);
        sd_event_unref(e);
}

static void test_no_device_gives_tcg_without_running_qemu(void **state) {
        Script s = { .device = -ENXIO, .device_error = "/dev/kvm cannot be opened: No such device or address" };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);

        (void) state;
        assert_false(accel_use_kvm(a));
        assert_int_equal(s.next, 0);
        assert_string_equal(accel_reason(a), "KVM unavailable: /dev/kvm cannot be opened: No such device or address");
        accel_free(a);
        sd_event_unref(e);
}

static void test_forced_tcg_never_probes(void **state) {
        Script s = { .device = -EIO, .device_error = "must not be asked" };
        sd_event *e;
        Accel *a = decide(ACCEL_TCG, &s, &e);

        (void) state;
        assert_false(accel_use_kvm(a));
        assert_string_equal(accel_reason(a), "accel = tcg in the config");
        assert_null(accel_kvm_broken(a));
        accel_free(a);
        sd_event_unref(e);
}

static void test_forced_kvm_that_works_uses_the_model_that_worked(void **state) {
        Script s = { .runs = { { -ENOEXEC, "MSR" }, { 0, NULL } }, .n_runs = 2 };
        sd_event *e;
        Accel *a = decide(ACCEL_KVM, &s, &e);

        (void) state;
        assert_true(accel_use_kvm(a));
        assert_string_equal(accel_cpu(a), "host,-arch-capabilities");
        assert_null(accel_kvm_broken(a));
        accel_free(a);
        sd_event_unref(e);
}

static void test_forced_kvm_that_is_broken_says_what_to_do(void **state) {
        Script s = { .runs = { { -ETIMEDOUT, "too slow" } }, .n_runs = 1 };
        sd_event *e;
        Accel *a = decide(ACCEL_KVM, &s, &e);

        (void) state;
        /* Still KVM (it was forced), but instances fail at once with this. */
        assert_true(accel_use_kvm(a));
        assert_non_null(accel_kvm_broken(a));
        assert_non_null(strstr(accel_kvm_broken(a), "too slow"));
        assert_non_null(strstr(accel_kvm_broken(a), "set [vmm] accel = tcg"));
        /* No silent switch at run time either. */
        assert_false(accel_retry_under_tcg(a, "KVM internal error", 1000));
        accel_free(a);
        sd_event_unref(e);
}

static void test_run_time_kvm_failure_under_auto_switches_once(void **state) {
        Script s = { .runs = { { 0, NULL } }, .n_runs = 1 };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);

        (void) state;
        /* Not KVM's words, or too late to be KVM's fault: no retry. */
        assert_false(accel_retry_under_tcg(a, "could not open disk image", 1000));
        assert_false(accel_retry_under_tcg(a, "KVM internal error. Suberror: 1", 60 * 1000 * 1000));
        assert_true(accel_use_kvm(a));
        assert_true(accel_retry_under_tcg(a, "kvm_buf_set_msrs: Assertion failed", 300 * 1000));
        assert_false(accel_use_kvm(a));
        assert_non_null(strstr(accel_reason(a), "KVM failed at run time"));
        /* Once: KVM is given up, nothing more to retry. */
        assert_false(accel_retry_under_tcg(a, "kvm again", 1000));
        accel_free(a);
        sd_event_unref(e);
}

static void test_waiters_registered_after_the_decision_are_called_at_once(void **state) {
        Script s = { .device = -ENOENT, .device_error = "no /dev/kvm on this machine" };
        sd_event *e;
        Accel *a = decide(ACCEL_AUTO, &s, &e);
        int calls = 0;

        (void) state;
        assert_int_equal(accel_when_decided(a, on_decided, &calls), 0);
        assert_int_equal(calls, 1);
        accel_free(a);
        sd_event_unref(e);
}

static void test_words_naming_kvm(void **state) {
        (void) state;
        assert_true(accel_words_name_kvm("qemu: kvm_buf_set_msrs: Assertion failed"));
        assert_true(accel_words_name_kvm("KVM internal error. Suberror: 1"));
        assert_false(accel_words_name_kvm("qemu: could not open disk image"));
        assert_false(accel_words_name_kvm(NULL));
        assert_false(accel_words_name_kvm("kv"));
}

static void test_mode_strings(void **state) {
        AccelMode m;

        (void) state;
        assert_int_equal(accel_mode_from_string("auto", &m), 0);
        assert_int_equal(m, ACCEL_AUTO);
        assert_int_equal(accel_mode_from_string("tcg", &m), 0);
        assert_string_equal(accel_mode_to_string(m), "tcg");
        assert_int_equal(accel_mode_from_string("KVM", &m), -EINVAL);
        assert_int_equal(accel_mode_from_string("", &m), -EINVAL);
}

/* The real probe guest and the real QEMU runner, under TCG (which every
 * machine has): the ELF must boot through the PVH entry and print both
 * lines; the same runner then reports an exit before them as -ENOEXEC
 * with QEMU's words. */
typedef struct RunResult {
        bool done;
        int r;
        char words[1024];
} RunResult;

static void on_run(int r, const char *words, void *userdata) {
        RunResult *res = userdata;
        res->done = true;
        res->r = r;
        snprintf(res->words, sizeof(res->words), "%s", words ?: "");
}

static void run_probe(const char *machine, const char *cpu, RunResult *res) {
        _cleanup_free_ char *qemu = NULL;
        char dir[] = "/tmp/test-vmm-accel-XXXXXX";
        AccelQemuProbe *p = NULL;
        sd_event *e = NULL;

        if (qemu_find_binary("qemu-system-x86_64", &qemu) < 0) {
                res->done = true;
                res->r = 77;
                return;
        }
        assert_non_null(mkdtemp(dir));
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(accel_qemu_probe_new(qemu, machine, dir, &p), 0);
        accel_qemu_probe_set(p, "tcg", 30 * 1000 * 1000);
        assert_int_equal(accel_qemu_probe_ops.run_start(p, e, cpu, on_run, res), 0);
        while (!res->done)
                assert_true(sd_event_run(e, 1000 * 1000) >= 0);
        accel_qemu_probe_free(p);
        sd_event_unref(e);
        assert_int_equal(rmdir(dir), 0);
}

static void test_probe_guest_boots_under_tcg_on_microvm(void **state) {
        RunResult res = {};

        (void) state;
        run_probe("microvm", "max", &res);
        if (res.r == 77)
                skip();
        assert_int_equal(res.r, 0);
}

static void test_probe_guest_boots_under_tcg_on_pc(void **state) {
        RunResult res = {};

        (void) state;
        run_probe("pc", "max", &res);
        if (res.r == 77)
                skip();
        assert_int_equal(res.r, 0);
}

static void test_probe_reports_qemus_words_when_it_exits_early(void **state) {
        RunResult res = {};

        (void) state;
        run_probe("microvm", "no-such-cpu-model", &res);
        if (res.r == 77)
                skip();
        assert_int_equal(res.r, -ENOEXEC);
        assert_non_null(strstr(res.words, "no-such-cpu-model"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_probe_ok_with_host_uses_kvm_and_host),
                cmocka_unit_test(test_msr_abort_on_host_moves_to_the_next_model),
                cmocka_unit_test(test_slow_guest_ends_the_probe_with_tcg),
                cmocka_unit_test(test_every_model_refused_gives_tcg_with_qemus_words),
                cmocka_unit_test(test_no_device_gives_tcg_without_running_qemu),
                cmocka_unit_test(test_forced_tcg_never_probes),
                cmocka_unit_test(test_forced_kvm_that_works_uses_the_model_that_worked),
                cmocka_unit_test(test_forced_kvm_that_is_broken_says_what_to_do),
                cmocka_unit_test(test_run_time_kvm_failure_under_auto_switches_once),
                cmocka_unit_test(test_waiters_registered_after_the_decision_are_called_at_once),
                cmocka_unit_test(test_words_naming_kvm),
                cmocka_unit_test(test_mode_strings),
                cmocka_unit_test(test_probe_guest_boots_under_tcg_on_microvm),
                cmocka_unit_test(test_probe_guest_boots_under_tcg_on_pc),
                cmocka_unit_test(test_probe_reports_qemus_words_when_it_exits_early),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
