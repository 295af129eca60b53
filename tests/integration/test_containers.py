# ctest: labels=integration;net;containers timeout=1500
"""Container instances end to end: `nsc run --image` in real TCG micro-VMs.

Everything runs in network namespaces this test makes (the mesh in a "host"
one, like test_vmm_net): a real docker-registry on the host namespace's
loopback holds a test image built here from Debian's busybox-static (every
applet linked) and pushed with skopeo; diskd pulls it, vmmd gives each
container a copy-on-write disk and the guest system disk, the guest runs
each container with containerd. Checked: streams and exit codes, host vs
bridge networking seen from inside (`ip addr`, DNS through dnsd), two
containers in one instance (attach, exec into each), image not found,
registry down, no base-disk reference left after destroy, vmmd killed and
restarted while a container runs; the image's config (Entrypoint, Cmd, Env,
WorkingDir, User) deciding what runs, and an image with no command refused
with INVALID_ARGUMENT naming containers[N].args.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from hm import BUILD, Mesh, NetnsPair, QemuReaper
from test_images import make_oci_layout

sys.path.insert(0, os.path.join(BUILD, "python"))

import grpc  # noqa: E402
from namespace.cloud.compute.v1beta import compute_pb2  # noqa: E402

GUEST = os.environ.get("HOSTMESH_GUEST_IMAGE_DIR") or os.path.join(BUILD, "guest")
TAG = "c%d" % os.getpid()
HOST_NS = "hmn-host-" + TAG
DNS_PORT = 5353
ZONE = "hostmesh.internal"
REGISTRY_PORT = 5000
REG = "127.0.0.1:%d" % REGISTRY_PORT
IMAGE = REG + "/test/box:1"
COMPUTE = "/namespace.cloud.compute.v1beta.ComputeService/"
COMMAND = "/namespace.cloud.compute.v1beta.CommandService/"


def skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces, taps, nftables)"
    for tool in ("docker-registry", "skopeo", "nft", "ip", "nsenter"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            return tool + " is not installed"
    for f in ("vmlinux", "initramfs.cpio", "system.img"):
        if not os.path.exists(os.path.join(GUEST, f)):
            return "guest image or system disk not built (%s)" % f
    return None


def vmm_config():
    return "\n".join([
        "[vmm]",
        "kernel = " + os.path.join(GUEST, "vmlinux"),
        "initrd = " + os.path.join(GUEST, "initramfs.cpio"),
        "system_disk = " + os.path.join(GUEST, "system.img"),
        "boot_timeout = 180s",
        "shutdown_timeout = 3s",
        "network = yes",
        "network_pool = 10.88.0.0/16",
        "network_dns_port = %d" % DNS_PORT,
        "dns = required",
        "dns_zone = " + ZONE,
    ]) + "\n"


def box_layout(path):
    """The test image: busybox-static with every applet as a symlink, so that
    `ip`, `nslookup` and `env` are there."""
    make_oci_layout(path, "box", "1")


@unittest.skipIf(skip_reason(), skip_reason() or "")
class ContainersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reaper = QemuReaper()
        cls.mesh = None
        cls.registry = None
        cls.tmp = tempfile.mkdtemp(prefix="hostmesh-containers-test-")
        cls.ns = NetnsPair(TAG)
        try:
            cls._start_registry()
            layout = os.path.join(cls.tmp, "layout")
            make_oci_layout(layout, "box", "1", applets=True)
            NetnsPair.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":1",
                          "docker://" + IMAGE, netns=HOST_NS, timeout=120)
            cls.mesh = Mesh(configs={
                "vmm": vmm_config(),
                "disk": "[disk]\nreserve = 0\novercommit_ratio = 1000\n",
                "dns": "[dns]\nlisten = 0.0.0.0:%d\nupstreams = %s:53\nlocal_zones = %s\n"
                       % (DNS_PORT, NetnsPair.OUT_ADDR, ZONE),
            }, netns=HOST_NS)
            cls.mesh.start()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def _start_registry(cls):
        conf = os.path.join(cls.tmp, "registry.yml")
        with open(conf, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                    "http:\n  addr: %s\n" % (os.path.join(cls.tmp, "registry"), REG))
        cls.registry_conf = conf
        cls.registry = cls.ns.spawn(HOST_NS, "docker-registry", "serve", conf)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = NetnsPair.run(sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', %d), 1)"
                              % REGISTRY_PORT, check=False, netns=HOST_NS)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError("docker-registry did not listen on %s" % REG)

    @classmethod
    def _stop_registry(cls):
        if cls.registry and cls.registry.poll() is None:
            cls.registry.send_signal(signal.SIGTERM)
            cls.registry.wait(timeout=20)
            cls.ns.procs.remove(cls.registry)
        cls.registry = None

    @classmethod
    def _teardown(cls):
        mesh = cls.mesh
        if mesh:
            cls.reaper.destroy_all(mesh)
        time.sleep(1)
        cls.reaper.reap()
        if mesh:
            mesh.__exit__(None, None, None)
        cls.ns.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    # -- helpers -------------------------------------------------------------
    def nsc(self, *args, timeout=400):
        return self.mesh.nsc(*args, timeout=timeout)

    def nsc_json(self, *args, timeout=400):
        """-o json goes first: never into a command given after '--'."""
        r = self.mesh.nsc("-o", "json", *args, timeout=timeout)
        try:
            return r, json.loads(r.stdout) if r.stdout.strip() else None
        except json.JSONDecodeError:
            raise AssertionError("nsc printed invalid JSON: %r (stderr %r)" % (r.stdout, r.stderr))

    def note_qemu(self, iid):
        return self.reaper.note(self.mesh, iid)

    def stub(self, method, req_type, resp_type, stream=False, service=COMPUTE):
        ch = self.mesh.channel("gateway")
        make = ch.unary_stream if stream else ch.unary_unary
        return make(service + method, request_serializer=req_type.SerializeToString,
                    response_deserializer=resp_type.FromString)

    def base_image_disks(self):
        """How many disks hold each container image, per diskd."""
        r, js = self.mesh.nsc_json("images", "list")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return {i["digest"]: i.get("disks", 0) for i in js["images"]}

    def wait_gone(self, iid, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            r, d = self.mesh.nsc_json("describe", iid)
            if d and d["state"] in ("DESTROYED", "ERROR"):
                return d
            time.sleep(0.3)
        raise AssertionError("instance %s was not destroyed" % iid)

    # -- tests (name order: 1 pulls for the first time) ------------------------
    def test_1_run_image_streams_output_and_exits_with_the_containers_code(self):
        r = self.nsc("run", "--image", IMAGE, "--network", "host", "-e", "GREETING=hello there", "--",
                     "sh", "-c", 'echo "$GREETING"; cat /etc/motd; echo to-stderr >&2; exit 7')
        self.assertEqual(r.returncode, 7, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "hello there\nbox\n")
        self.assertIn("to-stderr\n", r.stderr)
        self.assertNotIn("to-stderr", r.stdout)
        # A command that is not in the image: 127 as from a shell... from runc.
        r = self.nsc("-o", "json", "run", "--image", IMAGE, "--network", "host", "--", "/no/such/program")
        js = json.loads(r.stdout)
        self.assertNotEqual(js["exit_code"], 0, js)
        self.assertEqual(r.returncode, js["exit_code"])
        self.assertEqual(js["image"], IMAGE)

    def test_2_host_and_bridge_networking_are_seen_from_inside(self):
        r, d = self.nsc_json("run", "--image", IMAGE, "--network", "host", "--keep", "--", "ip", "addr")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        iid = d["instance_id"]
        self.note_qemu(iid)
        r, desc = self.mesh.nsc_json("describe", iid)
        address = desc["address"]
        self.assertTrue(address, desc)
        # Host: the guest's eth0 with the instance's own address.
        self.assertIn("eth0", d["stdout"])
        self.assertIn(address + "/32", d["stdout"])
        self.assertEqual(desc["containers"][0]["name"], "main")
        self.nsc("destroy", iid)

        # Bridge: its own netns, an address on the guest's bridge; DNS
        # through dnsd (the instance's own name) via the bridge's NAT.
        r, d = self.nsc_json(
            "run", "--image", IMAGE, "--network", "bridge", "--keep", "--", "sh", "-c",
            "ip addr; cat /etc/resolv.conf; nslookup $(hostname).%s || nslookup -type=a x.%s" % (ZONE, ZONE))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        iid = d["instance_id"]
        out = d["stdout"]
        self.assertNotIn(address + "/32", out)
        self.assertRegex(out, r"inet 10\.89\.0\.\d+/24")
        self.assertIn("nameserver ", out)
        self.nsc("destroy", iid)

    def test_3_two_containers_in_one_instance_attach_and_exec(self):
        create = self.stub("CreateInstance", compute_pb2.CreateInstanceRequest, compute_pb2.DescribeInstanceResponse)
        req = compute_pb2.CreateInstanceRequest(
            shape=compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048, machine_arch="amd64"),
            documented_purpose="two containers",
            containers=[
                compute_pb2.ContainerRequest(name="one", image_ref=IMAGE, args=["sh", "-c", "echo one; sleep 600"],
                                             network=compute_pb2.ContainerRequest.HOST),
                compute_pb2.ContainerRequest(name="two", image_ref=IMAGE, args=["sh", "-c", "echo two; exit 4"],
                                             environment={"K": "v"}, network=compute_pb2.ContainerRequest.BRIDGE),
            ])
        resp = create(req, timeout=120)
        iid = resp.metadata.instance_id
        self.assertEqual([c.name for c in resp.containers], ["one", "two"])
        self.assertEqual(len({c.id for c in resp.containers}), 2)
        wait = self.stub("WaitInstanceSync", compute_pb2.WaitInstanceRequest, compute_pb2.WaitInstanceResponse)
        wait(compute_pb2.WaitInstanceRequest(instance_id=iid), timeout=400)
        self.note_qemu(iid)
        run_sync = self.stub("RunCommandSync", compute_pb2.RunCommandRequest, compute_pb2.RunCommandSyncResponse,
                             service=COMMAND)
        # Attach to "two" (no command): its output and exit code.
        try:
            out = run_sync(compute_pb2.RunCommandRequest(instance_id=iid, target_container_name="two"), timeout=600)
        except grpc.RpcError:
            print(self.nsc("logs", iid).stdout[-4000:])
            raise
        self.assertEqual((out.stdout, out.exit_code), (b"two\n", 4))
        w = wait(compute_pb2.WaitInstanceRequest(instance_id=iid, container_id=resp.containers[1].id), timeout=60)
        self.assertEqual(w.container_status, "exited 4")
        w = wait(compute_pb2.WaitInstanceRequest(instance_id=iid, container_id="one"), timeout=60)
        self.assertEqual(w.container_status, "running")
        with self.assertRaises(grpc.RpcError) as cm:
            wait(compute_pb2.WaitInstanceRequest(instance_id=iid, container_id="nope"), timeout=60)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        # Exec in "one", which still runs: its own root, its own environment.
        r, js = self.nsc_json("exec", iid, "--container", "one", "--", "cat", "/etc/motd")
        self.assertEqual((r.returncode, js["stdout"]), (0, "box\n"), r.stdout + r.stderr)
        # Each container has its own writable root.
        r = self.nsc("exec", iid, "--container", "one", "--", "sh", "-c", "echo mine > /etc/only-one")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.nsc("exec", iid, "--", "sh", "-c", "ctr -n default containers ls -q | sort")
        self.assertEqual(sorted(r.stdout.split()), sorted(c.id for c in resp.containers))
        # An unknown container: NOT_FOUND naming it.
        r = self.nsc("exec", iid, "--container", "three", "--", "true")
        self.assertEqual(r.returncode, 4, r.stdout + r.stderr)
        self.assertIn("no container named three", r.stderr)

        # vmmd killed with -9 and started again: the container keeps running
        # in the guest, and vmmd still knows it by name.
        old = self.mesh.kill("vmm", signal.SIGKILL)
        end = time.time() + 60
        while time.time() < end:
            try:
                if self.mesh.pid("vmm") != old and os.path.exists(self.mesh.socket("vmm")):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        r = self.nsc("exec", iid, "--", "ctr", "-n", "default", "tasks", "ls")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        line = [x for x in r.stdout.splitlines() if x.startswith(resp.containers[0].id)]
        self.assertTrue(line and "RUNNING" in line[0], r.stdout)
        r = self.nsc("exec", iid, "--container", "one", "--", "cat", "/etc/only-one")
        self.assertEqual((r.returncode, r.stdout), (0, "mine\n"), r.stderr)
        r, d = self.mesh.nsc_json("describe", iid)
        self.assertEqual([c["name"] for c in d["containers"]], ["one", "two"])

        # Destroyed: no disk holds the image any more.
        self.nsc("destroy", iid)
        self.wait_gone(iid)
        end = time.time() + 20
        while any(self.base_image_disks().values()) and time.time() < end:
            time.sleep(0.5)
        self.assertEqual(set(self.base_image_disks().values()), {0})

    def test_4_bad_requests_are_refused_with_the_fields_name(self):
        create = self.stub("CreateInstance", compute_pb2.CreateInstanceRequest, compute_pb2.DescribeInstanceResponse)
        shape = compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048)
        for cr, words in (
                (compute_pb2.ContainerRequest(name="a", image_ref=IMAGE, privileged=True), "containers[0].privileged"),
                (compute_pb2.ContainerRequest(name="a", image_ref=IMAGE, docker_sock_path="/var/run/../docker.sock"),
                 "containers[0].docker_sock_path"),
                (compute_pb2.ContainerRequest(name="a", image_ref=IMAGE, export_ports=[
                    compute_pb2.ContainerPort(container_port=0, proto=compute_pb2.ContainerPort.TCP)]),
                 "containers[0].export_ports[0].container_port"),
                (compute_pb2.ContainerRequest(name="../x", image_ref=IMAGE), "containers[0].name"),
                (compute_pb2.ContainerRequest(name="a"), "containers[0].image_ref")):
            with self.assertRaises(grpc.RpcError) as cm:
                create(compute_pb2.CreateInstanceRequest(shape=shape, containers=[cr]), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, cm.exception.details())
            self.assertIn(words, cm.exception.details())

    def test_5_image_not_found_says_so(self):
        r = self.nsc("run", "--image", REG + "/test/none:1", "--", "true")
        self.assertEqual(r.returncode, 4, r.stdout + r.stderr)  # NOT_FOUND
        self.assertIn(REG + "/test/none:1", r.stderr)
        self.assertIn("check the repository and tag", r.stderr)

    def push_layout(self, name, run_config):
        layout = os.path.join(self.tmp, "layout-" + name)
        make_oci_layout(layout, name, "1", applets=True, run_config=run_config)
        ref = REG + "/test/%s:1" % name
        NetnsPair.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":1",
                      "docker://" + ref, netns=HOST_NS, timeout=120)
        return ref

    def test_6_image_config_gives_command_env_and_working_dir(self):
        ref = self.push_layout("configured", {
            # $0 is "entry"; the request's args (else Cmd) follow it.
            "Entrypoint": ["/bin/sh", "-c", 'echo "argv=$0 $*"; echo "env=$GREETING,$IMAGE_ONLY"; pwd; '
                                            'echo "path=$PATH"', "entry"],
            "Cmd": ["from-cmd", "two"],
            "Env": ["PATH=/bin:/opt/tools", "GREETING=from-image", "IMAGE_ONLY=kept"],
            "WorkingDir": "/srv/work",
        })
        r = self.nsc("run", "--image", ref, "--network", "host")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "argv=entry from-cmd two\nenv=from-image,kept\n/srv/work\npath=/bin:/opt/tools\n")
        # The request's args replace Cmd (not Entrypoint); its variables
        # override the image's of the same name and keep the others.
        r = self.nsc("run", "--image", ref, "--network", "host", "-e", "GREETING=from-request", "--", "a", "b c")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "argv=entry a b c\nenv=from-request,kept\n/srv/work\npath=/bin:/opt/tools\n")

    def test_6b_image_user_is_who_the_command_runs_as(self):
        ref = self.push_layout("asuser", {"Entrypoint": ["sh", "-c", 'echo "$(id -u) $(id -g) $(id -G) $HOME"'],
                                          "User": "app"})
        r = self.nsc("run", "--image", ref, "--network", "host")
        # HOME is the user's, from the image's /etc/passwd (not root's).
        self.assertEqual((r.returncode, r.stdout), (0, "1000 1001 1001 50 /home/app\n"), r.stderr)
        # A HOME the request (or the image) sets stays.
        r = self.nsc("run", "--image", ref, "--network", "host", "-e", "HOME=/srv")
        self.assertEqual((r.returncode, r.stdout), (0, "1000 1001 1001 50 /srv\n"), r.stderr)
        ref = self.push_layout("nouser", {"Cmd": ["true"], "User": "nobody"})
        r = self.nsc("run", "--image", ref, "--network", "host")
        self.assertEqual(r.returncode, 126, r.stdout + r.stderr)
        self.assertIn("cannot run as the image's user 'nobody': no such user in the image's /etc/passwd", r.stderr)

    def test_7_image_without_a_command_needs_args(self):
        ref = self.push_layout("bare", {"Env": ["A=1"]})
        create = self.stub("CreateInstance", compute_pb2.CreateInstanceRequest, compute_pb2.DescribeInstanceResponse)
        wait = self.stub("WaitInstanceSync", compute_pb2.WaitInstanceRequest, compute_pb2.WaitInstanceResponse)
        shape = compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048, machine_arch="amd64")
        resp = create(compute_pb2.CreateInstanceRequest(shape=shape, documented_purpose="no command", containers=[
            compute_pb2.ContainerRequest(name="ok", image_ref=IMAGE, args=["true"]),
            compute_pb2.ContainerRequest(name="bare", image_ref=ref)]), timeout=120)
        iid = resp.metadata.instance_id
        with self.assertRaises(grpc.RpcError) as cm:
            wait(compute_pb2.WaitInstanceRequest(instance_id=iid), timeout=300)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, cm.exception.details())
        self.assertIn("containers[1].args: image %s sets no Entrypoint or Cmd" % ref, cm.exception.details())
        self.wait_gone(iid)
        # No VM was started and no disk holds either image.
        end = time.time() + 20
        while any(self.base_image_disks().values()) and time.time() < end:
            time.sleep(0.5)
        self.assertEqual(set(self.base_image_disks().values()), {0})
        # With args it runs.
        r = self.nsc("run", "--image", ref, "--network", "host", "--", "sh", "-c", 'echo "A=$A"')
        self.assertEqual((r.returncode, r.stdout), (0, "A=1\n"), r.stderr)

    def test_9_registry_down_is_a_clear_error(self):
        self._stop_registry()
        r = self.nsc("run", "--image", REG + "/test/other:1", "--", "true")
        self.assertEqual(r.returncode, 6, r.stdout + r.stderr)  # FAILED_PRECONDITION
        self.assertIn("is the registry up?", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
