# ctest: labels=integration timeout=900
"""vmmd as remote callers see it: bearer tokens of two tenants on the
gateway's TCP listener (python3-grpcio as the client), real QEMU micro-VMs.

Each tenant sees and touches only its own instances; a caller without a
tenant gets none; the instance token in the guest is readable by root only;
a reader that stops reading a command's output or a log stream has its
stream ended at vmmd's queue cap instead of making vmmd buffer without
limit."""

import os
import re
import socket
import sys
import time
import unittest

import grpc

from hm import BUILD, Mesh
from test_vmm import QemuReaper, have_guest_image, vmm_config

sys.path.insert(0, os.path.join(BUILD, "python"))
from google.protobuf import duration_pb2, empty_pb2  # noqa: E402
from hostmesh.common.v1 import metrics_pb2  # noqa: E402
from hostmesh.identity.v1 import identity_pb2  # noqa: E402
from namespace.cloud.compute.v1beta import compute_pb2 as pb  # noqa: E402

COMPUTE = "/namespace.cloud.compute.v1beta.ComputeService/"
COMMAND = "/namespace.cloud.compute.v1beta.CommandService/"
LOGS = "/namespace.cloud.compute.v1beta.ObservabilityService/StreamInstanceLogs"
LOGS_FETCH = "/namespace.cloud.compute.v1beta.ObservabilityService/FetchInstanceLogs"
QUEUE_CAP = 1 << 20  # [rpc] max_send_queue below


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Caller:
    """One bearer token on the gateway's TCP listener."""

    def __init__(self, channel, token):
        self.channel = channel
        self.md = [("authorization", "Bearer " + token)]

    def unary(self, method, request, response_type, timeout=30):
        fn = self.channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response_type.FromString)
        return fn(request, metadata=self.md, timeout=timeout)

    def stream(self, method, request, response_type, timeout=180):
        fn = self.channel.unary_stream(method, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_type.FromString)
        return fn(request, metadata=self.md, timeout=timeout)

    def create(self):
        return self.unary(COMPUTE + "CreateInstance", pb.CreateInstanceRequest(
            shape=pb.InstanceShape(virtual_cpu=2, memory_megabytes=2048), documented_purpose="remote test"),
            pb.DescribeInstanceResponse).metadata

    def wait_running(self, iid):
        states = [x.metadata.status for x in self.stream(COMPUTE + "WaitInstance",
                                                         pb.WaitInstanceRequest(instance_id=iid),
                                                         pb.WaitInstanceResponse)]
        assert states and states[-1] == pb.InstanceMetadata.RUNNING, states

    def run(self, iid, *argv):
        return self.unary(COMMAND + "RunCommandSync",
                          pb.RunCommandRequest(instance_id=iid, command=pb.Command(command=list(argv))),
                          pb.RunCommandSyncResponse, timeout=60)

    def list(self):
        return [i.instance_id for i in self.unary(COMPUTE + "ListInstances", pb.ListInstancesRequest(),
                                                  pb.ListInstancesResponse).instances]


@unittest.skipUnless(have_guest_image(), "guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class RemoteTenants(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reaper = QemuReaper()
        cls.port = free_port()
        cls.mesh = Mesh(configs={
            "vmm": "[rpc]\nmax_send_queue = %d\n" % QUEUE_CAP + vmm_config(log_max="256K"),
            "gateway": "[gateway]\ntcp_listen = 127.0.0.1:%d\ntcp_insecure = yes\n" % cls.port,
        }).start()
        try:
            cls.mesh.nsc("status")
            identity = cls.mesh.channel("identity")
            issue = identity.unary_unary("/hostmesh.identity.v1.Identity/IssueInstanceToken",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=identity_pb2.IssueInstanceTokenResponse.FromString)

            def token(tenant):
                end = time.time() + 15
                while True:
                    try:
                        return issue(identity_pb2.IssueInstanceTokenRequest(
                            tenant_id=tenant, instance_id="client", audience=["hostmesh"]), timeout=10).token
                    except grpc.RpcError:
                        if time.time() > end:
                            raise
                        time.sleep(0.1)

            cls.tcp = grpc.insecure_channel("127.0.0.1:%d" % cls.port)
            cls.acme = Caller(cls.tcp, token("acme"))
            cls.globex = Caller(cls.tcp, token("globex"))
            cls.a = cls.acme.create().instance_id
            cls.b = cls.globex.create().instance_id
            for who, iid in ((cls.acme, cls.a), (cls.globex, cls.b)):
                who.wait_running(iid)
                cls.reaper.note(cls.mesh, iid)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            r, lst = cls.mesh.nsc_json("list")
            for i in lst or []:
                cls.mesh.nsc("destroy", "--force", i["instance_id"])
        finally:
            time.sleep(1)
            cls.reaper.reap()
            cls.mesh.stop()

    def assertDenied(self, fn, *words):
        with self.assertRaises(grpc.RpcError) as e:
            r = fn()
            if hasattr(r, "__next__"):
                next(r)  # a stream fails on its first read
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED, e.exception.details())
        for w in words:
            self.assertIn(w, e.exception.details())

    def test_instances_belong_to_the_callers_tenant(self):
        for iid, tenant in ((self.a, "acme"), (self.b, "globex")):
            r, d = self.mesh.nsc_json("describe", iid)
            self.assertEqual(d["tenant"], tenant)
        out = self.acme.run(self.a, "echo", "mine")
        self.assertEqual((out.exit_code, out.stdout), (0, b"mine\n"))

    def test_another_tenants_instance_cannot_be_seen_or_touched(self):
        a, g = self.a, self.globex
        calls = {
            "DescribeInstance": lambda: g.unary(COMPUTE + "DescribeInstance", pb.DescribeInstanceRequest(instance_id=a),
                                                pb.DescribeInstanceResponse),
            "WaitInstanceSync": lambda: g.unary(COMPUTE + "WaitInstanceSync", pb.WaitInstanceRequest(instance_id=a),
                                                pb.WaitInstanceResponse),
            "WaitInstance": lambda: g.stream(COMPUTE + "WaitInstance", pb.WaitInstanceRequest(instance_id=a),
                                             pb.WaitInstanceResponse),
            "RunCommandSync": lambda: g.run(a, "touch", "/tmp/globex-was-here"),
            "RunCommand": lambda: g.stream(COMMAND + "RunCommand", pb.RunCommandRequest(
                instance_id=a, command=pb.Command(command=["touch", "/tmp/globex-was-here"])), pb.RunCommandResponse),
            "StreamInstanceLogs": lambda: g.stream(LOGS, pb.StreamInstanceLogsRequest(instance_id=a), pb.LogBlock),
            "ExtendInstance": lambda: g.unary(COMPUTE + "ExtendInstance", pb.ExtendInstanceRequest(
                instance_id=a, extend_by=duration_pb2.Duration(seconds=3600)), pb.ExtendInstanceResponse),
            "DestroyInstance": lambda: g.unary(COMPUTE + "DestroyInstance", pb.DestroyInstanceRequest(instance_id=a),
                                               empty_pb2.Empty),
        }
        r, before = self.mesh.nsc_json("describe", a)
        for name, fn in calls.items():
            with self.subTest(name):
                self.assertDenied(fn, a, "tenant")
        # Nothing happened to it: still running, same deadline, no file.
        r, after = self.mesh.nsc_json("describe", a)
        self.assertEqual((after["state"], after["deadline"]), ("RUNNING", before["deadline"]))
        out = self.acme.run(a, "ls", "/tmp")
        self.assertNotIn(b"globex-was-here", out.stdout)
        # The owner still may.
        self.acme.unary(COMPUTE + "DescribeInstance", pb.DescribeInstanceRequest(instance_id=a),
                        pb.DescribeInstanceResponse)

    def test_list_shows_only_the_callers_tenant(self):
        self.assertIn(self.a, self.acme.list())
        self.assertNotIn(self.b, self.acme.list())
        self.assertIn(self.b, self.globex.list())
        self.assertNotIn(self.a, self.globex.list())
        # Local operators see every tenant.
        r, lst = self.mesh.nsc_json("list")
        self.assertTrue({self.a, self.b} <= {i["instance_id"] for i in lst}, lst)

    def test_a_remote_caller_without_a_tenant_gets_no_instances(self):
        r, out = self.mesh.nsc_json("auth", "issue-id-token", "--audience", "hostmesh")
        self.assertEqual(r.returncode, 0, r.stderr)
        nobody = Caller(self.tcp, out["id_token"])  # root's token: subject "admin", no tenant
        self.assertDenied(nobody.create, "tenant")
        self.assertDenied(nobody.list, "tenant")
        self.assertDenied(lambda: nobody.run(self.a, "true"), "tenant")

    def test_fetch_instance_logs_pages_through_the_callers_instances(self):
        from namespace.stdlib import stdlib_pb2
        Fetch = pb.FetchInstanceLogsRequest
        ids = stdlib_pb2.StringMatcher(values=[self.a], op=stdlib_pb2.StringMatcher.IS_ANY_OF)
        first = self.acme.unary(LOGS_FETCH, Fetch(match_instance_ids=ids, lines_per_page=5),
                                pb.FetchInstanceLogsResponse)
        self.assertEqual(len(first.log_line), 5)
        self.assertTrue(first.pagination_cursor)
        for line in first.log_line:
            self.assertEqual(dict(line.labels), {"instance_id": self.a})
            self.assertIn(line.stream, ("console", "stdout", "stderr"))
            self.assertGreater(line.timestamp.seconds, 0)
        second = self.acme.unary(LOGS_FETCH, Fetch(match_instance_ids=ids, lines_per_page=5,
                                                   pagination_cursor=first.pagination_cursor),
                                 pb.FetchInstanceLogsResponse)
        self.assertEqual(len(second.log_line), 5)
        self.assertNotEqual([l.content for l in first.log_line][0], None)
        self.assertGreaterEqual(second.log_line[0].timestamp.ToMicroseconds(),
                                first.log_line[-1].timestamp.ToMicroseconds())
        # A window that ends before the instance existed holds nothing, and is the last page.
        early = self.acme.unary(LOGS_FETCH, Fetch(match_instance_ids=ids, timestamp_range=stdlib_pb2.TimestampRange(
            before=first.log_line[0].timestamp)), pb.FetchInstanceLogsResponse)
        self.assertEqual((len(early.log_line), early.pagination_cursor), (0, b""))
        # Another tenant's instance, IS_NOT, a bad cursor: refused, naming what is wrong.
        self.assertDenied(lambda: self.globex.unary(LOGS_FETCH, Fetch(match_instance_ids=ids),
                                                    pb.FetchInstanceLogsResponse), self.a, "tenant")
        for bad, words in ((Fetch(match_instance_ids=stdlib_pb2.StringMatcher(values=[self.a], op=2)), "IS_NOT"),
                           (Fetch(match_instance_ids=ids, pagination_cursor=b"x"), "pagination_cursor"),
                           (Fetch(match_instance_ids=ids, lines_per_page=100000), "lines_per_page"),
                           (Fetch(), "match_instance_ids")):
            with self.assertRaises(grpc.RpcError) as e:
                self.acme.unary(LOGS_FETCH, bad, pb.FetchInstanceLogsResponse)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(words, e.exception.details())

    def test_fetch_instance_logs_over_connect_json(self):
        import json
        import urllib.request
        body = json.dumps({"matchInstanceIds": {"values": [self.a], "op": "IS_ANY_OF"}, "linesPerPage": 3}).encode()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, LOGS_FETCH), data=body, headers={
            "content-type": "application/json", "authorization": self.acme.md[0][1]})
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
        self.assertEqual(len(out["logLine"]), 3)
        self.assertEqual(out["logLine"][0]["labels"], {"instance_id": self.a})
        self.assertRegex(out["logLine"][0]["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        self.assertTrue(out["paginationCursor"])
        # Maps of messages and int64 lists, as JSON.
        req = urllib.request.Request("http://127.0.0.1:%d%sGetInstanceMetrics" % (self.port, COMPUTE),
                                     data=json.dumps({"instanceId": self.a, "metricResource": ["MEMORY"]}).encode(),
                                     headers={"content-type": "application/json", "authorization": self.acme.md[0][1]})
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
        values = out["timeSeries"][0]["integers"]["memory_usage_bytes"]["values"]
        self.assertIsInstance(values[0], str)
        self.assertGreater(int(values[0]), 0)

    def test_instance_metrics_come_from_the_vms_cgroup(self):
        Req = pb.GetInstanceMetricsRequest
        r = self.acme.unary(COMPUTE + "GetInstanceMetrics", Req(instance_id=self.a), pb.GetInstanceMetricsResponse)
        self.assertEqual(len(r.time_series), 1)
        ts = r.time_series[0]
        self.assertEqual(len(ts.timestamps), 1)
        self.assertLess(abs(ts.timestamps[0] / 1000 - time.time()), 60)
        mem = ts.integers["memory_usage_bytes"].values[0]
        self.assertGreater(mem, 16 << 20)  # a booted guest holds some of its 2 GiB
        if "cpu_usage_usec" in ts.integers:
            self.assertGreater(ts.integers["cpu_usage_usec"].values[0], 100000)  # booting under TCG takes seconds
        only = self.acme.unary(COMPUTE + "GetInstanceMetrics", Req(instance_id=self.a, metric_resource=[Req.MEMORY]),
                               pb.GetInstanceMetricsResponse)
        self.assertEqual(set(only.time_series[0].integers), {"memory_usage_bytes"})
        self.assertDenied(lambda: self.globex.unary(COMPUTE + "GetInstanceMetrics", Req(instance_id=self.a),
                                                    pb.GetInstanceMetricsResponse), self.a, "tenant")
        with self.assertRaises(grpc.RpcError) as e:
            self.acme.unary(COMPUTE + "GetInstanceMetrics", Req(instance_id=self.a, metric_resource=[Req.STORAGE]),
                            pb.GetInstanceMetricsResponse)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("metric_resource", e.exception.details())

    def test_the_instance_token_file_is_readable_by_root_only(self):
        r, d = self.mesh.nsc_json("describe", self.a)
        self.assertTrue(d.get("token"), d)
        out = self.acme.run(self.a, "stat", "-L", "-c", "%a %u %g", "/var/run/nsc/token.json")
        self.assertEqual((out.exit_code, out.stdout.decode()), (0, "600 0 0\n"), out.stderr)

    # -- slow readers --------------------------------------------------------
    def vmmd_rss(self):
        with open("/proc/%d/status" % self.mesh.wait_running("vmm")) as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024

    def exhausted(self, method):
        """RESOURCE_EXHAUSTED endings vmmd counted for a method."""
        ch = self.mesh.channel("vmm")
        text = ch.unary_unary("/hostmesh.common.v1.Metrics/GetMetrics",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=metrics_pb2.GetMetricsResponse.FromString)(
            metrics_pb2.GetMetricsRequest(), timeout=10).text
        m = re.search(r'hostmesh_rpc_calls_total\{method="%s",code="RESOURCE_EXHAUSTED"\} (\d+)' % re.escape(method),
                      text)
        return int(m.group(1)) if m else 0

    def vmmd_sanitized(self):
        with open("/proc/%d/maps" % self.mesh.wait_running("vmm")) as f:
            return "libasan" in f.read()

    def stall_until_cut(self, method, start_rss, limit):
        """Waits (not reading) until vmmd ends the call; fails if vmmd's
        memory grows by `limit` first. Under ASan freed memory stays
        resident (quarantine, shadow): there only the cut is checked."""
        if self.vmmd_sanitized():
            limit = None
        end = time.time() + 120
        while self.exhausted(method) == 0:
            grown = self.vmmd_rss() - start_rss
            if limit:
                self.assertLess(grown, limit, "vmmd buffered %d MiB for a reader that does not read" % (grown >> 20))
            self.assertLess(time.time(), end, "vmmd never ended the stalled stream")
            time.sleep(0.2)
        if limit:
            self.assertLess(self.vmmd_rss() - start_rss, limit)

    def read_to_the_end(self, call):
        got = 0
        with self.assertRaises(grpc.RpcError) as e:
            for _ in call:
                got += 1
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.exception.details())
        self.assertIn("max_send_queue", e.exception.details())
        return got

    def test_a_stalled_command_reader_is_cut_off_at_the_queue_cap(self):
        start = self.vmmd_rss()
        # 48 MiB of output (7 MB/s here) against a 1 MiB queue; the command
        # would leave a mark if it ran to its end.
        call = self.acme.stream(COMMAND + "RunCommand", pb.RunCommandRequest(
            instance_id=self.a, command=pb.Command(command=[
                "sh", "-c", "head -c 50331648 /dev/zero; touch /tmp/ran-to-the-end"])), pb.RunCommandResponse)
        self.stall_until_cut(COMMAND + "RunCommand", start, 16 << 20)
        self.assertGreater(self.read_to_the_end(call), 0)
        # The command was stopped, as if the reader had cancelled; the
        # instance serves the next command.
        time.sleep(1)
        out = self.acme.run(self.a, "ls", "/tmp")
        self.assertEqual(out.exit_code, 0)
        self.assertNotIn(b"ran-to-the-end", out.stdout)

    def test_a_stalled_log_follower_is_cut_off_at_the_queue_cap(self):
        start = self.vmmd_rss()
        follower = self.acme.stream(LOGS, pb.StreamInstanceLogsRequest(instance_id=self.a, follow=True), pb.LogBlock)
        # 1 MiB of output in 21-byte lines: ~50000 messages for the follower
        # (what RunCommandSync keeps of it is bounded on its own).
        out = self.acme.run(self.a, "sh", "-c", "yes hostmesh-log-line | head -c 1048576")
        self.assertEqual(len(out.stdout), 1048576)
        self.stall_until_cut(LOGS, start, 16 << 20)
        self.assertGreater(self.read_to_the_end(follower), 0)
        # A new follower is served as before.
        again = self.acme.stream(LOGS, pb.StreamInstanceLogsRequest(instance_id=self.a), pb.LogBlock)
        self.assertGreater(sum(1 for _ in again), 0)


class StreamQueueConfig(unittest.TestCase):
    def test_the_queue_must_hold_a_whole_log_replay(self):
        import subprocess
        import tempfile
        from hm import binary
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("[rpc]\nmax_send_queue = 1M\n[vmm]\nlog_max = 1M\n")
            f.flush()
            r = subprocess.run([binary("hostmesh-vmmd"), "--check-config", "--config", f.name],
                               capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("max_send_queue", r.stderr)
        self.assertIn("log_max", r.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("[vmm]\nlog_max = 256K\n")
            f.flush()
            r = subprocess.run([binary("hostmesh-vmmd"), "--check-config", "--config", f.name],
                               capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("max_send_queue = 0", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
