# ctest: labels=integration timeout=900
"""vmmd as remote callers see it: bearer tokens of two tenants on the
gateway's TCP listener (python3-grpcio as the client), real QEMU micro-VMs.

Each tenant sees and touches only its own instances; a caller without a
tenant gets none; the instance token in the guest is readable by root only."""

import os
import socket
import sys
import time
import unittest

import grpc

from hm import BUILD, Mesh
from test_vmm import QemuReaper, have_guest_image, vmm_config

sys.path.insert(0, os.path.join(BUILD, "python"))
from google.protobuf import duration_pb2, empty_pb2  # noqa: E402
from hostmesh.identity.v1 import identity_pb2  # noqa: E402
from namespace.cloud.compute.v1beta import compute_pb2 as pb  # noqa: E402

COMPUTE = "/namespace.cloud.compute.v1beta.ComputeService/"
COMMAND = "/namespace.cloud.compute.v1beta.CommandService/"
LOGS = "/namespace.cloud.compute.v1beta.ObservabilityService/StreamInstanceLogs"


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
            "vmm": vmm_config(),
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

    def test_the_instance_token_file_is_readable_by_root_only(self):
        r, d = self.mesh.nsc_json("describe", self.a)
        self.assertTrue(d.get("token"), d)
        out = self.acme.run(self.a, "stat", "-L", "-c", "%a %u %g", "/var/run/nsc/token.json")
        self.assertEqual((out.exit_code, out.stdout.decode()), (0, "600 0 0\n"), out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
