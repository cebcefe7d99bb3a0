"""Every script in examples/ runs on its own, against its own local servers;
each use has a gevent script and its asyncio twin (``aio_*.py``), and an
asyncio one pointed at real hosts loads no gevent."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
#: The uses the demo shows, each an example for each driver.
USES = ("orchestrate", "capacity_probe", "chained_errors")



@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs_and_exits_zero(script):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip()


def test_each_use_has_an_example_for_each_driver():
    names = {path.stem for path in EXAMPLES}
    for use in USES:
        assert {use, f"aio_{use}"} <= names, use


def test_the_asyncio_probe_given_hosts_loads_no_gevent(many_hosts):
    hosts = many_hosts(3)
    script = ROOT / "examples" / "aio_capacity_probe.py"
    run = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{script.name!r}] + {hosts.hosts!r}
        runpy.run_path({str(script)!r}, run_name="__main__")
        print("gevent:", sorted(m for m in sys.modules if m.split(".")[0] == "gevent"))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), NAPIX_LOGIN="root", NAPIX_KEY="toor")
    done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "asking 3 hypervisors" in done.stdout and "nobody had room" in done.stdout
    assert "gevent: []" in done.stdout, done.stdout
