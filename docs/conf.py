"""Sphinx configuration for napixclient's documentation.

Build the site with ``python -m sphinx -W -b html docs docs/_build/html`` and
run the code samples with ``python -m sphinx -W -b doctest docs docs/_build/doctest``
(both from the repository root; ``.ci/run`` does it).
"""

import os
import sys

# The checkout's copy of napixclient, not an installed (maybe stale) one.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import napixclient  # noqa: E402

project = "napixclient"
author = "the napixclient authors"
copyright = "the napixclient authors"
version = release = napixclient.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "myst_parser",
]
# No intersphinx: the build must work with no network at all.

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list = []

# -- autodoc ----------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Bases are shown only on the pages where they say something (the exception
# tree, authenticators, the transport), not "Bases: object" everywhere.
autodoc_default_options = {
    "members": True,
}

# -- doctest ----------------------------------------------------------------
# Every page's samples run against NapixTestServers started in the page's
# testsetup block, on 127.0.0.1 only; these names are there for all of them,
# including the examples in docstrings pulled in by autodoc.
doctest_global_setup = """
from napixclient import Client, ClientPool, HTTPError, Response
from napixclient.authenticators import LoginAuthenticator, TokenIdentifier
from napixclient.testing import NapixTestServer
"""

# -- HTML -------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"napixclient {release}"
html_static_path: list = []


# -- every public name is in the reference ------------------------------------
# Every module of the package (but __main__ and private ones) must have its
# page, and every name in its ``__all__`` must be documented, in its module
# or, when the package re-exports it, as ``napixclient.<name>``. A miss is a
# warning, so an error under -W: a new module or name cannot go unnoticed.


def public_modules():
    import pkgutil

    names = ["napixclient"]
    for info in pkgutil.iter_modules(napixclient.__path__):
        if not info.name.startswith("_"):
            names.append(f"napixclient.{info.name}")
    return names


def _check_public_names(app, env):
    import importlib

    from sphinx.util import logging

    logger = logging.getLogger("napixclient.docs")
    domain = env.get_domain("py")
    documented = set(domain.objects)
    for module_name in public_modules():
        if module_name not in domain.modules:
            logger.warning("module %s has no page in the API reference", module_name)
            continue
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            candidates = {f"{module_name}.{name}", f"napixclient.{name}"}
            if not candidates & documented:
                logger.warning("public name %s.%s is missing from the API reference",
                               module_name, name)


def setup(app):
    app.connect("env-check-consistency", _check_public_names)
