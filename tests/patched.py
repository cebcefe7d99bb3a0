"""Run pytest in a process that called ``gevent.monkey.patch_all()`` first.

Celery's gevent pool, gunicorn's gevent workers and many gevent programs
patch the standard library before anything else; napixclient never patches,
and must work the same when the program did (DESIGN.md, "No
monkey-patching, and safe under it"). This runner patches, then hands its
arguments to pytest, from the root of the checkout::

    python tests/patched.py -q tests/test_pool.py tests/test_connections.py
    python tests/patched.py -q            # the files marked for it (see below)

Without a test path it runs the tests marked ``patched`` (a test file
says ``pytestmark = pytest.mark.patched``, as test_pool.py,
test_connections.py and test_fleet.py do): what ``.ci/run`` runs, so that
marking a file is all it takes to have CI run it patched too.
``tests/conftest.py`` adds a line to pytest's header saying what is
patched, so a run's output shows which way it ran.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list) -> int:
    """Run pytest with ``argv``; with no test path among them, on the tests
    marked ``patched``. Returns pytest's exit code."""
    # As ``python -m pytest`` from the checkout: the checkout on sys.path
    # (so that ``tests.helpers`` and this checkout's napixclient import), not
    # this folder.
    sys.path[0] = str(ROOT)
    paths = [arg for arg in argv
             if not arg.startswith("-") and os.path.exists(arg.split("::")[0])]
    if not paths:
        # The files that mark themselves, named: collecting the others would
        # load their async test machinery, which the anyio plugin (off, see
        # below) provides.
        marked = [str(path) for path in sorted((ROOT / "tests").glob("test_*.py"))
                  if "pytestmark = pytest.mark.patched" in path.read_text()]
        argv = [*argv, "-m", "patched", *marked]
    # anyio's plugin imports trio when it is installed, and trio needs
    # select.epoll, which gevent's patched select does not have.
    return int(pytest.main(["-p", "no:anyio", *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
