"""What the package declares about the Pythons it supports (issue 10, item
21): the versions gevent ships wheels for, 3.10 and up, and the same range
in setup.py's classifiers, CI's oldest and newest runs, and the README; and
the package's code is written in the oldest one's grammar."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_text() -> str:
    return (ROOT / "setup.py").read_text()


def _classified_minors():
    found = re.findall(r'"Programming Language :: Python :: 3\.(\d+)"', _setup_text())
    return sorted(int(minor) for minor in found)


def test_python_requires_starts_at_3_10():
    assert re.search(r'python_requires\s*=\s*">=3\.10"', _setup_text())


def test_classifiers_name_every_minor_version_from_3_10_to_the_newest_tested():
    minors = _classified_minors()
    assert minors[0] == 10, minors
    assert minors == list(range(10, minors[-1] + 1)), "a gap in the classifiers"
    assert minors[-1] >= 13, minors


def test_ci_runs_the_oldest_and_the_newest_classified_python():
    ci = (ROOT / ".ci" / "run").read_text()
    minors = _classified_minors()
    assert f"OLDEST=3.{minors[0]}" in ci
    assert f"NEWEST=3.{minors[-1]}" in ci
    assert 'readme_tests_on "$OLDEST"' in ci and 'readme_tests_on "$NEWEST"' in ci


def test_the_readme_states_the_same_range():
    minors = _classified_minors()
    readme = (ROOT / "README.md").read_text()
    assert f"Python 3.{minors[0]} or later" in readme
    assert f"3.{minors[0]} to 3.{minors[-1]} are tested" in readme


def test_every_module_of_the_package_parses_as_the_oldest_classified_python():
    """Running the suite on a newer Python would not see syntax the oldest
    one lacks (``except*``, ``def f[T]``, ...): the grammar of the oldest
    classified version is checked on every module of the package."""
    oldest = (3, _classified_minors()[0])
    modules = sorted((ROOT / "napixclient").rglob("*.py"))
    assert modules
    for module in modules:
        try:
            ast.parse(module.read_text(encoding="utf-8"), str(module), feature_version=oldest)
        except SyntaxError as error:
            raise AssertionError(f"{module.relative_to(ROOT)} is not Python "
                                 f"{oldest[0]}.{oldest[1]}: {error}") from None
