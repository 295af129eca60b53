# ctest: labels=integration;disk timeout=600
"""diskd against real files and tools: qemu-img/qemu-io check the overlays it
writes, mkfs.ext4/debugfs the images it builds, SQLite holds its state, and
the daemon is killed with SIGKILL in the middle of a create."""

import concurrent.futures
import hashlib
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

from hm import Mesh

try:
    from hostmesh.disk.v1 import disk_pb2 as pb
except ImportError:  # generated into <build>/python
    pb = None

GIB = 1 << 30
SHAPES = {"2x4": 48, "4x8": 64, "8x16": 96, "16x32": 160, "32x64": 288}
BASE_CONFIG = "[disk]\nreserve = 0\novercommit_ratio = 1000\n"


def qemu_img_info(path):
    r = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class DiskTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if pb is None:
            raise unittest.SkipTest("hostmesh.disk.v1 Python module not generated")
        cls.tmp = tempfile.mkdtemp(prefix="hostmesh-disk-test-")
        # A raw base: 64 MiB with 'a' in its first 4 KiB and 'z' at 32 MiB.
        cls.base_raw = os.path.join(cls.tmp, "base.raw")
        with open(cls.base_raw, "wb") as f:
            f.truncate(64 << 20)
            f.write(b"a" * 4096)
            f.seek(32 << 20)
            f.write(b"z" * 4096)
        # A qcow2 base made by qemu-img itself.
        cls.base_qcow2 = os.path.join(cls.tmp, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", cls.base_qcow2, "1G"], check=True)
        cls.mesh = Mesh(configs={"disk": BASE_CONFIG})
        cls.mesh.start()
        cls.ch = cls.mesh.channel("disk")
        cls.pool = os.path.join(cls.mesh.state_dir, "disk", "pool")

    @classmethod
    def tearDownClass(cls):
        cls.mesh.__exit__(None, None, None)
        subprocess.run(["rm", "-rf", "--", cls.tmp])

    def setUp(self):
        self.warm()

    # -- helpers ---------------------------------------------------------------
    def warm(self):
        """Makes sure gatewayd and diskd run: a socket-activated daemon's
        first connection waits for its start, which nsc does not."""
        for part in ("gateway", "disk"):
            stub = self.mesh.channel(part).unary_unary("/grpc.health.v1.Health/Check",
                                                       request_serializer=None, response_deserializer=None)
            stub(b"", timeout=20, wait_for_ready=True)

    def call(self, method, req, resp_type, timeout=60):
        return self.ch.unary_unary("/hostmesh.disk.v1.Disk/" + method,
                                   request_serializer=req.SerializeToString,
                                   response_deserializer=resp_type.FromString)(req, timeout=timeout)

    def create(self, **kw):
        return self.call("CreateDisk", pb.CreateDiskRequest(**kw), pb.CreateDiskResponse)

    def delete(self, disk_id):
        return self.call("DeleteDisk", pb.DeleteDiskRequest(disk_id=disk_id), pb.DeleteDiskResponse)

    def add_image(self, name, path, **kw):
        return self.call("AddImage", pb.AddImageRequest(name=name, source_path=path, **kw),
                         pb.AddImageResponse, timeout=120).image

    def ensure_image(self, name, path):
        imgs = self.call("ListImages", pb.ListImagesRequest(), pb.ListImagesResponse).images
        for i in imgs:
            if i.name == name:
                return i
        return self.add_image(name, path)

    def stats(self):
        return self.call("GetPoolStats", pb.GetPoolStatsRequest(), pb.GetPoolStatsResponse)

    def set_config(self, text):
        with open(os.path.join(self.mesh.config_dir, "disk.conf"), "w") as f:
            f.write(text)
        self.restart_disk()

    def restart_disk(self):
        # The daemon may be idle (only the activator runs): a call starts it.
        self.warm()
        self.mesh.restart("disk")
        self.warm()

    def pool_files(self):
        return sorted(os.listdir(os.path.join(self.pool, "disks")))

    def assert_rpc_error(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    # -- shapes ----------------------------------------------------------------
    def test_shape_table_sizes_sparse_disks(self):
        for shape, gib in SHAPES.items():
            d = self.create(shape=shape)
            self.assertEqual(d.size_bytes, gib * GIB, shape)
            self.assertEqual(d.format, "raw")
            self.assertEqual(d.backend, "sparse")
            st = os.stat(d.path)
            self.assertEqual(st.st_size, gib * GIB)
            self.assertLess(st.st_blocks * 512, 1 << 20, "a sparse disk allocates nothing")
            self.assertEqual(st.st_mode & 0o777, 0o600)
            self.assertTrue(self.delete(d.disk_id).deleted)
            self.assertFalse(os.path.exists(d.path))

    def test_invalid_shapes_are_refused_listing_valid_ones(self):
        for bad in ("3x8", "4x6", "8x4", "4x", "x", "4x8x2", "64x128"):
            msg = self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create, shape=bad)
            self.assertIn("2, 4, 8, 16, 32", msg)
            self.assertIn("2, 4, 8, 16, 32, 64, 80, 96, 112, 128, 256, 384, 512", msg)
        msg = self.assert_rpc_error(grpc.StatusCode.PERMISSION_DENIED, self.create, shape="32x128")
        self.assertIn("large_shape_tenants", msg)
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create, shape="2x4", size_bytes=GIB)
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create)
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create, shape="2x4", format="vmdk")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create, shape="2x4", instance_id="../x")
        self.assert_rpc_error(grpc.StatusCode.NOT_FOUND, self.create, shape="2x4", base_image="nope")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create, shape="2x4", base_image="../etc")

    # -- overlays, checked by QEMU's own tools ------------------------------------
    def test_overlay_is_a_valid_qcow2_reading_through_to_the_base(self):
        img = self.ensure_image("base-raw", self.base_raw)
        r, out = self.mesh.nsc_json("disk", "create", "--machine_type", "4x8", "--image", "base-raw")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(set(out), {"disk_id", "path", "size_bytes", "backing", "format", "backend", "instance_id",
                                    "base_image"})
        self.assertEqual(out["size_bytes"], 64 * GIB)
        self.assertEqual(out["backing"], img.path)
        self.assertEqual(out["format"], "qcow2")
        self.assertEqual(out["backend"], "qcow2-overlay")
        info = qemu_img_info(out["path"])
        self.assertEqual(info["format"], "qcow2")
        self.assertEqual(info["virtual-size"], 64 * GIB)
        self.assertEqual(info["backing-filename"], img.path)
        self.assertEqual(info["backing-filename-format"], "raw")
        chk = subprocess.run(["qemu-img", "check", "-U", out["path"]], capture_output=True, text=True)
        self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
        self.assertIn("No errors", chk.stdout)
        # The base's bytes show through the overlay; beyond the base, zeros.
        io = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x61 0 4096",
                             "-c", "read -P 0x7a 33554432 4096", "-c", "read -P 0 1G 4096", out["path"]],
                            capture_output=True, text=True)
        self.assertEqual(io.returncode, 0, io.stdout + io.stderr)
        self.assertNotIn("Pattern verification failed", io.stdout + io.stderr)
        self.assertEqual(io.stdout.count("read 4096/4096 bytes"), 3, io.stdout)
        # Writes go to the overlay, never to the base.
        io = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 65536", out["path"]],
                            capture_output=True, text=True)
        self.assertEqual(io.returncode, 0, io.stdout + io.stderr)
        with open(img.path, "rb") as f:
            self.assertEqual(f.read(4096), b"a" * 4096)
        self.assertEqual(subprocess.run(["qemu-img", "check", "-q", out["path"]]).returncode, 0)
        r = self.mesh.nsc("disk", "delete", out["disk_id"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_overlay_on_qcow2_base_and_blank_qcow2(self):
        img = self.ensure_image("base-qcow2", self.base_qcow2)
        self.assertEqual(img.format, "qcow2")
        self.assertEqual(img.virtual_size, GIB)
        d = self.create(shape="2x4", base_image="base-qcow2")
        info = qemu_img_info(d.path)
        self.assertEqual(info["backing-filename-format"], "qcow2")
        self.assertEqual(info["virtual-size"], 48 * GIB)
        self.assertEqual(subprocess.run(["qemu-img", "check", "-q", d.path]).returncode, 0)
        # A qcow2 base cannot give a raw disk.
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.create, shape="2x4", base_image="base-qcow2",
                              format="raw")
        blank = self.create(size_bytes=3 * GIB + 1, format="qcow2")
        self.assertEqual(blank.size_bytes, 3 * GIB + (1 << 20), "rounded up to a MiB")
        info = qemu_img_info(blank.path)
        self.assertNotIn("backing-filename", info)
        self.assertEqual(subprocess.run(["qemu-img", "check", "-q", blank.path]).returncode, 0)
        self.delete(d.disk_id)
        self.delete(blank.disk_id)

    def test_resize_grows_only(self):
        self.ensure_image("base-raw", self.base_raw)
        d = self.create(shape="2x4", base_image="base-raw")
        r = self.call("ResizeDisk", pb.ResizeDiskRequest(disk_id=d.disk_id, size_bytes=64 * GIB),
                      pb.ResizeDiskResponse)
        self.assertEqual(r.disk.size_bytes, 64 * GIB)
        self.assertEqual(qemu_img_info(d.path)["virtual-size"], 64 * GIB)
        msg = self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.call, "ResizeDisk",
                                    pb.ResizeDiskRequest(disk_id=d.disk_id, size_bytes=GIB), pb.ResizeDiskResponse)
        self.assertIn("only grow", msg)
        raw = self.create(size_bytes=GIB)
        r = self.call("ResizeDisk", pb.ResizeDiskRequest(disk_id=raw.disk_id, size_bytes=2 * GIB),
                      pb.ResizeDiskResponse)
        self.assertEqual(os.stat(raw.path).st_size, 2 * GIB)
        self.delete(d.disk_id)
        self.delete(raw.disk_id)

    # -- delete, describe, list --------------------------------------------------
    def test_delete_is_idempotent_and_reclaims_space(self):
        d = self.create(shape="2x4", instance_id="vm-del")
        desc = self.call("DescribeDisk", pb.DescribeDiskRequest(disk_id=d.disk_id), pb.DescribeDiskResponse)
        self.assertEqual(desc.disk.path, d.path)
        self.assertEqual(desc.disk.instance_id, "vm-del")
        lst = self.call("ListDisks", pb.ListDisksRequest(instance_id="vm-del"), pb.ListDisksResponse)
        self.assertEqual([x.disk_id for x in lst.disks], [d.disk_id])
        r, out = self.mesh.nsc_json("disk", "delete", d.disk_id)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(out, {"disk_id": d.disk_id, "deleted": True})
        self.assertFalse(os.path.exists(d.path))
        r, out = self.mesh.nsc_json("disk", "delete", d.disk_id)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(out["deleted"], False)
        r, out = self.mesh.nsc_json("disk", "describe", d.disk_id)
        self.assertEqual(r.returncode, 4, "NOT_FOUND exit code")
        self.assertEqual(out["error"]["code"], "NOT_FOUND")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.delete, "../../etc/passwd")

    def test_create_is_idempotent_per_instance(self):
        a = self.create(shape="2x4", instance_id="vm-same")
        b = self.create(shape="2x4", instance_id="vm-same")
        self.assertEqual(a.disk_id, b.disk_id)
        msg = self.assert_rpc_error(grpc.StatusCode.ALREADY_EXISTS, self.create, shape="4x8", instance_id="vm-same")
        self.assertIn(a.disk_id, msg)
        self.delete(a.disk_id)

    # -- images ----------------------------------------------------------------
    def test_directory_becomes_ext4_image_with_digest(self):
        src = os.path.join(self.tmp, "tree")
        os.makedirs(os.path.join(src, "etc"), exist_ok=True)
        with open(os.path.join(src, "etc", "hello.txt"), "w") as f:
            f.write("hello from the base\n")
        r, out = self.mesh.nsc_json("disk", "images", "add", "tree", src)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(out["format"], "raw")
        with open(out["path"], "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(out["digest"], "sha256:" + digest)
        cat = subprocess.run(["debugfs", "-R", "cat /etc/hello.txt", out["path"]], capture_output=True, text=True)
        self.assertEqual(cat.stdout, "hello from the base\n", cat.stderr)
        # In use → refused; unused → removed with its file.
        d = self.create(shape="2x4", base_image="tree")
        r, out2 = self.mesh.nsc_json("disk", "images", "remove", "tree")
        self.assertEqual(r.returncode, 6, r.stdout)
        self.assertEqual(out2["error"]["code"], "FAILED_PRECONDITION")
        self.assertIn("1 disk", out2["error"]["message"])
        r, lst = self.mesh.nsc_json("disk", "images", "list")
        self.assertEqual([i["disks"] for i in lst["images"] if i["name"] == "tree"], [1])
        self.delete(d.disk_id)
        r = self.mesh.nsc("disk", "images", "remove", "tree")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(out["path"]))

    def test_bad_images_are_refused(self):
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.add_image, "rel", "relative/path")
        self.assert_rpc_error(grpc.StatusCode.NOT_FOUND, self.add_image, "missing", "/nonexistent/file")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.add_image, "../x", self.base_raw)
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.add_image, "dev", "/dev/null")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.add_image, "wrongfmt", self.base_raw,
                              format="qcow2")
        # An overlay is not a base: it has a backing file.
        chained = os.path.join(self.tmp, "chained.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", self.base_qcow2, chained],
                       check=True)
        msg = self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.add_image, "chained", chained)
        self.assertIn("backing file", msg)
        self.ensure_image("base-raw", self.base_raw)
        self.assert_rpc_error(grpc.StatusCode.ALREADY_EXISTS, self.add_image, "base-raw", self.base_raw)

    def test_loop_serves_while_an_image_is_added(self):
        big = os.path.join(self.tmp, "big2.raw")
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(768):
                f.write(chunk)
        done = []
        t = threading.Thread(target=lambda: done.append(self.add_image("big2", big)))
        t.start()
        served_during = 0
        while t.is_alive():
            t0 = time.time()
            self.stats()
            if t.is_alive():
                served_during += 1
                self.assertLess(time.time() - t0, 0.5, "GetPoolStats waited for the image copy")
            time.sleep(0.05)
        t.join()
        self.assertEqual(len(done), 1)
        self.assertGreater(served_during, 0, "the add was too quick to observe")
        with open(big, "rb") as f:
            self.assertEqual(done[0].digest, "sha256:" + hashlib.sha256(f.read()).hexdigest())
        # The same name while one is in flight, and after: refused.
        self.assert_rpc_error(grpc.StatusCode.ALREADY_EXISTS, self.add_image, "big2", big)
        self.call("RemoveImage", pb.RemoveImageRequest(name="big2"), pb.RemoveImageResponse)

    def test_image_sources_are_confined_by_config(self):
        try:
            allowed = os.path.join(self.tmp, "import")
            os.makedirs(allowed, exist_ok=True)
            inside = os.path.join(allowed, "ok.raw")
            with open(inside, "wb") as f:
                f.truncate(1 << 20)
            # A symlink inside pointing outside does not get out.
            link = os.path.join(allowed, "escape.raw")
            if not os.path.lexists(link):
                os.symlink(self.base_raw, link)
            self.set_config(BASE_CONFIG + "image_source_dirs = %s/\n" % allowed)
            msg = self.assert_rpc_error(grpc.StatusCode.PERMISSION_DENIED, self.add_image, "outside", self.base_raw)
            self.assertIn("image_source_dirs", msg)
            self.assert_rpc_error(grpc.StatusCode.PERMISSION_DENIED, self.add_image, "escape", link)
            img = self.add_image("inside", inside)
            self.assertEqual(img.virtual_size, 1 << 20)
            self.call("RemoveImage", pb.RemoveImageRequest(name="inside"), pb.RemoveImageResponse)
        finally:
            self.set_config(BASE_CONFIG)

    def test_nsc_list_plain_and_json(self):
        d = self.create(shape="2x4", instance_id="vm-list")
        r, out = self.mesh.nsc_json("disk", "list", "--instance", "vm-list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([x["disk_id"] for x in out["disks"]], [d.disk_id])
        self.assertEqual(out["disks"][0]["size_bytes"], 48 * GIB)
        r = self.mesh.nsc("disk", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(d.disk_id, r.stdout)
        r = self.mesh.nsc("disk", "create")
        self.assertEqual(r.returncode, 2, "usage error")
        self.assertIn("--machine_type", r.stderr + r.stdout)
        self.delete(d.disk_id)

    # -- admission ---------------------------------------------------------------
    def test_admission_refusals_give_the_numbers(self):
        try:
            self.set_config("[disk]\nreserve = 1000000T\n")
            r, out = self.mesh.nsc_json("disk", "create", "--machine_type", "2x4")
            self.assertEqual(r.returncode, 7, r.stdout + r.stderr)
            self.assertEqual(out["error"]["code"], "RESOURCE_EXHAUSTED")
            self.assertIn("below the reserve of 976.6 PiB", out["error"]["message"])

            # Room for one 48 GiB disk of virtual size, not two.
            st = self.stats()
            ratio = (st.virtual_bytes + 80 * GIB) / st.capacity_bytes
            self.set_config("[disk]\nreserve = 0\novercommit_ratio = %r\n" % ratio)
            first = self.create(shape="2x4")
            msg = self.assert_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, self.create, shape="2x4")
            self.assertIn("a 48 GiB disk would pass the limit", msg)
            self.assertIn("overcommit_ratio", msg)
            self.delete(first.disk_id)

            self.set_config("[disk]\nreserve = 0\novercommit_ratio = 1000\nmax_disks = 1\n")
            first = self.create(shape="2x4")
            msg = self.assert_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, self.create, shape="2x4")
            self.assertIn("max_disks", msg)
            self.delete(first.disk_id)
        finally:
            self.set_config(BASE_CONFIG)

    # -- concurrency ---------------------------------------------------------------
    def test_concurrent_creates(self):
        self.ensure_image("base-raw", self.base_raw)
        n = 24
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
            disks = list(ex.map(lambda i: self.create(shape="2x4", base_image="base-raw", instance_id="cc-%d" % i),
                                range(n)))
        self.assertEqual(len({d.disk_id for d in disks}), n)
        self.assertEqual(len({d.path for d in disks}), n)
        for d in disks:
            self.assertEqual(qemu_img_info(d.path)["virtual-size"], 48 * GIB)
        # The same instance asked for many times at once: one disk.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
            same = list(ex.map(lambda i: self.create(shape="2x4", instance_id="cc-same"), range(8)))
        self.assertEqual(len({d.disk_id for d in same}), 1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(lambda d: self.delete(d.disk_id), disks + same[:1]))
        left = self.call("ListDisks", pb.ListDisksRequest(), pb.ListDisksResponse).disks
        self.assertFalse([d for d in left if d.instance_id.startswith("cc-")])

    # -- crash safety -------------------------------------------------------------
    def test_kill_during_create_then_restart_leaks_nothing(self):
        # A raw disk from a raw base on a pool without reflink is a full
        # copy: slow enough (512 MiB of data) to kill diskd in the middle.
        big = os.path.join(self.tmp, "big.raw")
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(512):
                f.write(chunk)
        self.ensure_image("big", big)
        if self.stats().reflink:
            self.skipTest("pool does reflink: a create is too quick to interrupt")
        before = set(self.pool_files())
        pid = self.mesh.wait_running("disk")
        errors = []

        def slow_create():
            try:
                self.create(shape="2x4", base_image="big", format="raw", instance_id="crash")
            except grpc.RpcError as e:
                errors.append(e.code())

        t = threading.Thread(target=slow_create)
        t.start()
        end = time.time() + 20
        while time.time() < end and set(self.pool_files()) == before:
            time.sleep(0.002)
        new = set(self.pool_files()) - before
        self.assertTrue(new, "the create never started writing its file")
        # The copy runs on a worker thread: the loop still answers, and a
        # second create for the same instance is told to wait.
        t0 = time.time()
        self.stats()
        self.assertLess(time.time() - t0, 0.5)
        try:
            self.create(shape="2x4", base_image="big", format="raw", instance_id="crash")
            self.assertFalse(t.is_alive(), "a second disk for the instance was made during the first create")
            self.skipTest("the copy finished before diskd could be killed")
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
            self.assertIn("being created", e.details())
        os.kill(pid, 9)
        t.join(30)
        self.assertEqual(errors, [grpc.StatusCode.UNAVAILABLE])
        half_made = os.path.join(self.pool, "disks", new.pop())
        self.assertTrue(os.path.exists(half_made), "the killed create left its file (to be rolled back)")

        # Also leave an orphan of each kind: a file without record, a record without file.
        orphan = os.path.join(self.pool, "disks", "disk-00000000000000ff.raw")
        open(orphan, "w").close()
        db = sqlite3.connect(os.path.join(self.mesh.state_dir, "disk", "disk.db"))
        db.execute("INSERT INTO disks VALUES ('disk-00000000000000fe', 'ghost', ?, 'raw', 'sparse', '', '', 1, 0)",
                   (os.path.join(self.pool, "disks", "disk-00000000000000fe.raw"),))
        db.commit()
        db.close()

        # The supervisor listens again, as a .socket unit would; the next
        # call starts diskd, which recovers before serving.
        end = time.time() + 15
        while time.time() < end:
            try:
                if self.mesh.pid("disk") != pid and os.path.exists(self.mesh.socket("disk")):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.warm()
        lst = self.call("ListDisks", pb.ListDisksRequest(), pb.ListDisksResponse).disks
        self.assertFalse([d for d in lst if d.instance_id in ("crash", "ghost")])
        self.assertFalse(os.path.exists(half_made))
        self.assertFalse(os.path.exists(orphan))
        self.assertEqual(set(self.pool_files()), before)
        db = sqlite3.connect(os.path.join(self.mesh.state_dir, "disk", "disk.db"))
        self.assertEqual(db.execute("SELECT COUNT(*) FROM intents").fetchone()[0], 0)
        db.close()
        with open(os.path.join(self.mesh.runtime_dir, "dev", "disk.log")) as f:
            log = f.read()
        self.assertIn("rolled back", log)
        self.assertIn("had no record; removed it", log)
        self.assertIn("lost its file", log)
        # And the pool works: the same create now completes.
        d = self.create(shape="2x4", base_image="big", format="raw", instance_id="crash")
        self.assertEqual(d.backend, "copy")
        with open(d.path, "rb") as f, open(big, "rb") as g:
            self.assertEqual(f.read(1 << 20), g.read(1 << 20))
        self.assertEqual(os.stat(d.path).st_size, 48 * GIB)
        self.delete(d.disk_id)
        self.call("RemoveImage", pb.RemoveImageRequest(name="big"), pb.RemoveImageResponse)

    # -- config and pool -----------------------------------------------------------
    def test_pool_stats_and_check_config_round_trip(self):
        r, out = self.mesh.nsc_json("disk", "pool")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(out["path"], self.pool)
        self.assertEqual(out["backend"], "reflink" if out["reflink"] else "qcow2-overlay")
        self.assertGreater(out["capacity_bytes"], out["free_bytes"])
        self.assertEqual(out["overcommit_ratio"], 1000)

        conf = os.path.join(self.tmp, "check.conf")
        with open(conf, "w") as f:
            f.write("[disk]\npool = /srv/pool\nreserve = 2G\novercommit_ratio = 1.5\n"
                    "large_shape_tenants = t1 t2\n[rpc]\nidle_exit = 90s\n")
        diskd = os.path.join(os.environ.get("HOSTMESH_BUILD_DIR", "build"), "services", "disk", "hostmesh-diskd")
        a = subprocess.run([diskd, "--config", conf, "--check-config"], capture_output=True, text=True)
        self.assertEqual(a.returncode, 0, a.stderr)
        self.assertIn("pool = /srv/pool\n", a.stdout)
        self.assertIn("reserve = 2G\n", a.stdout)
        self.assertIn("overcommit_ratio = 1.5\n", a.stdout)
        self.assertIn("idle_exit = 1m30s\n", a.stdout)
        with open(conf, "w") as f:
            f.write(a.stdout)
        b = subprocess.run([diskd, "--config", conf, "--check-config"], capture_output=True, text=True)
        self.assertEqual(b.stdout, a.stdout)
        with open(conf, "w") as f:
            f.write("[disk]\npool = relative/dir\n")
        c = subprocess.run([diskd, "--config", conf, "--check-config"], capture_output=True, text=True)
        self.assertNotEqual(c.returncode, 0)
        self.assertIn("absolute", c.stderr)
        with open(conf, "w") as f:
            f.write("[disk]\novercommit_ratio = lots\n")
        c = subprocess.run([diskd, "--config", conf, "--check-config"], capture_output=True, text=True)
        self.assertIn(conf + ":2:", c.stderr)


if __name__ == "__main__":
    unittest.main()
