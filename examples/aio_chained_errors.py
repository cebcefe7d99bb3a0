"""An error that travels through three Napix servers, read hop by hop, all
of it asyncio: examples/chained_errors.py, with napixclient.aio and ASGI.

Starts, on 127.0.0.1:

* C, a slot registry (a NapixTestServer in a thread of its own), which
  answers a Napix 404 for slot 10;
* B, an inventory, a plain ASGI app served by uvicorn in this event loop,
  which asks C with an AsyncClient;
* A, an orchestrator, the same kind of app, which asks B.

A and B are wrapped in napixclient.asgi.ExceptionsCatcher, so the HTTPError
each gets becomes its own 500 document, carrying the call it made and the
answer it got. The caller of A then reads the whole chain.

    python examples/aio_chained_errors.py          # needs uvicorn (pip install uvicorn)
"""

import asyncio
import json
import logging
import socket
import sys

from napixclient import HTTPError
from napixclient.aio import AsyncClient
from napixclient.asgi import ExceptionsCatcher
from napixclient.authenticators import LoginAuthenticator

USERS = {"root": "toor"}
AUTH = LoginAuthenticator("root", "toor")


def relay_to(host, path):
    """An ASGI app that serves what ``host`` answers on ``path``; when that
    call fails, the HTTPError escapes to ExceptionsCatcher."""
    async def app(scope, receive, send):
        async with AsyncClient(host, AUTH, timeout=10) as client:
            answer = await client.get(path)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer.content})
    return ExceptionsCatcher(app)


async def serve(app):
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1, in this event
    loop; return the server, its task and its ``host:port``."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="critical",
                            access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):                           # ten seconds at most
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.result() if task.done() else task.cancel()
        raise RuntimeError("uvicorn did not start")
    return server, task, f"127.0.0.1:{sock.getsockname()[1]}"


async def main():
    # Each server logs the 500s it answers, with their tracebacks; this
    # example shows what the caller sees instead.
    logging.getLogger("napixclient.asgi").setLevel(logging.CRITICAL)
    from napixclient.testing import NapixTestServer

    async with NapixTestServer(users=USERS) as c:
        c.route("/slots/10", status=404, body="`10` not found")
        b_server, b_task, b = await serve(relay_to(c.host, "/slots/10"))
        a_server, a_task, a = await serve(relay_to(b, "/vms/10"))
        try:
            print(f"A is http://{a}, B is http://{b}, C is {c.url}\n")
            async with AsyncClient(a, AUTH, timeout=10) as client:
                try:
                    await client.post("/vms/10/start")
                except HTTPError as error:
                    failure = error
                else:
                    print("A answered without an error: nothing to show")
                    return 1
        finally:
            for server, task in ((a_server, a_task), (b_server, b_task)):
                server.should_exit = True
                await task

    print("str(error), one line for a log:")
    print(f"  {failure}\n")
    print("error.format_chain(), for people:")
    for line in failure.format_chain().splitlines():
        print(f"  {line}")
    root = failure.root
    print("\nerror.root, where it really happened:")
    print(f"  call={root.call!r} status={root.status} error_text={root.error_text!r}\n")
    print("The document A answered (error.remote_error):")
    print(json.dumps(failure.remote_error, indent=2))

    expected = [f"POST http://{a}/vms/10/start", f"GET http://{b}/vms/10",
                f"GET {c.url}/slots/10"]
    if [hop.call for hop in failure.chain] != expected or failure.root.status != 404:
        print("unexpected chain", failure.chain, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        sys.exit("this example serves ASGI apps with uvicorn: pip install uvicorn")
    sys.exit(asyncio.run(main()))
