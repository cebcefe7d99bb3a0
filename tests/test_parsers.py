"""Both response parsers against a real server, and which one is the
default; the whole suite also runs on each: ``python -m pytest`` (llhttp, the
default) and ``python -m pytest --napix-parser http.client``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import napixclient.client
import napixclient.http11
from napixclient import Client, ClientPool, Response
from napixclient.http11 import PARSERS, available_parsers, default_parser, parser
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
        assert client._parser is parser(name)
    assert napix_server.max_open_connections == 1
    assert len(napix_server.requests) == 3


def test_a_pool_passes_the_parser_to_its_clients(napix_server):
    napix_server.route("/", body=[])
    name = available_parsers()[-1]
    with ClientPool(AUTH, parser=name) as pool:
        pool.request(napix_server.host, "GET", "/")
        (result,) = pool.wait(timeout=5)
        assert isinstance(result, Response)
        assert pool.client(napix_server.host)._parser is parser(name)


@pytest.mark.parametrize("name", ["urllib3", "", 3])
def test_an_unknown_parser_is_refused_at_once(name):
    with pytest.raises(ValueError, match="parser"):
        Client("127.0.0.1:1", parser=name)
    with pytest.raises(ValueError, match="parser"):
        ClientPool(parser=name)


def test_the_old_transport_keyword_still_works_with_a_deprecation_warning(napix_server):
    napix_server.route("/", body=[])
    with pytest.warns(DeprecationWarning, match="parser"):
        client = Client(napix_server.host, AUTH, transport="http.client")
    with client:
        assert client.get("/").body == []
        assert client._parser is parser("http.client")


def test_the_fast_parser_without_its_extra_says_how_to_get_it(monkeypatch):
    def missing():
        raise ImportError("No module named 'geventhttpclient'")

    monkeypatch.setattr(napixclient.http11, "PARSERS",
                        {"http.client": PARSERS["http.client"]})
    monkeypatch.setitem(napixclient.http11._OPTIONAL, "geventhttpclient",
                        (missing, "fast"))
    with pytest.raises(ValueError, match=r"pip install '\.\[fast\]'"):
        Client("127.0.0.1:1", parser="geventhttpclient")
    assert available_parsers() == ["http.client"]


def test_without_geventhttpclient_the_default_falls_back_to_http_client(monkeypatch):
    def missing():
        raise ImportError("No module named 'geventhttpclient'")

    monkeypatch.setattr(napixclient.http11, "PARSERS",
                        {"http.client": PARSERS["http.client"]})
    monkeypatch.setitem(napixclient.http11._OPTIONAL, "geventhttpclient",
                        (missing, "fast"))
    monkeypatch.setattr(napixclient.client, "DEFAULT_PARSER", None)
    assert default_parser() == "http.client"
    with Client("127.0.0.1:1") as client:
        assert client._parser is PARSERS["http.client"]


def test_the_default_parser_is_llhttp_since_geventhttpclient_is_a_dependency(
        monkeypatch, napix_server):
    napix_server.route("/", body={"ok": True})
    monkeypatch.setattr(napixclient.client, "DEFAULT_PARSER", None)  # as installed
    assert default_parser() == "geventhttpclient"
    with Client(napix_server.host, AUTH) as client:
        assert client._parser is parser("geventhttpclient")
        assert client.get("/").body == {"ok": True}
    with ClientPool(AUTH) as pool:
        assert pool.client(napix_server.host)._parser is parser("geventhttpclient")


def test_the_package_declares_geventhttpclient_with_wheels_for_every_python():
    """setup.py: a dependency (so llhttp is the default everywhere), from
    2.4, the last release with wheels for CPython 3.10 (2.5 and later need
    3.11)."""
    text = (ROOT / "setup.py").read_text()
    install = text[text.index("install_requires"):text.index("extras_require")]
    assert '"geventhttpclient>=2.4,<3"' in install


def test_importing_napixclient_does_not_import_geventhttpclient():
    code = ("import sys, napixclient, napixclient.pool; "
            "print([m for m in sys.modules if m.startswith('geventhttpclient')])")
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


def test_pytest_asked_for_llhttp_without_geventhttpclient_is_a_usage_error(tmp_path):
    """The case of item 20: ``--napix-parser geventhttpclient`` where
    geventhttpclient cannot be imported (a package on PYTHONPATH that
    raises ImportError stands for it being absent)."""
    absent = tmp_path / "geventhttpclient"
    absent.mkdir()
    (absent / "__init__.py").write_text("raise ImportError('geventhttpclient is absent')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--napix-parser", "geventhttpclient",
                           str(ROOT / "tests" / "test_layers.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"))
    output = done.stdout + done.stderr
    assert done.returncode == 4, output
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert "parser 'geventhttpclient' needs the fast extra" in output, output
    assert "pip install '.[fast]'" in output
