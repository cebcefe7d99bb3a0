"""Where the CPU of a signed request goes, by taking its parts away one by one.

Sequential GETs on one keep-alive connection to nginx, several clients in one
process taking turns in batches (as cpu_interleaved.py does), CPU per
request (user + system, :func:`time.process_time`), medians of the batches:

* ``unsigned``: no authenticator;
* ``unsigned + 190 B field``: no authenticator, and a client header as long
  as a signature's ``Authorization`` (what the extra bytes cost);
* ``signature constant``: a ``LoginAuthenticator`` whose ``sign_request``
  returns one ``Authorization`` made in advance (the native signing path
  with no HMAC and no nonce);
* ``fixed nonce``: signed, with a nonce given (no ``os.urandom`` call);
* ``signed``: ``LoginAuthenticator`` as users run it.

The differences between neighbours are what each part costs in a loop that
also sends and receives: the HMAC there costs several times what ``timeit``
gives for it alone, since the network code between two requests leaves
OpenSSL's code and data out of the caches. By hand, never in CI:

    python benchmarks/signing_cost.py --batches 50 --batch 300
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from backends import Nginx  # noqa: E402
from cpu_interleaved import batch, interleave  # noqa: E402
from cpu_per_request import napix_one  # noqa: E402

from napixclient.authenticators import LoginAuthenticator, SignedRequest  # noqa: E402

NONCE = "0123456789abcdef0123456789abcdef"


class FixedNonce(LoginAuthenticator):
    """Signs with one nonce, always (a benchmark only: a server refusing
    replayed nonces would refuse every request but the first)."""

    def authorization(self, method: str, host: str, path: str, *,
                      nonce: Optional[str] = None, timestamp: Optional[int] = None) -> str:
        return super().authorization(method, host, path, nonce=NONCE, timestamp=timestamp)


class ConstantSignature(LoginAuthenticator):
    """Returns one ``Authorization`` made in advance, through the native path."""

    def __init__(self, login: str, key: str, host: str, path: str) -> None:
        super().__init__(login, key)
        self._fields = {"Authorization": self.authorization("GET", host, path)}

    def sign_request(self, method: str, host: str, target: str,
                     headers: Optional[Mapping[str, str]] = None,
                     body: Optional[bytes] = None) -> SignedRequest:
        return SignedRequest(target, self._fields, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch", type=int, default=300, help="requests per batch")
    args = parser.parse_args()
    if args.batches < 1 or args.batch < 1:
        parser.error("--batches and --batch must be >= 1")
    nginx = Nginx(1).start()
    try:
        port = nginx.ports[0]
        host = f"127.0.0.1:{port}"
        field = LoginAuthenticator("root", "toor").authorization("GET", host, "/json")
        ones = {
            "unsigned": napix_one(port, None, None),
            "unsigned + 190 B field": napix_one(port, None, None, headers={"X-Padding": field}),
            "signature constant": napix_one(port, ConstantSignature("root", "toor", host, "/json"),
                                         None),
            "fixed nonce": napix_one(port, FixedNonce("root", "toor"), None),
            "signed": napix_one(port, LoginAuthenticator("root", "toor"), None),
        }
        for one in ones.values():
            batch(one, 200)
        per_request = interleave(ones, args.batches, args.batch)
    finally:
        nginx.stop()
    print(f"CPU per request (user + system), medians of {args.batches} interleaved "
          f"batches of {args.batch}:\n")
    print("| client | CPU us/req | more than the row above |")
    print("|---|---|---|")
    previous = None
    for name, value in per_request.items():
        more = "" if previous is None else f"{value - previous:+.1f}"
        print(f"| {name} | {value:.1f} | {more} |")
        previous = value
    return 0


if __name__ == "__main__":
    sys.exit(main())
