"""Shared fixtures. The napix_server fixtures come from the plugin, listed here
so the suite also runs from a checkout that is not installed."""

pytest_plugins = ["napixclient.testing"]


def pytest_addoption(parser):
    parser.addoption(
        "--napix-transport", default=None,
        help="run every Client on this transport (napixclient.client.DEFAULT_TRANSPORT), "
             "e.g. geventhttpclient; the whole suite must pass on each")


def pytest_configure(config):
    transport = config.getoption("--napix-transport")
    if transport:
        import napixclient.client
        from napixclient.connections import reader

        reader(transport)  # an unknown or missing transport stops the run here
        napixclient.client.DEFAULT_TRANSPORT = transport
