"""Profile napixclient against nginx on 127.0.0.1. By hand:

    python benchmarks/profile_napix.py [--requests 10000] [--sort tottime] [--lines 35]
    python benchmarks/profile_napix.py --sequential --auth login     # one connection, signed
    python benchmarks/profile_napix.py --sequential --auth login --profiler pyinstrument

Without ``--sequential``: one ClientPool fan-out, W1-like (20 hosts, at
most 4 at a time per host). With it: GETs one after the other on one
keep-alive connection, where every microsecond is the client's own.
``--auth`` signs the requests (``login``: LoginAuthenticator, ``token``:
TokenIdentifier, ``callable``: a requests-style callable); ``--parser``
picks napixclient's parser. Prints cProfile's table, or pyinstrument's
tree with ``--profiler pyinstrument``; see BENCHMARKS.md for where the time
goes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from backends import Nginx  # noqa: E402


def _authenticator(name: str) -> Any:
    from napixclient.authenticators import LoginAuthenticator, TokenIdentifier

    def plain(request: Any) -> Any:
        request.headers["X-Napix-Bench"] = "1"
        return request

    return {"none": None, "login": LoginAuthenticator("root", "toor"),
            "token": TokenIdentifier("root:0123456789abcdef"), "callable": plain}[name]


def _fanout(bases: List[str], per_host: int, options: Dict[str, Any],
            path: str = "/json") -> List[Any]:
    from napixclient import ClientPool

    with ClientPool(simultaneous=4, timeout=30.0, **options) as pool:
        for _ in range(per_host):
            for base in bases:
                pool.request(base, "GET", path)
        return [(r.status, r.body) for r in pool.wait(timeout=120)]


def _sequential(base: str, count: int, options: Dict[str, Any],
                path: str = "/json") -> List[Any]:
    from napixclient import Client

    with Client(base, simultaneous=1, timeout=30.0, **options) as client:
        outcomes = []
        for _ in range(count):
            response = client.get(path)
            outcomes.append((response.status, response.body))
        return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--sequential", action="store_true",
                        help="one keep-alive connection, one request after the other")
    parser.add_argument("--auth", choices=["none", "login", "token", "callable"],
                        default="none")
    parser.add_argument("--parser", default=None, help="napixclient's parser")
    parser.add_argument("--path", choices=["/json", "/file.json"], default="/json",
                        help="/json (a bare head) or /file.json (nginx's static file: "
                             "Last-Modified, ETag, Accept-Ranges too)")
    parser.add_argument("--profiler", choices=["cprofile", "pyinstrument"], default="cprofile")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--lines", type=int, default=35)
    args = parser.parse_args()
    options: Dict[str, Any] = {"authenticator": _authenticator(args.auth)}
    if args.parser:
        options["parser"] = args.parser
    hosts = 1 if args.sequential else 20
    nginx = Nginx(hosts).start()
    try:
        bases = [f"http://127.0.0.1:{p}" for p in nginx.ports]
        run: Callable[[int], List[Any]]
        if args.sequential:
            def run(count: int) -> List[Any]:
                return _sequential(bases[0], count, options, args.path)
        else:
            def run(count: int) -> List[Any]:
                return _fanout(bases, max(1, count // len(bases)), options, args.path)
        run(200)  # imports, first connections
        if args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001)
            profiler.start()
            outcomes = run(args.requests)
            profiler.stop()
        else:
            profile = cProfile.Profile()
            profile.enable()
            outcomes = run(args.requests)
            profile.disable()
    finally:
        nginx.stop()
    assert all(isinstance(o, tuple) and o[0] == 200 for o in outcomes)
    if args.profiler == "pyinstrument":
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.lines)


if __name__ == "__main__":
    main()
