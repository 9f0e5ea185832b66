import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from domainkit.cli import app

from .runtime_support import WARRANTY_Q

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _commands() -> dict:
    import typer.main

    return typer.main.get_command(app).commands


def test_help_explains_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    commands = _commands()
    assert len(commands) >= 12
    for name, command in commands.items():
        assert name in result.output
        sub = invoke(name, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.output, name
        assert command.help and command.help.strip(), f"{name} has no description"
        options = [p for p in command.params if p.param_type_name == "option"]
        undocumented = [p.name for p in options if not p.help]
        assert not undocumented, f"{name}: options without help: {undocumented}"


def test_every_command_on_a_missing_or_unbuilt_domain_says_what_to_do(tmp_path):
    """No traceback anywhere: a missing folder is named as such, and a command whose input
    stage has not run says which command to run first."""
    extra = {"search": ["a query"], "ask": ["a question"]}
    for name, command in _commands().items():
        arguments = [p.name for p in command.params if p.param_type_name == "argument"]
        if "domain" not in arguments:
            continue
        result = invoke(name, tmp_path / "missing", *extra.get(name, []))
        assert result.exit_code == 1, (name, result.output)
        assert "not a folder" in result.output and "Traceback" not in result.output, name
    domain = tmp_path / "unbuilt"
    assert invoke("init", domain, "--recipe", "customer-support").exit_code == 0
    for name in ("search", "eval", "train", "export"):
        result = invoke(name, domain, *extra.get(name, []))
        assert result.exit_code == 1, (name, result.output)
        assert "run `domainkit" in " ".join(result.output.split()), (name, result.output)
        assert "Traceback" not in result.output


def test_index_then_search_json(support_domain):
    result = invoke("index", support_domain, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chunks"] > 0 and report["embedded"] == report["chunks"]

    again = json.loads(invoke("index", support_domain, "--json").stdout)
    assert again["up_to_date"] is True

    result = invoke(
        "search", support_domain, "how long does the Talon battery last", "-k", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["mode"] == "hybrid" and len(payload["hits"]) == 2
    assert payload["hits"][0]["source"] == "battery.txt"
    assert {"chunk_id", "headings", "score", "dense_score", "bm25_score", "text"} <= set(
        payload["hits"][0]
    )


def test_search_human_output_shows_source_and_scores(support_domain):
    invoke("index", support_domain)
    result = invoke("search", support_domain, "restocking fee", "--mode", "bm25")
    assert result.exit_code == 0, result.output
    assert "returns.md" in result.stdout and "Returns > Restocking fee" in result.stdout
    assert "bm25" in result.stdout


def test_index_summary_lists_skipped_files(support_domain):
    (support_domain / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 junk")
    result = invoke("index", support_domain)
    assert result.exit_code == 0, result.output
    assert "broken.pdf" in result.stdout and "unreadable PDF" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "{domain}", "q"), "no index yet"),
        (("index", "{missing}"), "not a folder"),
        (("search", "{domain}", "q", "--mode", "magic"), "'magic' is not one of"),
    ],
)
def test_errors_exit_non_zero_with_a_message_and_no_traceback(
    support_domain, tmp_path, args, message
):
    values = {"domain": support_domain, "missing": tmp_path / "missing"}
    result = invoke(*(a.format(**values) for a in args))
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_empty_docs_folder_fails_with_exit_1(tmp_path):
    root = tmp_path / "d"
    assert invoke("init", root, "--recipe", "legal").exit_code == 0
    (root / "docs" / "example.md").unlink()
    result = invoke("index", root)
    assert result.exit_code == 1
    assert "no documents found" in result.output


def test_init_scaffolds_and_refuses_to_overwrite(tmp_path):
    root = tmp_path / "newdomain"
    result = invoke("init", root, "--recipe", "medical", "-o", "Clinic")
    assert result.exit_code == 0, result.output
    assert "domainkit build" in result.stdout
    assert "recipe: medical" in (root / "domain.yaml").read_text()
    again = invoke("init", root)
    assert again.exit_code == 1 and "already exists" in again.output


def test_recipes_lists_the_shipped_recipes():
    result = invoke("recipes")
    assert result.exit_code == 0
    for name in ("legal", "customer-support", "education", "medical"):
        assert name in result.stdout


@pytest.mark.integration
def test_cli_py_and_module_entry_points_run():
    for command in (
        [sys.executable, "cli.py", "--version"],
        [sys.executable, "-m", "domainkit", "--version"],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        assert result.stdout.startswith("domainkit ")


@pytest.mark.integration
def test_help_does_not_load_torch_or_the_index():
    """`domainkit --help` and every command's --help stay fast: the command modules import
    torch, transformers and faiss only inside the commands that use them."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from domainkit.cli import app\n"
        "for args in (['--help'], ['train', '--help'], ['index', '--help'], ['synth', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'faiss') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_cli_ask_json(runtime_domain):
    from typer.testing import CliRunner

    from domainkit.cli import app

    result = CliRunner().invoke(
        app, ["ask", str(runtime_domain.root), WARRANTY_Q, "--policy", "rag", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["route"] == "answer" and answer["quote"].startswith("Quote: ")
    assert answer["evidence"] and answer["sources"]


def test_cli_chat_keeps_the_conversation_and_shows_sources(runtime_domain):
    from typer.testing import CliRunner

    from domainkit.cli import app

    result = CliRunner().invoke(
        app,
        ["chat", str(runtime_domain.root), "--policy", "rag", "--show-context"],
        input=f"{WARRANTY_Q}\nAnd the battery?\n/reset\n/quit\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant>") == 2
    assert "warranty.md" in result.output and "battery.txt" in result.output
    assert "Every Perch speaker has a two-year limited warranty." in result.output
    assert "(new conversation)" in result.output
