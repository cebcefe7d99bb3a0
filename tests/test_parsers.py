"""Both parser engines against a real server, and which one is the default;
the whole suite also runs on each: ``python -m pytest`` (llhttp, the
default) and ``python -m pytest --napix-parser h11``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import napixclient.core.client
import napixclient.core.parser
from napixclient import Client, ClientPool, Response
from napixclient.core.parser import available_parsers, default_parser
from tests.helpers import AUTH

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", available_parsers())
def test_each_parser_signs_reads_bodies_and_keeps_connections_alive(napix_server,
                                                                      name):
    napix_server.route("/", body={"managers": ["vm-ip"]})
    napix_server.route("/text", body="plain text")
    with Client(napix_server.host, AUTH, parser=name) as client:
        assert client.get("/").body == {"managers": ["vm-ip"]}
        assert client.get("/text").body == "plain text"
        assert client.head("/").content == b""
        assert client.parser == name
    assert napix_server.max_open_connections == 1
    assert len(napix_server.requests) == 3


def test_a_pool_passes_the_parser_to_its_clients(napix_server):
    napix_server.route("/", body=[])
    name = available_parsers()[0]
    with ClientPool(AUTH, parser=name) as pool:
        pool.request(napix_server.host, "GET", "/")
        (result,) = pool.wait(timeout=5)
        assert isinstance(result, Response)
        assert pool.client(napix_server.host).parser == name


@pytest.mark.parametrize("name", ["urllib3", "", 3])
def test_an_unknown_parser_is_refused_at_once(name):
    with pytest.raises(ValueError, match="parser"):
        Client("127.0.0.1:1", parser=name)
    with pytest.raises(ValueError, match="parser"):
        ClientPool(parser=name)


def test_the_old_transport_keyword_still_works_with_a_deprecation_warning(napix_server):
    napix_server.route("/", body=[])
    with pytest.warns(DeprecationWarning, match="parser"):
        client = Client(napix_server.host, AUTH, transport="h11")
    with client:
        assert client.get("/").body == []
        assert client.parser == "h11"


@pytest.mark.parametrize("old, meant", [("geventhttpclient", "llhttp"), ("http.client", "h11")])
def test_the_parser_names_of_earlier_releases_still_work_with_a_deprecation_warning(
        napix_server, old, meant):
    napix_server.route("/", body=[])
    with pytest.warns(DeprecationWarning, match=f"parser='{old}' is now parser='{meant}'"):
        client = Client(napix_server.host, AUTH, parser=old)
    with client:
        assert client.get("/").body == []
        assert client.parser == meant


def _without_httptools(monkeypatch):
    """httptools cannot be imported (a None in sys.modules stands for it)."""
    monkeypatch.setitem(sys.modules, "httptools", None)
    monkeypatch.setattr(napixclient.core.parser, "_loadable", {})


def test_llhttp_without_httptools_says_how_to_get_it(monkeypatch):
    _without_httptools(monkeypatch)
    with pytest.raises(ValueError, match="pip install httptools"):
        Client("127.0.0.1:1", parser="llhttp")
    assert available_parsers() == ["h11"]


def test_without_httptools_the_default_falls_back_to_h11(monkeypatch):
    _without_httptools(monkeypatch)
    monkeypatch.setattr(napixclient.core.client, "DEFAULT_PARSER", None)
    assert default_parser() == "h11"
    with Client("127.0.0.1:1") as client:
        assert client.parser == "h11"


def test_the_default_parser_is_llhttp_since_httptools_is_a_dependency(
        monkeypatch, napix_server):
    napix_server.route("/", body={"ok": True})
    monkeypatch.setattr(napixclient.core.client, "DEFAULT_PARSER", None)  # as installed
    assert default_parser() == "llhttp"
    with Client(napix_server.host, AUTH) as client:
        assert client.parser == "llhttp"
        assert client.get("/").body == {"ok": True}
    with ClientPool(AUTH) as pool:
        assert pool.client(napix_server.host).parser == "llhttp"


def test_the_package_declares_both_engines():
    """setup.py: httptools (llhttp, the default) and h11 (the fallback) are
    dependencies; geventhttpclient is not (its binding imports gevent, which
    an asyncio program must never load)."""
    text = (ROOT / "setup.py").read_text()
    install = text[text.index("install_requires"):text.index("extras_require")]
    assert '"httptools>=0.6' in install and '"h11>=0.14' in install
    assert "geventhttpclient" not in install


def test_importing_napixclient_imports_no_parser_engine():
    code = ("import sys, napixclient, napixclient.pool; "
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('geventhttpclient', 'httptools', 'h11')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pytest_with_a_parser_that_cannot_load_is_a_usage_error_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--napix-parser", "nosuch", str(ROOT / "tests" / "test_layers.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    output = done.stdout + done.stderr
    assert done.returncode == 4, output  # pytest's exit code for a usage error
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert "--napix-parser: parser must be one of" in output


def test_pytest_asked_for_llhttp_without_httptools_is_a_usage_error(tmp_path):
    """``--napix-parser llhttp`` where httptools cannot be imported (a
    package on PYTHONPATH that raises ImportError stands for it being
    absent)."""
    absent = tmp_path / "httptools"
    absent.mkdir()
    (absent / "__init__.py").write_text("raise ImportError('httptools is absent')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--napix-parser", "llhttp",
                           str(ROOT / "tests" / "test_layers.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"))
    output = done.stdout + done.stderr
    assert done.returncode == 4, output
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert "parser 'llhttp' needs httptools" in output, output
    assert "pip install httptools" in output
