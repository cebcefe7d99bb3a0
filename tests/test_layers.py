"""The layers of DESIGN.md hold in the code: each module imports only modules
of its own layer or below, and the core and the values hold no gevent."""

import ast
import pkgutil
from pathlib import Path

import napixclient

PACKAGE = Path(napixclient.__file__).parent

#: Lowest first. A new module must be placed here, or this test fails.
LAYERS = {
    "values": ["response", "exceptions", "chain", "redact", "failures"],
    "core": ["core", "http11", "authenticators"],
    "connection": ["retry", "dialing", "connections", "transport", "adapter"],
    "client": ["client", "otel"],
    "pool": ["pool", "aio"],
    "server": ["catcher", "wsgi", "asgi", "testing"],
    "face": ["probing", "cli", "demo", "fleet", "__main__"],
}
RANK = {module: rank for rank, names in enumerate(LAYERS.values()) for module in names}
NO_GEVENT = LAYERS["values"] + LAYERS["core"] + ["retry"]


def modules():
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        path = PACKAGE / (f"{info.name}/__init__.py" if info.ispkg else f"{info.name}.py")
        files = [path] if not info.ispkg else sorted(path.parent.rglob("*.py"))
        yield info.name, files


def imported(files):
    """(top-level napixclient module, line) and third-party roots imported."""
    ours, theirs = [], set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                if node.module == "napixclient":
                    names = [f"napixclient.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "napixclient" and len(parts) > 1:
                    ours.append((parts[1], f"{path.name}:{node.lineno}"))
                else:
                    theirs.add(parts[0])
    return ours, theirs


def test_every_module_has_a_layer():
    missing = [name for name, _ in modules() if name not in RANK]
    assert not missing, f"place these modules in a layer of LAYERS: {missing}"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for name, files in modules():
        for target, where in imported(files)[0]:
            if target == "__version__":
                continue
            if RANK.get(target, -1) > RANK[name]:
                upward.append(f"{where}: {name} imports {target}")
    assert not upward


def test_the_core_and_the_values_hold_no_gevent():
    for name, files in modules():
        if name in NO_GEVENT:
            assert "gevent" not in imported(files)[1], name
