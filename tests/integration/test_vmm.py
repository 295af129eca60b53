# ctest: labels=integration timeout=900
"""vmmd end to end with real QEMU micro-VMs (TCG here: each boot is seconds,
so the tests share few instances).

Through the gateway with nsc: run, create/exec/logs/extend/destroy, vmmd
killed with -9 and restarted, QEMU killed, deadline expiry, bad input. An
independent python3-grpcio client drives the public compute API directly.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from hm import BUILD, Mesh, QemuReaper

sys.path.insert(0, os.path.join(BUILD, "python"))
from namespace.cloud.compute.v1beta import compute_pb2  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402

# The sanitizer build has no guest image of its own (hostmesh-init is static
# and never sanitized): scripts/test points it at the first build's.
GUEST = os.environ.get("HOSTMESH_GUEST_IMAGE_DIR") or os.path.join(BUILD, "guest")
COMPUTE = "/namespace.cloud.compute.v1beta.ComputeService/"
COMMAND = "/namespace.cloud.compute.v1beta.CommandService/"


def vmm_config(**extra):
    lines = ["[vmm]",
             "kernel = " + os.path.join(GUEST, "vmlinux"),
             "initrd = " + os.path.join(GUEST, "initramfs.cpio"),
             "boot_timeout = 90s",
             "shutdown_timeout = 3s"]
    lines += ["%s = %s" % kv for kv in extra.items()]
    return "\n".join(lines) + "\n"


# Set by the test_vmm_hidden_kvm variant, which runs this file in a mount
# namespace where /dev/kvm is a unix socket (open() fails with ENXIO) or absent.
KVM_HIDDEN = os.environ.get("HOSTMESH_TEST_KVM_HIDDEN") == "1"


def kvm_device_opens():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def have_guest_image():
    return all(os.path.exists(os.path.join(GUEST, f)) for f in ("vmlinux", "initramfs.cpio"))


def requested_kernel_kind():
    """What -DHOSTMESH_GUEST_KERNEL asked the default image to boot."""
    try:
        with open(os.path.join(GUEST, "kernel-kind.requested")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return "hostmesh"


def assert_boot_phases(test, d, image_dir):
    """An instance that has run a command has every boot phase: READY must
    carry the guest's split of its init time, and vmmd must have timed QEMU
    and the first command. The kernel is the one the image was built with."""
    p = d["boot_phases_us"]
    test.assertTrue(p["known"], "READY arrived without the boot phases: %r" % p)
    for phase in ("kernel", "init", "first_command"):
        test.assertGreater(p[phase], 0, "phase %s missing: %r" % (phase, p))
    # qemu is what the host waited beyond the guest's own count; vmmd reads
    # a guest clock that ran ahead of the host's as 0 rather than negative.
    test.assertGreaterEqual(p["qemu"], 0, p)
    # The guest keeps time on the TSC at the rate vmmd measured on the host
    # (tsc=reliable under TCG), not in 4 ms jiffies: even the short parts
    # read above 0.
    for phase in ("mounts", "port"):
        test.assertGreater(p[phase], 0, "phase %s reads 0 (a coarse guest clock?): %r" % (phase, p))
    test.assertGreaterEqual(p["modules"], 0, p)
    # The network is set up after READY: READY goes out once the agent port
    # is open.
    test.assertEqual(p["network"], 0, p)
    test.assertEqual(p["kernel"], d["guest_kernel_us"])
    test.assertEqual(p["init"], d["guest_init_us"])
    # The guest's parts fit in its total; the host's total covers them all.
    test.assertLessEqual(p["mounts"] + p["modules"] + p["network"] + p["port"], p["init"])
    test.assertLessEqual(p["qemu"] + p["kernel"] + p["init"], d["create_to_running_us"])
    with open(os.path.join(image_dir, "kernel-version")) as f:
        test.assertEqual(d["guest_kernel"], f.read().strip())
    with open(os.path.join(image_dir, "kernel-kind")) as f:
        kind = f.read().strip()
    # Modules are loaded only by the Debian kernel's image.
    if kind == "hostmesh":
        test.assertEqual(p["modules"], 0, p)
    else:
        test.assertGreater(p["modules"], 0, p)
    return kind


def nsc_json(mesh, *args, **kw):
    """nsc -o json VERB ...: the flag goes first, so that it never ends up
    in a command given after '--'."""
    r = mesh.nsc("-o", "json", *args, **kw)
    try:
        return r, json.loads(r.stdout) if r.stdout.strip() else None
    except json.JSONDecodeError:
        raise AssertionError("nsc printed invalid JSON: %r (stderr %r)" % (r.stdout, r.stderr))


def wait_state(mesh, iid, states, timeout=60):
    end = time.time() + timeout
    d = None
    while time.time() < end:
        r, d = mesh.nsc_json("describe", iid)
        if d and d.get("state") in states:
            return d
        time.sleep(0.2)
    raise AssertionError("instance %s never reached %s; last: %r" % (iid, states, d))


@unittest.skipUnless(have_guest_image(), "guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class VmmLifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reaper = QemuReaper()
        cls.mesh = Mesh(configs={"vmm": vmm_config()}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            r, lst = cls.mesh.nsc_json("list")
            for i in lst or []:
                cls.mesh.nsc("destroy", "--force", i["instance_id"])
        finally:
            time.sleep(1)
            cls.reaper.reap()
            cls.mesh.stop()

    def test_run_streams_output_separately_and_exits_with_the_commands_code(self):
        r, before = self.mesh.nsc_json("list", "--all")
        # The instance's first command: lo is up by then (init's warm-up
        # child brings it up after READY, and commands wait for it), and
        # nothing of the warm-up's reaches the host.
        r = self.mesh.nsc("run", "--machine_type", "2x2", "-e", "GREETING=hello there", "--",
                          "sh", "-c", 'echo "$GREETING"; cat /sys/class/net/lo/flags; echo to-stderr >&2; exit 7',
                          timeout=180)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(r.stdout, "hello there\n0x9\n")  # IFF_UP | IFF_LOOPBACK
        self.assertIn("to-stderr\n", r.stderr)
        self.assertNotIn("to-stderr", r.stdout)
        # Not kept: the instance is on its way out.
        r, after = self.mesh.nsc_json("list", "--all")
        new = [i for i in after if i["instance_id"] not in {b["instance_id"] for b in before}]
        self.assertEqual(len(new), 1, new)
        self.assertIn(new[0]["state"], ("DESTROYING", "DESTROYED"))

    def test_accelerator_is_decided_by_the_probe_and_shown_with_its_reason(self):
        r, st = self.mesh.nsc_json("status")
        vmm = [p for p in st["services"] if p["name"] == "vmm"][0]
        self.assertIn(vmm["accelerator"], ("kvm", "tcg"), vmm)
        self.assertEqual(vmm["accelerator_mode"], "auto")
        self.assertIn("accelerator %s (accel = auto): " % vmm["accelerator"], vmm["detail"])
        if not kvm_device_opens():
            # Nothing to probe: the reason names the device and how it failed.
            self.assertEqual(vmm["accelerator"], "tcg")
            self.assertRegex(vmm["accelerator_reason"],
                             r"^KVM unavailable: (no /dev/kvm on this machine|/dev/kvm cannot be opened: .+)$")
        elif vmm["accelerator"] == "kvm":
            self.assertRegex(vmm["accelerator_reason"], r"^KVM probe passed with -cpu \S+ in \d+ ms")
        else:
            # A /dev/kvm that opens but cannot run guests (nested hosts).
            self.assertRegex(vmm["accelerator_reason"], r"^KVM (probe failed|unavailable): ")
        if KVM_HIDDEN:
            self.assertEqual(vmm["accelerator"], "tcg")
        r = self.mesh.nsc("run", "--machine_type", "2x2", "--", "true", timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr)
        r, lst = self.mesh.nsc_json("list", "--all")
        r, d = self.mesh.nsc_json("describe", lst[-1]["instance_id"])
        self.assertEqual(d["accelerator"], vmm["accelerator"])
        self.assertEqual(d["accelerator_reason"], vmm["accelerator_reason"])

    def test_instance_lifecycle_exec_logs_extend_restart_destroy(self):
        m = self.mesh
        r, created = m.nsc_json("create", "--machine_type", "2x2", "--label", "team=vmm", "--wait_timeout", "2m",
                                timeout=180)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        iid = created["instance_id"]
        self.reaper.note(m, iid)
        self.assertEqual(created["state"], "RUNNING")
        self.assertEqual(created["machine_type"], "2x2")
        self.assertEqual(created["disk_gb"], 48)  # 32 GiB + max(2, 2/2) x 8 GiB
        self.assertEqual(created["labels"], {"team": "vmm"})

        # Exit codes, stdout/stderr separation, 127 for a missing command.
        r, out = nsc_json(m, "exec", iid, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
        self.assertEqual(r.returncode, 3)
        self.assertEqual(out["stdout"], "out\n")
        self.assertEqual(out["stderr"], "err\n")
        r = m.nsc("exec", iid, "--", "no-such-command")
        self.assertEqual(r.returncode, 127)
        self.assertIn("command not found", r.stderr)
        r = m.nsc("exec", iid, "--", "cat", "/proc/sys/kernel/hostname")
        self.assertEqual((r.returncode, r.stdout), (0, iid + "\n"))

        # The guest's numbers: init start to READY is measured by hostmesh-init.
        r, d = m.nsc_json("describe", iid)
        self.assertGreater(d["guest_init_us"], 0)
        self.assertGreater(d["create_to_running_us"], d["guest_init_us"])
        kind = assert_boot_phases(self, d, image_dir=GUEST)
        self.assertEqual(kind, requested_kernel_kind(),
                         "the default image must boot the kernel it was configured with; a build of our own "
                         "kernel that fell back to Debian's says why in the guest-image build output")
        if kind == "hostmesh":
            # Everything built in: no module support at all, and what the
            # container work needs is there without loading anything.
            r = m.nsc("exec", iid, "--", "sh", "-c",
                      "test -e /proc/modules && echo modules; cat /proc/filesystems; ls /proc/self/ns")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("modules", r.stdout.split())
            for want in ("ext4", "overlay", "tmpfs", "cgroup2", "devtmpfs", "mnt", "uts", "ipc", "pid", "net",
                         "user", "cgroup"):
                self.assertIn(want, r.stdout.split(), r.stdout)
        # vmmd's histograms have a sample of every phase.
        from hostmesh.common.v1 import metrics_pb2
        text = m.channel("vmm").unary_unary(
            "/hostmesh.common.v1.Metrics/GetMetrics",
            request_serializer=metrics_pb2.GetMetricsRequest.SerializeToString,
            response_deserializer=metrics_pb2.GetMetricsResponse.FromString)(metrics_pb2.GetMetricsRequest(),
                                                                             timeout=10).text
        for phase in ("qemu", "kernel", "init", "first_command"):
            self.assertRegex(text, r'hostmesh_vmm_boot_phase_seconds_count\{[^}]*phase="%s"[^}]*\} [1-9]' % phase)
        r = m.nsc("describe", iid)
        self.assertRegex(r.stdout, r"(?m)^boot +qemu [0-9.]+ ms → kernel [0-9.]+ ms → init [0-9.]+ ms "
                                   r"\(mounts (-|[0-9.]+ ms), modules (-|[0-9.]+ ms), network (-|[0-9.]+ ms), "
                                   r"port (-|[0-9.]+ ms)\) → first command [0-9.]+ ms$")
        if d.get("token"):
            r = m.nsc("exec", iid, "--", "cat", "/var/run/nsc/token.json")
            self.assertIn('"bearer_token"', r.stdout)

        # Logs: the console and the commands' output, with the stream names.
        r = m.nsc("logs", iid, "-o", "json")
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        self.assertIn(("stdout", "out"), [(x["stream"], x["content"]) for x in lines])
        self.assertTrue(any(x["stream"] == "console" and "hostmesh-init: ready" in x["content"] for x in lines))

        # Extend moves the deadline.
        r, ext = m.nsc_json("extend", iid, "--duration", "30m")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertGreater(ext["deadline"], created["deadline"])

        # vmmd killed with -9: the VM keeps running and vmmd re-attaches.
        m.wait_running("vmm")
        old = m.kill("vmm", signal.SIGKILL)
        end = time.time() + 10
        while time.time() < end:
            try:
                if m.pid("vmm") != old:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        r = m.nsc("exec", iid, "--", "echo", "still-here")
        self.assertEqual((r.returncode, r.stdout), (0, "still-here\n"), r.stderr)
        r, d = m.nsc_json("describe", iid)
        self.assertEqual(d["state"], "RUNNING")
        self.assertEqual(d["labels"], {"team": "vmm"})
        self.assertEqual(d["deadline"], ext["deadline"])

        # Destroy: graceful, idempotent; the VM's QEMU is gone afterwards.
        qemu = d["qemu_pid"]
        r = m.nsc("destroy", iid)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_state(m, iid, {"DESTROYED"})
        with self.assertRaises(ProcessLookupError):
            for _ in range(50):
                os.kill(qemu, 0)
                time.sleep(0.1)
        r = m.nsc("destroy", iid)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = m.nsc("exec", iid, "--", "true")
        self.assertEqual(r.returncode, 6)  # FAILED_PRECONDITION: not RUNNING

    def test_killed_qemu_puts_the_instance_in_error_with_the_reason(self):
        m = self.mesh
        r, created = m.nsc_json("create", "--machine_type", "2x2", timeout=180)
        self.assertEqual(r.returncode, 0, r.stdout)
        iid = created["instance_id"]
        r, d = m.nsc_json("describe", iid)
        self.reaper.pids.add(d["qemu_pid"])
        os.kill(d["qemu_pid"], signal.SIGKILL)
        d = wait_state(m, iid, {"ERROR"})
        self.assertIn("QEMU exited unexpectedly", d["reason"])
        self.assertIn("hostmesh-init: ready", d["reason"])  # the console tail

    def test_deadline_expiry_destroys_the_instance(self):
        m = self.mesh
        r, created = m.nsc_json("create", "--machine_type", "2x2", "--duration", "2s", "--nowait")
        self.assertEqual(r.returncode, 0, r.stdout)
        iid = created["instance_id"]
        self.reaper.note(m, iid)
        d = wait_state(m, iid, {"DESTROYED", "ERROR"}, timeout=60)
        self.assertEqual(d["state"], "DESTROYED")
        self.assertEqual(d["reason"], "deadline reached")

    def test_grpc_client_creates_waits_and_destroys(self):
        ch = self.mesh.channel("vmm")

        def unary(method, req, resp):
            return ch.unary_unary(method, request_serializer=req.SerializeToString,
                                  response_deserializer=resp.FromString)

        create = unary(COMPUTE + "CreateInstance", compute_pb2.CreateInstanceRequest,
                       compute_pb2.DescribeInstanceResponse)
        t0 = time.time()
        r = create(compute_pb2.CreateInstanceRequest(
            shape=compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048),
            documented_purpose="grpc client test"), timeout=10)
        self.assertLess(time.time() - t0, 2, "CreateInstance must not wait for the boot")
        iid = r.metadata.instance_id
        self.assertIn(r.metadata.status, (compute_pb2.InstanceMetadata.PENDING, compute_pb2.InstanceMetadata.CREATING))

        wait = ch.unary_stream(COMPUTE + "WaitInstance",
                               request_serializer=compute_pb2.WaitInstanceRequest.SerializeToString,
                               response_deserializer=compute_pb2.WaitInstanceResponse.FromString)
        states = [x.metadata.status for x in wait(compute_pb2.WaitInstanceRequest(instance_id=iid), timeout=180)]
        self.assertEqual(states[-1], compute_pb2.InstanceMetadata.RUNNING)
        self.reaper.note(self.mesh, iid)

        run = unary(COMMAND + "RunCommandSync", compute_pb2.RunCommandRequest, compute_pb2.RunCommandSyncResponse)
        out = run(compute_pb2.RunCommandRequest(instance_id=iid, command=compute_pb2.Command(
            command=["pwd"], cwd="/tmp")), timeout=30)
        self.assertEqual((out.exit_code, out.stdout), (0, b"/tmp\n"))

        destroy = unary(COMPUTE + "DestroyInstance", compute_pb2.DestroyInstanceRequest, empty_pb2.Empty)
        destroy(compute_pb2.DestroyInstanceRequest(instance_id=iid), timeout=10)
        destroy(compute_pb2.DestroyInstanceRequest(instance_id=iid), timeout=10)  # idempotent
        with self.assertRaises(grpc.RpcError) as e:
            destroy(compute_pb2.DestroyInstanceRequest(instance_id="nosuchinstance"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        sync = unary(COMPUTE + "WaitInstanceSync", compute_pb2.WaitInstanceRequest, compute_pb2.WaitInstanceResponse)
        w = sync(compute_pb2.WaitInstanceRequest(instance_id=iid, destroyed_ok=True), timeout=60)
        self.assertEqual(w.metadata.status, compute_pb2.InstanceMetadata.DESTROYED)


DEBIAN_GUEST = os.path.join(GUEST, "debian")


@unittest.skipUnless(all(os.path.exists(os.path.join(DEBIAN_GUEST, f)) for f in ("vmlinux", "initramfs.cpio")),
                     "Debian-kernel guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class VmmDebianKernelTest(unittest.TestCase):
    """The fallback image (-DHOSTMESH_GUEST_KERNEL=debian, or automatic when
    our kernel does not build): Debian's modular kernel, whose virtio and
    ext4 modules hostmesh-init loads from modules.order."""

    def test_debian_kernel_boots_loads_its_modules_and_reports_every_phase(self):
        reaper = QemuReaper()
        cfg = vmm_config().replace(GUEST + "/", DEBIAN_GUEST + "/")
        with Mesh(configs={"vmm": cfg}) as m:
            try:
                r, created = nsc_json(m, "create", "--machine_type", "2x2", "--wait_timeout", "2m", timeout=180)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                iid = created["instance_id"]
                reaper.note(m, iid)
                r = m.nsc("exec", iid, "--", "cat", "/proc/modules")
                self.assertEqual(r.returncode, 0, r.stderr)
                loaded = {line.split()[0] for line in r.stdout.splitlines()}
                for mod in ("virtio_console", "virtio_blk", "ext4"):
                    self.assertIn(mod, loaded, r.stdout)
                # The disk stack came up: the instance disk's block device is there.
                r = m.nsc("exec", iid, "--", "test", "-b", "/dev/vda")
                self.assertEqual(r.returncode, 0, r.stderr)
                r, d = m.nsc_json("describe", iid)
                self.assertEqual(assert_boot_phases(self, d, image_dir=DEBIAN_GUEST), "debian")
            finally:
                r, lst = nsc_json(m, "list", "--all")
                for i in lst or []:
                    m.nsc("destroy", "--force", i["instance_id"])
                    reaper.note(m, i["instance_id"])
                time.sleep(1)
                reaper.reap()


@unittest.skipUnless(have_guest_image(), "guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class VmmBootTimeoutTest(unittest.TestCase):
    def test_guest_never_ready_puts_the_instance_in_error_with_the_console_tail(self):
        # A guest whose init never opens the agent port, rather than a
        # timeout shorter than a boot: our kernel reaches READY in under 1 s.
        tmp = tempfile.mkdtemp(prefix="hostmesh-silent-")
        self.addCleanup(shutil.rmtree, tmp, True)
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        with open(os.path.join(root, "init"), "w") as f:
            f.write("#!/bin/busybox sh\n/bin/busybox echo silent init: no agent port\n"
                    "exec /bin/busybox sleep 3600\n")
        os.chmod(os.path.join(root, "init"), 0o755)
        initrd = os.path.join(tmp, "silent.cpio")
        with open(initrd, "wb") as out:
            files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=files, stdout=out, check=True)
        config = vmm_config().replace("boot_timeout = 90s", "boot_timeout = 1s").replace(
            os.path.join(GUEST, "initramfs.cpio"), initrd)
        self.assertIn("initrd = " + initrd, config)
        reaper = QemuReaper()
        with Mesh(configs={"vmm": config}) as m:
            try:
                r, created = nsc_json(m, "create", "--machine_type", "2x2", "--wait_timeout", "1m")
                self.assertEqual(r.returncode, 1)
                self.assertEqual(created["error"]["code"], "INTERNAL")
                self.assertIn("did not report READY within 1s; console tail:", created["error"]["message"])
                r, lst = nsc_json(m, "list", "--all")
                self.assertEqual([i["state"] for i in lst], ["ERROR"])
            finally:
                r, lst = nsc_json(m, "list", "--all")
                for i in lst or []:
                    reaper.note(m, i["instance_id"])
                reaper.reap()


@unittest.skipUnless(have_guest_image(), "guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class GuestAgentPortTest(unittest.TestCase):
    def test_guest_finds_its_agent_port_by_name_among_several(self):
        # hostmesh-init takes the one virtio-serial port node in /dev as the
        # agent's (vmmd's guests have one); with another port in front of
        # it, init must find the agent's by name in sysfs and say READY
        # there, not on the first port it sees.
        tmp = tempfile.mkdtemp(prefix="hostmesh-ports-")
        self.addCleanup(shutil.rmtree, tmp, True)
        agent, other = os.path.join(tmp, "agent.sock"), os.path.join(tmp, "other.sock")
        argv = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=on", "-accel", "tcg", "-cpu", "max",
                "-smp", "2", "-m", "1024M", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-kernel", os.path.join(GUEST, "vmlinux"), "-initrd", os.path.join(GUEST, "initramfs.cpio"),
                "-append", "console=ttyS0 tsc_early_khz=2000000 lpj=8000000 tsc=reliable panic=-1 "
                           "hostmesh.hostname=ports",
                "-serial", "file:" + os.path.join(tmp, "console.log"),
                "-device", "virtio-serial-device,max_ports=3",
                "-chardev", "socket,id=other,path=%s,server=on,wait=off" % other,
                "-device", "virtserialport,chardev=other,name=org.example.other",
                "-chardev", "socket,id=agent,path=%s,server=on,wait=off" % agent,
                "-device", "virtserialport,chardev=agent,name=org.hostmesh.agent.0"]
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

        def stop():
            if qemu.poll() is None:
                os.kill(qemu.pid, signal.SIGKILL)
                qemu.wait()
        self.addCleanup(stop)
        socks = {}
        for name, path in (("agent", agent), ("other", other)):
            deadline = time.time() + 30
            while True:
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)
                    break
                except OSError:
                    s.close()
                    self.assertIsNone(qemu.poll(), "QEMU exited")
                    self.assertLess(time.time(), deadline, "no %s socket" % name)
                    time.sleep(0.01)
            self.addCleanup(s.close)
            socks[name] = s
        socks["agent"].settimeout(120)
        hdr = b""
        while len(hdr) < 12:
            chunk = socks["agent"].recv(12 - len(hdr))
            self.assertTrue(chunk, "the guest closed the agent port before READY")
            hdr += chunk
        # "HM", version 1, frame type 1: READY.
        self.assertEqual(hdr[:4], b"HM\x01\x01")
        socks["other"].settimeout(0.5)
        try:
            self.assertEqual(socks["other"].recv(64), b"", "the guest wrote to the other port")
        except socket.timeout:
            pass
        # POWEROFF: the guest goes down cleanly.
        socks["agent"].sendall(b"HM\x01\x09" + struct.pack("<II", 0, 0))
        self.assertEqual(qemu.wait(timeout=60), 0)


@unittest.skipUnless(have_guest_image(), "guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class VmmForcedAcceleratorTest(unittest.TestCase):
    """accel = kvm where KVM cannot run guests: ERROR at once with what to
    do, never a hang, and vmmd goes on serving; accel = tcg never probes."""

    def test_forced_kvm_that_cannot_run_guests_fails_at_once_saying_what_to_do(self):
        with Mesh(configs={"vmm": vmm_config(accel="kvm")}) as m:
            r, st = m.nsc_json("status")
            vmm = [p for p in st["services"] if p["name"] == "vmm"][0]
            self.assertEqual(vmm["accelerator_mode"], "kvm")
            t0 = time.monotonic()
            r, created = nsc_json(m, "create", "--machine_type", "2x2", "--wait_timeout", "2m", timeout=180)
            elapsed = time.monotonic() - t0
            r2, st = m.nsc_json("status")
            vmm = [p for p in st["services"] if p["name"] == "vmm"][0]
            if vmm["accelerator_reason"].startswith("KVM probe passed"):
                if created and created.get("instance_id"):
                    m.nsc("destroy", "--force", created["instance_id"])
                self.skipTest("KVM works on this machine: nothing forced is broken")
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            msg = created["error"]["message"]
            self.assertIn("accel = kvm, but KVM cannot run guests on this machine", msg)
            self.assertIn("set [vmm] accel = tcg (or auto) in vmm.conf", msg)
            # The probe's words are in it (the device's or QEMU's).
            self.assertRegex(msg, r"KVM (unavailable|probe failed): ")
            self.assertLess(elapsed, 30, "a forced, broken KVM must not hang the create")
            r, lst = nsc_json(m, "list", "--all")
            self.assertEqual([i["state"] for i in lst], ["ERROR"])
            self.assertEqual(r2.returncode, 0, "vmmd keeps serving")

    def test_missing_qemu_is_said_instead_of_a_verdict(self):
        with Mesh(configs={"vmm": vmm_config(qemu="/nonexistent/qemu-system-x86_64")}) as m:
            r, st = m.nsc_json("status")
            vmm = [p for p in st["services"] if p["name"] == "vmm"][0]
            self.assertEqual(vmm["accelerator"], "")
            self.assertEqual(vmm["accelerator_reason"], "not probed yet: QEMU is not installed (qemu-system-x86)")
            r, out = m.nsc_json("create", "--machine_type", "2x2")
            self.assertEqual(r.returncode, 6)
            self.assertIn("install the qemu-system-x86 package", out["error"]["message"])

    def test_forced_tcg_is_said_without_probing(self):
        with Mesh(configs={"vmm": vmm_config(accel="tcg")}) as m:
            r, st = m.nsc_json("status")
            vmm = [p for p in st["services"] if p["name"] == "vmm"][0]
            self.assertEqual((vmm["accelerator"], vmm["accelerator_reason"]), ("tcg", "accel = tcg in the config"))


class VmmBadInputTest(unittest.TestCase):
    """No boots: requests refused before any QEMU starts."""

    def test_check_config_output_parses_back_and_bad_values_are_refused(self):
        import subprocess
        import tempfile
        from hm import SOURCE, binary
        vmmd = binary("hostmesh-vmmd")
        src = os.path.join(SOURCE, "deploy", "config", "vmm.conf")
        first = subprocess.run([vmmd, "--config", src, "--check-config"], capture_output=True, text=True)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("disk = optional", first.stdout)
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(first.stdout)
            f.flush()
            again = subprocess.run([vmmd, "--config", f.name, "--check-config"], capture_output=True, text=True)
            self.assertEqual(again.stdout, first.stdout)
        self.assertIn("accel = auto", first.stdout)

        def check(text):
            with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
                f.write(text)
                f.flush()
                return subprocess.run([vmmd, "--config", f.name, "--check-config"], capture_output=True, text=True)

        for text, error in (("[vmm]\ndisk = sometimes\n", "expected required, optional or off"),
                            ("[vmm]\naccel = fast\n", "[vmm] accel = fast: expected auto, kvm or tcg"),
                            ("[vmm]\nexport_ports = 30-20\n", "[vmm] export_ports = 30-20: expected FIRST-LAST"),
                            ("[vmm]\nexport_ports = 0-20\n", "[vmm] export_ports = 0-20: expected FIRST-LAST"),
                            ("[vmm]\nexport_address = ::1\n", "[vmm] export_address = ::1: expected an IPv4")):
            bad = check(text)
            self.assertNotEqual(bad.returncode, 0, text)
            self.assertIn(error, bad.stderr)

    def test_invalid_shapes_missing_image_capacity_and_unknown_ids(self):
        cfg = vmm_config(vcpus="4", memory="8G").replace(
            "kernel = " + os.path.join(GUEST, "vmlinux"), "kernel = /nonexistent/vmlinux")
        with Mesh(configs={"vmm": cfg}) as m:
            r, out = m.nsc_json("create", "--machine_type", "3x3")
            self.assertEqual(r.returncode, 6)
            self.assertEqual(out["error"]["code"], "INVALID_ARGUMENT")
            self.assertIn("2x4", out["error"]["message"])  # lists the valid shapes

            r, out = m.nsc_json("create", "--machine_type", "8x16")
            self.assertEqual(r.returncode, 7)
            self.assertEqual(out["error"]["code"], "RESOURCE_EXHAUSTED")
            self.assertIn("4 vCPUs", out["error"]["message"])

            r, out = m.nsc_json("create", "--machine_type", "2x4")
            self.assertEqual(r.returncode, 6)
            self.assertEqual(out["error"]["code"], "FAILED_PRECONDITION")
            self.assertIn("guest image", out["error"]["message"])

            for verb in (["describe", "nosuchinstance"], ["destroy", "nosuchinstance"],
                         ["exec", "nosuchinstance", "--", "true"], ["logs", "nosuchinstance"]):
                r, out = nsc_json(m, *verb)
                self.assertEqual(r.returncode, 4, verb)
                self.assertEqual(out["error"]["code"], "NOT_FOUND")

            r = m.nsc("run", "--machine_type", "2x4")
            self.assertEqual(r.returncode, 2)

    def test_exported_ports_without_instance_networking_say_what_to_set(self):
        # Refused at create, before any image is pulled: nothing listens
        # on the registry named here.
        with Mesh(configs={"vmm": vmm_config()}) as m:
            r, out = nsc_json(m, "run", "--image", "127.0.0.1:9/none/x:1", "-p", "8080", "--", "true")
            self.assertEqual(r.returncode, 6, r.stdout + r.stderr)
            self.assertEqual(out["error"]["code"], "FAILED_PRECONDITION")
            self.assertIn("[vmm] network = yes", out["error"]["message"])
            r, lst = nsc_json(m, "list", "--all")
            self.assertEqual(lst, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
