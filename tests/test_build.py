"""domainkit build (stage caching, invalidation, --from/--until, --dry-run) and eval
(metrics on hand-made answers, calibration, report files holding the printed numbers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainkit.answer.answers import Answer, Source
from domainkit.builder import plan, run_build
from domainkit.cli import app
from domainkit.config import available_recipes, load_domain, load_recipe
from domainkit.eval import metrics as m
from domainkit.eval.items import Item
from domainkit.eval.scoring import score

from .conftest import SUPPORT_DOCS, kill_after, sigkill_when, write_domain
from .tiny_lm import save_tiny_chat_model

REFUSAL = "I'm sorry, the documents I have do not cover that."


# -- metrics on hand-made cases ---------------------------------------------------------------


def test_a_correct_a_wrong_and_a_refused_answer():
    reference = "Two years, from the date of delivery."
    correct = "Your Perch is covered for two years from delivery [1]."
    wrong = "The warranty lasts five years."
    refused = REFUSAL
    assert m.is_correct(correct, reference, REFUSAL)
    assert not m.is_correct(wrong, reference, REFUSAL)
    assert not m.is_correct(refused, reference, REFUSAL) and m.is_refusal(refused, REFUSAL)
    assert m.is_refusal("Sorry, I couldn't find that in the manuals.")
    assert not m.is_refusal(correct, REFUSAL)
    assert m.token_f1(correct, reference) > m.token_f1(wrong, reference)
    assert m.key_fact_recall(correct, reference) == 0.75  # two, years, delivery; not "date"
    assert m.key_fact_recall(wrong, reference) < 0.5


def test_a_documents_own_words_are_not_a_refusal():
    """A warranty corpus says "the warranty does not cover": an answer that quotes it is an
    answer (it was scored as a refusal, right or wrong, and counted as refusing when the
    question was unanswerable); a reply that says the documents do not cover it refuses."""
    quoted = (
        "Flat fees: Perch £49, Roost £119. [1] A product with damage the warranty does not "
        "cover, such as liquid damage, is repaired at the out-of-warranty price. [2]"
    )
    assert not m.is_refusal(quoted, REFUSAL)
    assert m.is_correct(quoted, "A flat fee of £119.", REFUSAL)
    assert not m.is_refusal("Accidental damage is not covered. Nor is wear. [1]", REFUSAL)
    assert not m.is_refusal("The Party Link does not say its name aloud. [1]", REFUSAL)
    for reply in (
        "The documents do not cover that.",
        "The provided context doesn't mention a CEO.",
        "I'm sorry, but the passages do not say how heavy the Roost is.",
        "That is not in the documents.",
        "I don't know.",
        "I couldn't find that in the manuals. Please ask support.",
    ):
        assert m.is_refusal(reply), reply
    assert m.is_refusal(f"{REFUSAL} This is general information, not advice.", REFUSAL)
    for name in available_recipes():  # each recipe's own refusal
        wording = load_recipe(name).refusal
        assert m.is_refusal(f"{wording} A disclaimer follows."), name


def test_yes_no_maybe_and_faithfulness():
    assert m.is_correct("Yes. The trial showed a benefit.", "yes")
    assert not m.is_correct("No, it did not.", "yes")
    assert m.label_of("The evidence is mixed, so maybe.") == "maybe"
    passage = "Opened soundbars carry a 15 percent restocking fee."
    assert m.support("Opened soundbars have a 15 percent restocking fee [1].", [passage]) >= 0.8
    assert m.support("Refunds arrive by carrier pigeon within a fortnight.", [passage]) < 0.3


def test_spans_median_words_and_citations():
    spans = ["time and storage"]
    assert m.is_correct("The two resources are time and storage [1].", "x", spans=spans)
    assert not m.is_correct("Time, and also storage.", "x", spans=spans)
    assert not m.is_correct("distime and storage", "x", spans=spans), "whole words only"
    items = [
        Item("How long is the warranty?", "two years", True),
        Item("Is there a gift card?", None, False),
    ]
    cited = [Source(1, "warranty.md", "", "", "c1", 0.5, text="A two-year warranty covers it.")]
    answers = [
        Answer("The warranty lasts two years from delivery [1].", "answer", cited),
        Answer(REFUSAL, "refusal"),
    ]
    row = score(items, answers, REFUSAL, seconds=0.5)
    assert row["accuracy"] == 1.0 and row["refusal_accuracy"] == 1.0
    assert row["median_words"] == 8 and row["citation_correct"] == 1.0
    wrong_citation = [Source(1, "faq.md", "", "", "c2", 0.5, text="Shipping takes 3 days.")]
    answers[0] = Answer("The warranty lasts two years from delivery [1].", "answer", wrong_citation)
    assert score(items, answers, REFUSAL, seconds=0.5)["citation_correct"] == 0.0


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
        train={
            "student_model": str(model),
            "method": "lora",
            "max_steps": 2,
            "batch_size": 2,
            "grad_accum": 1,
            "max_seq_len": 2048,
            "lora_r": 4,
            "precision": "fp32",
        },
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
    assert [s["action"] for s in report.stages] == ["run"] * 6
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

    again = run_build(load_domain(buildable), limit=12, progress=False)
    assert [s["action"] for s in again.stages] == ["cached"] * 6
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
        "eval": "run",
        "bundle": "run",
    }
    assert _actions(load_domain(buildable), limit=5)["synth"] == "run", "--limit is an input"

    (buildable / "docs" / "returns.md").write_text("# Returns\n\nReturns within 60 days.\n")
    changed = plan(load_domain(buildable), limit=12)
    assert all(p.action == "run" for p in changed)
    assert changed[0].reason == "inputs or settings changed"
    assert changed[2].reason == "an earlier stage changed"

    report = run_build(load_domain(buildable), limit=12, until="index", progress=False)
    index = report.stages[1]["summary"]
    assert index["embedded"] >= 1 and index["reused"] >= 1, "only the changed chunks re-embed"
    assert [s["action"] for s in report.stages[2:]] == ["skip"] * 4


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
    for stage in ("ingest", "index", "synth", "train", "eval", "bundle"):
        assert stage in result.output
    assert "estimated time" in result.output
    assert not (buildable / ".domainkit").exists()


def test_eval_report_holds_the_numbers_the_cli_printed(buildable):
    runner = CliRunner()
    assert (
        runner.invoke(app, ["build", str(buildable), "--until", "train", "--limit", "12"]).exit_code
        == 0
    )
    printed = runner.invoke(app, ["eval", str(buildable)], env={"COLUMNS": "250"})
    assert printed.exit_code == 0, printed.output
    report = json.loads((buildable / ".domainkit" / "eval" / "report.json").read_text())
    table = report["conditions"]["eval.yaml"]
    assert set(table) == {
        "base closed-book",
        "naive RAG (base)",
        "evidence only",
        "tuned closed-book",
        "tuned + evidence",
        "tuned, runtime policy",
    }
    for name, metrics in table.items():
        line = next(ln for ln in printed.output.splitlines() if ln.strip("│ ").startswith(name))
        assert f"{metrics['false_refusals']:.2f}" in line and f"{metrics['accuracy']:.2f}" in line
        assert metrics["answerable"] == 2 and metrics["unanswerable"] == 1
    assert report["headline"] in printed.output
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
        ("domainkit/prompting.py", {"synth", "train", "eval", "bundle"}),
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
    assert any("resumed an interrupted run" in note for note in again["notes"]), again["notes"]
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
    assert resumed.conditions["eval.yaml"].keys() == whole.conditions["eval.yaml"].keys()
    for name, metrics in whole.conditions["eval.yaml"].items():
        again = resumed.conditions["eval.yaml"][name]
        assert {k: v for k, v in again.items() if k != "seconds_per_answer"} == {
            k: v for k, v in metrics.items() if k != "seconds_per_answer"
        }


def test_the_headline_rounds_as_the_table_does():
    """21 of 40 right is 0.525: the table prints 0.53, so the headline says 53%, not 52%."""
    from domainkit.eval.runner import RUNTIME, _headline

    results = {"eval.yaml": {RUNTIME: {"accuracy": 21 / 40, "refusal_accuracy": 1 / 8}}}
    assert f"{21 / 40:.2f}" == "0.53" and f"{1 / 8:.2f}" == "0.12"
    assert _headline(results) == f"accuracy: {RUNTIME} 53%; unanswerable refused 12%"
