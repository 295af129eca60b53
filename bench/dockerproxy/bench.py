"""Driver for bench/dockerproxy/run (see there)."""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

BUILD = sys.argv[1]
N_PING = int(os.environ.get("BENCH_PING", "5000"))
N_LIST = int(os.environ.get("BENCH_LIST", "2000"))
ATTACH_BYTES = int(os.environ.get("BENCH_ATTACH_BYTES", str(1 << 30)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


class Conn:
    """A minimal keep-alive HTTP/1.1 client on a unix socket."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""

    def _read_until(self, marker):
        while marker not in self.buf:
            b = self.s.recv(65536)
            if not b:
                raise EOFError
            self.buf += b
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_n(self, n):
        while len(self.buf) < n:
            b = self.s.recv(65536)
            if not b:
                raise EOFError
            self.buf += b
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def request(self, method, target, body=b""):
        head = "%s %s HTTP/1.1\r\nHost: docker\r\n" % (method, target)
        if body:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.s.sendall(head.encode() + b"\r\n" + body)
        h = self._read_until(b"\r\n\r\n").decode()
        status = int(h.split(" ", 2)[1])
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in h.split("\r\n")[1:] if ":" in l}
        if method == "HEAD" or status in (204, 304):
            return status, b""
        if "content-length" in headers:
            return status, self._read_n(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self._read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    return status, data
                data += self._read_n(size)
                self._read_n(2)
        raise RuntimeError("unframed response")

    def close(self):
        self.s.close()


def latency(path, method, target, n):
    c = Conn(path)
    for _ in range(min(200, n)):  # warm-up
        c.request(method, target)
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        st, _ = c.request(method, target)
        samples.append((time.perf_counter_ns() - t) / 1000)
        assert st == 200, st
    c.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)], statistics.mean(samples)


def attach_throughput(path, nbytes):
    """Creates a container writing nbytes to stdout, attaches (hijacked
    stream), starts it and reads until EOF. Returns MiB/s."""
    c = Conn(path)
    # No log driver: the engine would also write every byte to its json log.
    body = json.dumps({"Image": "ubuntu", "Cmd": ["head", "-c", str(nbytes), "/dev/zero"], "Tty": False,
                       "AttachStdout": True, "HostConfig": {"LogConfig": {"Type": "none"}}}).encode()
    st, out = c.request("POST", "/v1.41/containers/create", body)
    assert st == 201, (st, out)
    cid = json.loads(out)["Id"]
    c.close()
    a = socket.socket(socket.AF_UNIX)
    a.connect(path)
    a.sendall(("POST /v1.41/containers/%s/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: docker\r\n"
               "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" % cid).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += a.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    got = len(head.split(b"\r\n\r\n", 1)[1])
    c = Conn(path)
    t = time.perf_counter()
    st, _ = c.request("POST", "/v1.41/containers/%s/start" % cid)
    assert st == 204, st
    buf = bytearray(1 << 20)
    while True:
        n = a.recv_into(buf)
        if n == 0:
            break
        got += n
    dt = time.perf_counter() - t
    a.close()
    c.request("DELETE", "/v1.41/containers/%s?force=1" % cid)
    c.close()
    assert got >= nbytes, (got, nbytes)
    return got / dt / (1 << 20)


def wait_ping(path, proc, what):
    end = time.time() + 60
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(what + " exited")
        try:
            c = Conn(path)
            st, _ = c.request("GET", "/_ping")
            c.close()
            if st == 200:
                return
        except (OSError, EOFError):
            pass
        time.sleep(0.05)
    raise TimeoutError(what)


def main():
    tmp = tempfile.mkdtemp(prefix="hm-dp-bench-", dir="/tmp")
    procs = []
    try:
        eng = os.path.join(tmp, "docker.sock")
        for d in ("data", "exec", "run", "state", "etc", "root/mydata"):
            os.makedirs(os.path.join(tmp, d))
        log = open(os.path.join(tmp, "dockerd.log"), "w")
        dockerd = subprocess.Popen(
            ["dockerd", "--storage-driver=vfs", "--iptables=false", "--bridge=none", "--exec-opt",
             "native.cgroupdriver=cgroupfs", "--data-root", os.path.join(tmp, "data"), "-H", "unix://" + eng,
             "--pidfile", os.path.join(tmp, "docker.pid"), "--exec-root", os.path.join(tmp, "exec")],
            stdout=log, stderr=subprocess.STDOUT)
        procs.append(dockerd)
        wait_ping(eng, dockerd, "dockerd")

        rootfs = os.path.join(tmp, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        for a in ("sh", "head", "cat", "true", "sleep"):
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
        for d in ("dev", "proc", "sys", "etc"):
            os.makedirs(os.path.join(rootfs, d))
        subprocess.run(["tar", "-C", rootfs, "-cf", os.path.join(tmp, "bb.tar"), "."], check=True)
        subprocess.run(["docker", "-H", "unix://" + eng, "import", os.path.join(tmp, "bb.tar"), "ubuntu"],
                       check=True, capture_output=True)

        with open(os.path.join(tmp, "etc", "dockerproxy.conf"), "w") as f:
            f.write("[dockerproxy]\nupstream = %s\n" % eng)
        env = dict(os.environ, HOSTMESH_RUNTIME_DIR=os.path.join(tmp, "run"),
                   HOSTMESH_STATE_DIR=os.path.join(tmp, "state"), HOSTMESH_CONFIG_DIR=os.path.join(tmp, "etc"),
                   HOSTMESH_LOG_LEVEL="warning")
        dlog = open(os.path.join(tmp, "dockerproxyd.log"), "w")
        dp = subprocess.Popen([os.path.join(BUILD, "services", "dockerproxy", "hostmesh-dockerproxyd")], env=env,
                              stdout=dlog, stderr=subprocess.STDOUT)
        procs.append(dp)
        sys.path.insert(0, os.path.join(BUILD, "python"))
        import grpc
        from hostmesh.dockerproxy.v1 import dockerproxy_pb2 as pb
        ch = grpc.insecure_channel("unix:" + os.path.join(tmp, "run", "dockerproxy.sock"))
        grpc.channel_ready_future(ch).result(timeout=20)
        reg = ch.unary_unary("/hostmesh.dockerproxy.v1.DockerProxy/RegisterContainer",
                             request_serializer=pb.RegisterContainerRequest.SerializeToString,
                             response_deserializer=pb.RegisterContainerResponse.FromString)
        proxied = reg(pb.RegisterContainerRequest(container_id="bench", root=os.path.join(tmp, "root")),
                      timeout=20).socket_path
        ch.close()
        wait_ping(proxied, dp, "dockerproxyd")

        # The peer: socat as a plain byte relay (no parsing, no policy), the
        # floor for any userspace proxy on this machine.
        relay = os.path.join(tmp, "socat.sock")
        paths = [("direct", eng), ("proxied", proxied)]
        if shutil.which("socat"):
            sp = subprocess.Popen(["socat", "UNIX-LISTEN:%s,fork" % relay, "UNIX-CONNECT:%s" % eng],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(sp)
            wait_ping(relay, sp, "socat")
            paths.insert(1, ("socat", relay))

        # Ten containers of ours (visible through the proxy) and ten others.
        c = Conn(proxied)
        d = Conn(eng)
        for i in range(10):
            body = json.dumps({"Image": "ubuntu", "Cmd": ["true"]}).encode()
            assert c.request("POST", "/v1.41/containers/create", body)[0] == 201
            assert d.request("POST", "/v1.41/containers/create", body)[0] == 201
        c.close()
        d.close()

        print("## Latency (one keep-alive connection, sequential; microseconds)")
        print("%-28s %-8s %8s %8s %8s %10s" % ("request", "path", "n", "p50", "p99", "mean"))
        # Direct requests carry the label filter the proxy adds, so that both
        # paths list the same ten containers.
        own = urllib.parse.quote(json.dumps({"label": ["io.hostmesh.dockerproxy.owner.bench"]}, separators=(",", ":")))
        rows = [("HEAD", "/_ping", "/_ping", N_PING), ("GET", "/_ping", "/_ping", N_PING),
                ("GET", "/v1.41/containers/json?all=1&filters=" + own, "/v1.41/containers/json?all=1", N_LIST)]
        for method, direct_target, target, n in rows:
            res = {}
            for name, path in paths:
                t = target if name == "proxied" else direct_target
                p50, p99, mean = latency(path, method, t, n)
                res[name] = p50
                print("%-28s %-8s %8d %8.1f %8.1f %10.1f" % (method + " " + target.split("?")[0], name, n, p50, p99, mean))
            over = res["proxied"] - res["direct"]
            line = "overhead p50: %+.1f us (%+.1f%%)" % (over, 100 * over / res["direct"])
            if "socat" in res:
                line += "; socat relay: %+.1f us" % (res["socat"] - res["direct"])
            print("%-28s %-8s %8s %8s %s" % ("", "", "", "", line))

        print()
        print("## Attach stream throughput (%d MiB from a container's stdout, best of %d)" % (ATTACH_BYTES >> 20, ROUNDS))
        res = {}
        for name, path in paths:
            if name == "socat":
                continue
            res[name] = max(attach_throughput(path, ATTACH_BYTES) for _ in range(ROUNDS))
            print("%-10s %10.1f MiB/s" % (name, res[name]))
        print("proxied/direct: %.1f%%" % (100 * res["proxied"] / res["direct"]))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
