"""What the documentation says about the project matches the project."""

import ast
import os
import re
import subprocess
import sys
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


def test_the_docs_state_the_python_setup_py_requires():
    oldest = re.search(r'python_requires=">=(3\.\d+)"', (ROOT / "setup.py").read_text()).group(1)
    for page in ("quickstart.rst", "migrating.rst"):
        text = (ROOT / "docs" / page).read_text()
        said = re.findall(r"Python (3\.\d+) or later", text)
        assert said and set(said) == {oldest}, (page, said)


def napix_help(*args):
    """``napix ARGS --help``, as a person reads it (``str``)."""
    done = subprocess.run([sys.executable, "-m", "napixclient", *args, "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_page_shows_every_subcommand_and_every_option():
    text = (ROOT / "docs" / "cli.rst").read_text()
    listed = napix_help().split("positional arguments:", 1)[1].split("options:", 1)[0]
    commands = re.findall(r"^    (\w+)  ", listed, re.M)
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    assert len(commands) >= 4 and f"with {words[len(commands)]} subcommands" in text
    # Each subcommand's section opens with its synopsis, in a code block.
    sections = re.split(r"\n(?=``napix \w+``\n---)|\n(?=\w[\w ]*\n---)", text)
    for name in commands:
        [section] = [part for part in sections if part.startswith(f"``napix {name}``\n")]
        synopsis = re.search(r"\.\. code-block:: \w+\n\n(.*?)\n\n", section, re.S).group(1)
        assert f"napix {name}" in synopsis, name
        # Each option's line in the help: "  -c N, --concurrency N  ...".
        options = re.findall(r"^  (-[\w-]+)(?: [A-Z]+)?(?:, (--[\w-]+))?", napix_help(name),
                             re.M)
        assert ("-h", "--help") in options, name
        for spellings in options:
            if "--help" in spellings or "--verbose" in spellings:
                continue
            assert any(option and option in synopsis for option in spellings), (name, spellings)


def test_the_compression_page_says_what_the_default_install_asks_for():
    from importlib.metadata import requires

    brought = {re.match(r"[A-Za-z0-9_.-]+", item).group().lower()
               for name in install_requires() for item in requires(name) or ()
               if "extra ==" not in item}
    brought |= {name.lower() for name in install_requires()}
    text = " ".join((ROOT / "docs" / "compression.rst").read_text().split())
    if "brotli" in brought:
        assert "``Accept-Encoding: gzip, deflate, br`` by default" in text
    else:
        assert "``Accept-Encoding: gzip, deflate`` by default" in text


def test_a_dead_reference_fails_the_docs_build():
    """conf.py turns nitpicky on (so `sphinx -W` fails on a reference that
    lands nowhere), and lets through only names of other projects."""
    import runpy

    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    assert conf["nitpicky"] is True
    ignored = [pattern for _, pattern in conf.get("nitpick_ignore_regex", ())]
    for name in ("napixclient.Client.send", "napixclient.fleet.probe", "Client.send",
                 "Chain.truncated", "PreparedCall"):
        assert not any(re.fullmatch(pattern, name) for pattern in ignored), name
    assert any(re.fullmatch(pattern, "gevent.sleep") for pattern in ignored)
