"""Sphinx configuration for napixclient's documentation.

Build the site with ``python -m sphinx -W -b html docs docs/_build/html`` and
run the code samples with ``python -m sphinx -W -b doctest docs docs/_build/doctest``
(both from the repository root; ``.ci/run`` does it).
"""

import builtins
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

# -- references -------------------------------------------------------------
# Every reference must land: a dead one is a warning, so an error under -W.
nitpicky = True

# No intersphinx: the build must work with no network at all, so the names of
# Python and of the libraries napixclient stands on cannot be resolved; they
# are written as references all the same, for the day they can be. Those
# alone are let through: napixclient's own names must resolve.
_FOREIGN = sorted(set(sys.stdlib_module_names) | {
    "backports", "brotli", "celery", "compression", "gevent", "geventhttpclient", "kombu",
    "opentelemetry", "pytest", "redis", "requests", "rich", "urllib3",
})
nitpick_ignore: list = []
nitpick_ignore_regex = [
    (r"py:.*", rf"(?:{'|'.join(_FOREIGN)})(?:[.\[].*)?"),
    (r"py:.*", rf"(?:{'|'.join(name for name in dir(builtins) if name.isidentifier())})"),
]

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
# or under another name of the same object (the module of a package that
# holds it, or ``napixclient.<name>``, see _add_aliases). A miss is a
# warning, so an error under -W: a new module or name cannot go unnoticed.


def public_modules():
    import pkgutil

    names = ["napixclient"]
    for info in pkgutil.iter_modules(napixclient.__path__):
        if not info.name.startswith("_"):
            names.append(f"napixclient.{info.name}")
    return names


def _exporters():
    """Every module of napixclient with an ``__all__``: ``{name: module}``."""
    import importlib
    import pkgutil

    found = {"napixclient": napixclient}
    for info in pkgutil.walk_packages(napixclient.__path__, "napixclient."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an extra that is not installed: autodoc says so
            continue
        if hasattr(module, "__all__"):
            found[info.name] = module
    return found


def _add_aliases(app, env):
    """One object, found under each name it goes by.

    A class defined in ``napixclient.client`` and documented as
    ``napixclient.Client`` is referred to both ways, and so are its members
    (``Client.send``, written in ``client.py``, means
    ``napixclient.client.Client.send``); a function documented in
    ``napixclient.fleet.streaming`` is ``napixclient.fleet.probe`` too. For
    every name a module exports (its ``__all__``), the documented spelling
    of the same object lends its entry to the others, its members' too.
    """
    domain = env.get_domain("py")
    objects = domain.objects
    spellings = {}
    for module_name, module in _exporters().items():
        for name in module.__all__:
            value = getattr(module, name, None)
            if value is None:
                continue
            names = spellings.setdefault((name, id(value)), set())
            names.add(f"{module_name}.{name}")
            home = getattr(value, "__module__", None)
            qualname = getattr(value, "__qualname__", None)
            if isinstance(home, str) and isinstance(qualname, str):
                names.add(f"{home}.{qualname}")
    for names in spellings.values():
        documented = [name for name in names if name in objects and not objects[name].aliased]
        if not documented:
            continue
        source = documented[0]
        members = [(key, entry) for key, entry in objects.items()
                   if key.startswith(source + ".")]
        for other in names - {source}:
            if other not in objects:
                objects[other] = objects[source]._replace(aliased=True)
            for key, entry in members:
                alias = other + key[len(source):]
                if alias not in objects:
                    objects[alias] = entry._replace(aliased=True)


def _check_public_names(app, env):
    import importlib

    from sphinx.util import logging

    _add_aliases(app, env)
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


def _instance_variables_are_targets(app, domain, objtype, content):
    """``:ivar name:`` (and ``:var:``, ``:cvar:``) of a class's docstring
    says what the attribute is; this makes it a place
    ``:attr:`Class.name``` can point to, as a documented attribute is."""
    from docutils import nodes
    from sphinx import addnodes

    if domain != "py" or objtype not in ("class", "exception"):
        return
    signature = next(iter(content.parent.findall(addnodes.desc_signature)), None)
    if signature is None or not signature.get("fullname"):
        return
    owner = ".".join(part for part in (signature.get("module"), signature["fullname"]) if part)
    python = app.env.get_domain("py")
    for field in content.findall(nodes.field):
        words = field[0].astext().split()
        if len(words) != 2 or words[0] not in ("ivar", "var", "cvar"):
            continue
        name = f"{owner}.{words[1]}"
        if name in python.objects:
            continue
        paragraphs = list(field[1].findall(nodes.paragraph))
        if not paragraphs:
            continue
        paragraphs[0].insert(0, nodes.inline("", "", ids=[name]))
        python.note_object(name, "attribute", name, location=field)


def _quiet_foreign_annotations(app, domain, node):
    """A type in a signature names what the code names: a private alias
    (``TimeoutSpec``), a name imported from another library (``Retry``), a
    private class. Those cannot resolve and are let through; references
    written in the text must resolve."""
    from sphinx import addnodes

    target = node.get("reftarget", "")
    private = "." not in target or any(part.startswith("_") for part in target.split("."))
    parent = node.parent
    while parent is not None:
        if isinstance(parent, addnodes.desc_signature):
            return True if private else None
        parent = parent.parent
    return None


def _resolve_where_defined(app, env, node, contnode):
    """A short reference in the docstring of a re-exported object (``Headers``
    in ``napixclient.Response``'s) means what it means where the object is
    defined (``napixclient.response``)."""
    import importlib

    if node.get("refdomain") != "py":
        return None
    module_name, class_name = node.get("py:module"), node.get("py:class")
    if not module_name or not class_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    value = getattr(module, class_name.split(".")[0], None)
    home = getattr(value, "__module__", None)
    if not isinstance(home, str) or home == module_name:
        return None
    retry = node.deepcopy()
    retry["py:module"] = home
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                             node["reftype"], node["reftarget"], retry,
                                             contnode)


def setup(app):
    app.connect("object-description-transform", _instance_variables_are_targets)
    app.connect("env-check-consistency", _check_public_names)
    app.connect("missing-reference", _resolve_where_defined)
    app.connect("warn-missing-reference", _quiet_foreign_annotations)
