# ctest: labels=integration;net;containers timeout=1500
"""Docker inside a container instance, in a real TCG micro-VM.

The mesh runs in network namespaces this test makes (as test_containers
does); a real docker-registry on that namespace's loopback holds a test image
built here: Debian's busybox-static with every applet plus the static docker
CLI, pushed with skopeo. A container created with docker_sock_path (field 5
of ContainerRequest) gets dockerd in the guest, on the guest's containerd,
and its own Docker proxy (the same framing, policy and translation code as
hostmesh-dockerproxyd) bind-mounted as /var/run/docker.sock. Checked: the
acceptance example (a bind mount of the container's own /mydata seen by a
container it starts), the container it starts is a sibling in containerd's
namespace moby, escapes refused with test_dockerproxy's words, the image
reaching the guest's dockerd from its disk (and an unknown one named
inside not found through the host, never over the network), dockerd killed
and started again, a container's proxy killed and started again with its
records, two containers with Docker in one instance as two callers
(neither sees, names nor binds the other's things), nsc describe, and `nsc run --enable_docker`.
"""

import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import unittest

import test_containers as tc
from hm import BUILD, Mesh, NetnsPair, QemuReaper
from test_images import add, config_json, layer_tars, sha

sys.path.insert(0, os.path.join(BUILD, "python"))

import grpc  # noqa: E402
from namespace.cloud.compute.v1beta import compute_pb2  # noqa: E402

IMAGE = tc.REG + "/test/dbox:1"
DOCKER_CLI = "/usr/local/bin/docker"


def skip_reason():
    why = tc.skip_reason()
    if why:
        return why
    if not os.path.exists(DOCKER_CLI):
        return "the static docker CLI (%s) is not installed" % DOCKER_CLI
    return None


def docker_box_layout(path):
    """busybox with every applet (layers 1 and 2 of test_images) plus a
    third layer holding the static docker CLI, /tmp and /root."""
    l1, l2 = layer_tars("dbox", applets=True)
    l3 = io.BytesIO()
    with open(DOCKER_CLI, "rb") as f:
        cli = f.read()
    with tarfile.open(fileobj=l3, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("tmp", "root", "usr", "usr/local", "usr/local/bin"):
            add(tf, d, kind=tarfile.DIRTYPE)
        add(tf, "usr/local/bin/docker", cli, mode=0o755)
    l3 = l3.getvalue()
    l1gz = gzip.compress(l1, mtime=0, compresslevel=1)
    config = config_json([sha(l1), sha(l2), sha(l3)])
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                   "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(l1gz), "size": len(l1gz)},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l2), "size": len(l2)},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l3), "size": len(l3)},
        ]}).encode()
    os.makedirs(os.path.join(path, "blobs", "sha256"))
    for blob in (l1gz, l2, l3, config, manifest):
        with open(os.path.join(path, "blobs", "sha256", sha(blob)[7:]), "wb") as f:
            f.write(blob)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}, f)


@unittest.skipIf(skip_reason(), skip_reason() or "")
class ContainersDockerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reaper = QemuReaper()
        cls.mesh = None
        cls.registry = None
        cls.tmp = tempfile.mkdtemp(prefix="hostmesh-containers-docker-test-")
        cls.ns = NetnsPair(tc.TAG)
        try:
            tc.ContainersTest.__dict__["_start_registry"].__func__(cls)
            layout = os.path.join(cls.tmp, "layout")
            docker_box_layout(layout)
            NetnsPair.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":1",
                          "docker://" + IMAGE, netns=tc.HOST_NS, timeout=300)
            cls.mesh = Mesh(configs={
                "vmm": tc.vmm_config(),
                "disk": "[disk]\nreserve = 0\novercommit_ratio = 1000\n",
                "dns": "[dns]\nlisten = 0.0.0.0:%d\nupstreams = %s:53\nlocal_zones = %s\n"
                       % (tc.DNS_PORT, NetnsPair.OUT_ADDR, tc.ZONE),
            }, netns=tc.HOST_NS)
            cls.mesh.start()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def _teardown(cls):
        tc.ContainersTest.__dict__["_stop_registry"].__func__(cls)
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

    def nsc(self, *args, timeout=400):
        return self.mesh.nsc(*args, timeout=timeout)

    def in_container(self, iid, script, timeout=400):
        return self.nsc("exec", iid, "--container", "main", "--", "sh", "-c", script, timeout=timeout)

    def assertDenied(self, r, *fragments):
        self.assertNotEqual(r.returncode, 0, "expected a refusal, got success: " + r.stdout)
        for f in fragments:
            self.assertIn(f, r.stdout + r.stderr)

    def test_1_docker_in_a_container_binds_its_own_files_and_makes_siblings(self):
        ch = self.mesh.channel("gateway")
        create = ch.unary_unary(tc.COMPUTE + "CreateInstance",
                                request_serializer=compute_pb2.CreateInstanceRequest.SerializeToString,
                                response_deserializer=compute_pb2.DescribeInstanceResponse.FromString)
        wait = ch.unary_unary(tc.COMPUTE + "WaitInstanceSync",
                              request_serializer=compute_pb2.WaitInstanceRequest.SerializeToString,
                              response_deserializer=compute_pb2.WaitInstanceResponse.FromString)
        # A socket path that would climb or split ctr's options: refused by name.
        shape = compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048, machine_arch="amd64")
        for bad in ("/var/../etc/docker.sock", "relative.sock", "/run/a,b"):
            with self.assertRaises(grpc.RpcError) as cm:
                create(compute_pb2.CreateInstanceRequest(shape=shape, containers=[
                    compute_pb2.ContainerRequest(name="main", image_ref=IMAGE, docker_sock_path=bad)]), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("containers[0].docker_sock_path", cm.exception.details())

        t0 = time.monotonic()
        resp = create(compute_pb2.CreateInstanceRequest(
            shape=shape, documented_purpose="docker inside", containers=[
                compute_pb2.ContainerRequest(name="main", image_ref=IMAGE, args=["sleep", "900"],
                                             docker_sock_path="/var/run/docker.sock",
                                             network=compute_pb2.ContainerRequest.BRIDGE)]), timeout=300)
        iid = resp.metadata.instance_id
        cid = resp.containers[0].id
        wait(compute_pb2.WaitInstanceRequest(instance_id=iid), timeout=600)
        self.note = self.reaper.note(self.mesh, iid)
        # The container runs once dockerd answers and its proxy listens.
        end = time.time() + 300
        while time.time() < end:
            w = wait(compute_pb2.WaitInstanceRequest(instance_id=iid, container_id="main"), timeout=60)
            if w.container_status != "starting" and w.container_status != "pending":
                break
            time.sleep(1)
        if w.container_status != "running":
            print(self.nsc("logs", iid).stdout[-4000:])
            print(self.nsc("exec", iid, "--", "sh", "-c",
                           "tail -n 30 /run/dockerd.log /run/hostmesh/docker/*.log").stdout)
        self.assertEqual(w.container_status, "running")
        # "running" is said once ctr run is started; its task comes a little later.
        end = time.time() + 120
        while time.time() < end:
            r = self.nsc("exec", iid, "--", "ctr", "-n", "default", "tasks", "ls")
            if any(x.startswith(cid) and "RUNNING" in x for x in r.stdout.splitlines()):
                break
            time.sleep(0.5)
        print("instance %s: container's task running %.1f s after create" % (iid, time.monotonic() - t0))

        # The acceptance example: the container's own /mydata, seen by the
        # container it starts, through its proxy (the source rewritten into
        # its root in the guest).
        r = self.in_container(iid, "mkdir /mydata && touch /mydata/foobar && "
                              "docker run --rm -v /mydata:/parent %s ls /parent" % IMAGE)
        if r.returncode != 0:
            print(self.nsc("logs", iid).stdout[-3000:])
            print(self.nsc("exec", iid, "--", "sh", "-c",
                           "tail -n 30 /run/containerd.log /run/dockerd.log /run/hostmesh/docker/*.log").stdout)
        self.assertEqual((r.returncode, r.stdout), (0, "foobar\n"), r.stderr)

        # A sibling: in containerd's namespace moby next to ours in default,
        # not inside it.
        r = self.in_container(iid, "docker run -d --name sib %s sleep 600" % IMAGE)
        self.assertEqual(r.returncode, 0, r.stderr)
        sib = r.stdout.strip()
        self.assertRegex(sib, r"^[0-9a-f]{64}$")
        r = self.nsc("exec", iid, "--", "ctr", "-n", "moby", "containers", "ls", "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(sib, r.stdout.split())
        r = self.nsc("exec", iid, "--", "ctr", "-n", "default", "containers", "ls", "-q")
        self.assertEqual(r.stdout.split(), [cid])
        r = self.in_container(iid, "docker ps --format '{{.Names}}'")
        self.assertEqual((r.returncode, r.stdout), (0, "sib\n"), r.stderr)
        # The docker CLI in the guest reaches the same dockerd directly.
        r = self.nsc("exec", iid, "--", "docker", "-H", "unix:///run/hostmesh/docker/engine.sock", "ps", "-q",
                     "--no-trunc")
        self.assertEqual(r.stdout.split(), [sib], r.stderr)

        # Escapes, refused with the host proxy's words.
        r = self.in_container(iid, "docker run --rm -v /../../etc:/x %s ls /x" % IMAGE)
        self.assertDenied(r, '"/../../etc:/x"', "..")
        r = self.in_container(iid, "ln -sfn / /escape && docker run --rm -v /escape/etc:/x %s true" % IMAGE)
        self.assertDenied(r, "/escape", "outside the container's root")
        r = self.in_container(iid, "ln -sfn ../../../../../../.. /escape-up && "
                              "docker run --rm -v /escape-up/etc:/x %s true" % IMAGE)
        self.assertDenied(r, "/escape-up", "outside the container's root")
        r = self.in_container(iid, "docker run --rm --privileged %s true" % IMAGE)
        self.assertDenied(r, "Privileged")
        r = self.in_container(iid, "docker run --rm --network host %s true" % IMAGE)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        r = self.in_container(iid, "docker run --rm -v /proc:/x %s true" % IMAGE)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        # The container's view of the host's docker socket is its proxy, not dockerd.
        r = self.in_container(iid, "docker system prune -f")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        # Nothing was made privileged behind the proxy's back.
        r = self.nsc("exec", iid, "--", "docker", "-H", "unix:///run/hostmesh/docker/engine.sock", "ps", "-aq",
                     "--no-trunc", "--filter", "name=.")
        self.assertEqual(r.stdout.split(), [sib], r.stderr)

        # Without the network: the image reached dockerd from its disk. A
        # name dockerd does not have is pulled through the host (diskd;
        # test_containers_docker_pull has the rest): this one is nowhere.
        r = self.in_container(iid, "docker run --rm 127.0.0.1:5000/test/absent:1 true")
        self.assertDenied(r, "repository or tag not found")

        # nsc describe names the container's Docker socket.
        r, d = self.mesh.nsc_json("describe", iid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([(c["name"], c.get("docker"), c.get("docker_sock_path"), c.get("status"))
                          for c in d["containers"]], [("main", True, "/var/run/docker.sock", "running")])

        r = self.in_container(iid, "docker rm -f sib")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.nsc("exec", iid, "--", "ctr", "-n", "moby", "containers", "ls", "-q")
        self.assertNotIn(sib, r.stdout.split())

        # dockerd killed: the proxy says the engine is away (502) rather
        # than hanging, and hostmesh-init starts dockerd again.
        r = self.nsc("exec", iid, "--", "sh", "-c", "kill -9 $(cat /run/docker.pid)")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.in_container(iid, "docker ps")
        if r.returncode != 0:
            self.assertIn("The Docker engine is not reachable.", r.stderr)
        end = time.time() + 180
        while time.time() < end:
            r = self.in_container(iid, "docker ps -q")
            if r.returncode == 0:
                break
            time.sleep(1)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.in_container(iid, "docker run --rm -v /mydata:/parent %s ls /parent" % IMAGE)
        self.assertEqual((r.returncode, r.stdout), (0, "foobar\n"), r.stderr)
        self.assertIn("dockerd exited", self.nsc("logs", iid).stdout)
        self.nsc("destroy", iid)

    def test_3_two_docker_containers_are_two_callers(self):
        """Identity is which socket: two containers with Docker in one
        instance share the guest's dockerd but see, name and bind only their
        own things."""
        ch = self.mesh.channel("gateway")
        create = ch.unary_unary(tc.COMPUTE + "CreateInstance",
                                request_serializer=compute_pb2.CreateInstanceRequest.SerializeToString,
                                response_deserializer=compute_pb2.DescribeInstanceResponse.FromString)
        shape = compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048, machine_arch="amd64")
        resp = create(compute_pb2.CreateInstanceRequest(shape=shape, documented_purpose="two docker callers",
                                                        containers=[
            compute_pb2.ContainerRequest(name=n, image_ref=IMAGE, args=["sleep", "900"],
                                         docker_sock_path="/var/run/docker.sock",
                                         network=compute_pb2.ContainerRequest.HOST) for n in ("a", "b")]),
            timeout=300)
        iid = resp.metadata.instance_id
        ids = [c.id for c in resp.containers]
        self.reaper.note(self.mesh, iid)
        end = time.time() + 600
        while time.time() < end:
            r = self.nsc("exec", iid, "--", "ctr", "-n", "default", "tasks", "ls")
            if all(any(x.startswith(i) and "RUNNING" in x for x in r.stdout.splitlines()) for i in ids):
                break
            time.sleep(1)
        else:
            print(self.nsc("logs", iid).stdout[-3000:])
            self.fail("the two containers did not both run")

        def run(name, script):
            return self.nsc("exec", iid, "--container", name, "--", "sh", "-c", script)

        r = run("a", "mkdir /only-a && echo mine > /only-a/f && docker run -d --name a-own -v /only-a:/x %s "
                     "sleep 600" % IMAGE)
        self.assertEqual(r.returncode, 0, r.stderr)
        a_own = r.stdout.strip()
        # b does not see it, cannot act on it by name or id.
        r = run("b", "docker ps -a --format '{{.Names}}'")
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        for ref in ("a-own", a_own):
            for verb in ("kill", "container inspect", "logs"):
                r = run("b", "docker %s %s" % (verb, ref))
                self.assertDenied(r, "No such container")
            # (rm -f of a missing container exits 0 in this CLI: a's must still run.)
            run("b", "docker rm -f " + ref)
        r = run("a", "docker ps --format '{{.Names}}'")
        self.assertEqual((r.returncode, r.stdout), (0, "a-own\n"), r.stderr)
        # b's /only-a is b's own root (absent), not a's.
        r = run("b", "docker run --rm -v /only-a:/x %s cat /x/f" % IMAGE)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("mine", r.stdout)
        r = run("a", "docker exec a-own cat /x/f")
        self.assertEqual((r.returncode, r.stdout), (0, "mine\n"), r.stderr)
        # a's proxy killed: hostmesh-init starts it again on the same
        # socket, and what a made is still a's (its records were kept).
        kill = ("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null | "
                "grep -q '^dockerproxy-guest .*--id %s ' && kill -9 ${p#/proc/} && echo killed; done; true" % ids[0])
        r = self.nsc("exec", iid, "--", "sh", "-c", kill)
        self.assertEqual((r.returncode, r.stdout), (0, "killed\n"), r.stderr)
        end = time.time() + 60
        while time.time() < end:
            r = run("a", "docker ps --format '{{.Names}}'")
            if r.returncode == 0:
                break
            time.sleep(1)
        self.assertEqual((r.returncode, r.stdout), (0, "a-own\n"), r.stderr)
        r = run("a", "docker exec a-own cat /x/f")
        self.assertEqual((r.returncode, r.stdout), (0, "mine\n"), r.stderr)
        self.assertIn("Docker proxy of %s exited" % ids[0], self.nsc("logs", iid).stdout)
        # b still sees nothing of a's.
        r = run("b", "docker ps -a --format '{{.Names}}'")
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        # Both talk to one dockerd: one moby namespace holds a's container.
        r = self.nsc("exec", iid, "--", "ctr", "-n", "moby", "containers", "ls", "-q")
        self.assertEqual(r.stdout.split(), [a_own])
        r = run("a", "docker rm -f a-own")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.nsc("destroy", iid)

    def test_2_nsc_run_enable_docker(self):
        r = self.nsc("run", "--enable_docker", "--", "true")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--enable_docker need --image", r.stderr)
        r = self.nsc("-o", "json", "run", "--image", IMAGE, "--enable_docker", "--", "sh", "-c",
                     "docker version --format '{{.Server.Version}}' && docker images --format '{{.Repository}}:{{.Tag}}'")
        js = json.loads(r.stdout)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = js["stdout"].split()
        self.assertRegex(lines[0], r"^20\.10\.")
        self.assertIn(IMAGE, lines[1:])


if __name__ == "__main__":
    unittest.main(verbosity=2)
