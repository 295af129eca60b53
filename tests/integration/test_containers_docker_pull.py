# ctest: labels=integration;net;containers timeout=1500
"""Images named inside a container instance resolve through diskd, in a real
TCG micro-VM with a real dockerd in the guest.

The fixture is test_containers_docker's: the mesh in network namespaces this
test makes, a real docker-registry listening on 127.0.0.1:5000 of the mesh's
namespace (so on the host's loopback: the guest has its own and cannot reach
that one), image A (busybox + the static docker CLI) the instance is created
with. Image B is pushed here and is not attached at create: `docker pull B`
inside the container goes through its in-guest proxy, hostmesh-init, the
agent channel and vmmd to diskd's PullImage, and comes back as diskd's
unpacked image, imported into the guest's dockerd with B's config. One
instance serves every assertion (a Docker-enabled boot under TCG is slow).
"""

import json
import os
import signal
import sys
import time
import unittest

import test_containers as tc
import test_containers_docker as tcd
from hm import BUILD, NetnsPair
from test_images import make_oci_layout

sys.path.insert(0, os.path.join(BUILD, "python"))

from namespace.cloud.compute.v1beta import compute_pb2  # noqa: E402

IMAGE_B = tc.REG + "/test/pulled:2"
MARKER_B = "pulled-through-the-host"
# B's config: what `docker run --rm B` with no command must run.
CONFIG_B = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ['echo "$GREETING from $(pwd)"'],
            "Env": ["PATH=/bin", 'GREETING=hello "$USER"'], "WorkingDir": "/var/cache"}


@unittest.skipIf(tcd.skip_reason(), tcd.skip_reason() or "")
class DockerPullInsideTest(unittest.TestCase):
    _teardown = tcd.ContainersDockerTest.__dict__["_teardown"]

    @classmethod
    def setUpClass(cls):
        tcd.ContainersDockerTest.__dict__["setUpClass"].__func__(cls)
        try:
            layout = os.path.join(cls.tmp, "layout-b")
            make_oci_layout(layout, MARKER_B, "2", applets=True, run_config=CONFIG_B)
            NetnsPair.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":2",
                          "docker://" + IMAGE_B, netns=tc.HOST_NS, timeout=300)
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    def nsc(self, *args, timeout=600):
        return self.mesh.nsc(*args, timeout=timeout)

    def in_container(self, iid, script, timeout=600):
        return self.nsc("exec", iid, "--container", "main", "--", "sh", "-c", script, timeout=timeout)

    def debug(self, iid):
        print(self.nsc("logs", iid).stdout[-4000:])
        print(self.nsc("exec", iid, "--", "sh", "-c",
                       "tail -n 30 /run/dockerd.log /run/hostmesh/docker/*.log").stdout)

    def test_pull_inside_resolves_through_diskd(self):
        ch = self.mesh.channel("gateway")
        create = ch.unary_unary(tc.COMPUTE + "CreateInstance",
                                request_serializer=compute_pb2.CreateInstanceRequest.SerializeToString,
                                response_deserializer=compute_pb2.DescribeInstanceResponse.FromString)
        shape = compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048, machine_arch="amd64")
        resp = create(compute_pb2.CreateInstanceRequest(
            shape=shape, documented_purpose="docker pull inside", containers=[
                compute_pb2.ContainerRequest(name="main", image_ref=tcd.IMAGE, args=["sleep", "1800"],
                                             docker_sock_path="/var/run/docker.sock",
                                             network=compute_pb2.ContainerRequest.BRIDGE)]), timeout=300)
        iid, cid = resp.metadata.instance_id, resp.containers[0].id
        self.reaper.note(self.mesh, iid)
        end = time.time() + 600
        while time.time() < end:
            r = self.nsc("exec", iid, "--", "ctr", "-n", "default", "tasks", "ls", timeout=60)
            if any(x.startswith(cid) and "RUNNING" in x for x in r.stdout.splitlines()):
                break
            time.sleep(1)
        else:
            self.debug(iid)
            self.fail("the container did not run")

        # The registry answers on the host's loopback (in the mesh's
        # namespace), and neither that address nor the guest's gateway
        # reaches it from inside: whatever B's bytes come over, it is not
        # the instance's network.
        r = NetnsPair.run(sys.executable, "-c", "import urllib.request as u; "
                          "print(u.urlopen('http://%s/v2/', timeout=5).status)" % tc.REG,
                          netns=tc.HOST_NS, check=False)
        self.assertEqual(r.stdout.strip(), "200", r.stderr)
        r = self.nsc("exec", iid, "--", "sh", "-c",
                     "gw=$(ip route | awk '/^default/ {print $3}'); echo gw=$gw; "
                     "for a in 127.0.0.1 $gw; do if wget -q -T 5 -O /dev/null http://$a:%d/v2/; "
                     "then echo reached $a; else echo unreachable $a; fi; done" % tc.REGISTRY_PORT)
        self.assertRegex(r.stdout, r"gw=\d+\.\d+\.\d+\.\d+", r.stderr)
        self.assertNotIn("reached", r.stdout)
        self.assertEqual(r.stdout.count("unreachable"), 2, r.stdout)

        # B is not in the guest's dockerd; pulling it works from inside.
        r = self.in_container(iid, "docker image inspect %s >/dev/null 2>&1 && echo present || echo absent" % IMAGE_B)
        self.assertEqual(r.stdout.strip(), "absent")
        t = time.monotonic()
        r = self.in_container(iid, "docker pull %s" % IMAGE_B)
        took = time.monotonic() - t
        if r.returncode != 0:
            self.debug(iid)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Pulling %s through the host" % IMAGE_B, r.stdout)
        self.assertIn("Downloaded newer image for %s" % IMAGE_B, r.stdout)
        print("docker pull %s inside the instance: %.2f s (nsc exec round trip included)" % (IMAGE_B, took))
        # (B's Entrypoint is sh -c: the command is one script.)
        r = self.in_container(iid, "docker run --rm %s 'cat /etc/motd'" % IMAGE_B)
        self.assertEqual((r.returncode, r.stdout), (0, MARKER_B + "\n"), r.stderr)
        # B's config came with it: Entrypoint, Cmd, Env (quotes and $ kept), WorkingDir.
        r = self.in_container(iid, "docker run --rm %s" % IMAGE_B)
        self.assertEqual((r.returncode, r.stdout), (0, 'hello "$USER" from /var/cache\n'), r.stderr)
        r = self.in_container(iid, "docker images --format '{{.Repository}}:{{.Tag}}'")
        self.assertIn(IMAGE_B, r.stdout.split())
        # vmmd recorded it with the instance.
        r, d = self.mesh.nsc_json("describe", iid)
        self.assertIn("image %s pulled from inside" % IMAGE_B, json.dumps(d))

        # A tag the registry does not have: a clear not-found, exit 1.
        r = self.in_container(iid, "docker pull %s/test/pulled:missing" % tc.REG)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("repository or tag not found in %s" % tc.REG, r.stdout + r.stderr)
        # docker run of an image nobody has: the same words, and no container.
        r = self.in_container(iid, "docker run --rm %s/test/absent:1 true" % tc.REG)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("repository or tag not found", r.stdout + r.stderr)
        # A registry that does not answer: said so, with the host's words.
        r = self.in_container(iid, "docker pull 127.0.0.1:5999/test/pulled:2")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("registry 127.0.0.1:5999 is not reachable from the host", r.stdout + r.stderr)
        # By digest: refused by the proxy (400) before anything leaves the guest.
        r = self.in_container(iid, "docker pull %s/test/pulled@sha256:%s" % (tc.REG, "0" * 64))
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("Pulling by digest is not available inside an instance", r.stdout + r.stderr)
        # Imports from a URL stay refused with their own words.
        r = self.in_container(iid, "docker import http://10.0.2.2/x.tar x:1")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("Importing images (fromSrc)", r.stdout + r.stderr)

        # The instance still runs commands alongside (the channel was shared).
        r = self.in_container(iid, "echo still-here")
        self.assertEqual((r.returncode, r.stdout), (0, "still-here\n"), r.stderr)

        # vmmd killed while a pull waits for the host (diskd held stopped,
        # so vmmd is still asking): the restarted vmmd knows nothing of it,
        # and the client gets an error saying so instead of waiting forever.
        disk_pid = self.mesh.kill("disk", signal.SIGSTOP)
        try:
            r = self.in_container(iid, "(docker pull %s/test/pulled:held > /tmp/held.log 2>&1; "
                                       "echo $? > /tmp/held.rc) </dev/null >/dev/null 2>&1 &" % tc.REG)
            self.assertEqual(r.returncode, 0, r.stderr)
            # The request has left the guest once its file exists (made
            # just before the frame is sent).
            end = time.time() + 120
            while time.time() < end:
                r = self.nsc("exec", iid, "--", "sh", "-c",
                             "ls /mnt/disk/hostmesh-pulls /var/lib/hostmesh-pulls 2>/dev/null | grep -c img",
                             timeout=60)
                if r.stdout.strip() not in ("", "0"):
                    break
                time.sleep(0.5)
            self.assertNotIn(r.stdout.strip(), ("", "0"), "the held pull never reached hostmesh-init")
            time.sleep(1)
            self.mesh.kill("vmm")
            end = time.time() + 180
            while time.time() < end:
                r = self.in_container(iid, "cat /tmp/held.rc /tmp/held.log 2>/dev/null", timeout=60)
                if r.returncode == 0 and r.stdout.strip():
                    break
                time.sleep(1)
        finally:
            os.kill(disk_pid, signal.SIGCONT)
        rc = r.stdout.split("\n", 1)[0].strip()
        self.assertNotIn(rc, ("", "0"), r.stdout + r.stderr)
        self.assertIn("the host's vmm went away during the pull", r.stdout)
        # The instance, and its pulls, carry on with the new vmmd.
        r = self.in_container(iid, "docker image inspect %s >/dev/null && echo kept" % IMAGE_B)
        self.assertEqual((r.returncode, r.stdout), (0, "kept\n"), r.stderr)
        self.nsc("destroy", iid)


if __name__ == "__main__":
    unittest.main(verbosity=2)
