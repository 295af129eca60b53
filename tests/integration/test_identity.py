# ctest: labels=integration timeout=600
"""identityd end to end: tokens checked by independent validators
(python3-jwt, python3-jwcrypto) with the JWKS fetched over HTTPS from the
jwks_uri of the discovery document; every forgery refused with its reason;
lifetimes; revocation; concurrency; exchange of hostmesh and external
tokens; local principals through the gateway; static export."""

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jwt as jwc_jwt

from hm import Mesh, binary
from hostmesh.identity.v1 import identity_pb2 as pb
from namespace.cloud.iam.v1beta import token_pb2

ID = "/hostmesh.identity.v1.Identity/"
PUBLIC = "/namespace.cloud.iam.v1beta.TokenService/IssueIdToken"
LOCAL_UID = 4242


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_cert(directory):
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def config(port, cert, key, extra=""):
    return ("[identity]\n"
            f"issuer = https://127.0.0.1:{port}\n"
            f"http_listen = 127.0.0.1:{port}\n"
            f"tls_certificate = {cert}\n"
            f"tls_private_key = {key}\n"
            "min_token_duration = 1s\n"
            "leeway = 1s\n"
            "http_timeout = 3s\n"
            f"principals = {LOCAL_UID}:tenant-x:ci-runner\n" + extra)


def call(channel, method, request, response_type, metadata=None, timeout=10):
    fn = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=response_type.FromString)
    return fn(request, timeout=timeout, metadata=metadata)


class IdentityMesh:
    """A mesh whose identityd serves discovery over TLS on a free port."""

    def __init__(self, extra=""):
        self.tmp = tempfile.mkdtemp(prefix="hm-identity-")
        self.cert, self.key = make_cert(self.tmp)
        self.port = free_port()
        self.issuer = f"https://127.0.0.1:{self.port}"
        self.mesh = Mesh(configs={"identity": config(self.port, self.cert, self.key, extra),
                                  "gateway": f"[gateway]\nallow_users = {LOCAL_UID} {LOCAL_UID + 1}\n"})
        self.ssl = ssl.create_default_context(cafile=self.cert)

    def start(self):
        self.mesh.start()
        self.ch = self.mesh.channel("identity")
        self.wake()
        # The gateway is socket-activated too; wait until it answers.
        end = time.time() + 15
        while self.mesh.nsc("auth", "jwks").returncode != 0:
            if time.time() > end:
                raise TimeoutError("the gateway does not answer")
            time.sleep(0.1)
        return self

    def wake(self):
        # identityd is socket-activated: the first call starts it (and its HTTP listener).
        end = time.time() + 15
        while True:
            try:
                return call(self.ch, ID + "GetOpenIdConfiguration", pb.GetOpenIdConfigurationRequest(),
                            pb.GetOpenIdConfigurationResponse)
            except grpc.RpcError:
                if time.time() > end:
                    raise
                time.sleep(0.1)

    def http(self, url, headers=None):
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def discovery(self):
        status, _, body = self.http(self.issuer + "/.well-known/openid-configuration")
        assert status == 200, status
        return json.loads(body)

    def jwks(self):
        status, _, body = self.http(self.discovery()["jwks_uri"])
        assert status == 200, status
        return json.loads(body)

    def issue(self, tenant="t1", instance="i1", audience=("hostmesh",), seconds=None, container=""):
        req = pb.IssueInstanceTokenRequest(tenant_id=tenant, instance_id=instance, container_name=container,
                                           audience=list(audience))
        if seconds is not None:
            req.duration.seconds = seconds
        return call(self.ch, ID + "IssueInstanceToken", req, pb.IssueInstanceTokenResponse)

    def validate(self, token, audience="hostmesh"):
        return call(self.ch, ID + "ValidateToken", pb.ValidateTokenRequest(token=token, audience=audience),
                    pb.ValidateTokenResponse)

    def signing_key(self, kid=None):
        """The real private key from the state dir, to forge claims that only
        the time/issuer checks can catch."""
        with open(os.path.join(self.mesh.state_dir, "identity", "keys.json")) as f:
            keys = json.load(f)["keys"]
        k = next(k for k in keys if kid is None or k["kid"] == kid)
        return k["kid"], serialization.load_pem_private_key(k["private_key"].encode(), None)

    def pyjwt_decode(self, token, audience="hostmesh"):
        keys = jwt.PyJWKSet.from_dict(self.jwks())
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in keys.keys if k.key_id == kid)
        return jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience=audience, issuer=self.issuer)

    def jwcrypto_claims(self, token):
        ks = jwc_jwk.JWKSet.from_json(json.dumps(self.jwks()))
        t = jwc_jwt.JWT(jwt=token, key=ks, check_claims={"iss": self.issuer, "exp": None})
        return json.loads(t.claims)

    def stop(self):
        self.mesh.__exit__(None, None, None)


class IdentityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.im = IdentityMesh().start()
        cls.mesh = cls.im.mesh

    @classmethod
    def tearDownClass(cls):
        cls.im.stop()

    def setUp(self):
        self.im.wake()  # identityd may have been restarted by a previous test

    # -- federation documents ---------------------------------------------
    def test_discovery_document_and_jwks_over_https_with_cache_headers(self):
        d = self.im.discovery()
        self.assertEqual(d["issuer"], self.im.issuer)
        self.assertEqual(d["jwks_uri"], self.im.issuer + "/.well-known/jwks.json")
        for key in ("response_types_supported", "subject_types_supported",
                    "id_token_signing_alg_values_supported", "claims_supported"):
            self.assertIn(key, d)
        self.assertEqual(d["id_token_signing_alg_values_supported"], ["ES256"])
        self.assertIn("tenant_id", d["claims_supported"])

        status, headers, body = self.im.http(d["jwks_uri"])
        self.assertEqual(status, 200)
        self.assertRegex(headers["Cache-Control"], r"max-age=\d+")
        etag = headers["ETag"]
        keys = json.loads(body)["keys"]
        self.assertGreaterEqual(len(keys), 1)
        for k in keys:
            self.assertEqual((k["kty"], k["crv"], k["alg"], k["use"]), ("EC", "P-256", "ES256", "sig"))
            self.assertNotIn("d", k)
            # kid is the RFC 7638 thumbprint, computed independently here.
            canon = json.dumps({"crv": k["crv"], "kty": k["kty"], "x": k["x"], "y": k["y"]},
                               separators=(",", ":"), sort_keys=True)
            self.assertEqual(k["kid"], b64(hashlib.sha256(canon.encode()).digest()))
            self.assertEqual(jwc_jwk.JWK(**k).thumbprint(), k["kid"])

        status, headers, body = self.im.http(d["jwks_uri"], {"If-None-Match": etag})
        self.assertEqual(status, 304)
        self.assertEqual(body, b"")
        status, _, _ = self.im.http(self.im.issuer + "/keys")
        self.assertEqual(status, 404)

        # gRPC and HTTP serve the same JWKS.
        g = call(self.im.ch, ID + "GetJwks", pb.GetJwksRequest(), pb.GetJwksResponse)
        self.assertEqual(json.loads(g.jwks_json), json.loads(body or self.im.http(d["jwks_uri"])[2]))
        self.assertEqual(g.etag, etag)

    def test_http_listener_bounds_request_size_and_slow_clients(self):
        ctx = self.im.ssl
        with socket.create_connection(("127.0.0.1", self.im.port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                try:
                    s.sendall(b"GET /" + b"a" * 8300 + b" HTTP/1.1\r\n\r\n")
                    head = s.recv(100)
                except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                    head = b"reset"
                # Either told off (431) or cut off, never served.
                self.assertIn(head[:12], (b"HTTP/1.1 431", b"reset", b""))
        with socket.create_connection(("127.0.0.1", self.im.port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\n")   # never finishes its request
                s.settimeout(20)
                t0 = time.time()
                data = s.recv(100)
                self.assertLess(time.time() - t0, 8)
                self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 408"), data)
        # Plain HTTP on the TLS port gets nothing useful.
        with socket.create_connection(("127.0.0.1", self.im.port), timeout=15) as s:
            s.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\n\r\n")
            try:
                self.assertNotIn(b"keys", s.recv(1000))
            except (ConnectionResetError, socket.timeout):
                pass

    # -- issuing -----------------------------------------------------------
    def test_issued_token_verifies_with_pyjwt_and_jwcrypto(self):
        r = self.im.issue(tenant="acme", instance="vm-1", container="web", audience=("hostmesh", "sts.example"))
        header = jwt.get_unverified_header(r.token)
        self.assertEqual(set(header), {"alg", "kid", "typ"})
        self.assertEqual(header["alg"], "ES256")
        claims = self.im.pyjwt_decode(r.token, audience="sts.example")
        self.assertEqual(claims["sub"], "acme/vm-1/web")
        self.assertEqual((claims["tenant_id"], claims["instance_id"], claims["container_name"]), ("acme", "vm-1", "web"))
        self.assertEqual(claims["aud"], ["hostmesh", "sts.example"])
        self.assertEqual(claims["jti"], r.jti)
        self.assertEqual(claims["exp"], r.expires_at.seconds)
        self.assertEqual(claims["exp"] - claims["iat"], 3600)  # default 1 h
        self.assertLessEqual(claims["nbf"], time.time())
        self.assertEqual(self.im.jwcrypto_claims(r.token)["sub"], "acme/vm-1/web")
        # The raw signature is 64 bytes (R||S), not DER.
        self.assertEqual(len(base64.urlsafe_b64decode(r.token.split(".")[2] + "==")), 64)

    def test_lifetime_bounds_are_enforced_with_the_bound_named(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.im.issue(seconds=2 * 86400)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("max_token_duration", e.exception.details())
        req = pb.IssueInstanceTokenRequest(tenant_id="t", instance_id="i", audience=["hostmesh"])
        req.duration.nanos = 500000000
        with self.assertRaises(grpc.RpcError) as e:
            call(self.im.ch, ID + "IssueInstanceToken", req, pb.IssueInstanceTokenResponse)
        self.assertIn("min_token_duration", e.exception.details())
        with self.assertRaises(grpc.RpcError) as e:
            self.im.issue(audience=())
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as e:
            self.im.issue(tenant="../etc")
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        r = self.im.issue(seconds=120)
        self.assertEqual(r.expires_at.seconds - int(time.time()) in range(118, 122), True)

    def test_eight_concurrent_callers_get_unique_valid_tokens(self):
        results, errors = [], []

        def worker(n):
            ch = grpc.insecure_channel("unix:" + self.mesh.socket("identity"))
            try:
                for i in range(25):
                    results.append(call(ch, ID + "IssueInstanceToken",
                                        pb.IssueInstanceTokenRequest(tenant_id="t", instance_id=f"c{n}-{i}",
                                                                     audience=["hostmesh"]),
                                        pb.IssueInstanceTokenResponse))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                ch.close()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 200)
        self.assertEqual(len({r.jti for r in results}), 200)
        keys = jwt.PyJWKSet.from_dict(self.im.jwks())
        by_kid = {k.key_id: k.key for k in keys.keys}
        for r in results:
            kid = jwt.get_unverified_header(r.token)["kid"]
            c = jwt.decode(r.token, by_kid[kid], algorithms=["ES256"], audience="hostmesh", issuer=self.im.issuer)
            self.assertEqual(c["jti"], r.jti)

    # -- forgeries -----------------------------------------------------------
    def assertRefused(self, token, reason, audience="hostmesh"):
        v = self.im.validate(token, audience)
        self.assertFalse(v.valid)
        self.assertEqual(v.reason, reason, v.message)
        self.assertTrue(v.message)
        r = self.mesh.nsc("auth", "validate", "--token", token, "--audience", audience, "-o", "json")
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        self.assertEqual(json.loads(r.stdout)["reason"], reason)

    def test_every_forgery_is_refused_with_its_reason(self):
        good = self.im.issue(tenant="t1", instance="victim").token
        v = self.im.validate(good)
        self.assertTrue(v.valid, v.message)
        self.assertEqual(v.subject, "t1/victim")
        # nsc reads the token from stdin with "--token -", keeping it out of argv.
        r = self.mesh.nsc("auth", "validate", "--token", "-", "--audience", "hostmesh", "-o", "json", input=good + "\n")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["valid"], out["claims"]["sub"]), (True, "t1/victim"))
        h, p, s = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=="))
        kid = jwt.get_unverified_header(good)["kid"]
        now = int(time.time())

        # Tampered payload, original signature.
        evil = dict(claims, sub="t1/admin")
        self.assertRefused(h + "." + b64(json.dumps(evil).encode()) + "." + s, "bad_signature")

        # Signed by an attacker's key but naming ours (swapped kid), and under its own kid.
        attacker = ec.generate_private_key(ec.SECP256R1())
        self.assertRefused(jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": kid}), "bad_signature")
        self.assertRefused(jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": "attacker"}), "unknown_kid")

        # alg none, with and without a signature part.
        none_h = b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
        self.assertRefused(none_h + "." + p + ".", "alg_not_allowed")
        self.assertRefused(none_h + "." + p + "." + s, "alg_not_allowed")

        # HS256 keyed with our public key (the RS/ES → HS confusion attack).
        jwk = next(k for k in self.im.jwks()["keys"] if k["kid"] == kid)
        pub_pem = jwc_jwk.JWK(**jwk).export_to_pem()
        hs_h = b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
        mac = hmac.new(pub_pem, (hs_h + "." + p).encode(), hashlib.sha256).digest()
        self.assertRefused(hs_h + "." + p + "." + b64(mac), "alg_not_allowed")

        # Correctly signed with the real key, but the claims are wrong.
        real_kid, real_key = self.im.signing_key(kid)

        def signed(**over):
            c = dict(claims, **over)
            return jwt.encode(c, real_key, algorithm="ES256", headers={"kid": real_kid})

        self.assertTrue(self.im.validate(signed(jti="fresh")).valid)
        self.assertRefused(signed(exp=now - 120, iat=now - 300, nbf=now - 300), "expired")
        self.assertRefused(signed(nbf=now + 3600), "not_yet_valid")
        self.assertRefused(signed(iss="https://evil.example"), "wrong_issuer")
        self.assertRefused(good, "audience_mismatch", audience="someone-else")
        self.assertRefused("not.a.jwt", "malformed")
        self.assertRefused("a" * 20000, "too_large")
        # An empty audience is refused, never matched.
        with self.assertRaises(grpc.RpcError) as e:
            self.im.validate(good, "")
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

        # PyJWT, independently, agrees on the forgeries it can judge.
        with self.assertRaises(jwt.InvalidSignatureError):
            self.im.pyjwt_decode(h + "." + b64(json.dumps(evil).encode()) + "." + s)
        with self.assertRaises(jwt.ExpiredSignatureError):
            self.im.pyjwt_decode(signed(exp=now - 120))

    def test_revocation_by_jti_and_subject_persists_over_restart(self):
        a = self.im.issue(tenant="t2", instance="gone")
        b = self.im.issue(tenant="t2", instance="gone")
        c = self.im.issue(tenant="t2", instance="other")
        r = self.mesh.nsc("auth", "revoke", "--jti", a.jti, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["jti"], a.jti)
        self.assertEqual(self.im.validate(a.token).reason, "revoked")
        self.assertTrue(self.im.validate(b.token).valid)
        r = self.mesh.nsc("auth", "revoke", "--subject", "t2/gone", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.im.validate(b.token).reason, "revoked")
        self.assertTrue(self.im.validate(c.token).valid)
        r = self.mesh.nsc("auth", "revoke", "--jti", "x", "--subject", "y")
        self.assertEqual(r.returncode, 2)

        self.mesh.restart("identity")
        self.im.wake()
        self.assertEqual(self.im.validate(a.token).reason, "revoked")
        self.assertEqual(self.im.validate(b.token).reason, "revoked")
        self.assertTrue(self.im.validate(c.token).valid)
        # Tokens issued after the subject revocation are good again.
        time.sleep(1.1)
        self.assertTrue(self.im.validate(self.im.issue(tenant="t2", instance="gone").token).valid)

    # -- the public API and local principals ----------------------------------
    def test_nsc_issue_id_token_for_root_and_a_mapped_uid(self):
        r = self.mesh.nsc("auth", "issue-id-token", "--audience", "sts.amazonaws.com", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        claims = self.im.pyjwt_decode(json.loads(r.stdout)["id_token"], audience="sts.amazonaws.com")
        self.assertEqual(claims["sub"], "admin")

        r = self.mesh.nsc("auth", "issue-id-token", "--audience", "a", "--audience", "b", "--duration", "10m",
                          "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        claims = self.im.pyjwt_decode(out["id_token"], audience="b")
        self.assertEqual(claims["exp"] - claims["iat"], 600)

        r = self.mesh.nsc("auth", "issue-id-token", "-o", "json")
        self.assertEqual(r.returncode, 2)
        # The public API refuses an empty audience with INVALID_ARGUMENT.
        gw = self.mesh.channel("gateway")
        with self.assertRaises(grpc.RpcError) as e:
            call(gw, PUBLIC, token_pb2.IssueIdTokenRequest(audience=""), token_pb2.IssueIdTokenResponse)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

        # A mapped uid gets its own identity; an unmapped one is refused.
        for d in (self.mesh.root, self.mesh.runtime_dir):
            os.chmod(d, 0o755)
        os.chmod(self.mesh.socket("gateway"), 0o666)
        r = self.mesh.nsc("auth", "issue-id-token", "--audience", "x", "-o", "json", user=LOCAL_UID)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        claims = self.im.pyjwt_decode(json.loads(r.stdout)["id_token"], audience="x")
        self.assertEqual((claims["sub"], claims["tenant_id"]), ("tenant-x/ci-runner", "tenant-x"))
        r = self.mesh.nsc("auth", "issue-id-token", "--audience", "x", "-o", "json", user=LOCAL_UID + 1)
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        # Admin verbs are refused to a non-admin uid, however it dresses up.
        r = self.mesh.nsc("auth", "rotate-keys", "-o", "json", user=LOCAL_UID)
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        code = ("import grpc,sys\n"
                "from hostmesh.identity.v1 import identity_pb2 as pb\n"
                "ch=grpc.insecure_channel(sys.argv[1])\n"
                "f=ch.unary_unary('/hostmesh.identity.v1.Identity/IssueInstanceToken',"
                "request_serializer=lambda m:m.SerializeToString(),"
                "response_deserializer=pb.IssueInstanceTokenResponse.FromString)\n"
                "try:\n"
                "  f(pb.IssueInstanceTokenRequest(tenant_id='t',instance_id='i',audience=['hostmesh']),timeout=10,"
                "metadata=[('x-hostmesh-peer-uid','0'),('x-hostmesh-subject','admin')])\n"
                "  print('ISSUED')\n"
                "except grpc.RpcError as e:\n"
                "  print(e.code().name)\n")
        p = subprocess.run([sys.executable, "-c", code, "unix:" + self.mesh.socket("gateway")], user=LOCAL_UID,
                           capture_output=True, text=True, timeout=30, env=self.mesh.env_for_other_users())
        self.assertEqual(p.stdout.strip(), "PERMISSION_DENIED", p.stderr)

    # -- exchange --------------------------------------------------------------
    def test_exchange_of_a_hostmesh_token(self):
        inst = self.im.issue(tenant="t3", instance="vm", seconds=300)
        r = self.mesh.nsc("auth", "exchange-token", "--token", inst.token, "--audience", "vault", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["issued_token_type"], "urn:ietf:params:oauth:token-type:jwt")
        self.assertEqual(out["token_type"], "N_A")
        claims = self.im.pyjwt_decode(out["access_token"], audience="vault")
        self.assertEqual((claims["sub"], claims["tenant_id"], claims["instance_id"]), ("t3/vm", "t3", "vm"))
        # Never longer-lived than the token it came from (default 1 h asked).
        self.assertLessEqual(claims["exp"], inst.expires_at.seconds)
        self.assertLessEqual(out["expires_in"], 300)
        # A token for another audience than hostmesh itself is not exchangeable.
        other = self.im.issue(tenant="t3", instance="vm", audience=("vault",))
        r = self.mesh.nsc("auth", "exchange-token", "--token", other.token, "--audience", "x", "-o", "json")
        self.assertEqual(r.returncode, 5)
        self.assertIn("audience_mismatch", r.stdout)
        r = self.mesh.nsc("auth", "exchange-token", "--token", inst.token, "--audience", "x", "--duration", "10m")
        self.assertEqual(r.returncode, 6, r.stdout + r.stderr)

    def test_external_issuer_exchange_and_each_refusal(self):
        ext_key = ec.generate_private_key(ec.SECP256R1())
        ext_jwk = json.loads(jwc_jwk.JWK.from_pyca(ext_key.public_key()).export_public())
        ext_jwk["kid"] = "gh-1"
        ext_jwks = json.dumps({"keys": [ext_jwk]})
        iss = "https://token.actions.example.com"
        now = int(time.time())

        def ext_token(key=ext_key, **over):
            c = {"iss": iss, "sub": "repo:acme/app:ref:refs/heads/main", "aud": "hostmesh-sts",
                 "iat": now, "exp": now + 300}
            c.update(over)
            return jwt.encode(c, key, algorithm="ES256", headers={"kid": "gh-1"})

        r = self.mesh.nsc("auth", "trust-relationships", "add", "--issuer", iss, "--jwks-json", ext_jwks,
                          "--subject", "repo:acme/*:ref:refs/heads/main", "--audience", "hostmesh-sts",
                          "--tenant", "acme", "--max-duration", "15m", "--id", "github", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(json.loads(r.stdout)["id"], "github")
        r = self.mesh.nsc("auth", "trust-relationships", "list", "-o", "json")
        self.assertEqual([t["id"] for t in json.loads(r.stdout)["trust_relationships"]], ["github"])

        r = self.mesh.nsc("auth", "exchange-token", "--token", ext_token(), "--audience", "internal-api", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        claims = self.im.pyjwt_decode(out["access_token"], audience="internal-api")
        self.assertEqual(claims["tenant_id"], "acme")
        self.assertEqual(claims["ext_iss"], iss)
        self.assertEqual(claims["ext_sub"], "repo:acme/app:ref:refs/heads/main")
        self.assertEqual(claims["iss"], self.im.issuer)
        self.assertLessEqual(claims["exp"] - claims["iat"], 900)
        self.assertEqual(out["trust_relationship_id"], "github")

        attacker = ec.generate_private_key(ec.SECP256R1())
        refusals = {
            "unknown_issuer": ext_token(iss="https://elsewhere.example"),
            "audience_mismatch": ext_token(aud="someone-else"),
            "subject_mismatch": ext_token(sub="repo:evil/app:ref:refs/heads/main"),
            "expired": ext_token(exp=now - 120, iat=now - 600),
            "bad_signature": ext_token(key=attacker),
        }
        for why, tok in refusals.items():
            r = self.mesh.nsc("auth", "exchange-token", "--token", tok, "--audience", "x", "-o", "json")
            self.assertEqual(r.returncode, 5, why + ": " + r.stdout + r.stderr)
            self.assertIn(why, json.loads(r.stdout)["error"]["message"])
        r = self.mesh.nsc("auth", "exchange-token", "--token", ext_token(), "--audience", "x", "--duration", "1h")
        self.assertEqual(r.returncode, 6, r.stdout + r.stderr)
        # An external token never becomes a credential for hostmesh itself,
        # not even among other audiences.
        for audiences in (["hostmesh"], ["x", "hostmesh"]):
            args = [a for aud in audiences for a in ("--audience", aud)]
            r = self.mesh.nsc("auth", "exchange-token", "--token", ext_token(), *args, "-o", "json")
            self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
            self.assertIn("internal_audience", json.loads(r.stdout)["error"]["message"])

        # Bad relationships are refused with the field named.
        r = self.mesh.nsc("auth", "trust-relationships", "add", "--issuer", iss, "--jwks-json", "{\"keys\":[]}",
                          "--subject", "*", "--audience", "a", "--tenant", "acme", "-o", "json")
        self.assertEqual(r.returncode, 6)
        self.assertIn("JWKS", r.stdout)

        r = self.mesh.nsc("auth", "trust-relationships", "remove", "github", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.mesh.nsc("auth", "trust-relationships", "remove", "github")
        self.assertEqual(r.returncode, 4)
        r = self.mesh.nsc("auth", "exchange-token", "--token", ext_token(), "--audience", "x", "-o", "json")
        self.assertEqual(r.returncode, 5)
        self.assertIn("unknown_issuer", r.stdout)

    def test_trust_relationship_with_jwks_file_survives_restart(self):
        ext_key = ec.generate_private_key(ec.SECP256R1())
        path = os.path.join(self.im.tmp, "ext-jwks.json")
        with open(path, "w") as f:
            f.write(jwc_jwk.JWKSet(keys=jwc_jwk.JWK.from_pyca(ext_key.public_key())).export(private_keys=False))
        iss = "https://vault.example"
        r = self.mesh.nsc("auth", "trust-relationships", "add", "--issuer", iss, "--jwks-file", path,
                          "--subject", "role:*", "--audience", "hm", "--tenant", "vaulted", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rid = json.loads(r.stdout)["id"]
        self.mesh.restart("identity")
        self.im.wake()
        now = int(time.time())
        tok = jwt.encode({"iss": iss, "sub": "role:ci", "aud": "hm", "exp": now + 60}, ext_key, algorithm="ES256")
        r = self.mesh.nsc("auth", "exchange-token", "--token", tok, "--audience", "x", "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(json.loads(r.stdout)["tenant_id"], "vaulted")
        self.assertEqual(self.mesh.nsc("auth", "trust-relationships", "remove", rid).returncode, 0)

    def test_export_oidc_writes_the_served_documents(self):
        out = os.path.join(self.im.tmp, "export")
        r = self.mesh.nsc("auth", "export-oidc", out, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(out, ".well-known", "openid-configuration")) as f:
            self.assertEqual(json.load(f), self.im.discovery())
        with open(os.path.join(out, ".well-known", "jwks.json")) as f:
            self.assertEqual(json.load(f), self.im.jwks())
        r = self.mesh.nsc("auth", "oidc-config", "-o", "json")
        self.assertEqual(json.loads(r.stdout)["issuer"], self.im.issuer)
        r = self.mesh.nsc("auth", "jwks", "-o", "json")
        self.assertEqual(json.loads(r.stdout), self.im.jwks())


class RotationTest(unittest.TestCase):
    """Short lifetimes so that a whole rotation fits in seconds."""

    def test_rotation_schedule_and_restart_keeps_keys(self):
        im = IdentityMesh(extra="jwks_max_age = 2s\nmax_token_duration = 8s\ndefault_token_duration = 8s\n"
                                "leeway = 0\nrotation_interval = 0\n[rpc]\ndrain_timeout = 1s\n").start()
        try:
            kid_of = lambda tok: jwt.get_unverified_header(tok)["kid"]  # noqa: E731
            t1 = im.issue()
            old = kid_of(t1.token)
            self.assertEqual([k["kid"] for k in im.jwks()["keys"]], [old])

            # Restart keeps the key; it never adds one.
            im.mesh.restart("identity")
            im.wake()
            self.assertEqual([k["kid"] for k in im.jwks()["keys"]], [old])
            v = im.validate(t1.token)
            self.assertTrue(v.valid, v.message)

            r = im.mesh.nsc("auth", "rotate-keys", "-o", "json")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            new = json.loads(r.stdout)["next_kid"]
            rotated_at = time.time()
            self.assertNotEqual(new, old)
            # Published at once, signing only after one max-age.
            self.assertEqual(sorted(k["kid"] for k in im.jwks()["keys"]), sorted([old, new]))
            self.assertEqual(kid_of(im.issue().token), old)
            t_old = im.issue()
            time.sleep(max(0, rotated_at + 2.2 - time.time()))
            t_new = im.issue()
            self.assertEqual(kid_of(t_new.token), new)
            # The old key's tokens still verify, independently too.
            self.assertTrue(im.validate(t_old.token).valid)
            self.assertEqual(im.pyjwt_decode(t_old.token)["jti"], t_old.jti)

            # After its tokens' longest lifetime the old key is gone, and so
            # are its tokens.
            time.sleep(max(0, rotated_at + 2 + 8 + 2.5 - time.time()))
            self.assertEqual([k["kid"] for k in im.jwks()["keys"]], [new])
            self.assertIn(im.validate(t_old.token).reason, ("expired", "unknown_kid"))
            forged = jwt.encode({"iss": im.issuer, "aud": "hostmesh", "sub": "t/i", "exp": int(time.time()) + 60},
                                ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": old})
            self.assertEqual(im.validate(forged).reason, "unknown_kid")
            self.assertTrue(im.validate(im.issue().token).valid)
        finally:
            im.stop()


class AlgorithmAndConfigTest(unittest.TestCase):
    def test_rs256_keys_verify_independently(self):
        im = IdentityMesh(extra="algorithm = RS256\n").start()
        try:
            r = im.issue()
            self.assertEqual(jwt.get_unverified_header(r.token)["alg"], "RS256")
            self.assertEqual(im.discovery()["id_token_signing_alg_values_supported"], ["RS256"])
            key = im.jwks()["keys"][0]
            self.assertEqual((key["kty"], key["alg"]), ("RSA", "RS256"))
            self.assertEqual(len(base64.urlsafe_b64decode(key["n"] + "==")), 256)
            self.assertEqual(im.pyjwt_decode(r.token)["jti"], r.jti)
            self.assertEqual(im.jwcrypto_claims(r.token)["jti"], r.jti)
            # An ES256 header on the RSA key's kid is refused for the algorithm.
            h, p, s = r.token.split(".")
            es_h = b64(json.dumps({"alg": "ES256", "kid": key["kid"], "typ": "JWT"}).encode())
            self.assertEqual(im.validate(es_h + "." + p + "." + s).reason, "alg_not_allowed")
        finally:
            im.stop()

    def test_federation_socket_passed_by_systemd_starts_the_daemon(self):
        """As with a .socket unit carrying FileDescriptorName=http: the first
        HTTP connection starts identityd, which serves it on the passed fd."""
        root = tempfile.mkdtemp(prefix="hm-identity-sa-")
        for d in ("run", "state", "etc"):
            os.makedirs(os.path.join(root, d))
        port = free_port()
        with open(os.path.join(root, "etc", "identity.conf"), "w") as f:
            f.write(f"[identity]\nissuer = https://127.0.0.1:{port}/tenant-a\n")
        proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", os.path.join(root, "run", "identity.sock"),
             "-l", f"127.0.0.1:{port}", "--fdname=grpc:http",
             "-E", "HOSTMESH_RUNTIME_DIR=" + os.path.join(root, "run"),
             "-E", "HOSTMESH_STATE_DIR=" + os.path.join(root, "state"),
             "-E", "HOSTMESH_CONFIG_DIR=" + os.path.join(root, "etc"), binary("hostmesh-identityd")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            end = time.time() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/tenant-a/.well-known/openid-configuration",
                                                timeout=5) as r:
                        doc = json.loads(r.read())
                    break
                except (urllib.error.URLError, ConnectionError):
                    if time.time() > end:
                        raise
                    time.sleep(0.1)
            # An issuer with a path serves below that path.
            self.assertEqual(doc["jwks_uri"], f"https://127.0.0.1:{port}/tenant-a/.well-known/jwks.json")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/tenant-a/.well-known/jwks.json", timeout=5) as r:
                self.assertEqual(len(json.loads(r.read())["keys"]), 1)
        finally:
            proc.terminate()  # the activator, or identityd it became
            proc.wait(timeout=15)

    def test_check_config_round_trips_and_refuses_bad_values(self):
        daemon = binary("hostmesh-identityd")
        src = os.path.join(os.environ.get("HOSTMESH_SOURCE_DIR", "."), "deploy", "config", "identity.conf")
        env = dict(os.environ, HOSTMESH_STATE_DIR=tempfile.mkdtemp())
        first = subprocess.run([daemon, "--config", src, "--check-config"], capture_output=True, text=True, env=env)
        self.assertEqual(first.returncode, 0, first.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(first.stdout)
            f.flush()
            second = subprocess.run([daemon, "--config", f.name, "--check-config"], capture_output=True, text=True,
                                    env=env)
        self.assertEqual(second.stdout, first.stdout)
        bad = {"issuer = http://plain.example": "https://",
               "issuer = https://x.example/": "trailing slash",
               "algorithm = HS256": "ES256 or RS256",
               "min_token_duration = 2h": "min_token_duration",
               "principals = abc:t:s": "UID must be a number",
               "principals = 1000-t": "UID:TENANT:SUBJECT"}
        for line, needle in bad.items():
            with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
                f.write("[identity]\n" + line + "\n")
                f.flush()
                r = subprocess.run([daemon, "--config", f.name, "--check-config"], capture_output=True, text=True,
                                   env=env)
            self.assertNotEqual(r.returncode, 0, line)
            self.assertIn(needle, r.stderr, line)


if __name__ == "__main__":
    unittest.main(verbosity=2)
