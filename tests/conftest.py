"""Shared fixtures. The napix_server fixtures come from the plugin, listed here
so the suite also runs from a checkout that is not installed."""

pytest_plugins = ["napixclient.testing"]
