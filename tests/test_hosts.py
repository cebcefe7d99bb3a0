"""napixclient.core.hosts: the one parser of host strings and request paths,
which the Client, the pool, the command and the fleet share."""

import ast
import sys
from pathlib import Path

import pytest

from napixclient import Client, ClientPool
from napixclient.core import hosts
from napixclient.core.hosts import base_url, check_path, host_header, parse_host


@pytest.mark.parametrize("host, parsed", [
    ("server.napix.nx", ("http", "server.napix.nx", None, "")),
    ("server.napix.nx:8002", ("http", "server.napix.nx", 8002, "")),
    ("https://server.napix.nx/napix/", ("https", "server.napix.nx", None, "/napix")),
    ("[::1]:8002", ("http", "::1", 8002, "")),
    ("::1", ("http", "::1", None, "")),
    ("fe80::1", ("http", "fe80::1", None, "")),
    ("https://::1/napix", ("https", "::1", None, "/napix")),
])
def test_parse_host_reads_names_ports_base_urls_and_bare_ipv6_addresses(host, parsed):
    assert parse_host(host) == parsed


@pytest.mark.parametrize("host, message", [
    ("::1:8002", "host '::1:8002' is ambiguous: write [::1]:8002 for port 8002, "
                 "or [::1:8002] for that address"),
    ("1::2::3", "in brackets with a port ([::1]:8002)"),
    ("h:notaport", "the port must be a number from 1 to 65535"),
    ("h:70000", "the port must be a number from 1 to 65535"),
    ("h:0", "the port must be a number from 1 to 65535"),
    ("ftp://h", "the scheme must be http or https"),
    ("http://user:pw@h", "credentials belong in the authenticator"),
    ("bad host", "is not a valid host name"),
    ("", "non-empty str"),
])
def test_parse_host_refuses_a_malformed_host_saying_what_is_wrong(host, message):
    with pytest.raises(ValueError) as caught:
        parse_host(host)
    assert message in str(caught.value)


def test_the_client_and_the_pool_read_hosts_with_the_same_parser_and_words():
    # Client("::1:8002") used to raise urllib3's "Port could not be cast".
    for make in (lambda: Client("::1:8002"), lambda: ClientPool().client("::1:8002")):
        with pytest.raises(ValueError, match=r"write \[::1\]:8002 for port 8002"):
            make()
    with Client("::1", timeout=1) as client:
        assert client.base_url == "http://[::1]" and client.host == "[::1]"


def test_host_header_and_base_url_leave_the_default_port_out():
    assert host_header("http", "::1", 80) == "[::1]"
    assert host_header("https", "h", 8443) == "h:8443"
    assert base_url("http://h:80/") == base_url("h") == "http://h"
    assert base_url("::1") == "http://[::1]"


@pytest.mark.parametrize("url, message", [
    ("capacity", "url 'capacity' must be a path starting with '/', such as '/capacity'"),
    ("http://h/x", "url 'http://h/x' must be a path starting with '/', such as '/x'"),
    (b"/x", "url must be a str path"),
])
def test_check_path_wants_a_path_starting_with_a_slash(url, message):
    with pytest.raises(ValueError) as caught:
        check_path(url)
    assert str(caught.value) == message or message in str(caught.value)
    assert check_path("/vm-ip/?size=1") == "/vm-ip/?size=1"


def test_hosts_imports_nothing_but_the_standard_library():
    tree = ast.parse(Path(hosts.__file__).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert roots and roots <= set(sys.stdlib_module_names) | {"__future__"}, roots
