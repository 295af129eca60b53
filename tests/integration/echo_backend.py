"""An independent gRPC backend (python3-grpcio) for gateway tests.

Serves test.echo.v1.Echo on a unix socket with raw bytes (no protobuf):
  Unary         echoes the request; metadata "fail-with: CODE" aborts with it
  ServerStream  request = b"<count>": streams count messages b"<seq>"
  ClientStream  returns b"<n messages>:<total bytes>"
  Bidi          echoes every message
  Slow          sleeps up to 10 s unless cancelled; records the cancellation
  Peer          returns the x-hostmesh-* metadata it received, as text
"""

import sys
import threading
import time
from concurrent import futures

import grpc

cancelled = threading.Event()


def _echo_md(context):
    md = [(k, v) for k, v in context.invocation_metadata() if k.startswith("echo-")]
    context.send_initial_metadata(md + [("backend-initial", "yes")])
    context.set_trailing_metadata([("backend-trailer", "yes")])


def unary(request, context):
    _echo_md(context)
    for k, v in context.invocation_metadata():
        if k == "fail-with":
            context.abort(getattr(grpc.StatusCode, v), "failing as asked: " + v)
    return request


def server_stream(request, context):
    _echo_md(context)
    for i in range(int(request.decode())):
        yield str(i).encode()


def client_stream(request_iterator, context):
    n = total = 0
    for m in request_iterator:
        n += 1
        total += len(m)
    return ("%d:%d" % (n, total)).encode()


def bidi(request_iterator, context):
    for m in request_iterator:
        yield m


def slow(request, context):
    end = time.time() + 10
    while time.time() < end:
        if not context.is_active():
            cancelled.set()
            with open(sys.argv[1] + ".cancelled", "w") as f:
                f.write("1")
            return b""
        time.sleep(0.01)
    return b"done"


def peer(request, context):
    return "\n".join("%s=%s" % (k, v) for k, v in context.invocation_metadata()
                     if k.startswith("x-hostmesh")).encode()


def main():
    path = sys.argv[1]
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Peer": grpc.unary_unary_rpc_method_handler(peer),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.echo.v1.Echo", handlers),))
    server.add_insecure_port("unix:" + path)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
