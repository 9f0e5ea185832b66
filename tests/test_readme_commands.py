"""Every command in README.md and docs/getting-started.md runs, in the order the page gives.

The commands are read from the pages' fenced ``bash`` blocks and run as written, with one
difference a reader would not make: after ``domainkit init``, the new domain is made the
tests' tiny one (the support documents of ``conftest``, the hash embedder, the scripted
teacher and a tiny random student trained for two steps), so a full build takes seconds, not
the hour a real one does. Commands that cannot finish in a test are only parsed, and say so:

- ``domainkit serve`` serves until it is stopped: its arguments are parsed against the
  command's options;
- ``make demo`` and ``make test`` install PyTorch and the embedded models and run the whole
  suite: the Makefile must have the targets, and ``make -n`` must accept them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainkit.cli import app

from .conftest import SUPPORT_DOCS
from .tiny_lm import save_tiny_chat_model, tiny_training

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/getting-started.md"]
DOMAINKIT = ".venv/bin/domainkit"
# Commands a test cannot run to completion; they are parsed only (see the module docstring).
PARSED_ONLY = {"serve"}
EVAL = {
    "questions": [
        {"question": "How long is the warranty?", "answer": "Two years.", "source": "docs/w.md"},
        {"question": "How long does the Talon battery last?", "answer": "18 hours."},
        {"question": "Do you sell concert tickets?", "answerable": False},
    ]
}


def shell_commands(page: str) -> list[list[str]]:
    """The commands of a page's ``bash`` blocks, as argument lists (comments dropped)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def test_the_pages_have_the_commands_this_test_knows():
    for page in PAGES:
        commands = shell_commands(page)
        assert commands, page
        for argv in commands:
            assert argv[0] in ("make", DOMAINKIT), f"{page}: a command this test cannot run: {argv}"
    readme = [argv[1] for argv in shell_commands("README.md") if argv[0] == DOMAINKIT]
    assert readme == ["init", "build", "ask", "serve", "eval"], "the usual path, in order"


def _make_tiny(root: Path, student: Path) -> None:
    """What the reader does by hand after init (documents, eval.yaml), and what makes the
    build a test's: the tiny models and a short training."""
    (root / "docs" / "example.md").unlink()
    for name, content in SUPPORT_DOCS.items():
        path = root / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    (root / "eval.yaml").write_text(yaml.safe_dump(EVAL), encoding="utf-8")
    config = yaml.safe_load((root / "domain.yaml").read_text(encoding="utf-8"))
    config |= {
        "retrieval": {"embedder": "hash-test", "top_k": 2},
        "chunking": {"chunk_size": 40, "chunk_overlap": 8},
        "synth": {"teacher": {"backend": "scripted"}, "validation_fraction": 0.3},
        "train": tiny_training(student),
        "eval": {"max_new_tokens": 8, "general_knowledge": False},
    }
    (root / "domain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def _parse_only(args: list[str]) -> None:
    """Parse ``args`` against the command's options, as the command line would, without
    running it."""
    import typer.main

    command = typer.main.get_command(app).commands[args[0]]
    context = command.make_context(args[0], list(args[1:]))
    assert context.params, args


def _make_target(target: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), target
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M).group(1).split()
    assert target in phony, target
    dry = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr


def _check(args: list[str], output: str, work: Path) -> None:
    """What each command that ran must have done, beyond exiting 0."""
    build = work / "mydomain" / ".domainkit"
    if args[0] == "build" and "--dry-run" in args:
        assert "estimated time" in output and not (build / "build.json").exists()
    elif args[0] == "build":
        assert (build / "bundle" / "bundle.json").is_file() and "Built" in output
    elif args[0] == "ask":
        assert "(" in output.splitlines()[-1] or "[" in output, output  # route or sources
    elif args[0] == "chat":
        assert output.count("you>") == 2 and "assistant>" in output
    elif args[0] == "eval":
        assert "tuned, runtime policy" in output
    elif args[0] == "config" and "--schema" in args:
        assert json.loads(output)["title"] == "DomainConfig"
    elif args[0] == "config":
        assert "# default" in output and "mydomain/domain.yaml" in output
    elif args[0] == "export":
        assert (build / "export" / "dataset").is_dir() and (build / "export" / "merged").is_dir()
    elif args[0] == "recipes":
        assert "customer-support" in output


@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_runs(page, tmp_path, monkeypatch):
    student = save_tiny_chat_model(tmp_path / "tiny", max_positions=4096)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()
    ran, parsed = [], []
    for argv in shell_commands(page):
        if argv[0] == "make":
            _make_target(argv[1])
            parsed.append(argv)
            continue
        args = argv[1:]
        if args[0] in PARSED_ONLY:
            _parse_only(args)
            parsed.append(argv)
            continue
        stdin = "How long is the warranty?\n/quit\n" if args[0] == "chat" else None
        result = runner.invoke(app, args, input=stdin, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (argv, result.output)
        assert "Traceback" not in result.output, argv
        ran.append(argv)
        _check(args, result.output, work)
        if args[0] == "init":
            _make_tiny(work / args[1], student)
    assert ran and parsed
    names = {a[1] for a in ran}
    assert {"init", "build", "ask", "eval" if page == "README.md" else "export"} <= names
