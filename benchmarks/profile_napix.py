"""Profile napixclient on a W1-like load (nginx, 20 hosts, cap 4). By hand:

    python benchmarks/profile_napix.py [--requests 10000] [--sort tottime] [--lines 35]

Prints cProfile's table for one ClientPool fan-out; see BENCHMARKS.md for
where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from backends import Nginx  # noqa: E402
from clients import napixclient_fanout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--lines", type=int, default=35)
    args = parser.parse_args()
    nginx = Nginx(20).start()
    try:
        bases = [f"http://127.0.0.1:{p}" for p in nginx.ports]
        napixclient_fanout(bases, "/json", 10, 4, 30.0)  # imports, first connections
        profile = cProfile.Profile()
        profile.enable()
        outcomes = napixclient_fanout(bases, "/json", args.requests // len(bases), 4, 30.0)
        profile.disable()
    finally:
        nginx.stop()
    assert all(isinstance(o, tuple) and o[0] == 200 for o in outcomes)
    pstats.Stats(profile).sort_stats(args.sort).print_stats(args.lines)


if __name__ == "__main__":
    main()
