# ctest: labels=integration;disk timeout=300
"""diskd's reflink backend on a real XFS (reflink=1) filesystem, on a loop
device this test creates. Skipped, saying why, where loop devices or mkfs.xfs
are unavailable (unprivileged runs, containers without /dev/loop*)."""

import os
import shutil
import subprocess
import tempfile
import unittest

import grpc

from hm import Mesh

try:
    from hostmesh.disk.v1 import disk_pb2 as pb
except ImportError:
    pb = None

GIB = 1 << 30


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


class ReflinkPoolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if pb is None:
            raise unittest.SkipTest("hostmesh.disk.v1 Python module not generated")
        if os.geteuid() != 0:
            raise unittest.SkipTest("reflink pool test needs root to attach a loop device and mount XFS")
        if not shutil.which("mkfs.xfs") or not shutil.which("losetup"):
            raise unittest.SkipTest("reflink pool test needs mkfs.xfs (xfsprogs) and losetup (util-linux)")
        cls.tmp = tempfile.mkdtemp(prefix="hostmesh-disk-xfs-")
        cls.image = os.path.join(cls.tmp, "xfs.img")
        cls.mnt = os.path.join(cls.tmp, "mnt")
        os.makedirs(cls.mnt)
        cls.loop = None
        with open(cls.image, "wb") as f:
            f.truncate(2 * GIB)
        r = run("mkfs.xfs", "-q", "-m", "reflink=1", cls.image)
        if r.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest("mkfs.xfs -m reflink=1 failed: " + r.stderr.strip())
        r = run("losetup", "--find", "--show", cls.image)
        if r.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest("no loop device available (losetup: %s); reflink path not tested"
                                    % r.stderr.strip())
        cls.loop = r.stdout.strip()
        r = run("mount", "-t", "xfs", cls.loop, cls.mnt)
        if r.returncode != 0:
            run("losetup", "-d", cls.loop)
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise unittest.SkipTest("cannot mount XFS from %s: %s" % (cls.loop, r.stderr.strip()))
        cls.pool = os.path.join(cls.mnt, "pool")
        cls.mesh = Mesh(configs={"disk": "[disk]\npool = %s\nreserve = 16M\novercommit_ratio = 1000\n" % cls.pool})
        cls.mesh.start()
        cls.ch = cls.mesh.channel("disk")

    @classmethod
    def tearDownClass(cls):
        cls.mesh.__exit__(None, None, None)
        run("umount", cls.mnt)
        if cls.loop:
            run("losetup", "-d", cls.loop)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def call(self, method, req, resp_type):
        return self.ch.unary_unary("/hostmesh.disk.v1.Disk/" + method, request_serializer=req.SerializeToString,
                                   response_deserializer=resp_type.FromString)(req, timeout=60, wait_for_ready=True)

    def stats(self):
        return self.call("GetPoolStats", pb.GetPoolStatsRequest(), pb.GetPoolStatsResponse)

    def test_raw_base_gives_reflink_clones_sharing_blocks(self):
        st = self.stats()
        self.assertEqual(st.filesystem, "xfs")
        self.assertTrue(st.reflink)
        self.assertEqual(st.backend, "reflink")

        base = os.path.join(self.tmp, "base.raw")
        data = os.urandom(1 << 20) * 128  # 128 MiB of data
        with open(base, "wb") as f:
            f.write(data)
        img = self.call("AddImage", pb.AddImageRequest(name="base", source_path=base), pb.AddImageResponse).image
        self.assertEqual(img.format, "raw")
        os.sync()
        free_before = os.statvfs(self.mnt).f_bavail * os.statvfs(self.mnt).f_frsize

        disks = [self.call("CreateDisk", pb.CreateDiskRequest(shape="4x8", base_image="base", instance_id="r%d" % i),
                           pb.CreateDiskResponse) for i in range(4)]
        os.sync()
        free_after = os.statvfs(self.mnt).f_bavail * os.statvfs(self.mnt).f_frsize
        for d in disks:
            self.assertEqual(d.backend, "reflink")
            self.assertEqual(d.format, "raw")
            self.assertEqual(d.backing, "")
            self.assertEqual(os.stat(d.path).st_size, 64 * GIB)
        # Four clones of 128 MiB of data cost next to nothing: the extents are shared.
        self.assertLess(free_before - free_after, 16 << 20, "clones must share the base's blocks")
        with open(disks[0].path, "r+b") as f:
            self.assertEqual(f.read(len(data)), data)
            f.seek(0)
            f.write(b"x" * 4096)  # copy-on-write: the base and the other clones keep their bytes
        with open(img.path, "rb") as f:
            self.assertEqual(f.read(4096), data[:4096])
        with open(disks[1].path, "rb") as f:
            self.assertEqual(f.read(4096), data[:4096])

        # qcow2 bases still get overlays on the same pool.
        q = os.path.join(self.tmp, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", q, "1G"], check=True)
        self.call("AddImage", pb.AddImageRequest(name="q", source_path=q), pb.AddImageResponse)
        ov = self.call("CreateDisk", pb.CreateDiskRequest(shape="2x4", base_image="q"), pb.CreateDiskResponse)
        self.assertEqual(ov.backend, "qcow2-overlay")
        self.assertEqual(subprocess.run(["qemu-img", "check", "-q", ov.path]).returncode, 0)

        for d in disks + [ov]:
            self.assertTrue(self.call("DeleteDisk", pb.DeleteDiskRequest(disk_id=d.disk_id),
                                      pb.DeleteDiskResponse).deleted)
        self.assertEqual(os.listdir(os.path.join(self.pool, "disks")), [])


if __name__ == "__main__":
    unittest.main()
