"""What the documentation says about the project matches the project."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install_requires():
    """The distribution names setup.py's install_requires lists."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [re.match(r"[A-Za-z0-9_.-]+", item).group()
                    for item in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no install_requires")


def test_quickstart_names_every_dependency_the_install_brings():
    text = (ROOT / "docs" / "quickstart.rst").read_text()
    install = text[text.index("Install\n"):text.index("pip install '.[test]'")]
    required = install_requires()
    assert required, "setup.py lists no dependency"
    for name in required:
        assert re.search(rf"\b{re.escape(name)}\b", install), name


def test_index_names_every_example_script():
    text = (ROOT / "docs" / "index.rst").read_text()
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f"``{script.name}``" in text, script.name
