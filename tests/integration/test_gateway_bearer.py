# ctest: labels=integration timeout=300
"""Remote callers on the gateway's TCP listener (TLS) authenticate with a
bearer token issued by identityd; the gateway verifies it with identityd's
JWKS and passes the verified identity to backends."""

import base64
import json
import os
import socket
import subprocess
import unittest

import grpc

from hm import Mesh

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Bearer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mesh = Mesh()
        root = cls.mesh.root
        cls.cert = os.path.join(root, "gw.crt")
        key = os.path.join(root, "gw.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cls.cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        cls.port = free_port()
        echo_sock = os.path.join(root, "echo.sock")
        with open(os.path.join(cls.mesh.config_dir, "gateway.conf"), "w") as f:
            f.write("[gateway]\ntcp_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                    "routes = test.echo.v1.=unix:%s\n" % (cls.port, cls.cert, key, echo_sock))
        cls.echo = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "echo_backend.py"), echo_sock],
                                    stdout=subprocess.PIPE, text=True)
        assert cls.echo.stdout.readline().strip() == "ready"
        cls.mesh.start()
        # The gateway starts on its first connection; the TCP listener with it.
        cls.mesh.nsc("status")
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

    def test_valid_token_reaches_the_backend_with_its_verified_subject(self):
        token = self.token()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        fields = self.peer(token, [("x-hostmesh-subject", "forged"), ("x-hostmesh-peer-uid", "0")])
        self.assertEqual(fields["x-hostmesh-subject"], claims["sub"])
        self.assertNotIn("x-hostmesh-peer-uid", fields)

    def test_health_of_a_part_over_tls_with_a_token(self):
        resp = self.tcp.unary_unary("/grpc.health.v1.Health/Check")(
            b"", metadata=[("authorization", "Bearer " + self.token()), ("x-hostmesh-part", "dns")], timeout=10)
        self.assertEqual(resp, b"\x08\x01")  # SERVING

    def test_missing_token_is_unauthenticated(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.tcp.unary_unary("/test.echo.v1.Echo/Peer")(b"", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("Bearer", e.exception.details())

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
