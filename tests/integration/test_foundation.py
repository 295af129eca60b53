# ctest: labels=integration timeout=300
"""The foundation end to end: nsc → gateway → every daemon, socket-activated.

The gateway is exercised with an independent backend (python3-grpcio) for
all four call kinds, and with the real daemons for health and errors."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

import grpc

from hm import Mesh, binary
SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus


class HealthResponse:
    """grpc.health.v1.HealthCheckResponse decoded by hand: field 1, varint."""

    def __init__(self, data):
        self.status = 0
        if data[:1] == b"\x08":
            self.status = data[1]

PARTS = ["identity", "dns", "disk", "vmm", "dockerproxy", "gateway"]
HERE = os.path.dirname(os.path.abspath(__file__))


def raw(channel, method, kind="unary_unary"):
    return getattr(channel, kind)(method, request_serializer=None, response_deserializer=None)


def health(channel, part=None, timeout=5):
    md = [("x-hostmesh-part", part)] if part and part != "gateway" else []
    stub = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                               response_deserializer=HealthResponse)
    return stub(b"", metadata=md, timeout=timeout)  # HealthCheckRequest{service: ""}


class Foundation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp_echo = None
        cls.mesh = Mesh()
        echo_sock = os.path.join(cls.mesh.root, "echo.sock")
        with open(os.path.join(cls.mesh.config_dir, "gateway.conf"), "w") as f:
            f.write("[gateway]\nroutes = test.echo.v1.=unix:%s\n" % echo_sock)
        cls.echo = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "echo_backend.py"), echo_sock],
                                    stdout=subprocess.PIPE, text=True)
        assert cls.echo.stdout.readline().strip() == "ready"
        cls.echo_sock = echo_sock
        cls.mesh.start()
        cls.gw = cls.mesh.channel("gateway")

    @classmethod
    def tearDownClass(cls):
        cls.mesh.__exit__(None, None, None)
        cls.echo.kill()
        cls.echo.wait()

    # -- health and nsc status ---------------------------------------------
    def test_health_of_every_part_through_the_gateway(self):
        for part in PARTS:
            r = health(self.gw, part)
            self.assertEqual(r.status, SERVING, part)

    def test_nsc_status_json_lists_all_parts_serving(self):
        r, out = self.mesh.nsc_json("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([s["name"] for s in out["services"]], PARTS)
        self.assertTrue(all(s["status"] == "SERVING" for s in out["services"]), out)

    def test_nsc_status_plain_is_a_table(self):
        r = self.mesh.nsc("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertTrue(lines[0].startswith("PART"))
        self.assertEqual(len(lines), 1 + len(PARTS))

    def test_nsc_without_gateway_says_how_to_start_it(self):
        env = dict(self.mesh.env, NSC_ENDPOINT="unix:" + os.path.join(self.mesh.root, "nowhere.sock"))
        r = subprocess.run([binary("nsc"), "status"], env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3)
        self.assertIn("not running", r.stderr)
        self.assertIn("hostmesh-dev up", r.stderr)
        r = subprocess.run([binary("nsc"), "-o", "json", "status"], env=env, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 3)
        self.assertEqual(json.loads(r.stdout)["error"]["code"], "UNAVAILABLE")

    def test_nsc_usage_errors_exit_2(self):
        self.assertEqual(self.mesh.nsc("no-such-verb").returncode, 2)
        self.assertEqual(self.mesh.nsc("--timeout", "soon", "status").returncode, 2)
        # -o after the verb is nsc's, not the verb's: a bad format is refused there.
        r = self.mesh.nsc("status", "-o", "yaml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("use plain or json", r.stderr)
        self.assertEqual(self.mesh.nsc("status", "extra").returncode, 2)
        r = self.mesh.nsc("status", "--output=json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(json.loads(r.stdout)["services"]), 6)
        r = self.mesh.nsc("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Exit codes", r.stdout)

    # -- routing and errors -------------------------------------------------
    def test_unknown_method_on_a_backend_is_unimplemented(self):
        with self.assertRaises(grpc.RpcError) as e:
            raw(self.gw, "/hostmesh.dns.v1.Dns/NoSuchMethod")(b"", timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertIn("NoSuchMethod", e.exception.details())

    def test_unroutable_service_is_unimplemented(self):
        t = time.time()
        with self.assertRaises(grpc.RpcError) as e:
            raw(self.gw, "/nobody.v1.Nothing/Call")(b"", timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertLess(time.time() - t, 1.0)

    def test_malformed_request_is_invalid_argument_and_nothing_crashes(self):
        pid = self.mesh.wait_running("dns") if False else None
        with self.assertRaises(grpc.RpcError) as e:
            raw(self.gw, "/grpc.health.v1.Health/Check")(b"\xff\xff\xff\xff", metadata=[("x-hostmesh-part", "dns")],
                                                          timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(health(self.gw, "dns").status, SERVING)

    def test_oversize_request_is_refused_and_nothing_crashes(self):
        big = b"\x0a" + b"\xff\xff\xff\x02" + b"x" * (5 << 20)  # field 1, length ~5 MiB
        with self.assertRaises(grpc.RpcError) as e:
            raw(self.gw, "/grpc.health.v1.Health/Check")(big, metadata=[("x-hostmesh-part", "disk")], timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(health(self.gw, "disk").status, SERVING)

    def test_forged_identity_metadata_is_replaced_by_the_gateway(self):
        out = raw(self.gw, "/test.echo.v1.Echo/Peer")(
            b"", metadata=[("x-hostmesh-peer-uid", "0"), ("x-hostmesh-subject", "admin")], timeout=5).decode()
        fields = dict(line.split("=", 1) for line in out.splitlines())
        self.assertEqual(fields["x-hostmesh-peer-uid"], str(os.getuid()))
        self.assertEqual(fields["x-hostmesh-peer-pid"], str(os.getpid()))
        self.assertNotIn("x-hostmesh-subject", fields)

    # -- forwarding: all call kinds ------------------------------------------
    def test_unary_with_metadata_both_ways_and_trailers(self):
        call = raw(self.gw, "/test.echo.v1.Echo/Unary").with_call
        resp, c = call(b"hello", metadata=[("echo-a", "1")], timeout=5)
        self.assertEqual(resp, b"hello")
        self.assertIn(("echo-a", "1"), c.initial_metadata())
        self.assertIn(("backend-initial", "yes"), c.initial_metadata())
        self.assertIn(("backend-trailer", "yes"), c.trailing_metadata())

    def test_backend_status_and_message_pass_through(self):
        for code in ("NOT_FOUND", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"):
            with self.assertRaises(grpc.RpcError) as e:
                raw(self.gw, "/test.echo.v1.Echo/Unary")(b"x", metadata=[("fail-with", code)], timeout=5)
            self.assertEqual(e.exception.code(), getattr(grpc.StatusCode, code))
            self.assertEqual(e.exception.details(), "failing as asked: " + code)

    def test_10k_streamed_messages_arrive_in_order(self):
        got = [int(m) for m in raw(self.gw, "/test.echo.v1.Echo/ServerStream", "unary_stream")(b"10000", timeout=60)]
        self.assertEqual(got, list(range(10000)))

    def test_client_streaming(self):
        resp = raw(self.gw, "/test.echo.v1.Echo/ClientStream", "stream_unary")(
            iter([b"x" * i for i in range(1000)]), timeout=30)
        self.assertEqual(resp, b"1000:%d" % sum(range(1000)))

    def test_bidi_streaming_echoes_in_order(self):
        msgs = [b"m%d" % i for i in range(500)]
        got = list(raw(self.gw, "/test.echo.v1.Echo/Bidi", "stream_stream")(iter(msgs), timeout=30))
        self.assertEqual(got, msgs)

    def test_expired_deadline_propagates_and_cancels_the_backend(self):
        flag = self.echo_sock + ".cancelled"
        if os.path.exists(flag):
            os.unlink(flag)
        t = time.time()
        with self.assertRaises(grpc.RpcError) as e:
            raw(self.gw, "/test.echo.v1.Echo/Slow")(b"", timeout=0.5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.time() - t, 2.0)
        end = time.time() + 3
        while not os.path.exists(flag) and time.time() < end:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(flag), "backend never saw the cancellation")

    def test_caller_cancellation_reaches_the_backend(self):
        flag = self.echo_sock + ".cancelled"
        if os.path.exists(flag):
            os.unlink(flag)
        fut = raw(self.gw, "/test.echo.v1.Echo/Slow").future(b"", timeout=30)
        time.sleep(0.3)
        fut.cancel()
        end = time.time() + 3
        while not os.path.exists(flag) and time.time() < end:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(flag), "backend never saw the cancellation")

    # -- access -------------------------------------------------------------
    def test_caller_running_as_nobody_is_denied(self):
        os.chmod(self.mesh.root, 0o755)
        os.chmod(self.mesh.runtime_dir, 0o755)
        os.chmod(self.mesh.socket("gateway"), 0o666)
        code = ("import grpc,sys\n"
                "ch=grpc.insecure_channel('unix:'+sys.argv[1])\n"
                "try:\n"
                "  ch.unary_unary('/grpc.health.v1.Health/Check')(b'',timeout=5); print('OK')\n"
                "except grpc.RpcError as e: print(e.code().name, e.details())\n")
        r = subprocess.run(["/usr/bin/python3", "-c", code, self.mesh.socket("gateway")], user=65534,
                           capture_output=True, text=True, timeout=30)
        self.assertTrue(r.stdout.startswith("PERMISSION_DENIED"), r.stdout + r.stderr)
        self.assertIn("hostmesh", r.stdout)

    # -- backend failures ---------------------------------------------------
    def test_zz_killed_backend_is_unavailable_quickly_and_named(self):
        self.mesh.stop_part("dockerproxy")
        t = time.time()
        with self.assertRaises(grpc.RpcError) as e:
            health(self.gw, "dockerproxy", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertLess(time.time() - t, 2.0)
        self.assertIn("dockerproxy", e.exception.details())
        r, out = self.mesh.nsc_json("status")
        self.assertEqual(r.returncode, 1)
        st = {s["name"]: s["status"] for s in out["services"]}
        self.assertEqual(st["dockerproxy"], "UNAVAILABLE")
        self.assertEqual(st["dns"], "SERVING")

    def test_restarted_backend_serves_again(self):
        health(self.gw, "disk")
        self.mesh.kill("disk", signal.SIGKILL)
        end = time.time() + 10
        while True:
            try:
                self.assertEqual(health(self.gw, "disk", timeout=2).status, SERVING)
                break
            except grpc.RpcError:
                if time.time() > end:
                    raise
                time.sleep(0.1)

    def test_gateway_metrics_count_calls_per_method(self):
        health(self.gw, "dns")
        stub = self.gw.unary_unary("/hostmesh.gateway.v1.Gateway/GetMetrics", request_serializer=None,
                                   response_deserializer=None)
        text = stub(b"", timeout=10).decode(errors="replace")
        self.assertIn('hostmesh_rpc_calls_total{part="gateway",method="/grpc.health.v1.Health/Check",code="OK"}', text)
        self.assertIn('part="dns"', text)


class IdleExit(unittest.TestCase):
    def test_idle_daemon_exits_and_is_activated_again(self):
        with Mesh(configs={"identity": "[rpc]\nidle_exit = 1s\n"}) as mesh:
            gw = mesh.channel("gateway")
            self._idle_cycle(mesh, gw)

    def _idle_cycle(self, mesh, gw):
        health(gw, "identity")
        pid = mesh.wait_running("identity")
        end = time.time() + 8
        while time.time() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            self.fail("identity did not exit on idle")
        end = time.time() + 10
        while True:
            try:
                self.assertEqual(health(gw, "identity", timeout=2).status,
                                 SERVING)
                break
            except grpc.RpcError:
                if time.time() > end:
                    raise
                time.sleep(0.1)


class Drain(unittest.TestCase):
    def test_sigterm_drains_then_cancels_in_flight_calls_never_hangs(self):
        with Mesh() as mesh:
            echo_sock = os.path.join(mesh.root, "echo.sock")
            with open(os.path.join(mesh.config_dir, "gateway.conf"), "w") as f:
                f.write("[rpc]\ndrain_timeout = 1s\n[gateway]\nroutes = test.echo.v1.=unix:%s\n" % echo_sock)
            echo = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "echo_backend.py"), echo_sock],
                                    stdout=subprocess.PIPE, text=True)
            try:
                self.assertEqual(echo.stdout.readline().strip(), "ready")
                gw = mesh.channel("gateway")
                slow = raw(gw, "/test.echo.v1.Echo/Slow").future(b"", timeout=30)
                time.sleep(0.3)
                pid = mesh.wait_running("gateway")
                t = time.time()
                os.kill(pid, signal.SIGTERM)
                with self.assertRaises(grpc.RpcError) as e:
                    slow.result(timeout=10)
                self.assertIn(e.exception.code(), (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE))
                self.assertLess(time.time() - t, 4.0)
                end = time.time() + 5
                while time.time() < end:
                    try:
                        os.kill(pid, 0)
                        time.sleep(0.05)
                    except ProcessLookupError:
                        break
                else:
                    self.fail("gateway did not exit after draining")
            finally:
                echo.kill()
                echo.wait()


class CheckConfig(unittest.TestCase):
    def test_every_daemon_prints_a_config_that_parses_again(self):
        for part in PARTS:
            exe = binary("hostmesh-%sd" % part)
            r = subprocess.run([exe, "--check-config", "--config", "/dev/null"], capture_output=True, text=True,
                               timeout=10)
            self.assertEqual(r.returncode, 0, part + r.stderr)
            path = "/tmp/hostmesh-checkconfig-%d-%s.conf" % (os.getpid(), part)
            with open(path, "w") as f:
                f.write(r.stdout)
            r2 = subprocess.run([exe, "--check-config", "--config", path], capture_output=True, text=True, timeout=10)
            os.unlink(path)
            self.assertEqual(r2.returncode, 0, part + r2.stderr)
            self.assertEqual(r2.stdout, r.stdout, part)

    def test_bad_config_names_file_and_line(self):
        path = "/tmp/hostmesh-badconfig-%d.conf" % os.getpid()
        with open(path, "w") as f:
            f.write("[rpc]\nidle_exit = 1s\nno_such_key = 1\n")
        r = subprocess.run([binary("hostmesh-gatewayd"), "--check-config", "--config", path], capture_output=True,
                           text=True, timeout=10)
        os.unlink(path)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(path + ":3", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
