"""Shared fixtures. The napix_server fixtures come from the plugin, listed here
so the suite also runs from a checkout that is not installed."""

import pytest

pytest_plugins = ["napixclient.testing.plugin"]


def pytest_addoption(parser):
    parser.addoption(
        "--napix-parser", dest="napix_parser", default=None,
        help="run every Client with this response parser (napixclient.client.DEFAULT_PARSER), "
             "e.g. geventhttpclient; the whole suite must pass on each")


def pytest_configure(config):
    name = config.getoption("napix_parser")
    if name:
        import napixclient.client
        from napixclient.http11 import parser

        try:
            parser(name)
        except ValueError as error:  # unknown, or its extra is not installed
            raise pytest.UsageError(f"--napix-parser: {error}") from None
        napixclient.client.DEFAULT_PARSER = name


#: The variables requests and napixclient read proxies from.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch):
    """Tests talk to 127.0.0.1 directly: a proxy set on the machine running
    them must not carry their traffic (tests of proxies set their own)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
