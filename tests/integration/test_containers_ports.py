# ctest: labels=integration;net;containers timeout=1500
"""Exported container ports (`export_ports`, `nsc run -p`) in real TCG
micro-VMs, with the fixtures of test_containers (a mesh in a network
namespace of its own, a registry on its loopback, the busybox test image).

Checked: a BRIDGE container's busybox httpd reached from the host at the
endpoint vmmd reports (through vmmd's forwarder, the instance network and
the guest's DNAT to the container), twice, again after vmmd is killed and
started (same port), and refused once the instance is destroyed; the same
for a HOST container created over gRPC, whose killed server leaves vmmd
closing each connection at once; `nsc describe` listing the ports;
bad requests refused with INVALID_ARGUMENT naming the field, and a range
too small refused with RESOURCE_EXHAUSTED.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import test_containers as tc
from hm import Mesh, NetnsPair, QemuReaper, binary
from test_images import make_oci_layout

import grpc  # noqa: E402
from namespace.cloud.compute.v1beta import compute_pb2  # noqa: E402

IMAGE = tc.IMAGE
HOST_NS = tc.HOST_NS
PORTS = "21000-21002"  # three host ports: a fourth is RESOURCE_EXHAUSTED

# Runs in the mesh's network namespace: "get PORT WORD" fetches / over
# HTTP/1.0 until the answer holds WORD (the container may still be
# starting), "refused PORT" expects the connection to be refused.
CLIENT = r"""
import socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "closed":
    # Accepted (vmmd listens) but closed without a byte: nothing behind it.
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(30)
    try:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = s.recv(100)
    except (ConnectionResetError, BrokenPipeError):
        data = b""
    sys.exit(0 if data == b"" else 1)
if mode == "refused":
    try:
        socket.create_connection(("127.0.0.1", port), 5).close()
    except ConnectionRefusedError:
        sys.exit(0)
    print("connected"); sys.exit(1)
word = sys.argv[3].encode()
end = time.monotonic() + 240
last = b""
while time.monotonic() < end:
    try:
        s = socket.create_connection(("127.0.0.1", port), 10)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)  # half-close: the answer still comes
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        if word in data:
            sys.stdout.write(data.decode("latin-1")); sys.exit(0)
        last = data
    except OSError as e:
        last = repr(e).encode()
    time.sleep(0.5)
print("no answer with the word; last: %r" % last); sys.exit(1)
"""


def httpd(word, port):
    return ["sh", "-c", "mkdir -p /www && echo %s > /www/index.html && exec httpd -f -p %d -h /www" % (word, port)]


@unittest.skipIf(tc.skip_reason(), tc.skip_reason() or "")
class PortsTest(unittest.TestCase):
    _start_registry = classmethod(tc.ContainersTest._start_registry.__func__)
    _stop_registry = classmethod(tc.ContainersTest._stop_registry.__func__)
    _teardown = classmethod(tc.ContainersTest._teardown.__func__)
    tearDownClass = classmethod(tc.ContainersTest.tearDownClass.__func__)
    nsc = tc.ContainersTest.nsc
    nsc_json = tc.ContainersTest.nsc_json
    note_qemu = tc.ContainersTest.note_qemu
    stub = tc.ContainersTest.stub
    wait_gone = tc.ContainersTest.wait_gone

    @classmethod
    def setUpClass(cls):
        cls.reaper = QemuReaper()
        cls.mesh = None
        cls.registry = None
        cls.tmp = tempfile.mkdtemp(prefix="hostmesh-ports-test-")
        cls.ns = NetnsPair(tc.TAG)
        try:
            cls._start_registry()
            layout = os.path.join(cls.tmp, "layout")
            make_oci_layout(layout, "box", "1", applets=True)
            NetnsPair.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":1",
                          "docker://" + IMAGE, netns=HOST_NS, timeout=120)
            cls.mesh = Mesh(configs={
                "vmm": tc.vmm_config() + "export_address = 127.0.0.1\nexport_ports = %s\n" % PORTS,
                "disk": "[disk]\nreserve = 0\novercommit_ratio = 1000\n",
                "dns": "[dns]\nlisten = 0.0.0.0:%d\nupstreams = %s:53\nlocal_zones = %s\n"
                       % (tc.DNS_PORT, NetnsPair.OUT_ADDR, tc.ZONE),
            }, netns=HOST_NS)
            cls.mesh.start()
        except BaseException:
            cls._teardown()
            raise

    def fetch(self, port, word):
        r = NetnsPair.run(sys.executable, "-c", CLIENT, "get", str(port), word, netns=HOST_NS, check=False,
                          timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("200 OK", r.stdout)
        return r.stdout

    def assert_refused(self, port):
        r = NetnsPair.run(sys.executable, "-c", CLIENT, "refused", str(port), netns=HOST_NS, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def create(self, *containers):
        create = self.stub("CreateInstance", compute_pb2.CreateInstanceRequest, compute_pb2.DescribeInstanceResponse)
        return create(compute_pb2.CreateInstanceRequest(
            shape=compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048, machine_arch="amd64"),
            documented_purpose="ports", containers=list(containers)), timeout=120)

    def restart_vmmd(self):
        old = self.mesh.kill("vmm", signal.SIGKILL)
        end = time.time() + 60
        while time.time() < end:
            try:
                if self.mesh.pid("vmm") != old and os.path.exists(self.mesh.socket("vmm")):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("vmmd did not come back")

    # -- tests ---------------------------------------------------------------
    def test_1_bad_ports_are_refused_with_the_fields_name(self):
        TCP, HTTP = compute_pb2.ContainerPort.TCP, compute_pb2.ContainerPort.HTTP

        def box(*ports, name="a"):
            return compute_pb2.ContainerRequest(name=name, image_ref=IMAGE, export_ports=list(ports))

        def port(p, proto=TCP, **kw):
            return compute_pb2.ContainerPort(container_port=p, proto=proto, **kw)

        cases = [
            ([box(port(0))], "containers[0].export_ports[0].container_port"),
            ([box(port(80), port(70000))], "containers[0].export_ports[1].container_port"),
            ([box(port(80, proto=0))], "containers[0].export_ports[0].proto"),
            ([box(port(80, proto=7))], "containers[0].export_ports[0].proto"),
            ([box(port(80, proto=HTTP, http_match_rule=[b"\x0a\x01/"]))],
             "containers[0].export_ports[0].http_match_rule"),
            ([box(port(80), port(80))], "containers[0].export_ports[1].container_port 80 is exported twice"),
            ([box(port(80)), box(port(80), name="b")], "containers[1].export_ports[0].container_port 80"),
            ([box(*[port(1000 + k) for k in range(17)])], "containers[0].export_ports: at most 16"),
        ]
        for containers, words in cases:
            with self.assertRaises(grpc.RpcError) as cm:
                self.create(*containers)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, cm.exception.details())
            self.assertIn(words, cm.exception.details())
        # Four ports and a range of three: no instance, the key to widen named.
        with self.assertRaises(grpc.RpcError) as cm:
            self.create(box(*[port(1000 + k) for k in range(4)]))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, cm.exception.details())
        self.assertIn("[vmm] export_ports", cm.exception.details())
        r = self.nsc("run", "--image", IMAGE, "-p", "0", "--", "true")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("Invalid -p '0'", r.stderr)
        r = self.nsc("run", "--image", IMAGE, "-p", "80/udp", "--", "true")
        self.assertIn("Invalid -p '80/udp'", r.stderr)

    def test_2_bridge_container_port_reached_from_the_host_and_gone_after_destroy(self):
        p = subprocess.Popen([binary("nsc"), "run",
                              "--image", IMAGE, "-p", "8080/tcp", "--keep", "--", *httpd("hello-from-bridge", 8080)],
                             env=self.mesh.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            endpoint = None
            lines = []
            end = time.time() + 400
            while time.time() < end:
                line = p.stderr.readline()
                if not line:
                    break
                lines.append(line)
                m = re.search(r"port 8080 \u2192 (127\.0\.0\.1):(\d+)", line)
                if m:
                    endpoint = int(m.group(2))
                    break
            self.assertIsNotNone(endpoint, "".join(lines))
            self.assertIn(endpoint, range(21000, 21003))
            r, lst = self.mesh.nsc_json("list")
            iid = lst[0]["instance_id"]
            self.note_qemu(iid)
            # Twice: a connection each, the answer after our half-close.
            self.assertIn("hello-from-bridge", self.fetch(endpoint, "hello-from-bridge"))
            self.assertIn("hello-from-bridge", self.fetch(endpoint, "hello-from-bridge"))
            # nsc describe lists it, in JSON and in plain text.
            r, d = self.mesh.nsc_json("describe", iid)
            self.assertEqual(d["containers"][0]["ports"],
                             [{"container_port": 8080, "exported_port": endpoint,
                               "endpoint": "127.0.0.1:%d" % endpoint, "proto": "tcp"}])
            r = self.nsc("describe", iid)
            self.assertIn('"endpoint":"127.0.0.1:%d"' % endpoint, r.stdout)
            # vmmd killed and started again (socket activation starts it on
            # the first call, as systemd's Restart= would at once): the same
            # port forwards again.
            self.restart_vmmd()
            r, d = self.mesh.nsc_json("describe", iid)
            self.assertEqual(d["containers"][0]["ports"][0]["exported_port"], endpoint)
            self.assertIn("hello-from-bridge", self.fetch(endpoint, "hello-from-bridge"))
            # Destroyed: nothing listens there any more.
            self.nsc("destroy", iid)
            self.wait_gone(iid)
            self.assert_refused(endpoint)
        finally:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=30)

    def test_3_host_container_port_is_the_guests_own(self):
        resp = self.create(compute_pb2.ContainerRequest(
            name="web", image_ref=IMAGE, args=httpd("hello-from-host", 8081),
            network=compute_pb2.ContainerRequest.HOST,
            export_ports=[compute_pb2.ContainerPort(container_port=8081, proto=compute_pb2.ContainerPort.HTTP)]))
        iid = resp.metadata.instance_id
        ports = resp.containers[0].exported_port
        self.assertEqual(len(ports), 1)
        self.assertEqual((ports[0].container_port, ports[0].proto), (8081, compute_pb2.ContainerPort.HTTP))
        self.assertEqual(ports[0].endpoint, "127.0.0.1:%d" % ports[0].exported_port)
        self.assertIn(ports[0].exported_port, range(21000, 21003))
        wait = self.stub("WaitInstanceSync", compute_pb2.WaitInstanceRequest, compute_pb2.WaitInstanceResponse)
        wait(compute_pb2.WaitInstanceRequest(instance_id=iid), timeout=400)
        self.note_qemu(iid)
        self.assertIn("hello-from-host", self.fetch(ports[0].exported_port, "hello-from-host"))
        self.assertIn("hello-from-host", self.fetch(ports[0].exported_port, "hello-from-host"))
        describe = self.stub("DescribeInstance", compute_pb2.DescribeInstanceRequest,
                             compute_pb2.DescribeInstanceResponse)
        d = describe(compute_pb2.DescribeInstanceRequest(instance_id=iid), timeout=30)
        self.assertEqual(d.containers[0].exported_port[0].exported_port, ports[0].exported_port)
        # The server killed: vmmd still accepts, and closes each connection
        # at once (the guest refuses); vmmd itself goes on.
        r = self.nsc("exec", iid, "--", "ctr", "-n", "default", "tasks", "kill", "-s", "SIGKILL",
                     resp.containers[0].id)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        end = time.time() + 60
        while time.time() < end:
            r = NetnsPair.run(sys.executable, "-c", CLIENT, "closed", str(ports[0].exported_port), netns=HOST_NS,
                              check=False)
            if r.returncode == 0:
                break
            time.sleep(0.5)
        self.assertEqual(r.returncode, 0, "the connection still got an answer after the server was killed")
        d = describe(compute_pb2.DescribeInstanceRequest(instance_id=iid), timeout=30)
        self.assertEqual(d.containers[0].exported_port[0].exported_port, ports[0].exported_port)
        self.nsc("destroy", iid)
        self.wait_gone(iid)
        self.assert_refused(ports[0].exported_port)
        # Given back: describe no longer lists it.
        d = describe(compute_pb2.DescribeInstanceRequest(instance_id=iid), timeout=30)
        self.assertEqual(len(d.containers[0].exported_port), 0)

    def test_4_nsc_run_json_lists_the_ports(self):
        r, js = self.nsc_json("run", "--image", IMAGE, "-p", "9090", "-p", "9091/http", "--", "sh", "-c", "echo done")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(js["stdout"], "done\n")
        self.assertEqual([(p["container_port"], p["proto"]) for p in js["ports"]], [(9090, "tcp"), (9091, "http")])
        for p in js["ports"]:
            self.assertIn(p["exported_port"], range(21000, 21003))
            self.assertEqual(p["endpoint"], "127.0.0.1:%d" % p["exported_port"])
        self.assertNotEqual(js["ports"][0]["exported_port"], js["ports"][1]["exported_port"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
