# ctest: labels=integration;disk timeout=600
"""Container images in diskd against a real OCI registry: Debian's
docker-registry on a loopback port, an image built here from busybox-static
(two layers: a rootfs, then a whiteout and an opaque directory) and pushed
with skopeo. The unpacked ext4 image is read back with debugfs."""

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc

from hm import Mesh

try:
    from hostmesh.disk.v1 import disk_pb2 as pb
except ImportError:  # generated into <build>/python
    pb = None

CONFIG = "[disk]\nreserve = 0\novercommit_ratio = 1000\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def add(tf, name, data=None, kind=tarfile.REGTYPE, link="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    ti.linkname = link
    ti.mtime = 1700000000
    if data is not None:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


def busybox_applets():
    r = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True)
    return [a for a in r.stdout.split() if a and a != "busybox"]


def layer_tars(marker, applets=False):
    """Layer 1: busybox and its links, files to hide; layer 2: a whiteout and
    an opaque directory. `marker` makes each test image's digest its own."""
    l1, l2 = io.BytesIO(), io.BytesIO()
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    with tarfile.open(fileobj=l1, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("bin", "etc", "var", "var/cache", "var/cache/sub"):
            add(tf, d, kind=tarfile.DIRTYPE)
        add(tf, "bin/busybox", busybox, mode=0o755)
        # applets: every one (containers run ip, nslookup, env); else three.
        for cmd in busybox_applets() if applets else ("sh", "ls", "cat"):
            add(tf, "bin/" + cmd, kind=tarfile.SYMTYPE, link="busybox")
        add(tf, "etc/motd", marker.encode() + b"\n")
        if applets:  # accounts for the containers that run as the image's User
            add(tf, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n")
            add(tf, "etc/group", b"root:x:0:\napps:x:1001:\nstaff:x:50:app\n")
        add(tf, "etc/gone", b"hidden by layer 2\n")
        add(tf, "var/cache/old", b"old\n")
        add(tf, "var/cache/sub/older", b"older\n")
    with tarfile.open(fileobj=l2, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "etc/.wh.gone", b"")
        add(tf, "var/cache", kind=tarfile.DIRTYPE)
        add(tf, "var/cache/.wh..wh..opq", b"")
        add(tf, "var/cache/new", b"new\n")
    return l1.getvalue(), l2.getvalue()


def config_json(diff_ids, run_config=None):
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"Cmd": ["/bin/sh"]} if run_config is None else run_config,
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def make_oci_layout(path, marker, tag, applets=False, run_config=None):
    """run_config: the config's "config" object (Entrypoint, Cmd, Env,
    WorkingDir, User); by default Cmd ["/bin/sh"]."""
    l1, l2 = layer_tars(marker, applets) if applets else layer_tars(marker)
    l1gz = gzip.compress(l1, mtime=0)
    config = config_json([sha(l1), sha(l2)], run_config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                   "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(l1gz), "size": len(l1gz)},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l2), "size": len(l2)},
        ]}).encode()
    os.makedirs(os.path.join(path, "blobs", "sha256"))
    for blob in (l1gz, l2, config, manifest):
        with open(os.path.join(path, "blobs", "sha256", sha(blob)[7:]), "wb") as f:
            f.write(blob)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    return sha(manifest), sha(l1gz)


def make_docker_save(path, marker):
    l1, l2 = layer_tars(marker)
    config = config_json([sha(l1), sha(l2)])
    with tarfile.open(path, "w") as tf:
        add(tf, "l1", kind=tarfile.DIRTYPE)
        add(tf, "l1/layer.tar", l1)
        add(tf, "l2", kind=tarfile.DIRTYPE)
        add(tf, "l2/layer.tar", l2)
        add(tf, sha(config)[7:] + ".json", config)
        add(tf, "manifest.json", json.dumps([{"Config": sha(config)[7:] + ".json", "RepoTags": ["saved/busybox:1"],
                                              "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode())
    return sha(config)


def debugfs(image, cmd):
    r = subprocess.run(["debugfs", "-R", cmd, image], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


class ImagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if pb is None:
            raise unittest.SkipTest("hostmesh.disk.v1 Python module not generated")
        for tool in ("docker-registry", "skopeo", "debugfs"):
            if not shutil.which(tool):
                raise unittest.SkipTest(tool + " is not installed (scripts/deps.d/disk.txt)")
        cls.tmp = tempfile.mkdtemp(prefix="hostmesh-images-test-")
        cls.port = free_port()
        cls.storage = os.path.join(cls.tmp, "registry")
        cls.registry_conf = os.path.join(cls.tmp, "registry.yml")
        with open(cls.registry_conf, "w") as f:
            f.write("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                    "  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%d\n" % (cls.storage, cls.port))
        cls.registry = None
        cls.start_registry()
        cls.host = "127.0.0.1:%d" % cls.port
        # Three images: one to pull, one to tamper with, one to import.
        cls.layout = os.path.join(cls.tmp, "layout")
        cls.digest, _ = make_oci_layout(cls.layout, "pulled", "1")
        cls.push(cls.layout + ":1", "test/busybox:1")
        # skopeo writes the manifest anew: the registry's digest is the one that counts.
        cls.digest = cls.registry_digest("test/busybox", "1")
        cls.tampered_layout = os.path.join(cls.tmp, "layout-tampered")
        cls.tampered_digest, cls.tampered_layer = make_oci_layout(cls.tampered_layout, "tampered", "2")
        cls.push(cls.tampered_layout + ":2", "test/busybox:tampered")
        cls.mesh = Mesh(configs={"disk": CONFIG})
        cls.mesh.start()
        cls.ch = cls.mesh.channel("disk")
        cls.images_dir = os.path.join(cls.mesh.state_dir, "disk", "pool", "images")

    @classmethod
    def start_registry(cls):
        cls.registry_log = open(os.path.join(cls.tmp, "registry.log"), "ab")
        cls.registry = subprocess.Popen(["docker-registry", "serve", cls.registry_conf], stdout=cls.registry_log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cls.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("docker-registry did not listen on port %d" % cls.port)

    @classmethod
    def stop_registry(cls):
        if cls.registry and cls.registry.poll() is None:
            cls.registry.send_signal(signal.SIGTERM)
            cls.registry.wait(timeout=20)
        cls.registry = None

    @classmethod
    def push(cls, src, dest):
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + src,
                        "docker://127.0.0.1:%d/%s" % (cls.port, dest)], check=True, timeout=120)

    @classmethod
    def registry_digest(cls, repo, tag):
        req = urllib.request.Request("http://127.0.0.1:%d/v2/%s/manifests/%s" % (cls.port, repo, tag), headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
                      "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return sha(r.read())

    @classmethod
    def tearDownClass(cls):
        cls.mesh.__exit__(None, None, None)
        cls.stop_registry()
        subprocess.run(["rm", "-rf", "--", cls.tmp])

    def setUp(self):
        stub = self.mesh.channel("disk").unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                                                     response_deserializer=None)
        stub(b"", timeout=20, wait_for_ready=True)

    def call(self, method, req, resp_type, timeout=300):
        return self.ch.unary_unary("/hostmesh.disk.v1.Disk/" + method, request_serializer=req.SerializeToString,
                                   response_deserializer=resp_type.FromString)(req, timeout=timeout)

    def pull(self, ref):
        return self.call("PullImage", pb.PullImageRequest(ref=ref), pb.PullImageResponse)

    def assert_code(self, code, fn, *args):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def registry_blob_gets(self):
        with open(os.path.join(self.tmp, "registry.log"), "rb") as f:
            return f.read().decode(errors="replace").count("/blobs/sha256:")

    def registry_blob_requests(self):
        """Blob GETs the registry answered, from its access log (one line per
        request; the application log adds another line for each)."""
        with open(os.path.join(self.tmp, "registry.log"), "rb") as f:
            return sum(1 for line in f.read().decode(errors="replace").splitlines()
                       if '"GET /v2/' in line and "/blobs/sha256:" in line)

    def assert_unpacked(self, path, marker):
        etc = debugfs(path, "ls -p /etc")
        self.assertIn("/motd/", etc)
        self.assertNotIn("/gone/", etc, "the whiteout did not remove etc/gone")
        self.assertNotIn(".wh.", etc)
        cache = debugfs(path, "ls -p /var/cache")
        self.assertIn("/new/", cache)
        self.assertNotIn("/old/", cache, "the opaque directory kept a lower file")
        self.assertNotIn("/sub/", cache)
        self.assertNotIn(".wh.", cache)
        self.assertEqual(debugfs(path, "cat /etc/motd"), marker + "\n")
        self.assertIn("busybox", debugfs(path, "stat /bin/sh"))

    # Tests run in name order: 1 pulls, 2 hits the cache, ... 9 stops the registry.
    def test_1_pull_lists_the_image_with_digest_and_size(self):
        r = self.pull(self.host + "/test/busybox:1")
        self.assertFalse(r.cached)
        self.assertEqual(r.image.digest, self.digest)
        self.assertEqual(list(r.image.refs), [self.host + "/test/busybox:1"])
        self.assertEqual(r.blobs_fetched, 3)  # config and two layers
        res, js = self.mesh.nsc_json("images", "list")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        [img] = [i for i in js["images"] if i["digest"] == self.digest]
        self.assertGreater(img["file_size"], 0)
        self.assertGreater(img["content_bytes"], os.path.getsize("/bin/busybox"))
        self.assertEqual(img["layers"], 2)
        self.assert_unpacked(img["path"], "pulled")

    def test_2_pull_again_is_a_cache_hit(self):
        self.pull(self.host + "/test/busybox:1")
        before = self.registry_blob_gets()
        t0 = time.monotonic()
        r = self.pull(self.host + "/test/busybox:1")
        elapsed = time.monotonic() - t0
        self.assertTrue(r.cached)
        self.assertEqual(r.blobs_fetched, 0)
        time.sleep(0.2)  # the registry writes its access log after replying
        self.assertEqual(self.registry_blob_gets(), before, "a cached pull fetched blobs")
        self.assertLess(elapsed, 2.0)
        # By digest the registry is not even asked.
        r = self.pull(self.host + "/test/busybox@" + self.digest)
        self.assertTrue(r.cached)

    def push_big_image(self, name, tags, marker):
        """An image with an 8 MB incompressible layer, pushed under `tags`:
        its unpack lasts long enough for a second call to arrive meanwhile."""
        layout = os.path.join(self.tmp, "layout-" + name)
        big = io.BytesIO()
        self.big_files = {}
        with tarfile.open(fileobj=big, mode="w") as tf:
            add(tf, "data", kind=tarfile.DIRTYPE)
            # Sizes around the block size and the large-file threshold.
            for i, size in enumerate((1 << 20, (1 << 20) + 1, 3 * (1 << 20) - 7, 256 << 10, (256 << 10) - 1,
                                      4096, 1, 2 * (1 << 20), 1 << 20)):
                self.big_files["data/r%02d" % i] = os.urandom(size)
                add(tf, "data/r%02d" % i, self.big_files["data/r%02d" % i], mode=0o4750 if i == 0 else 0o644)
        orig = layer_tars
        _, l2 = orig(marker)
        globals()["layer_tars"] = lambda m: (big.getvalue(), l2)
        try:
            make_oci_layout(layout, marker, "t")
        finally:
            globals()["layer_tars"] = orig
        for tag in tags:
            self.push(layout + ":t", "test/%s:%s" % (name, tag))
        return self.registry_digest("test/" + name, tags[0])

    def assert_big_files(self, image):
        """Every file of push_big_image() reads back byte for byte, with its
        mode; the file system checks clean."""
        dump = os.path.join(self.tmp, "dumped")
        for path, data in self.big_files.items():
            if os.path.exists(dump):
                os.unlink(dump)
            debugfs(image, "dump /%s %s" % (path, dump))
            with open(dump, "rb") as f:
                self.assertEqual(f.read() == data, True, "/%s differs in the image" % path)
        self.assertIn("04750", debugfs(image, "stat /data/r00").split("Mode:")[1][:12])
        r = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def pull_together(self, refs):
        """Pulls refs at once (one thread each); each result is a reply or
        the RpcError."""
        barrier = threading.Barrier(len(refs))
        results = [None] * len(refs)

        def one(k):
            barrier.wait()
            try:
                results[k] = self.pull(refs[k])
            except grpc.RpcError as e:
                results[k] = e
        threads = [threading.Thread(target=one, args=(k,)) for k in range(len(refs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        return results

    def assert_one_fetch_the_rest_joined(self, results):
        """One pull fetched; each other one joined it, or, when the machine
        is so loaded that it started after that pull had finished, found
        the image cached. Both fetched nothing (the callers check that)."""
        fetchers = [r for r in results if r.blobs_fetched > 0]
        self.assertEqual(len(fetchers), 1)
        self.assertFalse(fetchers[0].coalesced or fetchers[0].cached)
        others = [r for r in results if r.blobs_fetched == 0]
        for r in others:
            self.assertTrue(r.coalesced or r.cached, r)
        # The barrier releases them together: at least one joined.
        self.assertTrue(any(r.coalesced for r in others), results)

    def test_2b_concurrent_pulls_of_one_ref_fetch_once(self):
        digest = self.push_big_image("together", ["1"], "together")
        ref = self.host + "/test/together:1"
        before = self.registry_blob_requests()
        results = self.pull_together([ref, ref, ref])
        for r in results:
            self.assertNotIsInstance(r, grpc.RpcError, r.details() if isinstance(r, grpc.RpcError) else "")
            self.assertEqual(r.image.digest, digest)
        fetched = sorted(r.blobs_fetched for r in results)
        self.assertEqual(fetched, [0, 0, 3], "each pull fetched its own blobs")
        self.assert_one_fetch_the_rest_joined(results)
        self.assertEqual(len({r.image.image for r in results}), 1)
        self.assert_big_files(results[0].image.path)
        time.sleep(0.2)  # the registry writes its access log after replying
        self.assertEqual(self.registry_blob_requests() - before, 3, "the registry served the blobs more than once")
        self.call("DeleteImage", pb.DeleteImageRequest(ref=ref), pb.DeleteImageResponse)

    def test_2c_concurrent_pulls_of_one_digest_by_two_tags_unpack_once(self):
        digest = self.push_big_image("twotags", ["a", "b"], "twotags")
        refs = [self.host + "/test/twotags:a", self.host + "/test/twotags:b"]
        results = self.pull_together(refs)
        for r in results:
            self.assertNotIsInstance(r, grpc.RpcError, r.details() if isinstance(r, grpc.RpcError) else "")
            self.assertEqual(r.image.digest, digest)
        # The one that joined is listed by its own tag as well.
        self.assertEqual(sorted(r.blobs_fetched for r in results), [0, 3])
        self.assert_one_fetch_the_rest_joined(results)
        joined = [r for r in results if r.blobs_fetched == 0][0]
        self.assertEqual(sorted(joined.image.refs), sorted(refs))
        res, js = self.mesh.nsc_json("images", "list")
        [img] = [i for i in js["images"] if i["digest"] == digest]
        self.assertEqual(sorted(img["refs"]), sorted(refs))
        for ref in refs:
            self.call("DeleteImage", pb.DeleteImageRequest(ref=ref), pb.DeleteImageResponse)

    def test_2d_concurrent_nsc_pulls_of_a_missing_tag_fail_alike(self):
        results = self.pull_together([self.host + "/test/busybox:missing"] * 2)
        for r in results:
            self.assertIsInstance(r, grpc.RpcError)
            self.assertEqual(r.code(), grpc.StatusCode.NOT_FOUND, r.details())
        self.assertEqual(results[0].details(), results[1].details())
        # And two nsc processes at once: both succeed, one says it joined.
        self.push_big_image("bynsc", ["1"], "bynsc")
        ref = self.host + "/test/bynsc:1"
        barrier = threading.Barrier(2)
        out = [None, None]

        def one(k):
            barrier.wait()
            out[k] = self.mesh.nsc_json("images", "pull", ref)
        threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for res, js in out:
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(sorted(js["blobs_fetched"] for _, js in out), [0, 3])
        for _, js in out:
            if js["blobs_fetched"] == 0:
                self.assertTrue(js["coalesced"] or js["cached"], js)
        self.call("DeleteImage", pb.DeleteImageRequest(ref=ref), pb.DeleteImageResponse)

    def test_2e_pull_carries_the_image_config(self):
        r = self.pull(self.host + "/test/busybox:1")
        self.assertEqual(list(r.image.config.cmd), ["/bin/sh"])
        self.assertEqual(list(r.image.config.entrypoint), [])
        self.assertEqual(r.image.config.working_dir, "")

    def test_2f_a_database_from_before_configs_is_upgraded(self):
        # diskd stopped; its database made like one from before the config
        # column; diskd started again by the next call.
        self.pull(self.host + "/test/busybox:1")
        self.mesh.kill("disk")
        db = sqlite3.connect(os.path.join(self.mesh.state_dir, "disk", "disk.db"))
        db.execute("ALTER TABLE containers DROP COLUMN config")
        db.commit()
        db.close()
        self.setUp()
        r = self.pull(self.host + "/test/busybox:1")
        self.assertTrue(r.cached)
        self.assertFalse(r.image.HasField("config"), "an image from before configs has none")
        db = sqlite3.connect(os.path.join(self.mesh.state_dir, "disk", "disk.db"))
        self.assertIn("config", [c[1] for c in db.execute("PRAGMA table_info(containers)")])
        db.close()

    def test_3_unknown_tag_is_not_found(self):
        details = self.assert_code(grpc.StatusCode.NOT_FOUND, self.pull, self.host + "/test/busybox:nope")
        self.assertIn("manifest 'nope'", details)
        self.assert_code(grpc.StatusCode.NOT_FOUND, self.pull, self.host + "/no/such-repo:1")

    def test_4_malformed_refs_are_invalid(self):
        for ref in ("busybox", self.host + "/UPPER:1", self.host + "/a@sha256:12", ""):
            self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.pull, ref)
        r = self.mesh.nsc("images", "pull", "busybox")
        self.assertEqual(r.returncode, 6, r.stderr)  # NSC_EXIT_INVALID

    def test_5_digest_mismatch_is_refused_and_nothing_kept(self):
        hexd = self.tampered_layer[7:]
        data = os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
        with open(data, "r+b") as f:
            f.seek(100)
            b = f.read(1)
            f.seek(100)
            f.write(bytes([b[0] ^ 0xff]))
        before = sorted(os.listdir(self.images_dir))
        details = self.assert_code(grpc.StatusCode.FAILED_PRECONDITION, self.pull,
                                   self.host + "/test/busybox:tampered")
        self.assertIn("does not match", details) if "match" in details else self.assertIn("digest", details)
        self.assertEqual(sorted(os.listdir(self.images_dir)), before)
        unpack = os.path.join(self.mesh.state_dir, "disk", "unpack")
        self.assertEqual(os.listdir(unpack) if os.path.isdir(unpack) else [], [])
        _, js = self.mesh.nsc_json("images", "list")
        self.assertNotIn(self.tampered_digest, [i["digest"] for i in js["images"]])

    def test_6_import_oci_layout_and_docker_save(self):
        layout = os.path.join(self.tmp, "import-layout")
        digest, _ = make_oci_layout(layout, "imported-layout", "local:1")
        res, js = self.mesh.nsc_json("images", "import", layout)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(js["digest"], digest)
        self.assertEqual(js["refs"], ["local:1"])
        self.assert_unpacked(js["path"], "imported-layout")

        archive = os.path.join(self.tmp, "saved.tar")
        config_digest = make_docker_save(archive, "saved")
        res, js = self.mesh.nsc_json("images", "import", archive)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(js["digest"], config_digest)
        self.assertEqual(js["refs"], ["saved/busybox:1"])
        self.assert_unpacked(js["path"], "saved")

        # A tar of an OCI layout imports too.
        tarred = os.path.join(self.tmp, "layout.tar")
        with tarfile.open(tarred, "w") as tf:
            tf.add(layout, arcname=".")
        res, js = self.mesh.nsc_json("images", "import", tarred, "--name", "tarred:1")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertTrue(js["cached"])
        self.assertIn("tarred:1", js["refs"])

    def test_7_a_disk_holds_its_image(self):
        r = self.pull(self.host + "/test/busybox:1")
        disk = self.call("CreateDisk", pb.CreateDiskRequest(size_bytes=1 << 30, base_image=r.image.image),
                         pb.CreateDiskResponse)
        # By digest: every ref goes (test 2 added the @digest one).
        res, js = self.mesh.nsc_json("images", "rm", r.image.digest)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertTrue(os.path.exists(r.image.path), "an image a disk uses was collected")
        self.call("DeleteDisk", pb.DeleteDiskRequest(disk_id=disk.disk_id), pb.DeleteDiskResponse)
        res, js = self.mesh.nsc_json("images", "gc")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(js["collected"], 1)
        self.assertFalse(os.path.exists(r.image.path))

    def test_7b_kill_mid_unpack_leaves_nothing_half_made(self):
        # A 32 MB incompressible layer keeps the unpack going long enough to
        # be caught in the act.
        layout = os.path.join(self.tmp, "layout-crash")
        orig = layer_tars
        big = io.BytesIO()
        with tarfile.open(fileobj=big, mode="w") as tf:
            for i in range(32):
                add(tf, "data/r%02d" % i, os.urandom(1 << 20))
        _, l2 = orig("crash")
        globals()["layer_tars"] = lambda marker: (big.getvalue(), l2)
        try:
            make_oci_layout(layout, "crash", "crash")
        finally:
            globals()["layer_tars"] = orig
        self.push(layout + ":crash", "test/busybox:crash")
        ref = self.host + "/test/busybox:crash"
        unpack = os.path.join(self.mesh.state_dir, "disk", "unpack")
        errors = []
        t = threading.Thread(target=lambda: errors.append(self.assert_code(grpc.StatusCode.UNAVAILABLE,
                                                                          self.pull, ref)))
        t.start()
        deadline = time.monotonic() + 30
        caught = False
        while time.monotonic() < deadline and not caught:
            for d in (os.listdir(unpack) if os.path.isdir(unpack) else []):
                if os.path.isdir(os.path.join(unpack, d, "rootfs", "data")):
                    self.mesh.kill("disk")
                    caught = True
                    break
            time.sleep(0.002)
        t.join(60)
        self.assertTrue(caught, "the pull finished before it could be interrupted")
        self.setUp()  # a call starts diskd again; its start-up recovers
        _, js = self.mesh.nsc_json("images", "list")
        listed = {os.path.basename(i["path"]) for i in js["images"]}
        self.assertEqual(set(os.listdir(self.images_dir)) - listed, set(), "a half-made image file is left")
        self.assertEqual(os.listdir(unpack) if os.path.isdir(unpack) else [], [])
        db = sqlite3.connect(os.path.join(self.mesh.state_dir, "disk", "disk.db"))
        self.assertEqual(db.execute("SELECT COUNT(*) FROM intents").fetchone()[0], 0)
        db.close()
        # And the pull works afterwards.
        r = self.pull(ref)
        self.assertFalse(r.cached)
        self.call("DeleteImage", pb.DeleteImageRequest(ref=ref), pb.DeleteImageResponse)

    def test_8_delete_and_gc_leave_no_files(self):
        _, js = self.mesh.nsc_json("images", "list")
        for img in js["images"]:
            for ref in img["refs"]:
                res = self.mesh.nsc("images", "rm", ref)
                self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        r = self.mesh.nsc("images", "rm", "no-such:1")
        self.assertEqual(r.returncode, 4, r.stderr)  # NSC_EXIT_NOT_FOUND
        _, js = self.mesh.nsc_json("images", "list")
        self.assertEqual(js["images"], [])
        self.assertEqual(os.listdir(self.images_dir), [])

    def test_9_registry_down_is_unavailable(self):
        self.stop_registry()
        details = self.assert_code(grpc.StatusCode.UNAVAILABLE, self.pull, self.host + "/test/busybox:1")
        self.assertIn("Registry %s is unavailable" % self.host, details)


if __name__ == "__main__":
    unittest.main(verbosity=2)
