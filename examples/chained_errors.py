"""An error that travels through three Napix servers, read hop by hop.

Starts three NapixTestServers on 127.0.0.1:

* C, a slot registry, answers a Napix 404 for slot 10;
* B, an inventory, is a plain WSGI app that asks C with a napixclient Client;
* A, an orchestrator, is a plain WSGI app that asks B the same way.

A and B are wrapped in ExceptionsCatcher, so the HTTPError each gets becomes
its own 500 document, carrying the call it made and the answer it got. The
caller of A then reads the whole chain.

    python examples/chained_errors.py
"""

import json
import logging
import sys

from napixclient import Client, HTTPError
from napixclient.authenticators import LoginAuthenticator
from napixclient.testing import NapixTestServer
from napixclient.wsgi import ExceptionsCatcher

USERS = {"root": "toor"}
AUTH = LoginAuthenticator("root", "toor")


def relay_to(host, path):
    """A WSGI app that serves what ``host`` answers on ``path``; when that
    call fails, the HTTPError escapes to ExceptionsCatcher."""
    def app(environ, start_response):
        with Client(host, AUTH, timeout=10) as client:
            answer = client.get(path)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [answer.content]
    return ExceptionsCatcher(app)


def main():
    # Each server logs the 500s it answers, with their tracebacks; this
    # example shows what the caller sees instead.
    logging.getLogger("napixclient.wsgi").setLevel(logging.CRITICAL)

    with NapixTestServer(users=USERS) as c:
        c.route("/slots/10", status=404, body="`10` not found")
        with NapixTestServer(users=USERS, app=relay_to(c.host, "/slots/10")) as b, \
                NapixTestServer(users=USERS, app=relay_to(b.host, "/vms/10")) as a:
            print(f"A is {a.url}, B is {b.url}, C is {c.url}\n")
            with Client(a.host, AUTH, timeout=10) as client:
                try:
                    client.post("/vms/10/start")
                except HTTPError as error:
                    failure = error
                else:
                    print("A answered without an error: nothing to show")
                    return 1

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

    hops = failure.chain
    expected = [f"POST {a.url}/vms/10/start", f"GET {b.url}/vms/10", f"GET {c.url}/slots/10"]
    if [hop.call for hop in hops] != expected or failure.root.status != 404:
        print("unexpected chain", hops, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
