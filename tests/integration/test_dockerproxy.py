# ctest: labels=integration;docker timeout=1500
"""dockerproxyd against a real Docker engine.

The test starts its own dockerd (vfs storage, no iptables, no bridge) on its
own socket and data root, imports a busybox rootfs as the image `ubuntu`,
starts the mesh with dockerproxyd pointed at that engine, and registers two
containers, A and B, with `nsc docker register`.

"Inside container A": A is a real container whose registered socket is
hard-linked into a directory that is bind-mounted into A (a hard link to a
unix socket reaches the same listening socket), and the statically linked
docker CLI is bind-mounted into A too, so the platform example runs truly
inside A. For the rest, the docker CLI runs on the host against A's
registered socket: for the proxy that is the same caller (every connection
on A's socket is A), and paths in bind mounts are still resolved inside
A's root, which is the container's real root filesystem on the host.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

from hm import Mesh

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
STATIC_DOCKER = "/usr/local/bin/docker"


def is_static(path):
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    return r.returncode != 0 or "not a dynamic executable" in (r.stdout + r.stderr)


def docker_cli():
    for c in (STATIC_DOCKER, "/usr/bin/docker", shutil.which("docker") or ""):
        if c and os.access(c, os.X_OK):
            return c
    return None


def wait_for(pred, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def http(sock_path, raw, timeout=10):
    """Sends raw bytes on a unix socket and returns everything read until
    the peer closes (or the timeout)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(raw)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        pass
    s.close()
    return out


def status_of(resp):
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.") else None


@unittest.skipUnless(os.geteuid() == 0 and os.path.exists(DOCKERD) and docker_cli(),
                     "needs root, dockerd (docker.io) and a docker CLI")
class DockerProxy(unittest.TestCase):
    MAX_CONNS = 64
    IDLE_S = 4

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hm-dp-", dir="/tmp")
        cls.docker_bin = docker_cli()
        cls.engine_sock = os.path.join(cls.tmp, "docker.sock")
        cls.dockerd = None
        cls.mesh = None
        try:
            cls._start_engine()
            cls._import_image()
            cls._start_mesh()
            cls._start_containers()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start_engine(cls):
        data = os.path.join(cls.tmp, "data")
        execroot = os.path.join(cls.tmp, "exec")
        os.makedirs(data)
        os.makedirs(execroot)
        cls.dockerd_log = open(os.path.join(cls.tmp, "dockerd.log"), "w")
        cls.dockerd = subprocess.Popen(
            [DOCKERD, "--storage-driver=vfs", "--iptables=false", "--bridge=none",
             "--exec-opt", "native.cgroupdriver=cgroupfs", "--data-root", data,
             "-H", "unix://" + cls.engine_sock, "--pidfile", os.path.join(cls.tmp, "docker.pid"),
             "--exec-root", execroot],
            stdout=cls.dockerd_log, stderr=subprocess.STDOUT)

        def up():
            if cls.dockerd.poll() is not None:
                raise RuntimeError("dockerd exited; see " + cls.dockerd_log.name)
            try:
                return status_of(http(cls.engine_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", 2)) == 200
            except OSError:
                return False
        wait_for(up, 60, "dockerd")

    @classmethod
    def engine(cls, *args, check=True, **kw):
        r = subprocess.run([cls.docker_bin, "-H", "unix://" + cls.engine_sock, *args],
                           capture_output=True, text=True, timeout=120, **kw)
        if check and r.returncode != 0:
            raise AssertionError("docker %s failed: %s" % (" ".join(args), r.stderr))
        return r

    @classmethod
    def _import_image(cls):
        rootfs = os.path.join(cls.tmp, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        for d in ("etc", "tmp", "proc", "sys", "dev", "usr/bin", "var/run"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", os.path.join(rootfs, "bin", a))
        tar = os.path.join(cls.tmp, "busybox.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
        cls.engine("import", tar, "ubuntu:latest")
        cls.engine("tag", "ubuntu:latest", "busybox:latest")

    @classmethod
    def _start_mesh(cls):
        cls.mesh = Mesh(configs={"dockerproxy": "[dockerproxy]\nupstream = %s\nmax_connections = %d\nidle_timeout = %ds\n"
                                                % (cls.engine_sock, cls.MAX_CONNS, cls.IDLE_S)})
        cls.mesh.start()

    @classmethod
    def register(cls, name, *extra):
        r, j = cls.mesh.nsc_json("docker", "register", "--container", name, *extra)
        if r.returncode != 0:
            raise AssertionError("nsc docker register %s: %s %s" % (name, r.stdout, r.stderr))
        return j["socket_path"]

    @classmethod
    def _start_containers(cls):
        # A's socket directory is created before A so that it can be mounted.
        cls.a_sockdir = os.path.join(cls.tmp, "a-sock")
        os.makedirs(cls.a_sockdir)
        # A static docker CLI can run inside the busybox container.
        cls.inside_cli = os.path.exists(STATIC_DOCKER) and is_static(STATIC_DOCKER)
        mounts = ["-v", cls.a_sockdir + ":/var/run/hm"]
        if cls.inside_cli:
            mounts += ["-v", STATIC_DOCKER + ":/usr/bin/docker:ro"]
        cls.engine("create", "--name", "hm-a", *mounts, "ubuntu", "sleep", "1000000")
        cls.engine("start", "hm-a")
        cls.engine("run", "-d", "--name", "hm-b", "ubuntu", "sleep", "1000000")
        cls.a_sock = cls.register("hm-a")
        cls.b_sock = cls.register("hm-b")
        os.link(cls.a_sock, os.path.join(cls.a_sockdir, "docker.sock"))

    @classmethod
    def tearDownClass(cls):
        if cls.mesh:
            try:
                cls.mesh.stop()
            except Exception:
                pass
        if cls.dockerd and cls.dockerd.poll() is None:
            try:
                ids = cls.engine("ps", "-aq", check=False).stdout.split()
                if ids:
                    cls.engine("rm", "-f", *ids, check=False)
            except Exception:
                pass
            cls.dockerd.send_signal(signal.SIGTERM)
            try:
                cls.dockerd.wait(30)
            except subprocess.TimeoutExpired:
                cls.dockerd.kill()
                cls.dockerd.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------
    def via(self, sock, *args, input=None, timeout=120):
        return subprocess.run([self.docker_bin, "-H", "unix://" + sock, *args], capture_output=True,
                              text=True, input=input, timeout=timeout)

    def assertDenied(self, r, *fragments):
        self.assertNotEqual(r.returncode, 0, "expected a refusal, got success: " + r.stdout)
        for f in fragments:
            self.assertIn(f, r.stderr)

    def raw_create(self, body, extra_headers=b"", sock=None):
        if isinstance(body, str):
            body = body.encode()
        req = (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
               + extra_headers + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        return http(sock or self.a_sock, req)

    def engine_privileged_containers(self):
        ids = self.engine("ps", "-aq").stdout.split()
        out = []
        for i in ids:
            j = json.loads(self.engine("inspect", i).stdout)[0]
            if j["HostConfig"].get("Privileged") or j["HostConfig"].get("PidMode") == "host":
                out.append(i)
        return out

    # -- the platform's example ------------------------------------------------
    def test_platform_example_lists_foobar_from_inside_a(self):
        self.engine("exec", "hm-a", "mkdir", "-p", "/mydata")
        self.engine("exec", "hm-a", "touch", "/mydata/foobar")
        if self.inside_cli:
            r = self.engine("exec", "hm-a", "docker", "-H", "unix:///var/run/hm/docker.sock",
                            "run", "--rm", "-v", "/mydata:/parent", "ubuntu", "ls", "/parent")
            self.assertEqual(r.stdout.split(), ["foobar"])
        else:
            print("note: no static docker CLI at %s; the example runs from the host on A's socket" % STATIC_DOCKER)
        # The same through the host-side client on A's socket.
        r = self.via(self.a_sock, "run", "--rm", "-v", "/mydata:/parent", "ubuntu", "ls", "/parent")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["foobar"])

    def test_created_containers_are_siblings_labelled_with_their_creator(self):
        r = self.via(self.a_sock, "create", "--name", "hm-a-child", "ubuntu", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        labels = json.loads(self.engine("inspect", "hm-a-child").stdout)[0]["Config"]["Labels"]
        self.assertEqual(labels.get("io.hostmesh.dockerproxy.creator"), "hm-a")
        self.assertIn("io.hostmesh.dockerproxy.owner.hm-a", labels)
        self.engine("rm", "-f", "hm-a-child")

    # -- streams ---------------------------------------------------------------
    def test_attach_stream_carries_stdin_and_stdout(self):
        payload = "".join("line %d\n" % i for i in range(20000))  # ~200 kB
        r = self.via(self.a_sock, "run", "--rm", "-i", "ubuntu", "cat", input=payload)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, payload)

    def test_exec_streams_and_half_close(self):
        r = self.via(self.a_sock, "run", "-d", "--name", "hm-a-exec", "ubuntu", "sleep", "100000")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            r = self.via(self.a_sock, "exec", "hm-a-exec", "echo", "exec-ok")
            self.assertEqual(r.stdout.strip(), "exec-ok")
            # stdin EOF must reach the process (half-close) or `wc` never ends.
            r = self.via(self.a_sock, "exec", "-i", "hm-a-exec", "wc", "-c", input="x" * 100000, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), "100000")
            r = self.via(self.a_sock, "exec", "--privileged", "hm-a-exec", "true")
            self.assertDenied(r, "Privileged exec")
        finally:
            self.via(self.a_sock, "rm", "-f", "hm-a-exec")

    def test_logs_follow_streams_until_the_client_leaves(self):
        r = self.via(self.a_sock, "run", "-d", "--name", "hm-a-ticker", "ubuntu", "sh", "-c",
                     "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            p = subprocess.Popen([self.docker_bin, "-H", "unix://" + self.a_sock, "logs", "-f", "hm-a-ticker"],
                                 stdout=subprocess.PIPE, text=True)
            lines = [p.stdout.readline() for _ in range(15)]
            p.terminate()
            p.wait(10)
            self.assertTrue(all(l.startswith("tick ") for l in lines), lines)
            # The 15 lines took ~1.5 s to be written: they streamed.
            self.assertEqual(lines[14].strip(), "tick 14")
        finally:
            self.via(self.a_sock, "rm", "-f", "hm-a-ticker")

    def test_events_stream_shows_own_containers_only(self):
        p = subprocess.Popen([self.docker_bin, "-H", "unix://" + self.a_sock, "events", "--format",
                              "{{.Action}} {{.Actor.Attributes.name}}"], stdout=subprocess.PIPE, text=True)
        seen = []
        t = threading.Thread(target=lambda: seen.extend(iter(p.stdout.readline, "")), daemon=True)
        t.start()
        try:
            time.sleep(0.5)
            self.assertEqual(self.via(self.b_sock, "create", "--name", "hm-b-event", "ubuntu", "true").returncode, 0)
            self.assertEqual(self.via(self.a_sock, "create", "--name", "hm-a-event", "ubuntu", "true").returncode, 0)
            wait_for(lambda: any("create hm-a-event" in l for l in seen), 20, "create event")
        finally:
            p.terminate()
            p.wait(10)
            self.engine("rm", "-f", "hm-a-event", "hm-b-event", check=False)
        self.assertFalse(any("hm-b-event" in l for l in seen), seen)

    def test_stats_stream(self):
        r = self.via(self.a_sock, "run", "-d", "--name", "hm-a-stats", "ubuntu", "sleep", "100000")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            r = self.via(self.a_sock, "stats", "--no-stream", "--format", "{{.Name}}", "hm-a-stats", timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), "hm-a-stats")
        finally:
            self.via(self.a_sock, "rm", "-f", "hm-a-stats")

    def test_build_context_upload_and_image_save_load_stream(self):
        ctx = os.path.join(self.tmp, "build-ctx")
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "big"), "wb") as f:
            f.write(os.urandom(24 << 20))  # 24 MiB context: many buffers' worth, backpressure on the way up
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM ubuntu\nCOPY big /big\n")
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        r = subprocess.run([self.docker_bin, "-H", "unix://" + self.a_sock, "build", "-q", "-t", "hm-built", ctx],
                           capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.engine("run", "--rm", "hm-built", "wc", "-c", "/big")
        self.assertEqual(r.stdout.split()[0], str(24 << 20))
        # docker save (long streamed response) and load (streamed upload) through the proxy.
        tar = os.path.join(self.tmp, "saved.tar")
        r = self.via(self.a_sock, "save", "-o", tar, "hm-built")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(os.path.getsize(tar), 24 << 20)
        self.engine("rmi", "hm-built")
        # Loading could replace any name on the engine: refused, the stream cut short.
        r = self.via(self.a_sock, "load", "-i", tar)
        self.assertDenied(r, "Loading images")
        r = self.engine("load", "-i", tar)
        self.assertIn("hm-built", r.stdout)
        self.engine("rmi", "hm-built")

    # -- escapes -------------------------------------------------------------
    def test_dotdot_bind_is_refused(self):
        r = self.via(self.a_sock, "run", "--rm", "-v", "/../../etc:/x", "ubuntu", "ls", "/x")
        self.assertDenied(r, '"/../../etc:/x"', "..")

    def test_symlink_to_root_is_refused(self):
        self.engine("exec", "hm-a", "ln", "-sfn", "/", "/escape")
        r = self.via(self.a_sock, "run", "--rm", "-v", "/escape/etc:/x", "ubuntu", "cat", "/x/hostname")
        self.assertDenied(r, "/escape", "outside the container's root")
        self.engine("exec", "hm-a", "ln", "-sfn", "../../../../../../..", "/escape-up")
        r = self.via(self.a_sock, "run", "--rm", "-v", "/escape-up/etc:/x", "ubuntu", "true")
        self.assertDenied(r, "/escape-up", "outside the container's root")

    def test_bind_source_swapped_for_a_symlink_after_create_is_refused_at_start(self):
        self.engine("exec", "hm-a", "mkdir", "-p", "/swap")
        r = self.via(self.a_sock, "create", "--name", "hm-a-swap", "-v", "/swap:/x", "ubuntu", "ls", "/x")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            # A turns the checked directory into a link to the host's / before starting.
            self.engine("exec", "hm-a", "sh", "-c", "rmdir /swap && ln -s / /swap")
            r = self.via(self.a_sock, "start", "hm-a-swap")
            self.assertDenied(r, "no longer a plain path")
            self.assertEqual(self.engine("inspect", "-f", "{{.State.Status}}", "hm-a-swap").stdout.strip(), "created")
        finally:
            self.engine("rm", "-f", "hm-a-swap", check=False)
            self.engine("exec", "hm-a", "rm", "-f", "/swap", check=False)

    def test_proc_bind_mount_is_refused(self):
        r = self.via(self.a_sock, "run", "--rm", "--mount", "type=bind,source=/proc/1/root,target=/x", "ubuntu", "true")
        self.assertDenied(r, "/proc/1/root", "/proc")

    def test_privileged_and_host_pid_are_refused(self):
        self.assertDenied(self.via(self.a_sock, "run", "--rm", "--privileged", "ubuntu", "true"), "Privileged")
        self.assertDenied(self.via(self.a_sock, "run", "--rm", "--pid=host", "ubuntu", "true"), "PidMode=host")
        self.assertDenied(self.via(self.a_sock, "run", "--rm", "--cap-add", "SYS_ADMIN", "ubuntu", "true"), "SYS_ADMIN")
        self.assertDenied(self.via(self.a_sock, "run", "--rm", "--security-opt", "seccomp=unconfined", "ubuntu", "true"),
                          "seccomp")
        self.assertDenied(self.via(self.a_sock, "volume", "create", "--opt", "type=none", "--opt", "o=bind",
                                   "--opt", "device=/etc", "hostetc"), "DriverOpts")
        self.assertEqual(self.engine_privileged_containers(), [])

    def test_unicode_escaped_and_case_variant_keys_are_refused(self):
        r = self.raw_create('{"Image":"ubuntu","Hos\\u0074Config":{"Privil\\u0065ged":true}}')
        self.assertEqual(status_of(r), 403, r)
        self.assertIn(b"Privileged", r)
        r = self.raw_create('{"Image":"ubuntu","hostconfig":{"Privileged":true}}')
        self.assertEqual(status_of(r), 400, r)
        r = self.raw_create('{"Image":"ubuntu","HostConfig":{"BINDS":["/:/host"]}}')
        self.assertEqual(status_of(r), 400, r)
        # Deprecated top-level HostConfig fields the engine would still honour.
        r = self.raw_create('{"Image":"ubuntu","Privileged":true}')
        self.assertEqual(status_of(r), 400, r)
        self.assertEqual(self.engine_privileged_containers(), [])

    def test_duplicated_keys_are_refused(self):
        r = self.raw_create('{"Image":"ubuntu","HostConfig":{"Privileged":false,"Privileged":true}}')
        self.assertEqual(status_of(r), 400, r)
        self.assertIn(b"duplicate", r)
        self.assertEqual(self.engine_privileged_containers(), [])

    def test_content_length_smuggling_is_refused(self):
        evil = b'{"Image":"ubuntu","HostConfig":{"Privileged":true}}'
        smuggled = (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(evil) + evil)
        # CL + TE.
        r = http(self.a_sock, b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 4\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
        self.assertEqual(status_of(r), 400, r)
        # Two Content-Length headers.
        r = http(self.a_sock, b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n"
                              b"Content-Length: 200\r\n\r\n{}" + smuggled)
        self.assertEqual(status_of(r), 400, r)
        # obs-fold and a space before the colon.
        r = http(self.a_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\nX: a\r\n Content-Length: 5\r\n\r\n")
        self.assertEqual(status_of(r), 400, r)
        r = http(self.a_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\nContent-Length : 5\r\n\r\n")
        self.assertEqual(status_of(r), 400, r)
        # A body that holds a request is a body: the engine never sees it as one.
        r = http(self.a_sock, b"POST /v1.41/containers/json HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n"
                 % len(smuggled) + smuggled, timeout=3)
        self.assertEqual(self.engine_privileged_containers(), [])

    # -- isolation ---------------------------------------------------------------
    def test_b_containers_are_invisible_to_a(self):
        r = self.via(self.b_sock, "run", "-d", "--name", "hm-b-secret", "ubuntu", "sleep", "100000")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.via(self.a_sock, "create", "--name", "hm-a-own", "ubuntu", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            names = self.via(self.a_sock, "ps", "-a", "--format", "{{.Names}}").stdout.split()
            self.assertIn("hm-a-own", names)
            self.assertNotIn("hm-b-secret", names)
            self.assertNotIn("hm-a", names)  # not created through A's socket
            self.assertIn("hm-b-secret", self.engine("ps", "--format", "{{.Names}}").stdout.split())
            for args in (("inspect", "--type", "container", "hm-b-secret"), ("logs", "hm-b-secret"),
                         ("stop", "hm-b-secret"), ("rm", "hm-b-secret"), ("export", "hm-b-secret"),
                         ("cp", "hm-b-secret:/etc", "-"), ("exec", "hm-b-secret", "true")):
                r = self.via(self.a_sock, *args)
                with self.subTest(args=args):
                    self.assertDenied(r, "No such")
            # `rm -f` exits 0 on "No such container": the container must still be there.
            self.via(self.a_sock, "rm", "-f", "hm-b-secret")
            self.assertDenied(self.via(self.a_sock, "run", "--rm", "--volumes-from", "hm-b-secret", "ubuntu", "true"),
                              "No such container")
            self.assertDenied(self.via(self.a_sock, "run", "--rm", "--pid", "container:hm-b-secret", "ubuntu", "true"),
                              "No such container")
            # Still running: A could not stop it.
            self.assertEqual(self.engine("inspect", "-f", "{{.State.Running}}", "hm-b-secret").stdout.strip(), "true")
        finally:
            self.engine("rm", "-f", "hm-b-secret", "hm-a-own", check=False)

    def test_api_versions_and_head_ping(self):
        for target in (b"/_ping", b"/v1.41/_ping", b"/v1.24/_ping"):
            r = http(self.a_sock, b"HEAD " + target + b" HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            self.assertEqual(status_of(r), 200, r)
            self.assertTrue(r.endswith(b"\r\n\r\n"), r)  # no body after HEAD
        # Keep-alive: three requests on one connection.
        r = http(self.a_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n" * 2 +
                 b"GET /version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        self.assertEqual(r.count(b"HTTP/1.1 200 OK"), 3, r)
        r = http(self.a_sock, b"POST /v1.41/plugins/pull HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(status_of(r), 403, r)

    def test_descendants_are_visible_to_their_ancestors(self):
        r = self.via(self.a_sock, "run", "-d", "--name", "hm-a-kid", "ubuntu", "sleep", "100000")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            r, j = self.mesh.nsc_json("docker", "register", "--container", "hm-a-kid")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(j["registration"]["ancestors"], ["hm-a"])
            kid_sock = j["socket_path"]
            r = self.via(kid_sock, "create", "--name", "hm-a-grandkid", "ubuntu", "true")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("hm-a-grandkid", self.via(self.a_sock, "ps", "-a", "--format", "{{.Names}}").stdout.split())
            self.assertIn("hm-a-grandkid", self.via(kid_sock, "ps", "-a", "--format", "{{.Names}}").stdout.split())
            self.assertNotIn("hm-a-grandkid", self.via(self.b_sock, "ps", "-a", "--format", "{{.Names}}").stdout.split())
            # The child cannot see or touch its parent's other containers.
            self.assertNotIn("hm-a-kid", self.via(kid_sock, "ps", "-a", "--format", "{{.Names}}").stdout.split())
            self.assertEqual(self.mesh.nsc("docker", "unregister", "hm-a-kid").returncode, 0)
        finally:
            self.engine("rm", "-f", "hm-a-kid", "hm-a-grandkid", check=False)

    def test_policy_is_per_registration(self):
        root = os.path.join(self.tmp, "priv-root")
        os.makedirs(root, exist_ok=True)
        sock = self.register("hm-priv", "--root", root, "--allow-privileged", "--allow-host-network",
                             "--cap-add-allow", "NET_ADMIN")
        try:
            r = self.via(sock, "create", "--name", "hm-priv-c", "--privileged", "--network", "host",
                         "--cap-add", "NET_ADMIN", "ubuntu", "true")
            self.assertEqual(r.returncode, 0, r.stderr)
            hc = json.loads(self.engine("inspect", "hm-priv-c").stdout)[0]["HostConfig"]
            self.assertTrue(hc["Privileged"])
            self.assertEqual(hc["NetworkMode"], "host")
            # Still denied for it: what it was not granted.
            self.assertDenied(self.via(sock, "run", "--rm", "--pid", "host", "ubuntu", "true"), "PidMode=host")
            self.assertDenied(self.via(sock, "run", "--rm", "--cap-add", "SYS_ADMIN", "ubuntu", "true"), "SYS_ADMIN")
            # And A, registered with the default policy, still may not.
            self.assertDenied(self.via(self.a_sock, "run", "--rm", "--network", "host", "ubuntu", "true"),
                              "NetworkMode=host")
        finally:
            self.engine("rm", "-f", "hm-priv-c", check=False)
            self.mesh.nsc("docker", "unregister", "hm-priv")

    # -- audit and metrics ---------------------------------------------------------
    def test_audit_log_and_metrics_without_secrets(self):
        secret_header = "c2VjcmV0LWF1dGgtaGVhZGVyLTQyNDI="
        secret_pw = "hunter2-body-secret"
        http(self.a_sock, b"POST /v1.41/images/create?fromImage=hm-no-such-image&tag=x HTTP/1.1\r\nHost: d\r\n"
                          b"X-Registry-Auth: " + secret_header.encode() + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
             timeout=30)
        body = json.dumps({"username": "u", "password": secret_pw, "serveraddress": "127.0.0.1:1"}).encode()
        http(self.a_sock, b"POST /v1.41/auth HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body, timeout=30)
        self.assertDenied(self.via(self.a_sock, "run", "--rm", "--privileged", "ubuntu", "true"), "Privileged")
        log_path = os.path.join(self.mesh.runtime_dir, "dev", "dockerproxy.log")
        wait_for(lambda: "rule=privileged" in open(log_path, errors="replace").read(), 10, "audit line")
        log = open(log_path, errors="replace").read()
        self.assertRegex(log, r"audit: container=hm-a POST /containers/create denied status=403 rule=privileged")
        self.assertRegex(log, r"audit: container=hm-a POST /images/create allowed rule=images")
        self.assertNotIn(secret_header, log)
        self.assertNotIn(secret_pw, log)
        from hostmesh.common.v1 import metrics_pb2
        ch = self.mesh.channel("dockerproxy")
        text = ch.unary_unary("/hostmesh.common.v1.Metrics/GetMetrics",
                              request_serializer=metrics_pb2.GetMetricsRequest.SerializeToString,
                              response_deserializer=metrics_pb2.GetMetricsResponse.FromString)(
            metrics_pb2.GetMetricsRequest(), timeout=10).text
        self.assertRegex(text, r'dockerproxy_requests_total\{decision="denied",rule="privileged"\} [1-9]')
        self.assertRegex(text, r'dockerproxy_requests_total\{decision="allowed",rule="images"\} [1-9]')

    # -- authorization: volumes, routes, ownership records -----------------------
    def engine_volumes(self):
        return self.engine("volume", "ls", "-q").stdout.split()

    def test_volume_driver_options_outside_the_allow_list_are_refused(self):
        # Each of these mounts something of the host's (its procfs, cgroups,
        # a block device, an overlay of host directories, a bind) as a volume.
        for n, opts in enumerate((["type=proc", "device=proc"], ["type=cgroup", "device=cgroup"],
                                  ["type=ext4", "device=/dev/sda1"],
                                  ["type=overlay", "device=overlay", "o=lowerdir=/etc,upperdir=/tmp/u,workdir=/tmp/w"],
                                  ["o=bind"], ["type=tmpfs", "device=tmpfs", "o=size=1m,bind"],
                                  ["type=tmpfs", "device=/etc", "o=size=1m"])):
            args = []
            for o in opts:
                args += ["--opt", o]
            r = self.via(self.a_sock, "volume", "create", *args, "hm-a-badvol%d" % n)
            with self.subTest(opts=opts):
                self.assertDenied(r, "DriverOpts")
        self.assertFalse([v for v in self.engine_volumes() if v.startswith("hm-a-badvol")])
        # Size-like options of a tmpfs volume stay allowed, and so do plain volumes.
        r = self.via(self.a_sock, "volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                     "--opt", "o=size=1m,mode=0700", "hm-a-tmpvol")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.via(self.a_sock, "volume", "create", "hm-a-plainvol")
        self.assertEqual(r.returncode, 0, r.stderr)
        # The same options in a container's mount (the engine would create the volume).
        r = self.via(self.a_sock, "run", "--rm", "--mount",
                     "type=volume,source=hm-a-procvol,target=/x,volume-opt=type=proc,volume-opt=device=proc",
                     "ubuntu", "cat", "/x/1/comm")
        self.assertDenied(r, "DriverConfig")
        r = self.via(self.a_sock, "run", "--rm", "--mount",
                     "type=volume,source=hm-a-sizevol,target=/x,volume-opt=size=1m", "ubuntu", "true")
        self.assertDenied(r, "DriverConfig")
        self.assertNotIn("hm-a-procvol", self.engine_volumes())
        self.engine("volume", "rm", "hm-a-tmpvol", "hm-a-plainvol", check=False)

    def raw(self, method, target, body=None, sock=None):
        b = json.dumps(body).encode() if body is not None else b""
        req = (method.encode() + b" " + target.encode() + b" HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(b) + b)
        return http(sock or self.a_sock, req)

    def test_paths_off_the_route_table_are_refused(self):
        # A link makes the name "/hm-a-lnk/x" for hm-a-lnk-t: a four-segment
        # path that once skipped the exec body check (privileged exec).
        r = self.via(self.a_sock, "run", "-d", "--name", "hm-a-lnk-t", "ubuntu", "sleep", "100000")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.via(self.a_sock, "run", "-d", "--name", "hm-a-lnk", "--link", "hm-a-lnk-t:x", "ubuntu", "sleep", "100000")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            evil = {"Cmd": ["true"], "Privileged": True}
            for method, target in (("POST", "/v1.41/containers/hm-a-lnk/x/exec"), ("POST", "/containers/hm-a-lnk/x/exec"),
                                   ("POST", "/v1.41/containers/hm-a-lnk%2Fx/exec"),
                                   ("GET", "/v1.41/containers/hm-a-lnk/x/json"),
                                   ("GET", "/v1.41/containers/hm-a-lnk/json/extra"),
                                   ("GET", "/v1.41/containers/hm-a-lnk/bogus"),
                                   ("PUT", "/v1.41/containers/hm-a-lnk/start"),
                                   ("DELETE", "/v1.41/exec/abc/start")):
                r = self.raw(method, target, evil if method == "POST" else None)
                with self.subTest(target=target):
                    self.assertIn(status_of(r), (400, 403), r)
                    if status_of(r) == 403:
                        path = urllib.parse.unquote(target[6:] if target.startswith("/v1.41") else target)
                        self.assertIn(("%s %s" % (method, path.split("?")[0])).encode(), r)
            # Link aliases are single names; the exec body is checked on the exact route.
            r = self.raw("POST", "/v1.41/containers/create?name=hm-a-lnk2",
                         {"Image": "ubuntu", "HostConfig": {"Links": ["hm-a-lnk-t:a/b"]}})
            self.assertIn(status_of(r), (400, 403), r)
            r = self.raw("POST", "/v1.41/containers/hm-a-lnk/exec", evil)
            self.assertEqual(status_of(r), 403, r)
            t = json.loads(self.engine("inspect", "hm-a-lnk-t").stdout)[0]
            for e in t.get("ExecIDs") or []:
                self.assertFalse(json.loads(self.engine_http("/exec/%s/json" % e))["Privileged"])
        finally:
            self.engine("rm", "-f", "hm-a-lnk", "hm-a-lnk-t", "hm-a-lnk2", check=False)

    def engine_http(self, path):
        r = http(self.engine_sock, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        return r.split(b"\r\n\r\n", 1)[1]

    def build(self, sock, tag, dockerfile):
        ctx = tempfile.mkdtemp(dir=self.tmp)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(dockerfile)
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        return subprocess.run([self.docker_bin, "-H", "unix://" + sock, "build", "-q", "-t", tag, ctx],
                              capture_output=True, text=True, timeout=300, env=env)

    def image_id(self, ref):
        return self.engine("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()

    def test_ownership_comes_from_the_proxys_records_not_labels(self):
        # A's image carries A's owner label, which every container made from
        # it inherits.
        r = self.build(self.a_sock, "hm-a-evil", 'FROM ubuntu\nLABEL io.hostmesh.dockerproxy.owner.hm-a=""\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        # Through a socket such an image makes no container at all.
        self.assertDenied(self.via(self.b_sock, "run", "-d", "--name", "hm-b-victim", "hm-a-evil", "sleep", "100000"),
                          "reserved")
        # Made past the proxy, the container carries A's label; still not A's.
        self.engine("run", "-d", "--name", "hm-b-victim", "hm-a-evil", "sleep", "100000")
        labels = json.loads(self.engine("inspect", "hm-b-victim").stdout)[0]["Config"]["Labels"]
        self.assertIn("io.hostmesh.dockerproxy.owner.hm-a", labels)
        try:
            self.assertNotIn("hm-b-victim", self.via(self.a_sock, "ps", "-a", "--format", "{{.Names}}").stdout.split())
            self.assertDenied(self.via(self.a_sock, "exec", "hm-b-victim", "true"), "No such")
            self.assertDenied(self.via(self.a_sock, "stop", "hm-b-victim"), "No such")
            self.assertEqual(self.engine("inspect", "-f", "{{.State.Running}}", "hm-b-victim").stdout.strip(), "true")
        finally:
            self.engine("rm", "-f", "hm-b-victim", check=False)
            self.engine("rmi", "hm-a-evil", check=False)

    def test_images_of_others_cannot_be_replaced_tagged_over_or_deleted(self):
        busybox = self.image_id("busybox:latest")
        self.assertDenied(self.build(self.a_sock, "busybox:latest", "FROM ubuntu\nRUN touch /evil\n"), "busybox")
        self.assertDenied(self.via(self.a_sock, "tag", "ubuntu", "busybox:latest"), "busybox")
        self.assertDenied(self.via(self.a_sock, "rmi", "busybox:latest"), "busybox")
        self.assertDenied(self.via(self.a_sock, "image", "prune", "-f"), "prune")
        self.assertDenied(self.via(self.a_sock, "push", "busybox:latest"), "busybox")
        r = http(self.a_sock, b"POST /v1.41/images/load HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertEqual(status_of(r), 403, r)
        r = http(self.a_sock, b"POST /v1.41/images/create?fromSrc=-&repo=busybox&tag=latest HTTP/1.1\r\nHost: d\r\n"
                              b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertEqual(status_of(r), 403, r)
        self.assertEqual(self.image_id("busybox:latest"), busybox)
        # B's image name is B's.
        r = self.via(self.b_sock, "tag", "ubuntu", "hm-b-img")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            self.assertDenied(self.via(self.a_sock, "rmi", "hm-b-img"), "hm-b-img")
            self.assertDenied(self.build(self.a_sock, "hm-b-img", "FROM ubuntu\n"), "hm-b-img")
            # Reading and using shared images stays allowed; own names are A's to manage.
            r = self.via(self.a_sock, "image", "inspect", "hm-b-img")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.via(self.a_sock, "tag", "ubuntu", "hm-a-mytag:v1")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.via(self.a_sock, "rmi", "hm-a-mytag:v1")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.via(self.b_sock, "rmi", "hm-b-img")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            self.engine("rmi", "-f", "hm-b-img", "hm-a-mytag:v1", check=False)

    def test_volumes_and_networks_belong_to_their_creator(self):
        r = self.via(self.b_sock, "volume", "create", "hm-b-vol")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.via(self.b_sock, "network", "create", "hm-b-net")
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            self.assertDenied(self.via(self.a_sock, "volume", "rm", "hm-b-vol"), "hm-b-vol")
            self.assertDenied(self.via(self.a_sock, "volume", "inspect", "hm-b-vol"), "hm-b-vol")
            self.assertDenied(self.via(self.a_sock, "run", "--rm", "-v", "hm-b-vol:/x", "ubuntu", "true"), "hm-b-vol")
            self.assertDenied(self.via(self.a_sock, "network", "rm", "hm-b-net"), "hm-b-net")
            self.assertDenied(self.via(self.a_sock, "network", "create", "-d", "macvlan", "hm-a-mac"), "macvlan")
            self.assertIn("hm-b-vol", self.engine_volumes())
            self.assertEqual(self.engine("network", "ls", "-q", "-f", "name=hm-b-net").returncode, 0)
            # B manages its own.
            self.assertEqual(self.via(self.b_sock, "volume", "inspect", "hm-b-vol").returncode, 0)
            r = self.via(self.b_sock, "run", "--rm", "-v", "hm-b-vol:/x", "ubuntu", "true")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(self.via(self.b_sock, "network", "rm", "hm-b-net").returncode, 0)
            self.assertEqual(self.via(self.b_sock, "volume", "rm", "hm-b-vol").returncode, 0)
        finally:
            self.engine("volume", "rm", "-f", "hm-b-vol", check=False)
            self.engine("network", "rm", "hm-b-net", check=False)

    def records_of(self, reg):
        with open(os.path.join(self.mesh.state_dir, "dockerproxy", "registrations.json")) as f:
            for e in json.load(f)["registrations"]:
                if e["container_id"] == reg:
                    return e["owned"]
        return None

    def test_ownership_records_survive_a_restart(self):
        r = self.via(self.a_sock, "create", "--name", "hm-a-kept", "ubuntu", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        kept = self.engine("inspect", "-f", "{{.Id}}", "hm-a-kept").stdout.strip()
        # One removed past the proxy: its record goes at the next start.
        r = self.via(self.a_sock, "create", "--name", "hm-a-gone", "ubuntu", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        gone = self.engine("inspect", "-f", "{{.Id}}", "hm-a-gone").stdout.strip()
        self.engine("rm", "hm-a-gone")
        self.assertIn(gone, self.records_of("hm-a")["containers"])
        self.assertIn(kept, self.records_of("hm-a")["containers"])
        self.assertNotIn(kept, self.records_of("hm-b")["containers"])
        try:
            self.mesh.restart("dockerproxy")
            r, _ = self.mesh.nsc_json("docker", "list")
            self.assertEqual(r.returncode, 0, r.stderr)
            wait_for(lambda: os.path.exists(self.a_sock), 10, "A's socket")
            self.assertIn(kept, self.records_of("hm-a")["containers"])
            self.assertNotIn(gone, self.records_of("hm-a")["containers"])
            r = self.via(self.a_sock, "inspect", "--type", "container", "hm-a-kept")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertDenied(self.via(self.b_sock, "inspect", "--type", "container", "hm-a-kept"), "No such")
            r = self.via(self.a_sock, "rm", "hm-a-kept")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            self.engine("rm", "-f", "hm-a-kept", check=False)
            link = os.path.join(self.a_sockdir, "docker.sock")
            if os.path.exists(self.a_sock):
                os.unlink(link)
                os.link(self.a_sock, link)

    # -- connection bounds ----------------------------------------------------------
    def test_idle_connections_are_closed_and_cannot_lock_clients_out(self):
        def connect():
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(self.IDLE_S * 3)
            s.connect(self.b_sock)
            return s
        # One that says nothing and one that trickles a head that never ends.
        quiet, slow = connect(), connect()
        t0 = time.time()
        slow.sendall(b"GET /_ping HTTP/1.1\r\n")
        # A pending partial head must not stall anyone else (it once spun
        # the proxy's loop).
        r = http(self.b_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", timeout=3)
        self.assertEqual(status_of(r), 200, r)
        for _ in range(self.IDLE_S + 2):
            time.sleep(1)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        self.assertEqual(quiet.recv(1), b"")   # closed by the proxy
        self.assertLess(time.time() - t0, self.IDLE_S * 3)
        try:
            rest = slow.recv(65536)
        except OSError:
            rest = b""
        self.assertFalse(rest.startswith(b"HTTP/1.1 200"), rest)
        quiet.close()
        slow.close()
        # Three times the cap of idle connections: new clients are still served.
        idle = []
        try:
            for _ in range(self.MAX_CONNS * 3):
                idle.append(connect())
            r = http(self.b_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            self.assertEqual(status_of(r), 200, r)
            r = self.via(self.b_sock, "ps", "-a")
            self.assertEqual(r.returncode, 0, r.stderr)
            # The oldest idle ones made room: they were closed.
            idle[0].settimeout(2)
            self.assertEqual(idle[0].recv(1), b"")
        finally:
            for s in idle:
                s.close()
        # A keep-alive connection between requests is idle too; within the
        # timeout it keeps working.
        def one_response(s):
            buf = b""
            while b"\r\n\r\n" not in buf:
                b = s.recv(65536)
                self.assertTrue(b, "connection closed: %r" % buf)
                buf += b
            head, body = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            while m and len(body) < int(m.group(1)):
                body += s.recv(65536)
            return head
        s = connect()
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        self.assertTrue(one_response(s).startswith(b"HTTP/1.1 200"))
        time.sleep(1)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        self.assertTrue(one_response(s).startswith(b"HTTP/1.1 200"))
        s.close()

    # -- registrations -------------------------------------------------------------
    def test_list_unregister_and_errors(self):
        r, j = self.mesh.nsc_json("docker", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = {c["container_id"]: c for c in j["containers"]}
        self.assertIn("hm-a", ids)
        self.assertEqual(ids["hm-a"]["socket_path"], self.a_sock)
        root = os.path.join(self.tmp, "spare-root")
        os.makedirs(root, exist_ok=True)
        sock = self.register("spare", "--root", root)
        self.assertTrue(os.path.exists(sock))
        self.assertEqual(oct(os.stat(sock).st_mode & 0o777), "0o666")
        r = self.mesh.nsc("docker", "unregister", "spare")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(sock))
        r = self.mesh.nsc("docker", "unregister", "spare")
        self.assertEqual(r.returncode, 4, r.stderr)  # NOT_FOUND
        r = self.mesh.nsc("docker", "register", "--container", "no-such-container")
        self.assertEqual(r.returncode, 4, r.stderr)
        r = self.mesh.nsc("docker", "register", "--container", "../evil", "--root", root)
        self.assertEqual(r.returncode, 6, r.stderr)  # INVALID_ARGUMENT

    def test_registrations_survive_a_restart(self):
        self.mesh.restart("dockerproxy")
        # The daemon starts on its first gRPC connection (socket activation).
        r, j = self.mesh.nsc_json("docker", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("hm-a", [c["container_id"] for c in j["containers"]])
        wait_for(lambda: os.path.exists(self.a_sock), 10, "A's socket")
        r = http(self.a_sock, b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        self.assertEqual(status_of(r), 200, r)
        # The hard link inside A points to the old socket inode: re-link.
        link = os.path.join(self.a_sockdir, "docker.sock")
        os.unlink(link)
        os.link(self.a_sock, link)


class ConfigCheck(unittest.TestCase):
    """--check-config prints the normalized config, which parses back to itself."""

    def run_check(self, path):
        from hm import binary
        return subprocess.run([binary("hostmesh-dockerproxyd"), "--config", path, "--check-config"],
                              capture_output=True, text=True, timeout=30)

    def test_printed_config_parses_back_and_bad_values_are_refused(self):
        d = tempfile.mkdtemp(prefix="hm-dp-conf-")
        try:
            src = os.path.join(os.environ.get("HOSTMESH_SOURCE_DIR", "."), "deploy", "config", "dockerproxy.conf")
            r = self.run_check(src)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("upstream = /var/run/docker.sock", r.stdout)
            again = os.path.join(d, "again.conf")
            with open(again, "w") as f:
                f.write(r.stdout)
            r2 = self.run_check(again)
            self.assertEqual(r2.stdout, r.stdout)
            for bad, why in (("[dockerproxy]\nupstream = relative.sock\n", "absolute"),
                             ("[dockerproxy]\nmax_connections = 0\n", "max_connections"),
                             ("[dockerproxy]\nidle_timeout = 0\n", "idle_timeout"),
                             ("[dockerproxy]\nupstreem = /x\n", "upstreem")):
                p = os.path.join(d, "bad.conf")
                with open(p, "w") as f:
                    f.write(bad)
                r = self.run_check(p)
                self.assertNotEqual(r.returncode, 0, bad)
                self.assertIn(why, r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
