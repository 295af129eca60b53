# ctest: labels=integration timeout=300
"""Remote callers on the gateway's TCP listener authenticate with a bearer
token issued by identityd; the gateway verifies it with identityd's JWKS,
asks identityd whether it was revoked, lets it reach only the public API
(plus what [gateway] bearer_allow lists) and passes the verified identity to
backends. Without TLS the listener starts only when configured insecure on a
loopback address."""

import base64
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest

import grpc

from hm import Mesh, binary

from hostmesh.dns.v1 import dns_pb2
from hostmesh.identity.v1 import identity_pb2
from namespace.cloud.compute.v1beta import compute_pb2
from namespace.cloud.iam.v1beta import token_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ID = "/hostmesh.identity.v1.Identity/"
COMPUTE = "/namespace.cloud.compute.v1beta.ComputeService/"
TOKENS = "/namespace.cloud.iam.v1beta.TokenService/IssueIdToken"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def unary(channel, method, request, response_type, metadata=(), timeout=10):
    fn = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=response_type.FromString)
    return fn(request, metadata=list(metadata), timeout=timeout)


def make_cert(directory):
    cert, key = os.path.join(directory, "gw.crt"), os.path.join(directory, "gw.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TokenSource:
    """Tokens for any tenant, as vmmd gets them: IssueInstanceToken on
    identityd's own socket (the test runs as root, an admin there)."""

    def __init__(self, mesh):
        self.channel = mesh.channel("identity")

    def issue(self, tenant="acme", instance="vm1", audience=("hostmesh",)):
        return unary(self.channel, ID + "IssueInstanceToken",
                     identity_pb2.IssueInstanceTokenRequest(tenant_id=tenant, instance_id=instance,
                                                            audience=list(audience)),
                     identity_pb2.IssueInstanceTokenResponse)

    def wake(self):
        end = time.time() + 15
        while True:
            try:
                return self.issue()
            except grpc.RpcError:
                if time.time() > end:
                    raise
                time.sleep(0.1)


class Bearer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mesh = Mesh()
        root = cls.mesh.root
        cls.cert, key = make_cert(root)
        cls.port = free_port()
        echo_sock = os.path.join(root, "echo.sock")
        with open(os.path.join(cls.mesh.config_dir, "gateway.conf"), "w") as f:
            f.write("[gateway]\ntcp_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                    "routes = test.echo.v1.=unix:%s\n"
                    "bearer_allow = test.echo.v1.Echo/ hostmesh.dns.v1.Dns/GetStats\n"
                    "revocation_cache = 1s\n" % (cls.port, cls.cert, key, echo_sock))
        cls.echo = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "echo_backend.py"), echo_sock],
                                    stdout=subprocess.PIPE, text=True)
        assert cls.echo.stdout.readline().strip() == "ready"
        cls.mesh.start()
        # The gateway starts on its first connection; the TCP listener with it.
        cls.mesh.nsc("status")
        cls.tokens = TokenSource(cls.mesh)
        cls.tokens.wake()
        with open(cls.cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        cls.tcp = grpc.secure_channel("127.0.0.1:%d" % cls.port, creds,
                                      options=(("grpc.ssl_target_name_override", "localhost"),))

    @classmethod
    def tearDownClass(cls):
        cls.tcp.close()
        cls.mesh.__exit__(None, None, None)
        cls.echo.kill()
        cls.echo.wait()

    def token(self, audience="hostmesh"):
        r, out = self.mesh.nsc_json("auth", "issue-id-token", "--audience", audience)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return out["id_token"]

    def peer(self, token, extra=()):
        md = [("authorization", "Bearer " + token)] + list(extra)
        out = self.tcp.unary_unary("/test.echo.v1.Echo/Peer")(b"", metadata=md, timeout=10).decode()
        return dict(line.split("=", 1) for line in out.splitlines())

    def call(self, method, request=b"", token=None, extra=()):
        """A raw call over TCP; the request is bytes (or a message)."""
        md = [("authorization", "Bearer " + (token or self.tokens.issue().token))] + list(extra)
        if not isinstance(request, bytes):
            request = request.SerializeToString()
        return self.tcp.unary_unary(method)(request, metadata=md, timeout=10)

    def assertRefused(self, code, fn, *words):
        with self.assertRaises(grpc.RpcError) as e:
            fn()
        self.assertEqual(e.exception.code(), code, e.exception.details())
        for w in words:
            self.assertIn(w, e.exception.details())
        return e.exception

    def test_valid_token_reaches_the_backend_with_its_verified_subject(self):
        token = self.token()
        claims = claims_of(token)
        fields = self.peer(token, [("x-hostmesh-subject", "forged"), ("x-hostmesh-peer-uid", "0")])
        self.assertEqual(fields["x-hostmesh-subject"], claims["sub"])
        self.assertNotIn("x-hostmesh-peer-uid", fields)
        fields = self.peer(self.tokens.issue(tenant="acme", instance="vm7").token,
                           [("x-hostmesh-tenant", "forged")])
        self.assertEqual((fields["x-hostmesh-subject"], fields["x-hostmesh-tenant"]), ("acme/vm7", "acme"))

    def test_health_of_a_part_over_tls_with_a_token(self):
        resp = self.tcp.unary_unary("/grpc.health.v1.Health/Check")(
            b"", metadata=[("authorization", "Bearer " + self.token()), ("x-hostmesh-part", "dns")], timeout=10)
        self.assertEqual(resp, b"\x08\x01")  # SERVING

    def test_missing_token_is_unauthenticated(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.tcp.unary_unary("/test.echo.v1.Echo/Peer")(b"", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("Bearer", e.exception.details())
        # Unauthenticated callers learn nothing about the method either.
        with self.assertRaises(grpc.RpcError) as e:
            self.tcp.unary_unary("/hostmesh.disk.v1.Disk/GetPoolStats")(b"", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_refusals_name_their_reason(self):
        good = self.token()
        h, p, s = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=="))
        claims["sub"] = "someone/else"
        tampered = "%s.%s.%s" % (h, b64(json.dumps(claims).encode()), s)
        none_alg = "%s.%s." % (b64(b'{"alg":"none","typ":"JWT"}'), p)
        cases = [
            ("not-a-jwt", "malformed"),
            (tampered, "bad_signature"),
            (none_alg, "alg_not_allowed"),
            (self.token(audience="someone-else"), "audience_mismatch"),
        ]
        for token, reason in cases:
            with self.assertRaises(grpc.RpcError) as e:
                self.peer(token)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED, reason)
            self.assertIn(reason, e.exception.details())

    def test_gateway_methods_are_local_only(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.tcp.unary_unary("/hostmesh.gateway.v1.Gateway/ListRoutes")(
                b"", metadata=[("authorization", "Bearer " + self.token())], timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)

    def test_plaintext_client_cannot_talk_to_the_tls_listener(self):
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        with self.assertRaises(grpc.RpcError) as e:
            ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=3)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        ch.close()

    # -- per-method authorization -------------------------------------------
    def test_admin_methods_are_denied_naming_the_method_and_why(self):
        token = self.tokens.issue().token
        admin = ["/hostmesh.disk.v1.Disk/GetPoolStats",
                 "/hostmesh.disk.v1.Disk/CreateDisk",
                 "/hostmesh.dns.v1.Dns/AddRecord",
                 "/hostmesh.dns.v1.Dns/Flush",
                 "/hostmesh.dockerproxy.v1.DockerProxy/RegisterContainer",
                 "/hostmesh.identity.v1.Identity/RotateKeys",
                 "/hostmesh.identity.v1.Identity/RevokeSubject",
                 "/hostmesh.identity.v1.Identity/AddTrustRelationship",
                 "/hostmesh.identity.v1.Identity/ExchangeToken",
                 "/hostmesh.vmm.v1.Vmm/GetCapacity"]
        for method in admin:
            self.assertRefused(grpc.StatusCode.PERMISSION_DENIED, lambda: self.call(method, token=token),
                               method, "public API", "bearer_allow")
        # Metrics of a part are administrative too, whichever part is asked.
        self.assertRefused(grpc.StatusCode.PERMISSION_DENIED,
                           lambda: self.call("/hostmesh.common.v1.Metrics/GetMetrics", token=token,
                                             extra=[("x-hostmesh-part", "dns")]),
                           "/hostmesh.common.v1.Metrics/GetMetrics")

    def test_a_denied_admin_call_changes_nothing(self):
        add = dns_pb2.AddRecordRequest(name="remote.hostmesh.internal", type="A", value="10.9.9.9", ttl=60)
        self.assertRefused(grpc.StatusCode.PERMISSION_DENIED,
                           lambda: self.call("/hostmesh.dns.v1.Dns/AddRecord", add), "AddRecord")
        r = self.mesh.nsc("dns", "records", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("remote.hostmesh.internal", r.stdout)
        # The same call from a local user goes through: only remote callers are limited.
        r = self.mesh.nsc("dns", "records", "add", "local.hostmesh.internal", "A", "10.9.9.8")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_the_allow_list_opens_exactly_what_it_names(self):
        stats = self.call("/hostmesh.dns.v1.Dns/GetStats", dns_pb2.GetStatsRequest())
        dns_pb2.GetStatsResponse.FromString(stats)
        self.assertRefused(grpc.StatusCode.PERMISSION_DENIED,
                           lambda: self.call("/hostmesh.dns.v1.Dns/Lookup", dns_pb2.LookupRequest(name="x.test")),
                           "/hostmesh.dns.v1.Dns/Lookup")

    def test_the_public_compute_and_token_api_are_reachable(self):
        issued = self.tokens.issue(tenant="acme", instance="vm2")
        md = [("authorization", "Bearer " + issued.token)]
        unary(self.tcp, COMPUTE + "ListInstances", compute_pb2.ListInstancesRequest(),
              compute_pb2.ListInstancesResponse, md)
        out = unary(self.tcp, TOKENS, token_pb2.IssueIdTokenRequest(audience="sts.example"),
                    token_pb2.IssueIdTokenResponse, md)
        self.assertEqual((claims_of(out.id_token)["sub"], claims_of(out.id_token)["aud"]),
                         ("acme/vm2", "sts.example"))
        # A bearer token cannot mint another gateway credential for itself.
        self.assertRefused(grpc.StatusCode.PERMISSION_DENIED,
                           lambda: unary(self.tcp, TOKENS, token_pb2.IssueIdTokenRequest(audience="hostmesh"),
                                         token_pb2.IssueIdTokenResponse, md),
                           "hostmesh")

    # -- revocation ---------------------------------------------------------
    def wait_refused(self, token, reason, timeout=10):
        """The gateway may go on accepting for up to revocation_cache (1 s here)."""
        end = time.time() + timeout
        while True:
            try:
                self.peer(token)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED, e.details())
                self.assertIn(reason, e.details())
                return
            self.assertLess(time.time(), end, "the gateway still accepts a revoked token")
            time.sleep(0.2)

    def test_a_token_revoked_by_jti_is_refused(self):
        issued = self.tokens.issue(tenant="acme", instance="revoke-me")
        other = self.tokens.issue(tenant="acme", instance="revoke-me")
        self.assertEqual(self.peer(issued.token)["x-hostmesh-subject"], "acme/revoke-me")
        r = self.mesh.nsc("auth", "revoke", "--jti", issued.jti)
        self.assertEqual(r.returncode, 0, r.stderr)
        t0 = time.time()
        self.wait_refused(issued.token, "revoked")
        self.assertLess(time.time() - t0, 3)
        # Another token of the same subject is still good.
        self.assertEqual(self.peer(other.token)["x-hostmesh-subject"], "acme/revoke-me")

    def test_a_subject_revoked_loses_every_token_issued_so_far(self):
        first = self.tokens.issue(tenant="acme", instance="gone")
        second = self.tokens.issue(tenant="acme", instance="gone")
        for t in (first, second):
            self.peer(t.token)
        r = self.mesh.nsc("auth", "revoke", "--subject", "acme/gone")
        self.assertEqual(r.returncode, 0, r.stderr)
        for t in (first, second):
            self.wait_refused(t.token, "revoked")
        self.assertEqual(self.peer(self.tokens.issue(tenant="acme", instance="kept").token)["x-hostmesh-subject"],
                         "acme/kept")

    # -- exchange -----------------------------------------------------------
    def test_exchange_cannot_mint_a_gateway_credential(self):
        inst = self.tokens.issue(tenant="acme", instance="vm3")
        ch = self.mesh.channel("identity")

        def exchange(audience):
            return unary(ch, ID + "ExchangeToken",
                         identity_pb2.ExchangeTokenRequest(subject_token=inst.token, audience=[audience]),
                         identity_pb2.ExchangeTokenResponse)

        e = self.assertRefused(grpc.StatusCode.PERMISSION_DENIED, lambda: exchange("hostmesh"), "hostmesh")
        self.assertIn("exchange", e.details().lower())
        # For anybody else it works, and that token is no gateway credential.
        vault = exchange("vault").access_token
        self.assertEqual(claims_of(vault)["aud"], "vault")
        with self.assertRaises(grpc.RpcError) as e:
            self.peer(vault)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("audience_mismatch", e.exception.details())


class ListenerSecurity(unittest.TestCase):
    """Plaintext TCP only when asked for, and only on loopback."""

    def check_config(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(text)
            f.flush()
            return subprocess.run([binary("hostmesh-gatewayd"), "--check-config", "--config", f.name],
                                  capture_output=True, text=True)

    def test_plaintext_listener_is_refused_unless_insecure_on_loopback(self):
        r = self.check_config("[gateway]\ntcp_listen = 0.0.0.0:8443\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("tls_cert", r.stderr)
        self.assertIn("tcp_insecure", r.stderr)
        r = self.check_config("[gateway]\ntcp_listen = 127.0.0.1:8443\n")
        self.assertNotEqual(r.returncode, 0)
        for addr in ("0.0.0.0:8443", "[::]:8443", "192.0.2.1:8443", ":8443"):
            r = self.check_config("[gateway]\ntcp_listen = %s\ntcp_insecure = yes\n" % addr)
            self.assertNotEqual(r.returncode, 0, addr)
            self.assertIn("loopback", r.stderr, addr)
        for addr in ("127.0.0.1:8443", "[::1]:8443", "localhost:8443"):
            r = self.check_config("[gateway]\ntcp_listen = %s\ntcp_insecure = yes\n" % addr)
            self.assertEqual(r.returncode, 0, addr + ": " + r.stderr)
            self.assertIn("tcp_insecure = yes", r.stdout)
        # A certificate without its key (or the reverse) is a mistake, not plaintext.
        r = self.check_config("[gateway]\ntcp_listen = 127.0.0.1:8443\ntls_cert = /etc/ssl/x.pem\ntcp_insecure = yes\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("tls_key", r.stderr)
        # A bad allow-list entry is named; the gateway's own methods cannot be opened.
        for entry in ("semi;colon/x", "hostmesh.gateway.v1.Gateway/ListRoutes", "*"):
            r = self.check_config("[gateway]\nbearer_allow = %s\n" % entry)
            self.assertNotEqual(r.returncode, 0, entry)
            self.assertIn("bearer_allow", r.stderr)

    def test_installed_config_parses_back_to_itself(self):
        from hm import SOURCE
        with open(os.path.join(SOURCE, "deploy", "config", "gateway.conf")) as f:
            one = self.check_config(f.read())
        self.assertEqual(one.returncode, 0, one.stderr)
        for key in ("tcp_insecure = no", "bearer_allow =", "revocation_cache = 5s"):
            self.assertIn(key, one.stdout)
        two = self.check_config(one.stdout)
        self.assertEqual(two.stdout, one.stdout)

    def test_insecure_loopback_listener_serves_and_revocation_checks_fail_closed(self):
        port = free_port()
        with Mesh(configs={"gateway": "[gateway]\ntcp_listen = 127.0.0.1:%d\ntcp_insecure = yes\n"
                                      "revocation_cache = 0\n" % port}) as mesh:
            mesh.nsc("status")
            tokens = TokenSource(mesh)
            good = tokens.wake()
            ch = grpc.insecure_channel("127.0.0.1:%d" % port)
            md = [("authorization", "Bearer " + good.token)]
            try:
                unary(ch, COMPUTE + "ListInstances", compute_pb2.ListInstancesRequest(),
                      compute_pb2.ListInstancesResponse, md)
                # identityd gone for good: the gateway cannot tell whether the
                # token was revoked and refuses rather than guess.
                mesh.stop_part("identity")
                with self.assertRaises(grpc.RpcError) as e:
                    unary(ch, COMPUTE + "ListInstances", compute_pb2.ListInstancesRequest(),
                          compute_pb2.ListInstancesResponse, md)
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, e.exception.details())
                self.assertIn("revoked", e.exception.details())
            finally:
                ch.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
