# ctest: labels=integration timeout=300
"""The Connect protocol on the gateway's listeners, beside gRPC on the same
port: curl speaks HTTP/1.1 and HTTP/2 (TLS with ALPN on TCP with a bearer
token; plain, with prior knowledge for HTTP/2, on the unix socket with peer
credentials) and must get Connect answers — JSON and binary unary calls, GET
for idempotent methods, server-streaming envelopes with the end-stream
message, Connect error bodies with the spec's HTTP statuses — while gRPC
keeps working on the same port, also as the first request of an HTTP/2
connection. /metrics is served by the same HTTP library."""

import json
import os
import shutil
import socket
import struct
import subprocess
import time
import unittest

import grpc

from hm import Mesh

from test_gateway_bearer import TokenSource, free_port, make_cert

COMPUTE = "/namespace.cloud.compute.v1beta.ComputeService/"


def envelope(payload, flags=0):
    return struct.pack(">BI", flags, len(payload)) + payload


def envelopes(data):
    out = []
    while data:
        flags, n = struct.unpack(">BI", data[:5])
        out.append((flags, data[5:5 + n]))
        data = data[5 + n:]
    return out


class Connect(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mesh = Mesh()
        root = cls.mesh.root
        cls.cert, key = make_cert(root)
        cls.port = free_port()
        cls.metrics_port = free_port()
        with open(os.path.join(cls.mesh.config_dir, "gateway.conf"), "w") as f:
            f.write("[gateway]\ntcp_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                    "metrics_listen = 127.0.0.1:%d\n" % (cls.port, cls.cert, key, cls.metrics_port))
        cls.mesh.start()
        cls.mesh.nsc("status")
        cls.tokens = TokenSource(cls.mesh)
        cls.tokens.wake()
        # A tenant's token: instances belong to tenants.
        cls.token = cls.tokens.issue(tenant="acme", instance="vm1").token

    @classmethod
    def tearDownClass(cls):
        cls.mesh.__exit__(None, None, None)

    def curl(self, path, data=b"", ctype="application/json", token=True, extra=(), unix=False, method="POST",
             http="1.1"):
        """Returns (HTTP status, headers dict, body bytes). http: "1.1", or
        "2" (ALPN on TLS, prior knowledge on the unix socket)."""
        version = ["--http1.1"] if http == "1.1" else ["--http2-prior-knowledge"] if unix else ["--http2"]
        args = ["curl", "-sS"] + version + ["-X", method, "-D", "-", "-o", "-", "--max-time", "30"]
        if unix:
            args += ["--unix-socket", self.mesh.socket("gateway"), "http://localhost" + path]
        else:
            args += ["--cacert", self.cert, "--resolve", "localhost:%d:127.0.0.1" % self.port,
                     "https://localhost:%d%s" % (self.port, path)]
        if ctype:
            args += ["-H", "content-type: " + ctype]
        if not any(h.lower().startswith("connect-protocol-version") for h in extra):
            args += ["-H", "connect-protocol-version: 1"]
        if token and not unix:
            args += ["-H", "authorization: Bearer " + (token if isinstance(token, str) else self.token)]
        for h in extra:
            args += ["-H", h]
        if method == "POST":
            args += ["--data-binary", "@-"]
        r = subprocess.run(args, input=data, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        self.assertEqual(lines[0].split()[0], "HTTP/1.1" if http == "1.1" else "HTTP/2", lines[0])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers, body

    def error_of(self, status, headers, body, code, http):
        self.assertEqual(status, http, body)
        self.assertTrue(headers["content-type"].startswith("application/json"), headers)
        err = json.loads(body)
        self.assertEqual(err["code"], code, err)
        return err.get("message", "")

    # ---- unary ----------------------------------------------------------------

    def test_list_instances_json_over_tls_with_bearer_token(self):
        status, headers, body = self.curl(COMPUTE + "ListInstances", b"{}")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertIsInstance(json.loads(body), dict)

    def test_unix_socket_speaks_connect_with_peer_credentials(self):
        status, headers, body = self.curl(COMPUTE + "ListInstances", b'{"maxEntries": "5"}', unix=True)
        self.assertEqual(status, 200, body)
        self.assertIsInstance(json.loads(body), dict)

    def test_binary_proto_unary_describe_unknown_instance_is_not_found(self):
        # DescribeInstanceRequest{instance_id = "nope"}: field 1, length 4
        status, headers, body = self.curl(COMPUTE + "DescribeInstance", b"\x0a\x04nope", ctype="application/proto")
        msg = self.error_of(status, headers, body, "not_found", 404)
        self.assertIn("nope", msg)

    def test_json_describe_unknown_instance_is_not_found(self):
        status, headers, body = self.curl(COMPUTE + "DescribeInstance", b'{"instanceId": "nope"}')
        self.error_of(status, headers, body, "not_found", 404)

    def test_keep_alive_serves_two_calls_on_one_connection(self):
        # curl reuses the connection for two URLs given at once.
        args = ["curl", "-sS", "--http1.1", "--cacert", self.cert, "--resolve", "localhost:%d:127.0.0.1" % self.port,
                "-H", "content-type: application/json", "-H", "authorization: Bearer " + self.token,
                "--data", "{}", "-w", "%{num_connects}\\n", "-o", "/dev/null", "-o", "/dev/null",
                "https://localhost:%d%sListInstances" % (self.port, COMPUTE),
                "https://localhost:%d%sListInstances" % (self.port, COMPUTE)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout.split(), ["1", "0"], r.stderr)

    def test_gateway_health_needs_no_token(self):
        status, headers, body = self.curl("/grpc.health.v1.Health/Check", b"{}", token=False)
        self.assertEqual((status, json.loads(body)), (200, {"status": "SERVING"}))

    # ---- errors ---------------------------------------------------------------

    def test_bad_json_is_invalid_argument(self):
        msg = self.error_of(*self.curl(COMPUTE + "ListInstances", b'{"maxEntries": '), "invalid_argument", 400)
        self.assertIn("invalid JSON", msg)

    def test_unknown_field_is_refused_naming_it(self):
        msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b'{"volumes": [{"name": "a"}]}'),
                            "invalid_argument", 400)
        self.assertIn('unknown field "volumes"', msg)
        self.assertIn("CreateInstanceRequest", msg)

    def test_binary_fields_hostmesh_lacks_are_refused_by_number(self):
        # CreateInstanceRequest field 12 (volumes), empty: tag 0x62, length 0
        msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b"\x62\x00", ctype="application/proto"),
                            "invalid_argument", 400)
        self.assertIn("field 12 of namespace.cloud.compute.v1beta.CreateInstanceRequest", msg)
        # shape (field 1) { field 9 = 1 }: nested messages are looked at too
        msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b"\x0a\x02\x48\x01", ctype="application/proto"),
                            "invalid_argument", 400)
        self.assertIn("field 9 of namespace.cloud.compute.v1beta.InstanceShape", msg)
        # DescribeInstanceRequest { instance_id = "x", field 7 = 1 }
        msg = self.error_of(*self.curl(COMPUTE + "DescribeInstance", b"\x0a\x01x\x38\x01", ctype="application/proto"),
                            "invalid_argument", 400)
        self.assertIn("field 7 of namespace.cloud.compute.v1beta.DescribeInstanceRequest", msg)
        # containers (9) [ { field 15 = 1 } ]: the path says where
        msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b"\x4a\x02\x78\x01", ctype="application/proto"),
                            "invalid_argument", 400)
        self.assertIn("containers[0]: field 15 of namespace.cloud.compute.v1beta.ContainerRequest", msg)

    def test_binary_wrong_wire_types_name_the_field(self):
        # shape (1) { virtual_cpu (1) as length-delimited, empty }: named by its
        # JSON path like the JSON path names it, not "not a valid message".
        for http in ("1.1", "2"):
            msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b"\x0a\x02\x0a\x00",
                                           ctype="application/proto", http=http), "invalid_argument", 400)
            self.assertIn("shape.virtualCpu: length-delimited bytes where a varint (virtual_cpu) is expected", msg)
        # labels (5) [ {}, { name (1) as varint 1 } ]
        msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b"\x2a\x00\x2a\x02\x08\x01",
                                       ctype="application/proto"), "invalid_argument", 400)
        self.assertIn("labels[1].name: a varint where length-delimited bytes (name) is expected", msg)
        # A length running past the end.
        msg = self.error_of(*self.curl(COMPUTE + "DescribeInstance", b"\x0a\x09ab", ctype="application/proto"),
                            "invalid_argument", 400)
        self.assertIn("instanceId: the length runs past the end", msg)

    def test_wrong_types_and_enum_names_are_refused(self):
        msg = self.error_of(*self.curl(COMPUTE + "ListInstances", b'{"labelFilter": [{"op": "LIKE"}]}'),
                            "invalid_argument", 400)
        self.assertIn("labelFilter[0].op", msg)
        msg = self.error_of(*self.curl(COMPUTE + "ListInstances", b'{"maxEntries": "ten"}'), "invalid_argument", 400)
        self.assertIn("maxEntries", msg)

    def test_missing_and_bad_tokens_are_unauthenticated(self):
        msg = self.error_of(*self.curl(COMPUTE + "ListInstances", b"{}", token=False), "unauthenticated", 401)
        self.assertIn("Bearer", msg)
        self.error_of(*self.curl(COMPUTE + "ListInstances", b"{}", token="a.b.c"), "unauthenticated", 401)

    def test_unknown_method_is_unimplemented_with_its_name(self):
        msg = self.error_of(*self.curl(COMPUTE + "WakeInstance", b"{}"), "unimplemented", 501)
        self.assertIn("namespace.cloud.compute.v1beta.ComputeService/WakeInstance", msg)
        # Beyond the public API a bearer caller is refused first, as over gRPC;
        # a local caller learns that nothing serves it.
        self.error_of(*self.curl("/no.such.v1.Service/Call", b"{}"), "permission_denied", 403)
        msg = self.error_of(*self.curl("/no.such.v1.Service/Call", b"{}", unix=True), "unimplemented", 501)
        self.assertIn("no.such.v1.Service/Call", msg)

    def test_admin_methods_are_denied_to_bearer_callers_not_to_local_root(self):
        self.error_of(*self.curl("/hostmesh.dns.v1.Dns/GetStats", b"{}"), "permission_denied", 403)
        status, headers, body = self.curl("/hostmesh.dns.v1.Dns/GetStats", b"{}", unix=True)
        self.assertEqual(status, 200, body)

    def test_protocol_errors(self):
        status, headers, body = self.curl(COMPUTE + "ListInstances", b"{}", ctype="text/plain")
        self.assertEqual(status, 415)
        self.error_of(*self.curl(COMPUTE + "ListInstances", b"{}", extra=["connect-protocol-version: 2"]),
                      "invalid_argument", 400)
        self.error_of(*self.curl(COMPUTE + "ListInstances", b"{}", extra=["connect-timeout-ms: 12345678901"]),
                      "invalid_argument", 400)
        self.error_of(*self.curl(COMPUTE + "ListInstances", b"{}", extra=["content-encoding: gzip"]),
                      "unimplemented", 501)
        # GET is for methods marked idempotent only (see test_get_*).
        status, headers, body = self.curl(COMPUTE + "CreateInstance", method="GET")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("allow"), "POST")
        self.assertIn("NO_SIDE_EFFECTS", json.loads(body)["message"])
        status, headers, body = self.curl(COMPUTE + "ListInstances", method="DELETE")
        self.assertEqual(status, 405)

    def test_http_errors_from_the_parser(self):
        # A body over the 4 MiB limit is refused before it is read whole.
        big = b'{"instanceId": "' + b"a" * (5 << 20) + b'"}'
        status, headers, body = self.curl(COMPUTE + "DescribeInstance", big)
        self.assertEqual(status, 413)
        # Garbage that is neither HTTP/1.1 nor HTTP/2 on the unix socket.
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.mesh.socket("gateway"))
        s.sendall(b"HELLO\r\n\r\n")
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 400 Bad Request"))
        s.close()

    def test_timeout_ms_reaches_the_backend(self):
        # WaitInstance on an unknown instance answers at once; a 1 ms budget
        # either answers not_found or deadline_exceeded, never hangs.
        status, headers, body = self.curl(COMPUTE + "WaitInstanceSync", b'{"instanceId": "nope"}',
                                          extra=["connect-timeout-ms: 1"])
        self.assertIn(json.loads(body)["code"], ("not_found", "deadline_exceeded"))

    # ---- streaming ------------------------------------------------------------

    def test_server_streaming_error_arrives_in_the_end_stream_message(self):
        status, headers, body = self.curl(COMPUTE + "WaitInstance", envelope(b'{"instanceId": "nope"}'),
                                          ctype="application/connect+json")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/connect+json")
        frames = envelopes(body)
        self.assertEqual(frames[-1][0], 2)
        self.assertEqual(json.loads(frames[-1][1])["error"]["code"], "not_found")

    def test_streaming_envelope_errors(self):
        status, headers, body = self.curl(COMPUTE + "WaitInstance", b"\x00\x00\x00",
                                          ctype="application/connect+json")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(envelopes(body)[-1][1])["error"]["code"], "invalid_argument")
        status, headers, body = self.curl(COMPUTE + "WaitInstance", envelope(b"{}", flags=1),
                                          ctype="application/connect+json")
        self.assertEqual(json.loads(envelopes(body)[-1][1])["error"]["code"], "invalid_argument")

    # ---- GET for idempotent unary calls ------------------------------------------

    def get(self, method, query, http="1.1", unix=False, token=True):
        return self.curl(COMPUTE + method + "?" + query, ctype=None, method="GET", http=http, unix=unix, token=token)

    def test_get_json_and_base64_proto(self):
        import base64
        import urllib.parse
        for http in ("1.1", "2"):
            q = "connect=v1&encoding=json&message=" + urllib.parse.quote('{"maxEntries":"5"}')
            status, headers, body = self.get("ListInstances", q, http=http)
            self.assertEqual(status, 200, body)
            self.assertIsInstance(json.loads(body), dict)
            # DescribeInstanceRequest{instance_id = "nope"} as unpadded base64url
            msg = base64.urlsafe_b64encode(b"\x0a\x04nope").decode().rstrip("=")
            q = "connect=v1&encoding=proto&base64=1&compression=identity&message=" + msg
            err = self.error_of(*self.get("DescribeInstance", q, http=http), "not_found", 404)
            self.assertIn("nope", err)
        status, headers, body = self.get("ListInstances", "encoding=json&message=%7B%7D", unix=True, http="2")
        self.assertEqual(status, 200, body)

    def test_get_errors(self):
        # Not idempotent: 405 with a Connect error.
        status, headers, body = self.get("DestroyInstance", "connect=v1&encoding=json&message=%7B%7D")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("allow"), "POST")
        self.assertEqual(json.loads(body)["code"], "unimplemented")
        self.error_of(*self.get("ListInstances", "connect=v1&message=%7B%7D"), "invalid_argument", 415)
        self.error_of(*self.get("ListInstances", "connect=v1&encoding=xml&message=%7B%7D"), "invalid_argument", 415)
        self.error_of(*self.get("ListInstances", "connect=v2&encoding=json&message=%7B%7D"), "invalid_argument", 400)
        self.error_of(*self.get("ListInstances", "connect=v1&encoding=json&compression=gzip&message=%7B%7D"),
                      "unimplemented", 501)
        self.error_of(*self.get("ListInstances", "connect=v1&encoding=json&message=%7"), "invalid_argument", 400)
        self.error_of(*self.get("DescribeInstance", "connect=v1&encoding=proto&base64=1&message=%21%21"),
                      "invalid_argument", 400)
        msg = self.error_of(*self.get("ListInstances", "connect=v1&encoding=json&message=%7B%22x%22%3A1%7D"),
                            "invalid_argument", 400)
        self.assertIn('unknown field "x"', msg)
        self.error_of(*self.get("ListInstances", "connect=v1&encoding=json&message=%7B%7D", token=False),
                      "unauthenticated", 401)

    # ---- HTTP/2: Connect beside gRPC -------------------------------------------

    def test_http2_over_tls_alpn_serves_connect_json_and_proto(self):
        status, headers, body = self.curl(COMPUTE + "ListInstances", b"{}", http="2")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertIsInstance(json.loads(body), dict)
        # DescribeInstanceRequest{instance_id = "nope"}: field 1, length 4
        msg = self.error_of(*self.curl(COMPUTE + "DescribeInstance", b"\x0a\x04nope", ctype="application/proto",
                                       http="2"), "not_found", 404)
        self.assertIn("nope", msg)

    def test_http2_prior_knowledge_on_the_unix_socket(self):
        status, headers, body = self.curl(COMPUTE + "ListInstances", b'{"maxEntries": "5"}', unix=True, http="2")
        self.assertEqual(status, 200, body)
        self.assertIsInstance(json.loads(body), dict)
        self.error_of(*self.curl(COMPUTE + "DescribeInstance", b"\x0a\x04nope", ctype="application/proto",
                                 unix=True, http="2"), "not_found", 404)

    def test_http2_errors_are_connect_errors(self):
        msg = self.error_of(*self.curl(COMPUTE + "ListInstances", b'{"maxEntries": ', http="2"),
                            "invalid_argument", 400)
        self.assertIn("invalid JSON", msg)
        msg = self.error_of(*self.curl(COMPUTE + "CreateInstance", b'{"volumes": [{"name": "a"}]}', http="2"),
                            "invalid_argument", 400)
        self.assertIn('unknown field "volumes"', msg)
        msg = self.error_of(*self.curl(COMPUTE + "ListInstances", b"{}", token=False, http="2"),
                            "unauthenticated", 401)
        self.assertIn("Bearer", msg)
        msg = self.error_of(*self.curl(COMPUTE + "WakeInstance", b"{}", http="2"), "unimplemented", 501)
        self.assertIn("namespace.cloud.compute.v1beta.ComputeService/WakeInstance", msg)
        status, headers, body = self.curl(COMPUTE + "ListInstances", b"{}", ctype="text/plain", http="2")
        self.assertEqual(status, 415)
        # Over the body limit: lib/http answers 413 without the handler.
        big = b'{"instanceId": "' + b"a" * (5 << 20) + b'"}'
        status, headers, body = self.curl(COMPUTE + "DescribeInstance", big, http="2")
        self.assertEqual(status, 413)

    def test_http2_oversize_head_is_431(self):
        # 20 KiB of one header against the 16 KiB head limit: lib/http answers.
        status, headers, body = self.curl(COMPUTE + "ListInstances", b"{}", extra=["x-big: " + "a" * 20000],
                                          http="2")
        self.assertEqual(status, 431)

    @unittest.skipUnless(shutil.which("node"), "node is needed for an HTTP/2 client that mixes protocols")
    def test_http2_grpc_call_on_a_connect_connection_is_refused_in_grpc_terms(self):
        # Node's http2 client, one connection: a Connect call first (it keeps
        # the connection in lib/http), then a gRPC call on the same connection.
        script = r"""
const http2 = require("node:http2"), net = require("node:net");
const s = http2.connect("http://localhost", { createConnection: () => net.connect(process.argv[1]) });
function call(headers, body) {
  return new Promise((resolve, reject) => {
    const r = s.request(Object.assign({ ":method": "POST", ":path": process.argv[2] }, headers));
    let out = {}, data = [];
    r.on("response", (h) => Object.assign(out, h));
    r.on("trailers", (h) => Object.assign(out, h));
    r.on("data", (d) => data.push(d));
    r.on("end", () => resolve(Object.assign(out, { body: Buffer.concat(data).toString("hex") })));
    r.on("error", reject);
    r.end(body);
  });
}
(async () => {
  const a = await call({ "content-type": "application/json" }, "{}");
  const b = await call({ "content-type": "application/grpc", te: "trailers" }, Buffer.alloc(5));
  console.log(JSON.stringify([a, b]));
  s.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""
        r = subprocess.run(["node", "-e", script, self.mesh.socket("gateway"), COMPUTE + "ListInstances"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        first, second = json.loads(r.stdout)
        self.assertEqual(first[":status"], 200, first)
        self.assertEqual(first["content-type"], "application/json")
        self.assertEqual(second[":status"], 200, second)
        self.assertEqual(second["content-type"], "application/grpc")
        self.assertEqual(second["grpc-status"], "14", second)
        self.assertIn("Open a new connection for gRPC", second["grpc-message"])

    def test_http2_server_streaming_ends_with_the_end_stream_message(self):
        for unix in (False, True):
            status, headers, body = self.curl(COMPUTE + "WaitInstance", envelope(b'{"instanceId": "nope"}'),
                                              ctype="application/connect+json", unix=unix, http="2")
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], "application/connect+json")
            frames = envelopes(body)
            self.assertEqual(frames[-1][0], 2)
            self.assertEqual(json.loads(frames[-1][1])["error"]["code"], "not_found")

    def test_http2_first_grpc_request_goes_to_grpc_core(self):
        # curl as a gRPC client: an empty ListInstancesRequest in a gRPC frame.
        # gRPC core answers with a gRPC frame (a Connect reply would be JSON).
        status, headers, body = self.curl(COMPUTE + "ListInstances", envelope(b""), ctype="application/grpc",
                                          extra=["te: trailers"], http="2")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/grpc")
        flags, n = struct.unpack(">BI", body[:5])
        self.assertEqual(flags, 0, body)
        self.assertIn(b"grpc-status: 0", body[5 + n:], body)

    def test_http2_garbage_after_the_preface_closes_the_connection(self):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(self.mesh.socket("gateway"))
        # The preface, then a frame header claiming 16 MiB of HEADERS on stream 0.
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff\xff\xff\x01\x04\x00\x00\x00\x00" + b"x" * 64)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        # Our SETTINGS (type 4) first, then a GOAWAY (type 7) before the close.
        self.assertEqual(data[3], 4, data)
        self.assertIn(b"\x07\x00\x00\x00\x00\x00", data, data)

    # ---- gRPC on the same port, and /metrics ----------------------------------

    def test_grpc_still_served_on_the_same_port(self):
        with open(self.cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        ch = grpc.secure_channel("127.0.0.1:%d" % self.port, creds,
                                 options=(("grpc.ssl_target_name_override", "localhost"),))
        try:
            fn = ch.unary_unary(COMPUTE + "ListInstances")
            fn(b"", metadata=[("authorization", "Bearer " + self.token)], timeout=10)
            with self.assertRaises(grpc.RpcError) as e:
                fn(b"", timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        finally:
            ch.close()

    def test_metrics_on_the_shared_http_library(self):
        r = subprocess.run(["curl", "-sS", "-i", "http://127.0.0.1:%d/metrics" % self.metrics_port],
                           capture_output=True, text=True, timeout=30)
        self.assertTrue(r.stdout.startswith("HTTP/1.1 200 OK"), r.stdout[:200])
        self.assertIn("hostmesh_rpc_calls_total", r.stdout)
        r = subprocess.run(["curl", "-sS", "-i", "-X", "DELETE", "http://127.0.0.1:%d/metrics" % self.metrics_port],
                           capture_output=True, text=True, timeout=30)
        self.assertTrue(r.stdout.startswith("HTTP/1.1 405"), r.stdout[:200])


if __name__ == "__main__":
    unittest.main()
