"""``napix demo`` runs its three sections end to end and exits 0."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

from rich.cells import cell_len

from napixclient import demo

ROOT = Path(__file__).resolve().parent.parent


def test_napix_demo_runs_its_three_sections_and_exits_0():
    # No server of this process is involved: a plain blocking subprocess is fine.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "napixclient", "demo"], capture_output=True,
                          text=True, env=env, timeout=60, cwd=str(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    titles = [title for title, _ in demo.SECTIONS]
    positions = [out.find(title) for title in titles]
    assert -1 not in positions and positions == sorted(positions), out
    assert "unexpected" not in out
    # 1: both backends at once, then the failure rolled back.
    assert "InsufficientStorage" in out and "released 10.0.0.8" in out
    # 2: a choice, requests left pending, then all collected.
    assert "<- chosen" in out and "pool.pending == 0" in out
    assert "ConnectionError" in out and "Timeout" in out
    # 3: three hops, ending at C's 404.
    assert "hop 2: GET http://127.0.0.1:" in out and "/slots/42 -> 404" in out
    assert "All servers stopped" in out
    assert done.stderr == ""


def test_run_demo_reports_an_unexpected_outcome_with_exit_code_1(monkeypatch):
    # Nobody has the slots asked for: the probe section notices it.
    monkeypatch.setattr(demo, "SLOTS_NEEDED", 100)
    monkeypatch.setattr(demo, "PROBE_WAIT", 0.1)
    monkeypatch.setattr(demo, "PROBE_TIMEOUT", 0.6)
    out = StringIO()
    assert demo.run_demo(out) == 1
    assert "unexpected: a hypervisor with room should answer in time" in out.getvalue()


def test_napix_demo_fits_80_columns():
    # Prose and long error lines reached 88 columns (and str(error) 200).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPIX_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="80")
    done = subprocess.run([sys.executable, "-m", "napixclient", "demo"], capture_output=True,
                          text=True, env=env, timeout=60, cwd=str(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) > 40
    too_wide = [line for line in lines if cell_len(line) > 80]
    assert not too_wide, too_wide
    # Wrapped, nothing is lost: the chain still reads hop by hop.
    assert "hop 2: GET http://127.0.0.1:" in done.stdout
