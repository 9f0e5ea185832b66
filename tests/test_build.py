"""domainkit build (stage caching, invalidation, --from/--until, --dry-run, kills) and the
eval stage within it (calibration, report files holding the printed numbers, resuming)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainkit import builder
from domainkit.builder import plan, run_build
from domainkit.cli import app
from domainkit.config import load_domain

from .conftest import SUPPORT_DOCS, kill_after, sigkill_when, write_domain
from .tiny_lm import save_tiny_chat_model, tiny_training

REFUSAL = "I'm sorry, the documents I have do not cover that."


# -- build ----------------------------------------------------------------------------------------

EVAL = {
    "questions": [
        {
            "question": "For how long is a Perch covered?",
            "answer": "two years",
            "source": "docs/warranty.md",
        },
        {
            "question": "What fee applies to an opened soundbar?",
            "answer": "15 percent restocking fee",
            "source": "docs/returns.md",
        },
        {"question": "Do you ship to Antarctica?", "answerable": False},
    ]
}


# Hand-written validation questions: the gate is calibrated on these (with the synth split).
VALIDATION = {
    "questions": [
        {"question": question, "answer": answer}
        for question, answer in [
            ("How long is the Perch warranty?", "two-year limited warranty"),
            ("What warranty does a Perch speaker come with?", "two-year limited warranty"),
            ("How long does a Talon battery last?", "18 hours on a charge"),
            ("How many hours does the Talon play?", "18 hours on a charge"),
            ("What does error E42 mean?", "the firmware update failed"),
            ("How do I fix error E42?", "hold the power button for ten seconds"),
            ("How long does charging take?", "a full charge takes three hours"),
            ("Can I return a product?", "within 30 days for a full refund"),
            ("Is there a fee for returning an opened soundbar?", "15 percent restocking fee"),
            ("What do I need to file a warranty claim?", "order number and a photo"),
        ]
    ]
    + [
        {"question": question, "answerable": False}
        for question in [
            "Can I pay with Bitcoin?",
            "Who is the Falcon product manager?",
            "What colour is the Osprey remote?",
            "Is there a student discount at Marston?",
            "Does the Heron soundbar support Dolby Vision?",
            "What is the weight of the Zenith subwoofer?",
            "Do you deliver to Antarctica by drone?",
            "What is the capital of Peru?",
            "How do I bake sourdough bread?",
            "Which football team won the 1966 World Cup?",
        ]
    ]
}


@pytest.fixture
def buildable(tmp_path):
    model = save_tiny_chat_model(tmp_path / "tiny", max_positions=4096)
    root = write_domain(
        tmp_path / "support",
        SUPPORT_DOCS,
        synth={"teacher": {"backend": "scripted"}, "validation_fraction": 0.3},
        train=tiny_training(model),
        retrieval={"embedder": "hash-test", "top_k": 2},
        eval={"max_new_tokens": 8},
    )
    (root / "eval.yaml").write_text(yaml.safe_dump(EVAL))
    (root / "validation.yaml").write_text(yaml.safe_dump(VALIDATION))
    return root


def _actions(domain, **kwargs) -> dict[str, str]:
    return {p.name: p.action for p in plan(domain, **kwargs)}


def test_build_runs_every_stage_then_reuses_them(buildable):
    domain = load_domain(buildable)
    report = run_build(domain, limit=12, progress=False)
    assert [s["action"] for s in report.stages] == ["run"] * 7
    out = domain.build_dir
    for path in (
        "build.json",
        "train/adapter/adapter_config.json",
        "eval/report.json",
        "eval/report.md",
        "eval/accuracy.png",
        "eval/answers.jsonl",
        "runtime/calibration.json",
        "bundle/bundle.json",
        "bundle/adapter/adapter_config.json",
        "bundle/index/manifest.json",
    ):
        assert (out / path).is_file(), path
    assert report.headline.startswith("accuracy:")
    synth = next(s for s in report.stages if s["stage"] == "synth")
    timing = synth["summary"]["time_by_generator"]
    assert timing and all(" calls " in t and t.endswith(" kept") for t in timing.values())

    again = run_build(load_domain(buildable), limit=12, progress=False)
    assert [s["action"] for s in again.stages] == ["cached"] * 7
    assert again.headline == report.headline


def test_changes_rerun_only_what_depends_on_them(buildable):
    run_build(load_domain(buildable), limit=12, progress=False)

    (buildable / "eval.yaml").write_text(yaml.safe_dump({"questions": EVAL["questions"][:2]}))
    actions = _actions(load_domain(buildable), limit=12)
    assert actions == {
        "ingest": "cached",
        "index": "cached",
        "synth": "cached",
        "train": "cached",
        "reviews": "cached",
        "eval": "run",
        "bundle": "run",
    }
    assert _actions(load_domain(buildable), limit=5)["synth"] == "run", "--limit is an input"

    # A reviewer's verdicts change what the reviews stage builds, and eval; not the model.
    (buildable / "validation.yaml").write_text(
        yaml.safe_dump(
            {"questions": [{"question": "Do you sell gift cards?", "answerable": False}]}
        )
    )
    actions = _actions(load_domain(buildable), limit=12)
    assert [name for name, action in actions.items() if action == "run"] == [
        "reviews",
        "eval",
        "bundle",
    ]
    (buildable / "validation.yaml").unlink()

    (buildable / "docs" / "returns.md").write_text("# Returns\n\nReturns within 60 days.\n")
    changed = plan(load_domain(buildable), limit=12)
    assert all(p.action == "run" for p in changed)
    assert changed[0].reason == "inputs or settings changed"
    assert changed[2].reason == "an earlier stage changed"

    report = run_build(load_domain(buildable), limit=12, until="index", progress=False)
    index = report.stages[1]["summary"]
    assert index["embedded"] >= 1 and index["reused"] >= 1, "only the changed chunks re-embed"
    assert [s["action"] for s in report.stages[2:]] == ["skip"] * 5


def test_the_index_stage_reads_what_the_ingest_stage_read(buildable, monkeypatch):
    """Ingest is a stage of its own: it reads the documents once, keeps them with the files
    it skipped and why, and the index stage works from that, not from docs/ again."""
    from domainkit.ingest import IngestResult, corpus

    (buildable / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 junk")
    domain = load_domain(buildable)
    run_build(domain, until="ingest", progress=False)
    kept = IngestResult.load(domain.layout.ingested)
    assert {d.source for d in kept.documents} == set(SUPPORT_DOCS)
    assert [s.source for s in kept.skipped] == ["broken.pdf"]

    def no_second_read(*args, **kwargs):
        raise AssertionError("the index stage read docs/ again")

    monkeypatch.setattr(corpus, "load_documents", no_second_read)
    monkeypatch.setattr("domainkit.ingest.load_documents", no_second_read)
    monkeypatch.setattr("domainkit.retrieval.store.load_documents", no_second_read)
    report = run_build(domain, until="index", progress=False)
    index = next(s for s in report.stages if s["stage"] == "index")
    assert index["action"] == "run" and index["summary"]["skipped_files"] == 1
    assert index["summary"]["documents"] == len(kept.documents)


def test_from_and_until(buildable):
    domain = load_domain(buildable)
    run_build(domain, limit=12, until="synth", progress=False)
    state = json.loads((domain.build_dir / "build.json").read_text())
    assert set(state["stages"]) == {"ingest", "index", "synth"}
    actions = _actions(domain, limit=12, start="synth", until="train")
    assert actions == {
        "ingest": "cached",
        "index": "cached",
        "synth": "run",
        "train": "run",
        "reviews": "skip",
        "eval": "skip",
        "bundle": "skip",
    }
    result = CliRunner().invoke(app, ["build", str(buildable), "--from", "nope"])
    assert result.exit_code == 1 and "stages are" in result.output
    result = CliRunner().invoke(
        app, ["build", str(buildable), "--from", "eval", "--until", "index", "--dry-run"]
    )
    assert result.exit_code == 1 and "comes after" in result.output


def test_dry_run_shows_the_plan_and_runs_nothing(buildable):
    result = CliRunner().invoke(app, ["build", str(buildable), "--dry-run", "--limit", "12"])
    assert result.exit_code == 0, result.output
    for stage in ("ingest", "index", "synth", "train", "reviews", "eval", "bundle"):
        assert stage in result.output
    assert "estimated time" in result.output
    assert not (buildable / ".domainkit").exists()


def test_the_estimate_learns_from_the_last_run_on_this_machine(buildable):
    """A stage that took three times its estimate is estimated three times as long next
    time, scaled by the size of the new work; the build's table shows both figures."""
    domain = load_domain(buildable)
    first = {p.name: p for p in plan(domain, limit=12)}
    assert all(p.basis == "defaults" for p in first.values())
    run_build(domain, limit=12, progress=False, until="index")
    state = json.loads(domain.layout.build_record.read_text())
    state["stages"]["index"]["seconds"] = 3 * state["stages"]["index"]["estimate_s"]
    domain.layout.build_record.write_text(json.dumps(state))

    again = {p.name: p for p in plan(domain, limit=12)}
    assert again["index"].basis == "last run"
    assert again["index"].estimate_s == pytest.approx(3 * first["index"].estimate_s, rel=0.01)
    assert (
        again["synth"].basis == "defaults"
        and again["synth"].estimate_s == first["synth"].estimate_s
    )
    bigger = {p.name: p for p in plan(domain, limit=24)}
    assert bigger["synth"].estimate_s > again["synth"].estimate_s
    state["stages"]["index"]["estimate_rates"] = "other-defaults"
    domain.layout.build_record.write_text(json.dumps(state))
    assert {p.name: p for p in plan(domain, limit=12)}["index"].basis == "defaults", (
        "a run estimated with other default costs says nothing about these"
    )
    state["stages"]["index"]["estimate_rates"] = builder.RATES
    domain.layout.build_record.write_text(json.dumps(state))

    shown = CliRunner().invoke(
        app, ["build", str(buildable), "--dry-run", "--limit", "12", "--from", "index"]
    )
    assert "index from this domain's last run" in " ".join(shown.output.split())


def test_eval_report_holds_the_numbers_the_cli_printed(buildable, monkeypatch):
    from domainkit.backends.local import LocalBackend

    loads, load = [], LocalBackend.load.__func__

    def spy(cls, model, adapter=None, device="auto", precision="auto"):
        loads.append((adapter is not None, precision))
        return load(cls, model, adapter, device, precision)

    monkeypatch.setattr(LocalBackend, "load", classmethod(spy))
    runner = CliRunner()
    assert (
        runner.invoke(app, ["build", str(buildable), "--until", "train", "--limit", "12"]).exit_code
        == 0
    )
    loads.clear()
    runtime = {"evidence only", "tuned + evidence", "tuned, runtime policy"}
    base = {"base closed-book", "naive RAG (base)"}
    first = runner.invoke(app, ["eval", str(buildable)], env={"COLUMNS": "250"})
    assert first.exit_code == 0, first.output
    report_path = buildable / ".domainkit" / "eval" / "report.json"
    assert set(json.loads(report_path.read_text())["conditions"]["eval.yaml"]) == runtime
    printed = runner.invoke(app, ["eval", str(buildable), "--compare"], env={"COLUMNS": "250"})
    assert printed.exit_code == 0, printed.output
    report = json.loads(report_path.read_text())
    table = report["conditions"]["eval.yaml"]
    assert set(table) == runtime | base | {"tuned closed-book"}
    for name, metrics in table.items():
        line = next(ln for ln in printed.output.splitlines() if ln.strip("│ ").startswith(name))
        assert f"{metrics['false_refusals']:.2f}" in line and f"{metrics['accuracy']:.2f}" in line
        assert metrics["answerable"] == 2 and metrics["unanswerable"] == 1
    assert report["headline"] in printed.output
    # The base model as a user would otherwise run it (fp32); the tuned one as served.
    assert (False, "fp32") in loads and (True, "auto") in loads
    assert (False, "auto") not in loads
    again = runner.invoke(app, ["eval", str(buildable), "--last"], env={"COLUMNS": "250"})
    assert again.exit_code == 0 and again.output.split("report:")[0] in printed.output
    markdown = (buildable / ".domainkit" / "eval" / "report.md").read_text()
    assert "| tuned, runtime policy |" in markdown and report["headline"] in markdown
    # The first report after training shows its loss plot (it once looked for the plot in
    # the folder the new report was about to replace).
    assert "![training loss](loss.png)" in markdown
    assert (buildable / ".domainkit" / "eval" / "loss.png").is_file()
    assert report["retrieval"]["questions"] == 2
    # The scripted teacher judges by shared words: the judge column is filled.
    assert all(0.0 <= metrics["judge"] <= 1.0 for metrics in table.values())
    assert report["calibration"]["validation_questions"] >= 8 and report["calibration"]["gate"]
    assert (buildable / ".domainkit" / "eval" / "gate.png").is_file()
    # Without --compare the base model's rows come back from that run, unchanged.
    reused = runner.invoke(app, ["eval", str(buildable)], env={"COLUMNS": "250"})
    assert reused.exit_code == 0, reused.output
    again = json.loads(report_path.read_text())
    assert set(again["conditions"]["eval.yaml"]) == runtime | base
    for name in base:
        assert again["conditions"]["eval.yaml"][name] == table[name]
    assert any("reused from the run of" in note for note in again["notes"])


def test_build_after_a_kill_in_training_continues_from_the_checkpoint(
    buildable, monkeypatch, caplog
):
    import logging

    from domainkit.train import pipeline

    config = yaml.safe_load((buildable / "domain.yaml").read_text())
    config["train"].update({"max_steps": 4, "save_every": 2, "eval_every": 2})
    (buildable / "domain.yaml").write_text(yaml.safe_dump(config))
    real = pipeline.run_train

    def killed(domain, **kwargs):
        return real(domain, on_step=kill_after(3), **kwargs)  # checkpoint at 2, kill at 3

    monkeypatch.setattr(pipeline, "run_train", killed)
    monkeypatch.setattr("domainkit.train.run_train", killed)
    with pytest.raises(KeyboardInterrupt):
        run_build(load_domain(buildable), until="train", limit=12, progress=False)
    monkeypatch.setattr("domainkit.train.run_train", real)
    with caplog.at_level(logging.INFO, logger="domainkit.train.loop"):
        report = run_build(load_domain(buildable), until="train", limit=12, progress=False)
    assert report.stages[3]["action"] == "run" and report.stages[3]["summary"]["steps"] == 4
    assert "(step 2)" in caplog.text and "resumed from" in caplog.text, "not restarted at 0"

    config["train"]["learning_rate"] = 1e-3  # other settings: a new run, not a resume
    (buildable / "domain.yaml").write_text(yaml.safe_dump(config))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="domainkit.train.loop"):
        run_build(load_domain(buildable), until="train", limit=12, progress=False)
    assert "resumed from" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="domainkit.train.loop"):
        forced = run_build(
            load_domain(buildable), start="train", until="train", limit=12, progress=False
        )
    assert "resumed from" not in caplog.text and forced.stages[3]["summary"]["steps"] == 4, (
        "a finished run is trained again, not republished"
    )


def test_a_stage_fingerprint_covers_the_code_it_imports_and_nothing_else(buildable, monkeypatch):
    """Editing prompting.py (the format synth trains on and the runtime sends) must rebuild
    synth, train and eval even though it lives outside their packages (and the index, whose
    package reaches it through the evidence selector); editing the CLI must rebuild
    nothing."""
    from domainkit import builder as build
    from domainkit.utils import hashing

    domain = load_domain(buildable)
    limits = build.Limits.of(12)
    before = build.fingerprints(domain, limits)
    real = hashing.file_hash

    def edited(name):
        def file_hash(path, length=16):
            return "edited" if path.as_posix().endswith(name) else real(path, length)

        return file_hash

    for name, changed in (
        ("domainkit/prompting.py", {"synth", "train", "reviews", "eval", "bundle"}),
        ("domainkit/answer/verify.py", {"eval", "bundle"}),
        ("domainkit/ingest/normalize.py", set(build.fingerprints(domain, limits))),
        ("domainkit/cli/__init__.py", set()),
    ):
        monkeypatch.setattr(hashing, "file_hash", edited(name))
        monkeypatch.setattr(hashing, "_HASHES", {})
        after = build.fingerprints(domain, limits)
        assert {s for s in before if before[s] != after[s]} == changed, name


def _trained_and_evaluated(buildable) -> tuple[Path, dict[str, bytes]]:
    """Build through train, evaluate; the report folder and its files' contents."""
    runner = CliRunner()
    built = runner.invoke(app, ["build", str(buildable), "--until", "train", "--limit", "12"])
    assert built.exit_code == 0, built.output
    assert runner.invoke(app, ["eval", str(buildable)]).exit_code == 0
    folder = buildable / ".domainkit" / "eval"
    return folder, {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.integration
def test_an_eval_killed_with_sigkill_keeps_the_last_report_and_reruns_to_the_same_numbers(
    buildable, tmp_path
):
    """SIGKILL during ``eval`` (its judge is slowed down and killed at its first call, after
    answers were generated): the previous report stays whole, the report files never mix two
    runs, and the next ``eval`` writes the numbers an unbroken run writes."""
    import subprocess
    import sys

    runner = CliRunner()
    folder, before = _trained_and_evaluated(buildable)

    root = Path(__file__).resolve().parents[1]
    marker = tmp_path / "judging"
    env = {
        **os.environ,
        "DOMAINKIT_TEST_TEACHER_DELAY": "30",
        "DOMAINKIT_TEST_TEACHER_MARKER": str(marker),
    }
    cli = [sys.executable, "-c", "import tests.conftest; from domainkit.cli import app; app()"]
    process = subprocess.Popen(
        [*cli, "eval", str(buildable)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sigkill_when(process, marker)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before, "the last complete report is left as it was"

    def numbers(report: dict) -> dict:
        return {
            name: {k: v for k, v in metrics.items() if k != "seconds_per_answer"}
            for name, metrics in report["conditions"]["eval.yaml"].items()
        }

    first = json.loads(before["report.json"])
    replies = buildable / ".domainkit" / "eval-replies.sqlite"
    assert replies.is_file(), "the replies generated before the kill are kept"
    assert runner.invoke(app, ["eval", str(buildable)]).exit_code == 0
    again = json.loads((folder / "report.json").read_text())
    assert numbers(again) == numbers(first) and again["headline"] == first["headline"]
    assert any("came from an earlier run" in note for note in again["notes"]), again["notes"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".eval")], "no leftovers"
    assert not list(replies.parent.glob("eval-replies*")), "a finished run leaves no store"


def _bundle_files(folder: Path) -> dict[str, bytes]:
    """A bundle's files by relative path; bundle.json without its creation time."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "bundle.json" and path.parent == folder:
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "created"})
            data = data.encode()
        files[path.relative_to(folder).as_posix()] = data
    return files


@pytest.mark.integration
def test_a_bundle_killed_with_sigkill_keeps_the_last_bundle_and_reruns_to_the_same_one(
    buildable, tmp_path
):
    """SIGKILL while the bundle is being copied (after its adapter, before its index): the
    previous bundle stays whole, and the next ``build`` writes the bundle an unbroken run
    writes, with no leftovers."""
    import subprocess
    import sys

    runner = CliRunner()
    built = runner.invoke(app, ["build", str(buildable), "--limit", "12"])
    assert built.exit_code == 0, built.output
    bundle = buildable / ".domainkit" / "bundle"
    before = _bundle_files(bundle)
    assert "adapter/adapter_config.json" in before and "bundle.json" in before

    root = Path(__file__).resolve().parents[1]
    marker = tmp_path / "copied"
    # The build in a fresh process, its first copy into the new bundle followed by a pause.
    driver = (
        "import pathlib, shutil, sys, time\n"
        "import tests.conftest\n"
        "marker, real = pathlib.Path(sys.argv.pop(1)), shutil.copytree\n"
        "def copytree(*args, **kwargs):\n"
        "    out = real(*args, **kwargs)\n"
        "    marker.touch()\n"
        "    time.sleep(60)\n"
        "    return out\n"
        "shutil.copytree = copytree\n"
        "from domainkit.cli import app\n"
        "app()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", driver, str(marker), "build", str(buildable), "--from", "bundle"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sigkill_when(process, marker)
    assert _bundle_files(bundle) == before, "the last complete bundle is left as it was"
    assert [p.name for p in bundle.parent.glob(".bundle.*.tmp")], "killed mid-copy"

    again = runner.invoke(app, ["build", str(buildable), "--limit", "12"])
    assert again.exit_code == 0, again.output
    assert _bundle_files(bundle) == before, "the same bundle as the unbroken run"
    assert not list(bundle.parent.glob(".bundle.*")), "no leftovers"


def test_a_crash_while_the_report_is_written_leaves_the_previous_report_whole(
    buildable, monkeypatch
):
    """The report's files (answers, tables, plots) are published together: a run that dies
    after writing some of them leaves the previous report as it was, not a mix of two runs."""
    from domainkit.eval import report as report_module

    runner = CliRunner()
    folder, before = _trained_and_evaluated(buildable)
    (buildable / "eval.yaml").write_text(yaml.safe_dump({"questions": EVAL["questions"][:2]}))

    def dies(path, obj):
        raise KeyboardInterrupt("killed while writing report.json")

    monkeypatch.setattr(report_module, "atomic_write_json", dies)
    assert runner.invoke(app, ["eval", str(buildable)]).exit_code != 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_rerun_after_a_killed_eval_asks_the_model_only_for_the_missing_replies(
    buildable, monkeypatch
):
    from domainkit.backends.local import LocalBackend
    from domainkit.eval.runner import run_eval

    runner = CliRunner()
    built = runner.invoke(app, ["build", str(buildable), "--until", "train", "--limit", "12"])
    assert built.exit_code == 0, built.output
    real, real_score = LocalBackend.generate, LocalBackend.score_choices
    asked: list[int] = []

    def ask(n):
        if kill_at is not None and len(asked) >= kill_at:
            raise RuntimeError("the machine went down")
        asked.append(n)

    def counting(self, requests):
        ask(len([r for r in requests if not r.choices]))
        return real(self, requests)

    def scoring(self, request):
        ask(1)
        return real_score(self, request)

    monkeypatch.setattr(LocalBackend, "generate", counting)
    monkeypatch.setattr(LocalBackend, "score_choices", scoring)
    kill_at = None
    whole = run_eval(load_domain(buildable), progress=False)
    unbroken = sum(asked)
    asked.clear()
    kill_at = 3
    with pytest.raises(RuntimeError, match="went down"):
        run_eval(load_domain(buildable), progress=False)
    before_kill = sum(asked)
    asked.clear()
    kill_at = None
    resumed = run_eval(load_domain(buildable), progress=False)
    assert before_kill > 0 and sum(asked) == unbroken - before_kill
    # A reply asked for twice within one run is not one "from an earlier run".
    assert not any("earlier run" in note for note in whole.notes), whole.notes
    assert any("came from an earlier run" in note for note in resumed.notes), resumed.notes
    assert resumed.conditions["eval.yaml"].keys() == whole.conditions["eval.yaml"].keys()
    for name, metrics in whole.conditions["eval.yaml"].items():
        again = resumed.conditions["eval.yaml"][name]
        assert {k: v for k, v in again.items() if k != "seconds_per_answer"} == {
            k: v for k, v in metrics.items() if k != "seconds_per_answer"
        }


def test_the_eval_progress_bar_ends_at_its_total_and_each_answer_is_made_once(
    buildable, monkeypatch
):
    """Evidence only reads no model: with the comparison rows it ran with the base model
    and again with the tuned one, its rows written twice and the bar past 100%."""
    from tqdm import tqdm

    from domainkit.eval import runner

    built = CliRunner().invoke(app, ["build", str(buildable), "--until", "train", "--limit", "12"])
    assert built.exit_code == 0, built.output
    bars: list[tqdm] = []

    class Recorded(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            bars.append(self)

    monkeypatch.setattr(runner, "tqdm", Recorded)
    domain = load_domain(buildable)
    for compare in (False, True):
        runner.run_eval(domain, compare=compare)
        assert bars[-1].n == bars[-1].total > 0, (compare, bars[-1].n, bars[-1].total)
        rows = [json.loads(line) for line in domain.layout.eval_answers.open()]
        keys = [(r["set"], r["condition"], r["question"]) for r in rows]
        assert len(keys) == len(set(keys)), "an answer written twice"
        assert ("evidence only" in {r["condition"] for r in rows}) and (
            compare == ("naive RAG (base)" in {r["condition"] for r in rows})
        )


def test_an_edited_document_keeps_the_adapter_and_the_eval_asks_only_what_changed(
    buildable, monkeypatch
):
    from domainkit.backends.local import LocalBackend

    config = yaml.safe_load((buildable / "domain.yaml").read_text())
    config["train"]["retrain_when_changed"] = 1.0  # a tiny corpus: one edit is a large share
    (buildable / "domain.yaml").write_text(yaml.safe_dump(config))
    real, real_score = LocalBackend.generate, LocalBackend.score_choices
    asked: list[int] = []
    monkeypatch.setattr(
        LocalBackend, "generate", lambda self, rs: asked.append(len(rs)) or real(self, rs)
    )
    monkeypatch.setattr(
        LocalBackend, "score_choices", lambda self, r: asked.append(1) or real_score(self, r)
    )
    domain = load_domain(buildable)
    run_build(domain, limit=12, progress=False)
    first_eval = sum(asked)
    adapter = {p.name: p.read_bytes() for p in domain.layout.adapter.iterdir()}
    trained_on = json.loads(domain.layout.train_run.read_text())["trained_on"]

    docs = buildable / "docs" / "returns.md"
    docs.write_text(docs.read_text() + "\nGift cards cannot be returned.\n")
    asked.clear()
    report = run_build(load_domain(buildable), limit=12, progress=False)
    stages = {s["stage"]: s for s in report.stages}
    assert stages["synth"]["action"] == "run" and stages["train"]["action"] == "run"
    assert (
        stages["train"]["summary"]["steps"] == 0 and "new and" in stages["train"]["summary"]["kept"]
    )
    assert {p.name: p.read_bytes() for p in domain.layout.adapter.iterdir()} == adapter
    # What the adapter was trained on stays the yardstick: small edits add up to a retrain.
    assert json.loads(domain.layout.train_run.read_text())["trained_on"] == trained_on
    assert 0 < sum(asked) < first_eval, "only the requests the edit changed"
    evaluation = json.loads(domain.layout.eval_report_json.read_text())
    assert any("came from an earlier run" in note for note in evaluation["notes"])
    assert _actions(load_domain(buildable), limit=12)["train"] == "cached"

    retrained = run_build(
        load_domain(buildable), limit=12, until="train", progress=False, retrain=True
    )
    summary = retrained.stages[3]["summary"]
    assert summary["steps"] > 0 and "kept" not in summary
    assert {p.name: p.read_bytes() for p in domain.layout.adapter.iterdir()} != adapter

    config["train"]["learning_rate"] = 1e-3  # other settings: the adapter no longer fits
    (buildable / "domain.yaml").write_text(yaml.safe_dump(config))
    again = run_build(load_domain(buildable), limit=12, until="train", progress=False)
    assert again.stages[3]["summary"]["steps"] > 0


def test_what_a_sample_teaches_ignores_its_distractors_but_not_its_question():
    from domainkit.stages import _taught
    from domainkit.synth.sample import Sample

    def raft(passages: str, question: str) -> Sample:
        user = f"{passages}\n\nQuestion: {question}"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": "2 years."}]
        return Sample(messages, "raft", "c1", "faq.md", "t", meta={"question": question})

    a = raft("[1] Warranty: 2 years. [2] Returns: 30 days.", "How long is the warranty?")
    b = raft("[1] Warranty: 2 years. [2] Returns: 21 days.", "How long is the warranty?")
    c = raft("[1] Warranty: 2 years. [2] Returns: 30 days.", "Is the battery covered?")
    assert a.id != b.id and _taught(a) == _taught(b) and _taught(a) != _taught(c)
