"""The code has the shape docs/architecture.rst draws.

The layers are read from the literal block under the ``.. _layers:`` label
of docs/architecture.rst, the one picture of them; this file holds no list
of its own. The tests fail on a module in no layer, an import of a module of
a higher layer, any circle of imports, a module's use of another module's
private name, and gevent or asyncio loaded by importing the core or the
package (in a fresh interpreter).

Every import counts: at the top of a module, inside a function (the same
dependency, only later), and under ``if TYPE_CHECKING:`` (an annotation ties
two modules as a call does, and moving such an import out of its guard is
how a circle starts). ``napixclient/__init__.py`` stands outside the layers:
Python runs it before any module of the package, so it must import none of
them at run time, and ``from napixclient import Client`` is an import of the
module where ``Client`` lives.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "napixclient"
ARCHITECTURE = ROOT / "docs" / "architecture.rst"
TOP = "napixclient"

#: Entries of the picture whose code is being written (remove one when it lands).
COMING = {"aio/"}


# -- the picture --------------------------------------------------------------


def whiteboard(text: str) -> Dict[str, List[str]]:
    """The layers of the literal block under ``.. _layers:``, top first:
    ``{layer: [entry, ...]}``, an entry being ``name.py`` or ``name/``."""
    lines = text.splitlines()
    try:
        start = lines.index(".. _layers:")
    except ValueError:
        raise AssertionError(f"{ARCHITECTURE} has no '.. _layers:' label") from None
    opening = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith("::"))
    block = []
    for line in lines[opening + 1:]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    block = [line for line in block if line.strip()]
    margin = min(len(line) - len(line.lstrip()) for line in block)
    layers: Dict[str, str] = {}
    name = ""
    for line in block:
        line = line[margin:]
        if not line.startswith(" "):
            name, _, line = line.partition(" ")
            layers[name] = ""
        layers[name] += " " + line
    return {
        layer: re.findall(r"(?<![\w/.])\w+(?:\.py|/)", re.sub(r"\([^)]*\)", " ", words))
        for layer, words in layers.items()
    }


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> Dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def entry_modules(entry: str) -> Tuple[str, bool]:
    """The dotted name an entry covers, and whether it covers a package."""
    if entry.endswith("/"):
        return f"{TOP}.{entry[:-1]}", True
    return f"{TOP}.{entry[:-3]}", False


def ranks(layers: Dict[str, List[str]], names) -> Dict[str, int]:
    """The rank of each module in ``names`` that has a layer: 0 for the
    lowest layer."""
    found = {}
    for rank, entries in enumerate(reversed(list(layers.values()))):
        for entry in entries:
            covered, package = entry_modules(entry)
            for name in names:
                if name == covered or (package and name.startswith(covered + ".")):
                    found[name] = rank
    return found


@pytest.fixture(scope="module")
def layers() -> Dict[str, List[str]]:
    return whiteboard(ARCHITECTURE.read_text())


# -- the imports ----------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One module's use of another: an import, or an attribute of a module."""

    source: str
    target: str
    where: str
    typing_only: bool
    #: The name taken from ``target`` (``from target import name``,
    #: ``target.name``), or ``None`` for the module itself.
    name: Optional[str] = None


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def lazy_home(name: str) -> Optional[str]:
    """The module where a name ``napixclient`` gives on first use lives."""
    value = getattr(importlib.import_module(TOP), name, None)
    home = getattr(value, "__module__", None)
    return home if isinstance(home, str) and home.startswith(TOP + ".") else None


class Reader(ast.NodeVisitor):
    """The imports of one module and its uses of other modules' attributes."""

    def __init__(self, name: str, path: Path, known: Set[str]) -> None:
        self.name, self.path, self.known = name, path, known
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.found: List[Import] = []
        self.aliases: Dict[str, str] = {}  # a local name -> the module it is
        self.guarded = 0

    def add(self, node: ast.AST, target: str, name: Optional[str] = None) -> None:
        where = f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        self.found.append(Import(self.name, target, where, self.guarded > 0, name))

    def visit_If(self, node: ast.If) -> None:
        if is_type_checking(node.test):
            self.guarded += 1
            for child in node.body:
                self.visit(child)
            self.guarded -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == TOP or alias.name.startswith(TOP + "."):
                self.add(node, alias.name)
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    self.aliases[TOP] = TOP

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        if origin != TOP and not origin.startswith(TOP + "."):
            return
        for alias in node.names:
            local = alias.asname or alias.name
            submodule = f"{origin}.{alias.name}"
            if submodule in self.known:
                self.add(node, submodule)
                self.aliases[local] = submodule
            else:
                self.add(node, origin, alias.name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in self.aliases:
            # The longest module the chain names, and the name taken from it.
            module = self.aliases[value.id]
            parts = list(reversed(chain))
            while parts and f"{module}.{parts[0]}" in self.known:
                module = f"{module}.{parts.pop(0)}"
            if parts:
                self.add(node, module, parts[0])
            # The inner attributes are the same chain: do not read them again.
            return
        self.generic_visit(node)


def imports() -> List[Import]:
    """Every import of a module of the package by a module of the package,
    with ``from napixclient import Name`` (and ``napixclient.Name``) taken
    to the module where ``Name`` lives."""
    modules = package_modules()
    found = []
    for name, path in modules.items():
        reader = Reader(name, path, set(modules))
        reader.visit(ast.parse(path.read_text(), str(path)))
        for item in reader.found:
            if item.target == TOP and item.name and not item.name.startswith("_"):
                home = lazy_home(item.name)
                assert home, f"{item.where}: napixclient has no public name {item.name!r}"
                item = Import(item.source, home, item.where, item.typing_only)
            found.append(item)
    return found


def private(name: Optional[str]) -> bool:
    return bool(name) and name.startswith("_") and not name.startswith("__")


def circles(edges: Dict[str, Dict[str, str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, {}):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def one_circle(edges: Dict[str, Dict[str, str]], component: List[str]) -> List[str]:
    """A circle through the first module of a component, as 'where: a -> b' steps."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(edges.get(node, {})):
            if target == start:
                path = paths[node] + [start]
                steps = zip(path[:-1], path[1:], strict=True)
                return [f"{edges[a][b]}: {a} -> {b}" for a, b in steps]
            if target in members and target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    raise AssertionError(f"no circle through {start}")


# -- the tests ------------------------------------------------------------------


def test_the_picture_has_five_layers_and_names_only_modules_that_exist(layers):
    assert list(layers) == ["face", "server", "drivers", "core", "values"], layers
    modules = package_modules()
    stale = []
    for entries in layers.values():
        for entry in entries:
            covered, _ = entry_modules(entry)
            if covered not in modules and entry not in COMING:
                stale.append(entry)
    assert not stale, f"docs/architecture.rst names modules that do not exist: {stale}"


def test_every_module_is_in_a_layer(layers):
    modules = [name for name in package_modules() if name != TOP]
    placed = ranks(layers, modules)
    missing = [name for name in modules if name not in placed]
    assert not missing, f"place these modules in a layer of docs/architecture.rst: {missing}"


def test_the_package_imports_none_of_its_modules_at_run_time():
    eager = [f"{item.where}: {item.target}" for item in imports()
             if item.source == TOP and not item.typing_only]
    assert not eager, "napixclient/__init__.py must import its names on first use"


def test_no_module_imports_a_module_of_a_higher_layer(layers):
    found = imports()
    rank = ranks(layers, package_modules())
    upward = [
        f"{item.where}: {item.source} ({layer_of(layers, rank[item.source])}) imports "
        f"{item.target} ({layer_of(layers, rank[item.target])})"
        for item in found
        if item.source != TOP and item.target != TOP
        and rank.get(item.target, -1) > rank.get(item.source, -1)
    ]
    assert not upward, "\n".join(upward)


def layer_of(layers: Dict[str, List[str]], rank: int) -> str:
    return list(reversed(list(layers)))[rank]


def module_graph(found: List[Import]) -> Dict[str, Dict[str, str]]:
    """``{module: {module it imports: where}}``, without the package's own
    (first-use) imports."""
    edges: Dict[str, Dict[str, str]] = {}
    for item in found:
        if item.source != TOP and item.target not in (TOP, item.source):
            edges.setdefault(item.source, {}).setdefault(item.target, item.where)
    return edges


def test_no_circle_of_imports():
    edges = module_graph(imports())
    found = ["\n  ".join(one_circle(edges, component)) for component in circles(edges)]
    assert not found, "circles of imports:\n  " + "\n\n  ".join(found)


def test_no_module_uses_a_private_name_of_another():
    found = [
        f"{item.where}: {item.source} uses {item.target}.{item.name}"
        for item in imports()
        if private(item.name) and item.target != item.source
    ]
    assert not found, "\n".join(found)


# -- what importing loads ---------------------------------------------------------

WATCH = """
import json, sys, traceback

class Watch:
    seen = {}
    def find_spec(self, name, path=None, target=None):
        if name in ("gevent", "asyncio") and name not in self.seen:
            self.seen[name] = [f"{frame.filename}:{frame.lineno}"
                               for frame in traceback.extract_stack()
                               if "napixclient" in frame.filename]
        return None

sys.meta_path.insert(0, Watch())
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps({name: Watch.seen.get(name) for name in ("gevent", "asyncio")
                  if name in sys.modules}))
"""


def loaded_by(*names: str) -> Dict[str, List[str]]:
    """What ``import`` of ``names``, in a fresh interpreter, loaded of gevent
    and asyncio, with the lines of napixclient that imported them."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run([sys.executable, "-c", WATCH, *names], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_core_loads_neither_gevent_nor_asyncio():
    core = sorted(name for name in package_modules() if name.startswith(f"{TOP}.core"))
    assert f"{TOP}.core.parser" in core
    assert loaded_by(*core) == {}


def test_importing_the_package_loads_neither_gevent_nor_asyncio():
    assert loaded_by(TOP) == {}


def test_importing_the_asyncio_driver_loads_no_gevent():
    if not (PACKAGE / "aio").exists():
        pytest.skip("napixclient/aio is not written yet")
    assert "gevent" not in loaded_by(f"{TOP}.aio")
