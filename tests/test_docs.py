"""The documentation matches the code: the generated reference pages are up to date, the
Python names the pages cite exist, and the site builds in MkDocs' strict mode."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "docs" / "gen_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_is_up_to_date():
    """A command, option or configuration field changed without `python
    docs/gen_reference.py` fails here, with the diff."""
    diffs = _generator().stale()
    assert not diffs, "run `python docs/gen_reference.py`:\n" + "\n".join(diffs)


def test_the_check_mode_exits_non_zero_with_a_diff_when_a_page_is_stale(tmp_path, monkeypatch):
    generator = _generator()
    page = tmp_path / "docs" / "reference" / "cli.md"
    page.parent.mkdir(parents=True)
    page.write_text("stale\n")
    (tmp_path / "docs" / "reference" / "configuration.md").write_text(
        generator.configuration_page()
    )
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0 and generator.main(["--check"]) == 0


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


# Entry-point groups, named like modules but not importable.
GROUPS = {f"domainkit.{kind}" for kind in ("loaders", "embedders", "teachers", "generators")}


@pytest.mark.parametrize("page", ["reference/python-api.md", "guides/plugins.md"])
def test_every_python_name_a_page_cites_exists(page):
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    names = set(re.findall(r"`(domainkit(?:\.\w+)+)", text)) - GROUPS
    assert len(names) > 5
    for name in sorted(names):
        _resolve(name)


def test_the_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", **__import__("os").environ},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()


def test_every_pointer_to_a_decision_names_an_entry():
    """Code comments keep a one-line why and point to docs/decisions.md by an entry's
    title; the entry must exist."""
    titles = re.findall(r"^### \d{4}-\d{2}-\d{2}: (.+)$", _read("docs/decisions.md"), flags=re.M)
    sources = [*ROOT.glob("domainkit/**/*.py"), ROOT / "Makefile", *ROOT.glob("recipes/*.yaml")]
    pointers = []
    for path in sources:
        text = " ".join(path.read_text(encoding="utf-8").split())
        text = re.sub(r" ?# ", " ", text)  # a pointer may wrap across comment lines
        pointers += re.findall(r'docs/decisions\.md, "([^"]+)"', text)
    assert len(pointers) >= 8
    for pointer in pointers:
        assert pointer in titles, pointer


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")
