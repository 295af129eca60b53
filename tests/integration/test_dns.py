# ctest: labels=integration;dns timeout=600
"""dnsd against real peers: dig as the client, dnsmasq and a small Python
authoritative server (Stub, below) as upstreams, all on loopback."""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

from hm import Mesh

try:
    from hostmesh.dns.v1 import dns_pb2
except ImportError:  # generated into <build>/python
    dns_pb2 = None

# ---- a small authoritative server used as upstream ---------------------------
#
# It answers over UDP and TCP from a dict of A records, NXDOMAIN with an SOA for
# other names, counts the queries it gets per (name, type, transport), and can
# misbehave on purpose: answer slowly, set TC over UDP, or send spoofed replies
# (wrong source port, wrong ID, wrong question) before the real one.


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def read_name(pkt, off):
    labels = []
    while True:
        n = pkt[off]
        if n == 0:
            return ".".join(labels).lower(), off + 1
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(pkt[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def parse_question(pkt):
    qid, flags, qd = struct.unpack(">HHH", pkt[:6])
    name, off = read_name(pkt, 12)
    qtype, qclass = struct.unpack(">HH", pkt[off:off + 4])
    return qid, flags, name, qtype, pkt[12:off + 4]


def a_rr(ttl, ip):
    # Owner: pointer to the question name at offset 12.
    return b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)


class Stub:
    def __init__(self, address="127.0.0.53", records=None, ttl=300, soa_minimum=3, soa_ttl=600):
        self.address = address
        self.records = dict(records or {})   # name -> [ip, ...]
        self.ttl = ttl
        self.soa_minimum = soa_minimum
        self.soa_ttl = soa_ttl
        self.delay = 0.0
        self.spoof = False
        self.truncate_udp = set()            # names answered with TC over UDP
        self.counts = {}                     # (name, qtype, "udp"|"tcp") -> n
        self.lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((address, 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((address, self.port))
        self.tcp.listen(16)
        self.stopped = False
        self.threads = [threading.Thread(target=self._udp_loop, daemon=True),
                        threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self.threads:
            t.start()

    @property
    def spec(self):
        return "%s:%d" % (self.address, self.port)

    def count(self, name, qtype=1, transport=None):
        with self.lock:
            return sum(v for (n, t, tr), v in self.counts.items()
                       if n == name and t == qtype and (transport is None or tr == transport))

    def stop(self):
        self.stopped = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def answer(self, pkt, transport, name_override=None, ip_override=None):
        qid, flags, name, qtype, question = parse_question(pkt)
        if name_override:
            question = encode_name(name_override) + question[-4:]
        rd = flags & 0x0100
        ips = self.records.get(name)
        if ip_override:
            ips = [ip_override]
        if transport == "udp" and name in self.truncate_udp:
            return struct.pack(">HHHHHH", qid, 0x8000 | 0x0400 | 0x0200 | rd, 1, 0, 0, 0) + question
        if ips is not None:
            answers = b"".join(a_rr(self.ttl, ip) for ip in ips) if qtype == 1 else b""
            n = len(ips) if qtype == 1 else 0
            if n:
                return struct.pack(">HHHHHH", qid, 0x8400 | rd, 1, n, 0, 0) + question + answers
            rcode = 0
        else:
            rcode = 3
        # RFC 2308: NXDOMAIN/NODATA with the zone's SOA in the authority section.
        zone = encode_name("example.test")
        rdata = encode_name("ns.example.test") + encode_name("hostmaster.example.test") + \
            struct.pack(">IIIII", 1, 3600, 600, 86400, self.soa_minimum)
        soa = zone + struct.pack(">HHIH", 6, 1, self.soa_ttl, len(rdata)) + rdata
        return struct.pack(">HHHHHH", qid, 0x8400 | rd | rcode, 1, 0, 1, 0) + question + soa

    def _note(self, pkt, transport):
        _, _, name, qtype, _ = parse_question(pkt)
        with self.lock:
            k = (name, qtype, transport)
            self.counts[k] = self.counts.get(k, 0) + 1

    def _udp_loop(self):
        while not self.stopped:
            try:
                pkt, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            try:
                self._note(pkt, "udp")
            except (ValueError, struct.error, IndexError):
                continue
            threading.Thread(target=self._udp_reply, args=(pkt, peer), daemon=True).start()

    def _udp_reply(self, pkt, peer):
        if self.delay:
            time.sleep(self.delay)
        try:
            if self.spoof:
                # 1. Right ID and question, wrong source port.
                other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                other.bind((self.address, 0))
                other.sendto(self.answer(pkt, "udp", ip_override="6.6.6.1"), peer)
                other.close()
                # 2. Right port, wrong ID.
                bad = bytearray(self.answer(pkt, "udp", ip_override="6.6.6.2"))
                bad[0] ^= 0x5a
                self.udp.sendto(bytes(bad), peer)
                # 3. Right port and ID, another question.
                self.udp.sendto(self.answer(pkt, "udp", name_override="evil.example.test",
                                            ip_override="6.6.6.3"), peer)
                time.sleep(0.05)
            self.udp.sendto(self.answer(pkt, "udp"), peer)
        except OSError:
            pass

    def _tcp_loop(self):
        while not self.stopped:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn):
        with conn:
            try:
                while True:
                    hdr = conn.recv(2, socket.MSG_WAITALL)
                    if len(hdr) < 2:
                        return
                    n = struct.unpack(">H", hdr)[0]
                    pkt = conn.recv(n, socket.MSG_WAITALL)
                    self._note(pkt, "tcp")
                    reply = self.answer(pkt, "tcp")
                    conn.sendall(struct.pack(">H", len(reply)) + reply)
            except (OSError, ValueError, struct.error):
                return


DIG = shutil.which("dig")
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def free_port(addr="127.0.0.1"):
    """A port free for both UDP and TCP on addr."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((addr, 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


class Dig:
    def __init__(self, out):
        self.out = out
        m = re.search(r"status: (\w+)", out)
        self.status = m.group(1) if m else None
        m = re.search(r";; flags: ([a-z ]+);", out)
        self.flags = set(m.group(1).split()) if m else set()
        self.answers = []
        section = None
        for line in out.splitlines():
            if line.startswith(";; ANSWER SECTION"):
                section = "answer"
                continue
            if line.startswith(";;") or not line.strip():
                section = None if line.startswith(";;") else section
                continue
            if section == "answer" and not line.startswith(";"):
                f = line.split()
                self.answers.append((f[0].rstrip(".").lower(), int(f[1]), f[3], f[4]))

    @property
    def ttl(self):
        return self.answers[0][1]


def dig(port, name, qtype="A", *opts, server="127.0.0.1"):
    r = subprocess.run([DIG, "@" + server, "-p", str(port), name, qtype, "+tries=1", "+time=4", *opts],
                       capture_output=True, text=True, timeout=30)
    return Dig(r.stdout)


def raw_query(port, payload, timeout=1.0, server="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(payload, (server, port))
        return s.recv(65535)
    except socket.timeout:
        return None
    finally:
        s.close()


def query_packet(name, qtype=1, qid=0x4242, edns=False):
    ar = 1 if edns else 0
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, ar) + encode_name(name) + struct.pack(">HH", qtype, 1)
    if edns:
        pkt += b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)
    return pkt


class DnsMeshCase(unittest.TestCase):
    """Starts a mesh whose dnsd listens on a free loopback port."""

    extra_config = ""

    def start_mesh(self, upstreams):
        self.port = free_port()
        conf = "[dns]\nlisten = 127.0.0.1:%d\nupstreams = %s\nlocal_zones = hostmesh.internal\n%s" % (
            self.port, " ".join(upstreams), self.extra_config)
        self.mesh = Mesh(configs={"dns": conf}).start()
        self.addCleanup(self.mesh.stop)
        self.mesh.wait_running("dns")
        end = time.time() + 10
        while not raw_query(self.port, query_packet("ready.hostmesh.internal"), timeout=0.2):
            if time.time() > end:
                self.fail("dnsd did not answer on port %d" % self.port)
        # The gateway starts on its first connection; the first call may find
        # it still starting.
        while self.mesh.nsc("dns", "stats").returncode != 0:
            if time.time() > end:
                self.fail("dnsd not reachable through the gateway")
            time.sleep(0.1)

    def stats(self):
        r = self.mesh.nsc_json("dns", "stats")[1]
        self.assertIsNotNone(r)
        return r

    def grpc(self, method, request, response_type):
        ch = self.mesh.channel("dns")
        call = ch.unary_unary("/hostmesh.dns.v1.Dns/" + method,
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=response_type.FromString)
        return call(request, timeout=10)


@unittest.skipUnless(DIG and os.path.exists(DNSMASQ), "needs dig and dnsmasq")
class TestDnsWithDnsmasq(DnsMeshCase):
    # dnsmasq answers with TTL 300; dnsd clamps to 3 s so that expiry and
    # serve-stale can be seen within the test.
    extra_config = "max_ttl = 3\nstale_client_timeout = 500ms\n"

    def setUp(self):
        self.upstream_port = free_port("127.0.0.54")
        self.tmp = tempfile.mkdtemp(prefix="dnsmasq-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.dnsmasq = subprocess.Popen(
            [DNSMASQ, "--no-daemon", "--port=%d" % self.upstream_port, "--listen-address=127.0.0.54",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
             "--host-record=www.example.test,10.1.2.3", "--host-record=other.example.test,10.1.2.4",
             "--local-ttl=300", "--log-queries", "--log-facility=" + os.path.join(self.tmp, "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop_dnsmasq)
        for _ in range(50):
            if dig(self.upstream_port, "ready.example.test", server="127.0.0.54").status:
                break
            time.sleep(0.1)
        self.start_mesh(["127.0.0.54:%d" % self.upstream_port])

    def stop_dnsmasq(self):
        if self.dnsmasq.poll() is None:
            self.dnsmasq.send_signal(signal.SIGTERM)
            self.dnsmasq.wait(10)

    def dnsmasq_queries(self, name):
        with open(os.path.join(self.tmp, "log")) as f:
            return sum(1 for line in f if re.search(r"query\[A\] %s from" % re.escape(name), line))

    def test_hit_after_miss_with_decreasing_ttl(self):
        first = dig(self.port, "www.example.test")
        self.assertEqual(first.status, "NOERROR")
        self.assertEqual(first.answers, [("www.example.test", 3, "A", "10.1.2.3")])
        time.sleep(1.2)
        second = dig(self.port, "WWW.Example.TEST")
        self.assertEqual(second.answers[0][3], "10.1.2.3")
        self.assertLess(second.ttl, first.ttl)
        self.assertEqual(self.dnsmasq_queries("www.example.test"), 1)
        s = self.stats()
        self.assertGreaterEqual(s["hits"], 1)
        self.assertEqual(s["upstream_queries"], 1)

    def test_upstream_killed_serves_stale_with_ttl_30(self):
        self.assertEqual(dig(self.port, "other.example.test").answers[0][3], "10.1.2.4")
        self.stop_dnsmasq()
        time.sleep(3.5)  # past the (clamped) TTL
        stale = dig(self.port, "other.example.test")
        self.assertEqual(stale.status, "NOERROR")
        self.assertEqual(stale.answers, [("other.example.test", 30, "A", "10.1.2.4")])
        self.assertGreaterEqual(self.stats()["stale_served"], 1)
        # Never seen before and nobody to ask: SERVFAIL, not a hang or crash.
        self.assertEqual(dig(self.port, "never.example.test").status, "SERVFAIL")
        health = self.stats()["upstreams"][0]
        self.assertGreaterEqual(health["failures"], 1)


@unittest.skipUnless(DIG, "needs dig")
class TestDnsWithStub(DnsMeshCase):
    extra_config = "stale_client_timeout = 500ms\nupstream_timeout = 3s\n"

    def setUp(self):
        self.stub = Stub("127.0.0.53", records={
            "a.example.test": ["10.0.0.1"],
            "slow.example.test": ["10.0.0.2"],
            "spoofed.example.test": ["10.0.0.3"],
            "big.example.test": ["10.9.%d.%d" % (i // 200, i % 200) for i in range(40)],
        }, soa_minimum=2, soa_ttl=600)
        self.addCleanup(self.stub.stop)
        self.start_mesh([self.stub.spec])

    def test_negative_answers_cached_per_soa_minimum(self):
        r = dig(self.port, "nope.example.test")
        self.assertEqual(r.status, "NXDOMAIN")
        self.assertIn("example.test.", r.out)  # the SOA travels with it
        self.assertEqual(dig(self.port, "nope.example.test").status, "NXDOMAIN")
        self.assertEqual(self.stub.count("nope.example.test"), 1)
        time.sleep(2.3)  # min(SOA TTL 600, MINIMUM 2) = 2 s
        self.assertEqual(dig(self.port, "nope.example.test").status, "NXDOMAIN")
        self.assertEqual(self.stub.count("nope.example.test"), 2)

    def test_slow_upstream_coalesces_identical_questions(self):
        self.stub.delay = 1.0
        results = []

        def ask():
            results.append(raw_query(self.port, query_packet("slow.example.test", qid=len(results)), timeout=5))

        threads = [threading.Thread(target=ask) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 20)
        self.assertTrue(all(r is not None and r[3] & 0xF == 0 for r in results))
        self.assertEqual(self.stub.count("slow.example.test"), 1)
        self.assertGreaterEqual(self.stats()["coalesced"], 19)

    def test_spoofed_replies_are_ignored(self):
        self.stub.spoof = True
        r = dig(self.port, "spoofed.example.test")
        self.assertEqual(r.answers, [("spoofed.example.test", 300, "A", "10.0.0.3")])
        # Wrong ID and wrong question reach dnsd's socket and are dropped; the
        # wrong port never gets past the connected socket.
        self.assertGreaterEqual(self.stats()["mismatched_replies"], 2)

    def test_tc_from_upstream_retries_over_tcp(self):
        self.stub.truncate_udp.add("big.example.test")
        r = dig(self.port, "big.example.test", "A", "+bufsize=4096")
        self.assertEqual(r.status, "NOERROR")
        self.assertEqual(len(r.answers), 40)
        self.assertEqual(self.stub.count("big.example.test", transport="tcp"), 1)
        self.assertEqual(self.stats()["tcp_fallbacks"], 1)

    def test_replies_larger_than_client_size_are_truncated(self):
        # 40 A records (12 + 21 + 40 * 16 = 673 bytes) do not fit 512 bytes.
        self.assertEqual(len(dig(self.port, "big.example.test").answers), 40)
        r = dig(self.port, "big.example.test", "A", "+noedns", "+ignore")
        self.assertIn("tc", r.flags)
        self.assertEqual(r.answers, [])   # the one RRset does not fit whole: none of it
        r = dig(self.port, "big.example.test", "A", "+noedns")  # dig retries over TCP
        self.assertEqual(len(r.answers), 40)

    def test_local_records_are_authoritative_and_never_forwarded(self):
        req = dns_pb2.AddRecordRequest(name="vm-1.hostmesh.internal", type="A", value="10.88.0.5", ttl=30)
        self.grpc("AddRecord", req, dns_pb2.AddRecordResponse)
        r = dig(self.port, "vm-1.hostmesh.internal")
        self.assertIn("aa", r.flags)
        self.assertEqual(r.answers, [("vm-1.hostmesh.internal", 30, "A", "10.88.0.5")])
        nx = dig(self.port, "vm-2.hostmesh.internal")
        self.assertEqual(nx.status, "NXDOMAIN")
        self.assertIn("aa", nx.flags)
        self.assertEqual(self.stub.count("vm-2.hostmesh.internal"), 0)
        self.assertEqual(dig(self.port, "vm-1.hostmesh.internal", "AAAA").status, "NOERROR")  # NODATA

        res = self.mesh.nsc_json("dns", "records", "list")[1]
        self.assertIn({"name": "vm-1.hostmesh.internal", "type": "A", "value": "10.88.0.5", "ttl": 30},
                      res["records"])
        res = self.mesh.nsc_json("dns", "lookup", "vm-1.hostmesh.internal")[1]
        self.assertTrue(res["authoritative"])
        self.assertEqual(res["answers"][0]["value"], "10.88.0.5")

        # Records survive dnsd being killed (they are in records.json in
        # the state directory). Like a .socket unit, the dev supervisor
        # starts it again on the next call to its gRPC socket.
        old = self.mesh.kill("dns", signal.SIGKILL)
        end = time.time() + 10
        while time.time() < end and (self.mesh.pid("dns") == old or self.mesh.nsc("dns", "stats").returncode != 0):
            time.sleep(0.05)
        while time.time() < end and not raw_query(self.port, query_packet("ready.hostmesh.internal"), timeout=0.2):
            pass
        r = dig(self.port, "vm-1.hostmesh.internal")
        self.assertEqual(r.answers, [("vm-1.hostmesh.internal", 30, "A", "10.88.0.5")])
        with open(os.path.join(self.mesh.state_dir, "dns", "records.json")) as f:
            self.assertIn("10.88.0.5", f.read())

        # (nsc: a new process, while this process's channel still holds the
        # killed daemon's connection.)
        r = self.mesh.nsc("dns", "records", "remove", "vm-1.hostmesh.internal", "A")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(dig(self.port, "vm-1.hostmesh.internal").status, "NXDOMAIN")
        with open(os.path.join(self.mesh.state_dir, "dns", "records.json")) as f:
            self.assertNotIn("10.88.0.5", f.read())
        with self.assertRaises(grpc.RpcError) as e:
            self.grpc("RemoveRecord", dns_pb2.RemoveRecordRequest(name="vm-1.hostmesh.internal", type="A"),
                      dns_pb2.RemoveRecordResponse)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as e:
            self.grpc("AddRecord", dns_pb2.AddRecordRequest(name="bad..name", type="A", value="10.0.0.1"),
                      dns_pb2.AddRecordResponse)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as e:
            self.grpc("AddRecord", dns_pb2.AddRecordRequest(name="x.hostmesh.internal", type="A", value="300.1.1.1"),
                      dns_pb2.AddRecordResponse)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_malformed_packets_get_formerr_or_nothing(self):
        pid = self.mesh.pid("dns")
        hdr = struct.pack(">HHHHHH", 0x1111, 0x0100, 1, 0, 0, 0)
        # Shorter than a header: dropped.
        self.assertIsNone(raw_query(self.port, b"\x11\x11\x01", timeout=0.3))
        # A response (QR set): never answered, so dnsd cannot be used to reflect.
        self.assertIsNone(raw_query(self.port, struct.pack(">HHHHHH", 1, 0x8180, 1, 0, 0, 0) +
                                    encode_name("a.example.test") + b"\0\1\0\1", timeout=0.3))
        cases = {
            "pointer loop": hdr + b"\xc0\x0c\x00\x01\x00\x01",
            "oversize label": hdr + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
            "truncated question": hdr + b"\x03ab",
            "name over 255": hdr + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
            "two questions": struct.pack(">HHHHHH", 0x1111, 0x0100, 2, 0, 0, 0) +
                             encode_name("a.example.test") + b"\0\1\0\1",
        }
        for what, pkt in cases.items():
            r = raw_query(self.port, pkt)
            self.assertIsNotNone(r, what)
            self.assertEqual(struct.unpack(">H", r[:2])[0], 0x1111, what)
            self.assertEqual(r[3] & 0xF, 1, what + ": FORMERR")
        self.assertGreaterEqual(self.stats()["formerr"], len(cases))
        # A zone transfer is refused, never forwarded.
        r = raw_query(self.port, query_packet("example.test", qtype=252))
        self.assertEqual(r[3] & 0xF, 5)
        self.assertEqual(self.stub.count("example.test", qtype=252), 0)
        # Still the same process, still answering.
        self.assertEqual(self.mesh.pid("dns"), pid)
        self.assertEqual(dig(self.port, "a.example.test").answers[0][3], "10.0.0.1")

    def test_nsc_stats_flush_and_lookup(self):
        self.assertEqual(dig(self.port, "a.example.test").status, "NOERROR")
        r, res = self.mesh.nsc_json("dns", "lookup", "a.example.test", "A")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(res["rcode"], "NOERROR")
        self.assertFalse(res["authoritative"])
        self.assertEqual(res["answers"][0]["value"], "10.0.0.1")
        s = self.stats()
        for key in ("queries", "hits", "misses", "stale_served", "prefetches", "coalesced", "evictions",
                    "upstream_latency", "upstreams"):
            self.assertIn(key, s)
        self.assertTrue(s["upstreams"][0]["healthy"])
        self.assertEqual(s["upstreams"][0]["address"], self.stub.spec)
        self.assertGreaterEqual(s["cache_entries"], 1)
        r, res = self.mesh.nsc_json("dns", "flush", "a.example.test")
        self.assertEqual(res["flushed"], 1)
        self.assertEqual(dig(self.port, "a.example.test").status, "NOERROR")
        self.assertEqual(self.stub.count("a.example.test"), 2)
        prom = self.mesh.nsc("dns", "stats", "--prometheus").stdout
        self.assertIn("hostmesh_dns_queries_total", prom)
        self.assertIn("hostmesh_dns_upstream_latency_seconds_bucket", prom)
        r = self.mesh.nsc("dns", "lookup")
        self.assertEqual(r.returncode, 2)
        r = self.mesh.nsc("dns", "lookup", "a.example.test", "NOTATYPE")
        self.assertEqual(r.returncode, 6, r.stdout + r.stderr)


@unittest.skipUnless(DIG, "needs dig")
class TestDnsAccessControl(DnsMeshCase):
    # Loopback is not among the networks allowed to recurse; 5 queries/s.
    extra_config = "allow = 10.0.0.0/8\nrate_limit = 5\n"

    def setUp(self):
        self.stub = Stub("127.0.0.55", records={"a.example.test": ["10.0.0.1"]})
        self.addCleanup(self.stub.stop)
        self.start_mesh([self.stub.spec])

    def test_acl_refuses_recursion_but_serves_local_records(self):
        time.sleep(1.1)  # let the rate limit bucket refill after the readiness probes
        self.assertEqual(dig(self.port, "a.example.test").status, "REFUSED")
        self.assertEqual(self.stub.count("a.example.test"), 0)
        self.mesh.nsc("dns", "records", "add", "h.hostmesh.internal", "A", "10.88.0.9")
        self.assertEqual(dig(self.port, "h.hostmesh.internal").answers[0][3], "10.88.0.9")

    def test_rate_limit_drops_floods(self):
        time.sleep(1.1)  # a full bucket: 5 queries of burst
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        start = time.time()
        for i in range(40):
            s.sendto(query_packet("h.hostmesh.internal", qid=i), ("127.0.0.1", self.port))
        s.settimeout(0.5)
        answered = 0
        try:
            while True:
                s.recv(4096)
                answered += 1
        except socket.timeout:
            pass
        # The burst plus what refilled while the 40 were sent.
        self.assertGreaterEqual(answered, 1)
        self.assertLessEqual(answered, 5 + int(5 * (time.time() - start)) + 1)
        self.assertGreaterEqual(self.stats()["rate_limited"], 40 - answered)


@unittest.skipUnless(DIG, "needs dig")
class TestDnsStaleWhenUpstreamSlow(DnsMeshCase):
    # Answers expire after 1 s; a client waits at most 400 ms for upstreams
    # before the stale answer goes out (RFC 8767 client response timer).
    extra_config = "max_ttl = 1\nstale_client_timeout = 400ms\nupstream_timeout = 5s\n"

    def setUp(self):
        self.stub = Stub("127.0.0.57", records={"s.example.test": ["10.0.0.7"]})
        self.addCleanup(self.stub.stop)
        self.start_mesh([self.stub.spec])

    def test_slow_upstream_gets_stale_answer_after_client_timeout(self):
        self.assertEqual(dig(self.port, "s.example.test").answers[0][1:], (1, "A", "10.0.0.7"))
        time.sleep(1.2)
        self.stub.delay = 3.0
        start = time.time()
        r = dig(self.port, "s.example.test")
        took = time.time() - start
        self.assertEqual(r.answers, [("s.example.test", 30, "A", "10.0.0.7")])
        self.assertLess(took, 2.0)
        self.assertGreaterEqual(self.stats()["stale_served"], 1)
        # The upstream query went on and refreshed the cache.
        time.sleep(3.2)
        self.stub.delay = 0
        self.assertEqual(self.stub.count("s.example.test"), 2)
        r = dig(self.port, "s.example.test")
        self.assertIn(r.answers[0][1], (0, 1))


@unittest.skipUnless(DIG, "needs dig")
class TestDnsPrefetch(DnsMeshCase):
    # Popular answers are refreshed in the last half of their 10 s TTL.
    extra_config = "prefetch_percent = 50\n"

    def setUp(self):
        self.stub = Stub("127.0.0.61", records={"hot.example.test": ["10.0.3.1"]}, ttl=10)
        self.addCleanup(self.stub.stop)
        self.start_mesh([self.stub.spec])

    def test_popular_entry_is_refreshed_before_it_expires(self):
        start = time.time()
        dig(self.port, "hot.example.test")
        dig(self.port, "hot.example.test")           # second hit: popular
        time.sleep(max(0, start + 6 - time.time()))  # into the last half of the TTL
        r = dig(self.port, "hot.example.test")
        self.assertLessEqual(r.ttl, 5)               # still the old answer, served from the cache
        end = time.time() + 3
        while self.stub.count("hot.example.test") < 2 and time.time() < end:
            time.sleep(0.05)
        self.assertEqual(self.stub.count("hot.example.test"), 2)
        self.assertEqual(self.stats()["prefetches"], 1)
        r = dig(self.port, "hot.example.test")
        self.assertGreaterEqual(r.ttl, 6)            # the refreshed answer


@unittest.skipUnless(DIG, "needs dig")
class TestDnsFailover(DnsMeshCase):
    extra_config = "upstream_timeout = 1s\n"

    def setUp(self):
        self.stub = Stub("127.0.0.58", records={"f%d.example.test" % i: ["10.0.1.%d" % i] for i in range(5)})
        self.addCleanup(self.stub.stop)
        self.dead = "127.0.0.59:%d" % free_port("127.0.0.59")  # nobody listens: ICMP port unreachable
        self.start_mesh([self.dead, self.stub.spec])

    def test_dead_first_upstream_fails_over_and_is_marked_down(self):
        for i in range(5):
            r = dig(self.port, "f%d.example.test" % i)
            self.assertEqual(r.answers[0][3], "10.0.1.%d" % i)
        ups = {u["address"]: u for u in self.stats()["upstreams"]}
        self.assertFalse(ups[self.dead]["healthy"])
        self.assertTrue(ups[self.stub.spec]["healthy"])
        self.assertGreaterEqual(ups[self.dead]["failures"], 3)
        # Once marked down it is skipped: fewer tries than queries.
        self.assertLess(ups[self.dead]["queries"], 5)
        self.assertEqual(ups[self.stub.spec]["queries"], 5)


@unittest.skipUnless(DIG, "needs dig")
def tcp_query(port, name, qid=0x5151, timeout=3.0):
    """One query over a fresh TCP connection; the answer's first A record."""
    pkt = query_packet(name, qid=qid)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">H", len(pkt)) + pkt)
        head = b""
        while len(head) < 2:
            chunk = s.recv(2 - len(head))
            if not chunk:
                raise ConnectionError("dnsd closed the connection without an answer")
            head += chunk
        n = struct.unpack(">H", head)[0]
        reply = b""
        while len(reply) < n:
            chunk = s.recv(n - len(reply))
            if not chunk:
                raise ConnectionError("dnsd closed the connection mid-answer")
            reply += chunk
    assert struct.unpack(">H", reply[:2])[0] == qid
    return socket.inet_ntoa(reply[-4:])


def is_closed(sock, wait=0.0):
    """True when the peer closed (EOF or reset) within `wait` seconds."""
    sock.settimeout(wait or 0.001)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionError:
        return True


class TestDnsTcpConnections(DnsMeshCase):
    """Idle TCP clients cannot lock others out (RFC 7766 §6.2.3: close idle
    connections first under pressure, and after an idle timeout). The
    defaults: 256 connections, 10 s."""

    def setUp(self):
        self.stub = Stub("127.0.0.56", records={"t.example.test": ["10.0.3.1"]})
        self.addCleanup(self.stub.stop)
        self.start_mesh([self.stub.spec])

    def connections(self, n):
        conns = []
        self.addCleanup(lambda: [c.close() for c in conns])
        for _ in range(n):
            conns.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
        return conns

    def test_idle_connections_beyond_the_cap_do_not_lock_out_new_clients(self):
        idle = self.connections(300)
        time.sleep(0.5)  # every one accepted
        for i in range(20):
            self.assertEqual(tcp_query(self.port, "t.example.test", qid=0x6000 + i), "10.0.3.1")
        # The clients that made room were the ones idle longest.
        closed = [i for i, c in enumerate(idle) if is_closed(c)]
        self.assertEqual(closed, list(range(len(closed))))
        self.assertTrue(300 - 256 <= len(closed) <= 300 - 256 + 20, closed)
        r = self.mesh.nsc("dns", "stats", "--prometheus")
        m = re.search(r"^hostmesh_dns_tcp_idle_closed_total(?:\{[^}]*\})? (\d+)$", r.stdout, re.M)
        self.assertIsNotNone(m, r.stdout)
        self.assertGreaterEqual(int(m.group(1)), len(closed))
        # A connection that keeps querying is not the one to go.
        busy = self.connections(1)[0]
        for i in range(3):
            more = self.connections(100)
            pkt = query_packet("t.example.test", qid=0x7000 + i)
            busy.sendall(struct.pack(">H", len(pkt)) + pkt)
            self.assertEqual(busy.recv(2 + 512)[2:4], struct.pack(">H", 0x7000 + i))
            del more

    def test_200_idle_connections_and_new_clients_still_served(self):
        self.connections(200)
        time.sleep(0.3)
        for i in range(10):
            self.assertEqual(tcp_query(self.port, "t.example.test", qid=0x6100 + i), "10.0.3.1")

    def test_a_client_trickling_bytes_is_closed_after_the_idle_timeout(self):
        trickler, quiet = self.connections(2)
        pkt = query_packet("t.example.test")
        wire = struct.pack(">H", len(pkt)) + pkt
        t0 = time.time()
        closed_after = None
        # One byte every half second (16 s for the whole query) never
        # completes one within the timeout: that is idle too.
        for b in wire[:-1]:
            if is_closed(trickler, 0.5):
                closed_after = time.time() - t0
                break
            try:
                trickler.send(bytes([b]))
            except OSError:
                pass
        self.assertIsNotNone(closed_after, "dnsd still holds a client that trickles bytes")
        self.assertGreater(closed_after, 8)
        self.assertLess(closed_after, 13)
        self.assertTrue(is_closed(quiet, 1))


class TestDnsSocketActivation(unittest.TestCase):
    """The way systemd starts dnsd: the gRPC, UDP and TCP sockets passed as
    fds 3-5 named grpc, dns-udp and dns-tcp (LISTEN_FDS/LISTEN_FDNAMES)."""

    def test_dns_sockets_passed_by_systemd_are_served(self):
        build = os.environ.get("HOSTMESH_BUILD_DIR", "build")
        dnsd = os.path.join(build, "services", "dns", "hostmesh-dnsd")
        stub = Stub("127.0.0.60", records={"p.example.test": ["10.0.2.1"]})
        self.addCleanup(stub.stop)
        tmp = tempfile.mkdtemp(prefix="dnsd-activation-")
        self.addCleanup(shutil.rmtree, tmp, True)
        grpc_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        grpc_sock.bind(os.path.join(tmp, "dns.sock"))
        grpc_sock.listen(16)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
        tcp.listen(16)
        unused_port = free_port()
        conf = os.path.join(tmp, "dns.conf")
        with open(conf, "w") as f:
            f.write("[dns]\nlisten = 127.0.0.1:%d\nupstreams = %s\n" % (unused_port, stub.spec))
        socks = [grpc_sock, udp, tcp]

        def pass_fds():
            for i, s in enumerate(socks):
                os.dup2(s.fileno(), 3 + i, inheritable=True)

        env = dict(os.environ, LISTEN_FDS="3", LISTEN_FDNAMES="grpc:dns-udp:dns-tcp",
                   HOSTMESH_RUNTIME_DIR=tmp, HOSTMESH_STATE_DIR=tmp)
        log = open(os.path.join(tmp, "log"), "w+")
        self.addCleanup(log.close)
        # LISTEN_PID must be the daemon's own PID: the shell execs it in place.
        p = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" --config "$1"', dnsd, conf],
                             env=env, preexec_fn=pass_fds, close_fds=False, stdout=log, stderr=log)
        self.addCleanup(p.wait, 10)
        self.addCleanup(p.terminate)
        for s in socks:
            s.close()
        end = time.time() + 10
        while not raw_query(port, query_packet("p.example.test"), timeout=0.2):
            self.assertIsNone(p.poll(), "dnsd exited")
            self.assertLess(time.time(), end, "no answer on the passed UDP socket")
        self.assertEqual(dig(port, "p.example.test").answers[0][3], "10.0.2.1")
        self.assertEqual(dig(port, "p.example.test", "A", "+tcp").answers[0][3], "10.0.2.1")
        self.assertEqual(dig(port, "p.example.test", "A", "+tcp").answers[0][3], "10.0.2.1")
        # The configured address is for running by hand only.
        self.assertIsNone(raw_query(unused_port, query_packet("p.example.test"), timeout=0.3))
        log.seek(0)
        self.assertIn("passed by systemd", log.read())


class TestDnsConfig(unittest.TestCase):
    def test_check_config_output_parses_back_to_itself(self):
        build = os.environ.get("HOSTMESH_BUILD_DIR", "build")
        src = os.environ.get("HOSTMESH_SOURCE_DIR", ".")
        dnsd = os.path.join(build, "services", "dns", "hostmesh-dnsd")
        one = subprocess.run([dnsd, "--check-config", "--config", os.path.join(src, "deploy", "config", "dns.conf")],
                             capture_output=True, text=True, check=True).stdout
        self.assertIn("local_zones = hostmesh.internal", one)
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(one)
            f.flush()
            two = subprocess.run([dnsd, "--check-config", "--config", f.name], capture_output=True, text=True,
                                 check=True).stdout
        self.assertEqual(one, two)
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("[dns]\nallow = 10.0.0.0/33\n")
            f.flush()
            r = subprocess.run([dnsd, "--check-config", "--config", f.name], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("allow", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
