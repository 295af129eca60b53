# ctest: labels=integration;slow timeout=1200
"""Namespace's TypeScript SDK stack, unchanged, against the gateway: the
node test in tests/node (node's test runner; connect-es installed with
`npm ci` from the committed lockfile; descriptors generated from
proto/namespace by protoc-gen-es and protoc-gen-connect-es at test time)
drives real micro-VMs over TLS with a tenant's bearer token, through the
Connect protocol (JSON and binary, HTTP/1.1 and HTTP/2, GET for idempotent
calls) and gRPC (HTTP/2), and through Connect over h2c on the unix socket."""

import os
import shutil
import subprocess
import unittest

from hm import BUILD, SOURCE, Mesh
from test_gateway_bearer import TokenSource, free_port, make_cert
from test_vmm import QemuReaper, have_guest_image, vmm_config

NODE_SRC = os.path.join(SOURCE, "tests", "node")
NODE_DIR = os.path.join(BUILD, "node")
PROTOS = ["namespace/cloud/compute/v1beta/compute.proto", "namespace/stdlib/stdlib.proto",
          "namespace/cloud/iam/v1beta/token.proto"]


def prepare_node():
    """npm ci into the build tree (again only when the lockfile changed),
    then generates the descriptors; returns the generated directory."""
    os.makedirs(NODE_DIR, exist_ok=True)
    for f in ("package.json", "package-lock.json", ".npmrc", "sdk.test.mjs"):
        shutil.copyfile(os.path.join(NODE_SRC, f), os.path.join(NODE_DIR, f))
    stamp = os.path.join(NODE_DIR, "node_modules", ".hostmesh-lock")
    with open(os.path.join(NODE_SRC, "package-lock.json")) as f:
        lock = f.read()
    if not os.path.exists(stamp) or open(stamp).read() != lock:
        subprocess.run(["npm", "ci"], cwd=NODE_DIR, check=True, capture_output=True, timeout=600)
        with open(stamp, "w") as f:
            f.write(lock)
    gen = os.path.join(NODE_DIR, "gen")
    shutil.rmtree(gen, ignore_errors=True)
    os.makedirs(gen)
    bin_dir = os.path.join(NODE_DIR, "node_modules", ".bin")
    subprocess.run(["protoc", "-I", os.path.join(SOURCE, "proto"),
                    "--plugin=protoc-gen-es=" + os.path.join(bin_dir, "protoc-gen-es"),
                    "--es_out=" + gen, "--es_opt=target=js,import_extension=.js",
                    "--plugin=protoc-gen-connect-es=" + os.path.join(bin_dir, "protoc-gen-connect-es"),
                    "--connect-es_out=" + gen, "--connect-es_opt=target=js,import_extension=.js"] + PROTOS,
                   check=True, capture_output=True, timeout=120)
    return gen


@unittest.skipUnless(have_guest_image(), "guest image not built (HOSTMESH_BUILD_GUEST=ON)")
class Sdk(unittest.TestCase):
    def test_connect_es_json_binary_and_grpc_against_the_gateway(self):
        self.assertTrue(shutil.which("node") and shutil.which("npm"), "node and npm are needed (scripts/deps)")
        gen = prepare_node()
        reaper = QemuReaper()
        port = free_port()
        mesh = Mesh()
        cert, key = make_cert(mesh.root)
        mesh.write_config("vmm", vmm_config())
        mesh.write_config("gateway", "[gateway]\ntcp_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                          % (port, cert, key))
        mesh.start()
        try:
            mesh.nsc("status")
            tokens = TokenSource(mesh)
            tokens.wake()
            token = tokens.issue(tenant="acme", instance="sdk-client").token
            env = dict(os.environ, HOSTMESH_GATEWAY_URL="https://localhost:%d" % port, HOSTMESH_CA=cert,
                       HOSTMESH_TOKEN=token, HOSTMESH_GEN=gen, HOSTMESH_GATEWAY_SOCKET=mesh.socket("gateway"))
            r = subprocess.run(["node", "--test", "--test-reporter=tap", "sdk.test.mjs"], cwd=NODE_DIR, env=env,
                               capture_output=True, text=True, timeout=1100)
            print(r.stdout[-6000:])
            print(r.stderr[-3000:])
            self.assertEqual(r.returncode, 0, "node test failed")
            # 6 transports × (lifecycle, errors) + the idempotency check
            self.assertIn("# pass 13", r.stdout)
            self.assertIn("# fail 0", r.stdout)
        finally:
            r, lst = mesh.nsc_json("list")
            for i in lst or []:
                reaper.note(mesh, i["instance_id"])
                mesh.nsc("destroy", "--force", i["instance_id"])
            reaper.reap()
            mesh.stop()


if __name__ == "__main__":
    unittest.main()
