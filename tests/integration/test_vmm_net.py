# ctest: labels=integration;net timeout=900
"""Instance networking end to end, inside network namespaces this test makes.

The whole mesh runs in a "host" namespace; an "outside" namespace is joined
to it by a veth pair and has no route back to the instance pool, so a reply
reaches an instance only if its traffic was masqueraded. Two micro-VMs (TCG)
boot with taps on vmmd's bridge. Checked: names through dnsd (their own and
each other's, and an outside name through dnsd's upstream), isolation and
its opt-in for one tenant, egress seen from outside as the host's address,
host ports closed to instances, source spoofing dropped, the token file
validated with python3-jwt against identityd's JWKS, the ruleset after
destroy, and vmmd's reconciliation of hand-made changes at restart. Nothing
touches the test machine's own namespace.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

from hm import BUILD, Mesh, NetnsPair, QemuReaper

sys.path.insert(0, os.path.join(BUILD, "python"))

import grpc  # noqa: E402
from namespace.cloud.compute.v1beta import compute_pb2  # noqa: E402

try:
    import jwt
except ImportError:  # python3-jwt (scripts/deps.d)
    jwt = None

GUEST = os.environ.get("HOSTMESH_GUEST_IMAGE_DIR") or os.path.join(BUILD, "guest")
TAG = "%d" % os.getpid()
HOST_NS = "hmn-host-" + TAG
HOST_ADDR = NetnsPair.HOST_ADDR
OUT_ADDR = NetnsPair.OUT_ADDR
DNS_PORT = 5353
ZONE = "hostmesh.internal"
PEER_PORT = 7000
HOST_PORT = 7001


sh = NetnsPair.run


def nft_json(netns=HOST_NS):
    return json.loads(sh("nft", "-j", "list", "ruleset", netns=netns).stdout)["nftables"]


def hostmesh_objects(ruleset):
    """Chains, rules and set elements of the inet hostmesh table."""
    chains = {o["chain"]["name"] for o in ruleset if "chain" in o and o["chain"]["table"] == "hostmesh"}
    rules = [o["rule"] for o in ruleset if "rule" in o and o["rule"]["table"] == "hostmesh"]
    return chains, rules


def peers_elements(netns=HOST_NS):
    r = sh("nft", "-j", "list", "set", "inet", "hostmesh", "peers", netns=netns)
    for o in json.loads(r.stdout)["nftables"]:
        if "set" in o:
            return [json.dumps(e, sort_keys=True) for e in o["set"].get("elem", [])]
    return []


def have_everything():
    missing = [t for t in ("nft", "ip", "nsenter", "dnsmasq") if not shutil.which(t)
               and not os.path.exists("/usr/sbin/" + t)]
    if os.geteuid() != 0:
        return "needs root (network namespaces, taps, nftables)"
    if missing:
        return "missing tools: " + " ".join(missing)
    if not all(os.path.exists(os.path.join(GUEST, f)) for f in ("vmlinux", "initramfs.cpio")):
        return "guest image not built (HOSTMESH_BUILD_GUEST=ON)"
    return None


def vmm_config(same_tenant):
    return "\n".join([
        "[vmm]",
        "kernel = " + os.path.join(GUEST, "vmlinux"),
        "initrd = " + os.path.join(GUEST, "initramfs.cpio"),
        "boot_timeout = 120s",
        "shutdown_timeout = 3s",
        "network = yes",
        "network_pool = 10.88.0.0/16",
        "network_dns_port = %d" % DNS_PORT,
        "network_same_tenant = %s" % ("yes" if same_tenant else "no"),
        "dns = required",
        "dns_zone = " + ZONE,
        "token = required",
    ]) + "\n"


PEER_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
log = open(sys.argv[3], "a", buffering=1)
while True:
    c, a = s.accept()
    c.settimeout(5)
    try:
        data = c.recv(4096)
    except OSError:
        data = b""
    log.write("%s %s\n" % (a[0], data.decode(errors="replace").strip()))
    try:
        c.sendall(b"pong\n")
    except OSError:
        pass
    c.close()
"""


def skip_reason():
    return have_everything()


@unittest.skipIf(skip_reason(), skip_reason() or "")
class InstanceNetworkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reaper = QemuReaper()
        cls.mesh = None
        cls.ns = NetnsPair(TAG)
        try:
            cls.mesh = Mesh(configs={
                "vmm": vmm_config(same_tenant=False),
                "dns": "[dns]\nlisten = 0.0.0.0:%d\nupstreams = %s:53\nlocal_zones = %s\n" % (DNS_PORT, OUT_ADDR, ZONE),
            }, netns=HOST_NS)
            cls._start_peers()
            cls.mesh.start()
            cls.a = cls._create()
            cls.b = cls._create()
            cls.a = cls._wait_running(cls.a)
            cls.b = cls._wait_running(cls.b)
        except BaseException:
            if cls.mesh:
                cls.mesh.dump_logs()
            cls._teardown()
            raise

    @classmethod
    def _start_peers(cls):
        cls.peer_log = os.path.join(cls.mesh.root, "peer.log")
        cls.host_log = os.path.join(cls.mesh.root, "host-port.log")
        open(cls.peer_log, "w").close()
        open(cls.host_log, "w").close()
        cls.ns.spawn(cls.ns.outside, sys.executable, "-c", PEER_SERVER, OUT_ADDR, str(PEER_PORT), cls.peer_log)
        # A service on the host that instances must not reach.
        cls.ns.spawn(cls.ns.host, sys.executable, "-c", PEER_SERVER, "0.0.0.0", str(HOST_PORT), cls.host_log)
        dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        cls.ns.spawn(cls.ns.outside, dnsmasq, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                   "--listen-address=" + OUT_ADDR, "--port=53", "--address=/outside.test/" + OUT_ADDR,
                   "--user=root", "--pid-file=")

    @classmethod
    def _create(cls):
        r, d = cls.mesh.nsc_json("create", "--machine_type", "2x2", "--nowait", timeout=60)
        if r.returncode != 0:
            raise AssertionError("create failed: " + r.stdout + r.stderr)
        return d["instance_id"]

    @classmethod
    def _wait_running(cls, iid, timeout=240):
        end = time.time() + timeout
        d = None
        while time.time() < end:
            d = cls.reaper.note(cls.mesh, iid)
            if d and d.get("state") == "RUNNING":
                return d
            if d and d.get("state") == "ERROR":
                raise AssertionError("instance %s failed: %s" % (iid, d.get("reason")))
            time.sleep(0.5)
        raise AssertionError("instance %s never ran: %r" % (iid, d))

    @classmethod
    def _teardown(cls):
        mesh = cls.mesh
        if mesh:
            cls.reaper.destroy_all(mesh)
        cls.reaper.reap()
        if mesh:
            mesh.stop()
        cls.ns.close()
        reports = mesh.sanitizer_reports() if mesh else []
        if mesh:
            shutil.rmtree(mesh.root, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports in daemon logs:\n" + "\n".join(reports))

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    # -- helpers -----------------------------------------------------------
    def exec(self, iid, *cmd, timeout=60):
        return self.mesh.nsc("exec", iid["instance_id"], "--", *cmd, timeout=timeout)

    def ping(self, iid, addr):
        return self.exec(iid, "ping", "-c", "1", "-W", "3", addr).returncode == 0

    def create_for_tenant(self, tenant):
        """CreateInstance straight on vmmd's socket with the tenant metadata
        the gateway sets for bearer callers (believed from root only)."""
        create = self.mesh.channel("vmm").unary_unary(
            "/namespace.cloud.compute.v1beta.ComputeService/CreateInstance",
            request_serializer=compute_pb2.CreateInstanceRequest.SerializeToString,
            response_deserializer=compute_pb2.DescribeInstanceResponse.FromString)
        return create(compute_pb2.CreateInstanceRequest(
            shape=compute_pb2.InstanceShape(virtual_cpu=2, memory_megabytes=2048)), timeout=10,
            metadata=[("x-hostmesh-tenant", tenant)])

    def test_0_a_bad_tenant_id_is_refused(self):
        for bad in ("a/b", "x" * 65, "semi;colon"):
            with self.assertRaises(grpc.RpcError) as e:
                self.create_for_tenant(bad)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("tenant", e.exception.details())

    # -- tests (unittest runs them in name order) ----------------------------
    def test_1_describe_shows_address_and_dns_name(self):
        for d in (self.a, self.b):
            self.assertTrue(d["address"].startswith("10.88."), d)
            self.assertEqual(d["dns_name"], "%s.%s" % (d["instance_id"], ZONE))
            self.assertEqual(d["network"]["gateway"], "10.88.0.1")
            self.assertTrue(d["network"]["tap"].startswith("hm"))
            link = json.loads(sh("ip", "-j", "-d", "link", "show", d["network"]["tap"], netns=HOST_NS).stdout)[0]
            self.assertEqual(link.get("master"), "hm0")
            self.assertTrue(link["linkinfo"]["info_slave_data"].get("isolated"), link)
        self.assertNotEqual(self.a["address"], self.b["address"])
        # Inside: eth0 carries the address, resolv.conf points at the gateway.
        r = self.exec(self.a, "cat", "/etc/resolv.conf")
        self.assertIn("nameserver 10.88.0.1", r.stdout)
        r = self.exec(self.a, "ip", "-4", "addr", "show", "dev", "eth0")
        self.assertIn(self.a["address"] + "/32", r.stdout)

    def test_2_instances_resolve_their_own_and_each_others_names(self):
        for who in (self.a, self.b):
            for target in (self.a, self.b):
                # Bounded: under the sanitizers dnsd can answer the first
                # query after the instance is RUNNING a moment late.
                for _ in range(10):
                    r = self.exec(who, "nslookup", target["dns_name"])
                    if r.returncode == 0 and target["address"] in r.stdout:
                        break
                    time.sleep(0.5)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn(target["address"], r.stdout)
        # Short names through the search domain, outside names through
        # dnsd's upstream (dnsmasq in the outside namespace).
        r = self.exec(self.a, "nslookup", "outside.test")
        self.assertIn(OUT_ADDR, r.stdout, r.stdout + r.stderr)
        r = self.exec(self.a, "nslookup", "nope-%s.%s" % (TAG, ZONE))
        self.assertNotEqual(r.returncode, 0)

    def test_3_instances_are_isolated_but_reach_the_gateway(self):
        self.assertTrue(self.ping(self.a, "10.88.0.1"))
        self.assertFalse(self.ping(self.a, self.b["address"]))
        self.assertFalse(self.ping(self.b, self.a["address"]))
        self.assertEqual(peers_elements(), [])

    def test_4_egress_is_masqueraded_to_the_hosts_address(self):
        r = self.exec(self.a, "sh", "-c", "echo hello-%s | nc -w 5 %s %d" % (TAG, OUT_ADDR, PEER_PORT))
        self.assertIn("pong", r.stdout, r.stderr)
        with open(self.peer_log) as f:
            seen = f.read().splitlines()
        self.assertIn("%s hello-%s" % (HOST_ADDR, TAG), seen)

    def test_5_host_ports_are_closed_to_instances(self):
        # The same service answers from the host's own side...
        r = sh("python3", "-c", "import socket; s = socket.create_connection(('%s', %d), 2); s.sendall(b'host'); "
               "print(s.recv(16))" % (HOST_ADDR, HOST_PORT), netns=HOST_NS)
        self.assertIn("pong", r.stdout)
        # ...but not from an instance, neither on the gateway nor on the
        # host's other address.
        for addr in ("10.88.0.1", HOST_ADDR):
            r = self.exec(self.a, "sh", "-c", "echo from-guest | nc -w 3 %s %d" % (addr, HOST_PORT))
            self.assertNotIn("pong", r.stdout)
        with open(self.host_log) as f:
            self.assertNotIn("from-guest", f.read())
        # DNS to the gateway on port 53 is the one way in (DNAT to dnsd).
        r = self.exec(self.a, "nslookup", self.b["dns_name"], "10.88.0.1")
        self.assertIn(self.b["address"], r.stdout)

    def test_5b_dns_over_tcp_reaches_dnsd_through_the_dnat(self):
        # A DNS query over TCP to the gateway's port 53 (nothing listens
        # there on the host: the DNAT takes it to dnsd), written by printf,
        # the answer shown by od.
        name = self.b["dns_name"].encode()
        qname = b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\0"
        msg = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
        wire = struct.pack(">H", len(msg)) + msg
        escaped = "".join("\\%03o" % c for c in wire)
        r = self.exec(self.a, "sh", "-c", "printf '%s' | nc -w 3 10.88.0.1 53 | od -An -v -tx1" % escaped)
        self.assertEqual(r.returncode, 0, r.stderr)
        reply = bytes(int(x, 16) for x in r.stdout.split())
        self.assertGreater(len(reply), 2 + 12, r.stdout)
        self.assertEqual(reply[2:4], b"\x42\x42")                  # our ID
        self.assertEqual(struct.unpack(">H", reply[8:10])[0], 1)   # one answer
        self.assertTrue(reply.endswith(socket.inet_aton(self.b["address"])))

    def test_6_spoofed_source_addresses_are_dropped(self):
        spoof = "10.88.200.200"
        self.exec(self.a, "ip", "addr", "add", spoof + "/32", "dev", "eth0")
        try:
            before = self._guard_drops(self.a)
            r = self.exec(self.a, "ping", "-c", "2", "-W", "2", "-I", spoof, "10.88.0.1")
            self.assertNotEqual(r.returncode, 0)
            self.assertGreater(self._guard_drops(self.a), before)
            self.assertTrue(self.ping(self.a, "10.88.0.1"))
        finally:
            self.exec(self.a, "ip", "addr", "del", spoof + "/32", "dev", "eth0")

    def _guard_drops(self, d):
        chain = "guard-" + d["network"]["tap"]
        r = sh("nft", "-j", "list", "chain", "inet", "hostmesh", chain, netns=HOST_NS)
        total = 0
        for o in json.loads(r.stdout)["nftables"]:
            for e in o.get("rule", {}).get("expr", []):
                if "counter" in e:
                    total += e["counter"]["packets"]
        return total

    def test_7_token_file_validates_against_the_jwks(self):
        if jwt is None:
            self.skipTest("python3-jwt missing")
        r = self.exec(self.a, "cat", "/var/run/nsc/token.json")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = json.loads(r.stdout)["bearer_token"]
        r, jwks = self.mesh.nsc_json("auth", "jwks")
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = jwt.PyJWKSet.from_dict(jwks)
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in keys.keys if k.key_id == kid)
        claims = jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience="hostmesh",
                            options={"verify_iss": False})
        self.assertIn(self.a["instance_id"], claims["sub"])
        # A token with one byte changed is refused by the same validator.
        bad = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        with self.assertRaises(jwt.InvalidTokenError):
            jwt.decode(bad, key.key, algorithms=["ES256", "RS256"], audience="hostmesh",
                       options={"verify_iss": False})

    def test_8_restart_reconciles_the_ruleset_and_taps(self):
        m = self.mesh
        tap_a = self.a["network"]["tap"]
        guard = "guard-" + tap_a
        # By hand: delete one of A's guard rules, add a stale chain to our
        # table, a stale tap on the bridge, and a table of someone else's.
        r = json.loads(sh("nft", "-j", "-a", "list", "chain", "inet", "hostmesh", guard, netns=HOST_NS).stdout)
        handles = [o["rule"]["handle"] for o in r["nftables"] if "rule" in o]
        self.assertTrue(handles)
        n_rules = len(handles)
        sh("nft", "delete", "rule", "inet", "hostmesh", guard, "handle", str(handles[0]), netns=HOST_NS)
        sh("nft", "add", "chain", "inet", "hostmesh", "stale-by-hand", netns=HOST_NS)
        sh("nft", "add", "table", "inet", "someone-else", netns=HOST_NS)
        sh("nft", "add", "chain", "inet", "someone-else", "keep", netns=HOST_NS)
        sh("ip", "tuntap", "add", "dev", "hmstale" + TAG[-4:], "mode", "tap", netns=HOST_NS)
        sh("ip", "link", "set", "hmstale" + TAG[-4:], "master", "hm0", netns=HOST_NS)

        # Restart with instances of one tenant allowed to talk.
        m.write_config("vmm", vmm_config(same_tenant=True))
        m.wait_running("vmm")
        m.restart("vmm")
        # The first call starts the new vmmd (socket activation).
        end = time.time() + 30
        while time.time() < end and m.nsc("exec", self.a["instance_id"], "--", "true").returncode != 0:
            time.sleep(0.2)

        chains, rules = hostmesh_objects(nft_json())
        self.assertNotIn("stale-by-hand", chains)
        self.assertEqual(len([x for x in rules if x["chain"] == guard]), n_rules)
        self.assertIn("guard-" + self.b["network"]["tap"], chains)
        self.assertIn("someone-else", sh("nft", "list", "tables", netns=HOST_NS).stdout)
        r = sh("ip", "link", "show", "hmstale" + TAG[-4:], check=False, netns=HOST_NS)
        self.assertNotEqual(r.returncode, 0, "stale tap survived the restart")
        # Both instances survived and may now talk; the pairs are in the set.
        self.assertEqual(len(peers_elements()), 2)
        self.assertTrue(self.ping(self.a, self.b["address"]))
        self.assertTrue(self.ping(self.b, self.a["address"]))
        # The names are still there (vmmd registers them again at start).
        r = self.exec(self.a, "nslookup", self.b["dns_name"])
        self.assertIn(self.b["address"], r.stdout)

        # An instance of another tenant is no peer of theirs.
        c = self.create_for_tenant("other-tenant").metadata.instance_id
        c = type(self)._wait_running(c)
        self.assertEqual(c["tenant"], "other-tenant")
        self.assertEqual(len(peers_elements()), 2)
        self.assertFalse(self.ping(c, self.a["address"]))
        self.assertFalse(self.ping(self.a, c["address"]))
        self.assertTrue(self.ping(c, "10.88.0.1"))
        r = m.nsc("destroy", c["instance_id"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_9_destroy_leaves_no_rules_taps_or_names(self):
        m = self.mesh
        # B's guard chain removed by hand: B's own remove batch now fails,
        # and vmmd must still leave none of B's pairs behind (it replaces
        # the whole table instead).
        guard_b = "guard-" + self.b["network"]["tap"]
        sh("nft", "flush", "chain", "inet", "hostmesh", guard_b, netns=HOST_NS)
        sh("nft", "delete", "chain", "inet", "hostmesh", guard_b, netns=HOST_NS)
        self.assertEqual(len(peers_elements()), 2)
        for d in (self.b, self.a):
            tap = d["network"]["tap"]
            r = m.nsc("destroy", d["instance_id"])
            self.assertEqual(r.returncode, 0, r.stderr)
            end = time.time() + 60
            while time.time() < end:
                r, x = m.nsc_json("describe", d["instance_id"])
                if x and x["state"] == "DESTROYED":
                    break
                time.sleep(0.3)
            self.assertEqual(x["state"], "DESTROYED")
            time.sleep(0.5)  # the dnsd removal is asynchronous
            ruleset = nft_json()
            chains, rules = hostmesh_objects(ruleset)
            self.assertNotIn("guard-" + tap, chains)
            self.assertFalse([x for x in rules if d["address"] in json.dumps(x)])
            self.assertFalse([e for e in peers_elements() if d["address"] in e])
            r = sh("ip", "link", "show", tap, check=False, netns=HOST_NS)
            self.assertNotEqual(r.returncode, 0)
            r, recs = m.nsc_json("dns", "records", "list")
            self.assertNotIn(d["dns_name"], json.dumps(recs))
        chains, rules = hostmesh_objects(nft_json())
        self.assertFalse([c for c in chains if c.startswith("guard-")])
        self.assertEqual(peers_elements(), [])
        with open(os.path.join(m.runtime_dir, "dev", "vmm.log"), errors="replace") as f:
            self.assertIn("cannot remove its nftables rules", f.read())


if __name__ == "__main__":
    unittest.main(verbosity=2)
