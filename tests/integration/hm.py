"""Test harness: runs the real mesh (scripts/hostmesh-dev) in temp dirs.

    from hm import Mesh
    with Mesh(configs={"dns": "[dns]\\nlisten = 127.0.0.1:15353\\n"}) as mesh:
        r = mesh.nsc("status", "-o", "json")
        ch = mesh.channel("dns")

Everything the mesh starts is stopped by PID when the block ends.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc

BUILD = os.environ.get("HOSTMESH_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SOURCE = os.environ.get("HOSTMESH_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
PARTS = ["identity", "dns", "disk", "vmm", "dockerproxy", "gateway"]


def binary(name):
    """Path of a built binary (daemon or nsc)."""
    for cand in (os.path.join(BUILD, "cli", "nsc", name),
                 os.path.join(BUILD, "services", name.replace("hostmesh-", "").rstrip("d"), name),
                 os.path.join(BUILD, name)):
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError(name)


class Mesh:
    def __init__(self, configs=None, env=None, keep=False, netns=None):
        """netns: run every daemon in this network namespace (made by the
        test with `ip netns add`); only the network is switched (nsenter),
        so paths, /sys and cgroups stay the host's."""
        self.netns = netns
        self.configs = configs or {}
        self.extra_env = env or {}
        self.keep = keep
        self.root = tempfile.mkdtemp(prefix="hostmesh-test-")
        self.runtime_dir = os.path.join(self.root, "run")
        self.state_dir = os.path.join(self.root, "state")
        self.config_dir = os.path.join(self.root, "etc")
        for d in (self.runtime_dir, self.state_dir, self.config_dir):
            os.makedirs(d)
        for part, text in self.configs.items():
            with open(os.path.join(self.config_dir, part + ".conf"), "w") as f:
                f.write(text)
        self.env = dict(os.environ)
        self.env.update({
            "HOSTMESH_RUNTIME_DIR": self.runtime_dir,
            "HOSTMESH_STATE_DIR": self.state_dir,
            "HOSTMESH_CONFIG_DIR": self.config_dir,
            "NSC_ENDPOINT": "unix:" + os.path.join(self.runtime_dir, "gateway.sock"),
        })
        self.env.update(self.extra_env)
        self._channels = []

    # -- lifecycle ---------------------------------------------------------
    def _dev(self, *args):
        prefix = ["nsenter", "--net=/run/netns/" + self.netns] if self.netns else []
        return subprocess.run(
            [*prefix, os.path.join(SOURCE, "scripts", "hostmesh-dev"), *args,
             "--runtime-dir", self.runtime_dir, "--state-dir", self.state_dir,
             "--config-dir", self.config_dir, "--bin-dir", BUILD],
            env=self.env, capture_output=True, text=True, timeout=60)

    def start(self):
        r = self._dev("up")
        if r.returncode != 0:
            raise RuntimeError("hostmesh-dev up failed: " + r.stdout + r.stderr)
        return self

    def stop(self):
        for ch in self._channels:
            ch.close()
        self._channels = []
        self._dev("down")

    def write_config(self, part, text):
        """Replaces a part's config file (read at its next start)."""
        with open(os.path.join(self.config_dir, part + ".conf"), "w") as f:
            f.write(text)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is not None:
            self.dump_logs()
        reports = self.sanitizer_reports()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        if reports and exc[0] is None:
            raise AssertionError("sanitizer reports in daemon logs:\n" + "\n".join(reports))
        return False

    def sanitizer_reports(self):
        """Lines where ASan/UBSan/LSan reported something in any daemon's log
        (the sanitizer build runs the same tests)."""
        found = []
        d = os.path.join(self.runtime_dir, "dev")
        for part in PARTS:
            p = os.path.join(d, part + ".log")
            if not os.path.exists(p):
                continue
            with open(p, errors="replace") as f:
                for line in f:
                    if "Sanitizer" in line or "runtime error:" in line:
                        found.append("%s: %s" % (part, line.rstrip()))
        return found[:40]

    def dump_logs(self):
        d = os.path.join(self.runtime_dir, "dev")
        for part in PARTS:
            p = os.path.join(d, part + ".log")
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    tail = f.read()[-3000:]
                if tail.strip():
                    print(f"----- {part}.log -----\n{tail}")

    # -- access ------------------------------------------------------------
    def socket(self, part):
        return os.path.join(self.runtime_dir, part + ".sock")

    def channel(self, part="gateway"):
        # A channel of its own connection (no shared subchannel pool): after
        # a daemon restart a new channel must not inherit a dead connection.
        ch = grpc.insecure_channel("unix:" + self.socket(part), options=[("grpc.use_local_subchannel_pool", 1)])
        self._channels.append(ch)
        return ch

    def pid(self, part):
        """PID of the part's process (the activator until the first connection)."""
        with open(os.path.join(self.runtime_dir, "dev", part + ".pid")) as f:
            return int(f.read())

    def wait_running(self, part, timeout=10):
        """Waits until the part's daemon (not the activator) runs; returns its PID."""
        exe = os.path.realpath(binary("hostmesh-%sd" % part))
        end = time.time() + timeout
        while time.time() < end:
            try:
                pid = self.pid(part)
                if os.path.realpath(os.readlink("/proc/%d/exe" % pid)) == exe:
                    return pid
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise TimeoutError(part + " did not start")

    def kill(self, part, sig=signal.SIGKILL):
        """Sends a signal to the part's current process; the supervisor
        re-listens afterwards, as a .socket unit would."""
        pid = self.pid(part)
        os.kill(pid, sig)
        return pid

    def stop_part(self, part):
        """Stops a part for good (supervisor and daemon): its socket stays
        on disk with nobody listening, like a crashed service without its
        socket unit."""
        d = os.path.join(self.runtime_dir, "dev")
        with open(os.path.join(d, part + ".supervisor")) as f:
            sup = int(f.read())
        pid = self.pid(part)
        os.kill(sup, signal.SIGKILL)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # The killed activator leaves its socket file behind.
        end = time.time() + 5
        while time.time() < end:
            try:
                os.kill(pid, 0)
                time.sleep(0.02)
            except ProcessLookupError:
                break

    def restart(self, part):
        """SIGTERM the part and wait until its socket is back."""
        old = self.pid(part)
        os.kill(old, signal.SIGTERM)
        end = time.time() + 15
        while time.time() < end:
            try:
                if self.pid(part) != old and os.path.exists(self.socket(part)):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(part + " did not come back")

    def _nsc_for_other_users(self):
        """A copy of nsc that any user can run: the build tree may sit below
        a directory only root can enter (a CI checkout in a 0700 temp dir)."""
        exe = os.path.join(self.root, "bin", "nsc")
        if not os.path.exists(exe):
            os.makedirs(os.path.dirname(exe), exist_ok=True)
            shutil.copy2(binary("nsc"), exe)
            for d in (self.root, os.path.dirname(exe), self.runtime_dir):
                os.chmod(d, 0o755)
        return exe

    def env_for_other_users(self):
        """Environment for a Python client run as another user: the generated
        modules are copied where any user can read them."""
        dst = os.path.join(self.root, "python")
        if not os.path.exists(dst):
            shutil.copytree(os.path.join(BUILD, "python"), dst)
            for dirpath, dirnames, filenames in os.walk(dst):
                os.chmod(dirpath, 0o755)
                for f in filenames:
                    os.chmod(os.path.join(dirpath, f), 0o644)
            os.chmod(self.root, 0o755)
        return dict(os.environ, PYTHONPATH=dst)

    def nsc(self, *args, timeout=120, input=None, user=None):
        cmd = [binary("nsc"), *args]
        kw = {}
        if user is not None:
            kw["user"] = user
            cmd[0] = self._nsc_for_other_users()
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, **kw)

    def nsc_json(self, *args, **kw):
        r = self.nsc(*args, "-o", "json", **kw)
        try:
            return r, json.loads(r.stdout) if r.stdout.strip() else None
        except json.JSONDecodeError:
            raise AssertionError("nsc printed invalid JSON: %r (stderr %r)" % (r.stdout, r.stderr))


class QemuReaper:
    """Remembers the QEMU pids of instances so that nothing outlives a test
    (VMs survive vmmd by design)."""

    def __init__(self):
        self.pids = set()

    def note(self, mesh, iid):
        """Remembers iid's QEMU; returns its describe answer (or None)."""
        r, d = mesh.nsc_json("describe", iid)
        if d and d.get("qemu_pid"):
            self.pids.add(d["qemu_pid"])
        return d

    def destroy_all(self, mesh):
        """Asks vmmd to destroy every instance it lists, best effort."""
        try:
            r, lst = mesh.nsc_json("list")
            for i in lst or []:
                mesh.nsc("destroy", "--force", i["instance_id"])
        except Exception:
            pass

    def reap(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class NetnsPair:
    """Two network namespaces joined by a veth pair, made for one test:
    "host" (where the mesh runs; 192.168.77.1, default route outside) and
    "outside" (192.168.77.2, no route back to any instance pool, so only
    masqueraded traffic gets answers). Processes started with spawn() are
    stopped by PID at close(), then both namespaces are deleted."""

    HOST_ADDR = "192.168.77.1"
    OUT_ADDR = "192.168.77.2"

    def __init__(self, tag=None):
        tag = tag or str(os.getpid())
        self.host = "hmn-host-" + tag
        self.outside = "hmn-out-" + tag
        self.procs = []
        self.run("ip", "netns", "add", self.host)
        try:
            self.run("ip", "netns", "add", self.outside)
            for ns in (self.host, self.outside):
                self.run("ip", "-n", ns, "link", "set", "lo", "up")
            self.run("ip", "-n", self.host, "link", "add", "hmv-host", "type", "veth", "peer", "name", "hmv-out",
                     "netns", self.outside)
            self.run("ip", "-n", self.host, "addr", "add", self.HOST_ADDR + "/24", "dev", "hmv-host")
            self.run("ip", "-n", self.outside, "addr", "add", self.OUT_ADDR + "/24", "dev", "hmv-out")
            self.run("ip", "-n", self.host, "link", "set", "hmv-host", "up")
            self.run("ip", "-n", self.outside, "link", "set", "hmv-out", "up")
            self.run("ip", "-n", self.host, "route", "add", "default", "via", self.OUT_ADDR)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def run(*cmd, check=True, netns=None, timeout=60):
        if netns:
            cmd = ("ip", "netns", "exec", netns) + tuple(cmd)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s failed: %s" % (" ".join(cmd), r.stderr))
        return r

    def spawn(self, netns, *cmd, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(["ip", "netns", "exec", netns, *cmd], **kw)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []
        for ns in (self.host, self.outside):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
