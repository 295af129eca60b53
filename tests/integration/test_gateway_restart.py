# ctest: labels=integration;gateway timeout=180
"""Restart safety behind the real gateway: diskd and vmmd are stopped
(SIGTERM, or SIGKILL for a crash) and started again many times while several
callers keep calling them through the gateway. Each daemon sits behind a
listening socket that outlives it, as a .socket unit's does under systemd, so
connections made during a restart wait in the backlog for the next process.
The promise under test: every call ends OK or UNAVAILABLE (which callers
retry) within its deadline; calls that end otherwise are reported with
method, status and message."""

import os
import signal
import socket
import subprocess
import threading
import time
import unittest

import grpc

from hm import BUILD, Mesh, binary

CALLS = {
    "disk": "/hostmesh.disk.v1.Disk/ListDisks",
    "vmm": "/namespace.cloud.compute.v1beta.ComputeService/ListInstances",
}
RESTARTS = 25          # per part
CALLERS_PER_PART = 3
DEADLINE = 15


class SocketUnit:
    """A listening socket that stays while the daemon behind it comes and
    goes; the daemon gets it as fd 3 with LISTEN_FDS, like systemd passes it."""

    def __init__(self, mesh, part):
        self.mesh = mesh
        self.part = part
        self.path = mesh.socket(part)
        # The part's own log: the harness scans it for sanitizer reports.
        self.log = open(os.path.join(mesh.runtime_dir, "dev", part + ".log"), "ab")
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(128)
        self.proc = None

    def start(self):
        fd = self.sock.fileno()
        env = dict(self.mesh.env, LISTEN_FDS="1", LISTEN_FDNAMES="grpc", HOSTMESH_BIN_DIR=BUILD,
                   HOSTMESH_GUEST_DIR=os.path.join(BUILD, "guest"))
        # LISTEN_PID must name the daemon itself: the shell sets it and execs.
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'exec 3<&%d %d<&-; LISTEN_PID=$$ exec "$0"' % (fd, fd),
             binary("hostmesh-%sd" % self.part)],
            env=env, pass_fds=(fd,), stdout=self.log, stderr=self.log)

    def stop(self, sig=signal.SIGTERM):
        """Sends sig (SIGTERM, as systemctl stop does) and waits for the exit."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("hostmesh-%sd did not exit within 20 s of SIGTERM" % self.part)
        self.proc = None

    def close(self):
        try:
            self.stop()
        finally:
            self.sock.close()
            self.log.close()


class RestartUnderLoad(unittest.TestCase):
    def test_calls_during_restarts_end_ok_or_unavailable(self):
        self._with_units(signal.SIGTERM, RESTARTS)

    def test_calls_while_daemons_are_killed_end_ok_or_unavailable(self):
        # A crash drains nothing: calls in flight lose their connection.
        self._with_units(signal.SIGKILL, RESTARTS // 2)

    def _with_units(self, sig, restarts):
        with Mesh() as mesh:
            units = {}
            try:
                for part in CALLS:
                    mesh.stop_part(part)
                    units[part] = SocketUnit(mesh, part)
                    units[part].start()
                self._run(mesh, units, sig, restarts)
            finally:
                for u in units.values():
                    u.close()

    def _run(self, mesh, units, sig, restarts):
        gw = mesh.channel("gateway")
        for part, method in CALLS.items():
            # Both daemons answer before the restarts begin.
            gw.unary_unary(method)(b"", timeout=DEADLINE)
        stop = threading.Event()
        lock = threading.Lock()
        counts = {}
        others = []

        def caller(part, method):
            stub = gw.unary_unary(method)
            while not stop.is_set():
                t = time.monotonic()
                try:
                    stub(b"", timeout=DEADLINE)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                    if code != grpc.StatusCode.UNAVAILABLE:
                        with lock:
                            others.append("%s: %s %r after %.0f ms" % (method, code.name, e.details(),
                                                                       (time.monotonic() - t) * 1000))
                with lock:
                    counts[(part, code.name)] = counts.get((part, code.name), 0) + 1

        threads = [threading.Thread(target=caller, args=(p, m)) for p, m in CALLS.items()
                   for _ in range(CALLERS_PER_PART)]
        for t in threads:
            t.start()
        try:
            for i in range(restarts):
                # As `systemctl restart` does: stop (signal, then wait for
                # the exit), then start again at once; the socket stays.
                for part in CALLS:
                    units[part].stop(sig)
                for part in CALLS:
                    units[part].start()
                time.sleep(0.05 + 0.02 * (i % 5))
        finally:
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(timeout=DEADLINE + 5)
        self.assertFalse([t for t in threads if t.is_alive()], "a caller hung past its deadline")
        summary = ", ".join("%s %s: %d" % (p, c, n) for (p, c), n in sorted(counts.items()))
        print("calls during %d restarts of each part (%s): %s" % (restarts, signal.Signals(sig).name, summary))
        self.assertFalse(others, "%d calls ended otherwise than OK or UNAVAILABLE (%s); the first: %s"
                         % (len(others), summary, "; ".join(others[:5])))
        for part in CALLS:
            self.assertGreater(counts.get((part, "OK"), 0), restarts, "too few answered %s calls" % part)


if __name__ == "__main__":
    unittest.main()
