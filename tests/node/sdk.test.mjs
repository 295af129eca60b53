// Namespace's SDK stack (connect-es with descriptors generated from
// proto/namespace) against the real gateway over TLS with a bearer token:
// the Connect protocol (JSON and binary, HTTP/1.1 and HTTP/2, GET for the
// methods the proto marks idempotent) and gRPC (HTTP/2); and Connect over
// h2c (prior knowledge) on the gateway's unix socket, where the caller is
// known by its peer credentials. Each transport creates a real micro-VM,
// describes, lists, waits for it, runs a command in it and destroys it.
//
// Environment: HOSTMESH_GATEWAY_URL (https://localhost:PORT), HOSTMESH_CA
// (PEM of the gateway's certificate), HOSTMESH_TOKEN (a tenant's token),
// HOSTMESH_GATEWAY_SOCKET (the unix socket), HOSTMESH_GEN (the directory
// protoc-gen-es wrote to).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createPromiseClient, ConnectError, Code } from "@connectrpc/connect";
import { MethodIdempotency } from "@bufbuild/protobuf";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";

const baseUrl = process.env.HOSTMESH_GATEWAY_URL;
const ca = readFileSync(process.env.HOSTMESH_CA);
const token = process.env.HOSTMESH_TOKEN;
const gen = process.env.HOSTMESH_GEN;
const socketPath = process.env.HOSTMESH_GATEWAY_SOCKET;
const load = (p) => import(pathToFileURL(join(gen, p)).href);
const { ComputeService, CommandService } = await load("namespace/cloud/compute/v1beta/compute_connect.js");
const { InstanceMetadata_Status: Status, RunCommandResponse_Stream: Stream } =
  await load("namespace/cloud/compute/v1beta/compute_pb.js");

const bearer = (next) => async (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const transports = {
  "connect json http/1.1": () =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, nodeOptions: { ca }, interceptors: [bearer] }),
  "connect binary http/1.1": () =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, nodeOptions: { ca }, interceptors: [bearer] }),
  "connect json http/2": () =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false, nodeOptions: { ca }, interceptors: [bearer] }),
  // Describe and List go as GET: the proto marks them NO_SIDE_EFFECTS.
  "connect binary http/2 with get": () =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, useHttpGet: true, nodeOptions: { ca }, interceptors: [bearer] }),
  "connect json h2c unix socket": () =>
    createConnectTransport({
      baseUrl: "http://localhost", httpVersion: "2", useBinaryFormat: false,
      nodeOptions: { createConnection: () => netConnect(socketPath) },
    }),
  "grpc http/2": () =>
    createGrpcTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca }, interceptors: [bearer] }),
};

// With useHttpGet, connect-es sends GET for methods whose descriptor says
// NO_SIDE_EFFECTS: the proto must mark Describe and List so.
test("describe and list are marked idempotent (the SDK sends them as GET)", () => {
  assert.equal(ComputeService.methods.describeInstance.idempotency, MethodIdempotency.NoSideEffects);
  assert.equal(ComputeService.methods.listInstances.idempotency, MethodIdempotency.NoSideEffects);
  assert.notEqual(ComputeService.methods.createInstance.idempotency, MethodIdempotency.NoSideEffects);
});

for (const [name, make] of Object.entries(transports)) {
  test(`${name}: create, describe, list, wait, run a command, destroy`, { timeout: 600_000 }, async () => {
    const transport = make();
    const compute = createPromiseClient(ComputeService, transport);
    const command = createPromiseClient(CommandService, transport);

    const deadline = new Date(Date.now() + 30 * 60 * 1000);
    const created = await compute.createInstance({
      shape: { virtualCpu: 2, memoryMegabytes: 2048, machineArch: "amd64", os: "linux" },
      documentedPurpose: `sdk test (${name})`,
      labels: [{ name: "transport", value: name }],
      deadline: { seconds: BigInt(Math.floor(deadline.getTime() / 1000)), nanos: 0 },
    });
    const id = created.metadata.instanceId;
    assert.match(id, /\S+/);
    assert.ok(created.metadata.createdAt, "createdAt is set");
    assert.equal(created.metadata.documentedPurpose, `sdk test (${name})`);
    assert.match(created.metadata.creatorId, /\S/, "the token's subject is the creator");

    try {
      const described = await compute.describeInstance({ instanceId: id });
      assert.equal(described.metadata.instanceId, id);
      assert.equal(described.metadata.shape.virtualCpu, 2);
      assert.equal(described.metadata.shape.memoryMegabytes, 2048);
      assert.deepEqual(described.metadata.labels.map((l) => [l.name, l.value]), [["transport", name]]);

      const listed = await compute.listInstances({ maxEntries: 100n });
      assert.ok(listed.instances.some((i) => i.instanceId === id), "the new instance is listed");

      let last;
      for await (const w of compute.waitInstance({ instanceId: id })) last = w.metadata.status;
      assert.equal(last, Status.RUNNING);

      let stdout = "";
      let exit;
      for await (const r of command.runCommand({ instanceId: id, command: { command: ["sh", "-c", "echo hello; echo oops >&2; exit 3"] } })) {
        if (r.stream === Stream.STDOUT) stdout += Buffer.from(r.data).toString();
        if (r.exitStatus) exit = r.exitStatus.exitCode;
      }
      assert.equal(stdout, "hello\n");
      assert.equal(exit, 3);
    } finally {
      await compute.destroyInstance({ instanceId: id, reason: "sdk test done" });
    }
    const after = await compute.describeInstance({ instanceId: id }).then(
      (d) => d.metadata.status,
      (e) => ConnectError.from(e).code,
    );
    assert.ok([Status.DESTROYED, Status.DESTROYING, Code.NotFound].includes(after), `after destroy: ${after}`);
  });

  test(`${name}: errors keep their codes`, async () => {
    const compute = createPromiseClient(ComputeService, make());
    await assert.rejects(compute.describeInstance({ instanceId: "no-such-instance" }), (e) => {
      assert.equal(ConnectError.from(e).code, Code.NotFound);
      return true;
    });
    if (name.includes("unix")) return;  // the unix socket knows its callers by peer credentials
    const anonymous = name.startsWith("grpc")
      ? createGrpcTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca } })
      : createConnectTransport({ baseUrl, httpVersion: name.includes("http/2") ? "2" : "1.1",
          useBinaryFormat: name.includes("binary"), useHttpGet: name.includes("with get"), nodeOptions: { ca } });
    await assert.rejects(createPromiseClient(ComputeService, anonymous).listInstances({}), (e) => {
      assert.equal(ConnectError.from(e).code, Code.Unauthenticated);
      return true;
    });
  });
}
