"""``domainkit synth`` end to end with the scripted teacher on the small support domain."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from typer.testing import CliRunner

from domainkit.cli import app
from domainkit.config import load_domain
from domainkit.errors import ConfigError, DomainkitError
from domainkit.retrieval import open_retriever
from domainkit.synth import dataset, run_synth
from domainkit.synth.context import SynthContext
from domainkit.synth.generators import GENERATORS
from domainkit.synth.prompts import Prompts
from domainkit.synth.teachers import CachedTeacher, CallCache

from .conftest import ScriptedTeacher


def _context(domain, teacher=None, tmp_path=None):
    cache = CallCache(domain.layout.synth_calls)
    return SynthContext(
        domain.config,
        CachedTeacher(teacher or ScriptedTeacher(), cache),
        open_retriever(domain),
        Prompts(),
    )


def test_synth_writes_a_datasetdict_with_provenance(indexed_support):
    domain = load_domain(indexed_support)
    report = run_synth(domain, limit=30, progress=False)
    samples = dataset.load_samples(domain.layout.synth)
    assert set(samples) == {"train", "validation"}
    rows = samples["train"] + samples["validation"]
    assert len(rows) == sum(report.kept.values()) <= 30
    assert {s.generator for s in rows} == {"raft", "near_miss", "self_chat", "refusal"}
    chunk_ids = {c.id for c in open_retriever(domain).index.chunks}
    for sample in rows:
        assert sample.chunk_id in chunk_ids and sample.source and sample.teacher == "test:scripted"
        assert sample.messages[0] == {
            "role": "system",
            "content": domain.config.render_system_prompt(),
        }
        assert sample.messages[-1]["role"] == "assistant"
    version = report.path
    for name in ("train.jsonl", "validation.jsonl", "rejected.jsonl", "summary.json"):
        assert (version / name).is_file()
    summary = json.loads((version / "summary.json").read_text())
    assert summary["kept"] == dict(report.kept)


def test_split_keeps_each_chunk_on_one_side(indexed_support):
    domain = load_domain(indexed_support)
    run_synth(domain, limit=40, progress=False)
    samples = dataset.load_samples(domain.layout.synth)
    train = {s.chunk_id for s in samples["train"]}
    validation = {s.chunk_id for s in samples["validation"]}
    assert train and validation, "the test domain holds out 30% of chunks"
    assert not train & validation


def test_rerun_is_served_from_the_cache(indexed_support):
    domain = load_domain(indexed_support)
    first = run_synth(domain, limit=20, progress=False)
    teacher = ScriptedTeacher()
    again = run_synth(domain, limit=20, progress=False, teacher=teacher)
    assert first.calls_made > 0
    assert (
        teacher.conversations == [] and again.calls_cached == first.calls_made + first.calls_cached
    )
    assert again.kept == first.kept


def _evidence_lines(user: str) -> list[str]:
    block = user.split("Evidence:\n", 1)[1].split("\n\nQuestion: ", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("[")]


def test_raft_quotes_its_gold_line_or_refuses_without_its_passage(indexed_support):
    domain = load_domain(indexed_support)
    ctx = _context(domain)
    samples = GENERATORS.get("raft").run(ctx, ctx.chunks, 1000)
    present = [s for s in samples if s.meta["gold_present"]]
    absent = [s for s in samples if not s.meta["gold_present"]]
    assert len(present) >= 5 and absent
    chunks = {c.id: c for c in ctx.chunks}
    for sample in samples:
        user, reply = sample.messages[1]["content"], sample.messages[-1]["content"]
        assert user.startswith("Evidence:\n[1] ") and f"Question: {sample.question}" in user
        lines = _evidence_lines(user)
        passages = sample.meta["passages"]
        retrieved = [h.chunk.id for h in ctx.retriever.search(sample.question, k=20)]
        assert all(p in retrieved or p == sample.chunk_id for p in passages)
        if sample.meta["gold_present"]:
            quoted = reply.removeprefix("Quote: ")
            assert reply.startswith("Quote: ") and quoted in lines, "the quote is an evidence line"
            assert quoted == sample.meta["fact"]
            assert quoted in " ".join(chunks[sample.chunk_id].text.split())
        else:
            assert reply == domain.config.refusal
            assert sample.chunk_id not in passages, "its passage was left out"
            assert sample.meta["fact"] not in lines


def test_near_misses_swap_in_a_name_the_corpus_never_uses(indexed_support):
    domain = load_domain(indexed_support)
    ctx = _context(domain)
    samples = GENERATORS.get("near_miss").run(ctx, ctx.chunks, 1000)
    assert samples
    for sample in samples:
        assert sample.messages[-1]["content"] == domain.config.refusal
        assert sample.meta["unknown_terms"], sample.question
        assert sample.question != sample.meta["original_question"]
        assert ctx.vocabulary.unknown_specific_terms(sample.question)
        assert sample.messages[1]["content"].startswith("Evidence:")


def test_self_chat_keeps_good_dialogs_and_trains_on_the_last_reply(indexed_support):
    class Rambling(ScriptedTeacher):
        """Plays the user badly for chunks about errors: no question, just chatter."""

        @staticmethod
        def reply(conversation):
            if "Statement:" in conversation[-1]["content"] and "E42" in conversation[-1]["content"]:
                return "Hello there, I am glad to help you with anything today."
            return ScriptedTeacher.reply(conversation)

    domain = load_domain(indexed_support)
    ctx = _context(domain, Rambling())
    samples = GENERATORS.get("self_chat").run(ctx, ctx.chunks, 1000)
    assert samples
    assert any(r.filter == "parse" and r.generator == "self_chat" for r in ctx.log.rejections)
    for sample in samples:
        roles = [m["role"] for m in sample.messages]
        assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * sample.meta["turns"]
        assert sample.meta["train_on"] == "last"
        # Earlier turns look as the user saw them; only the last carries the evidence.
        assert not sample.messages[1]["content"].startswith("Evidence:")
        assert sample.messages[2]["content"].endswith("]"), "a shown answer ends with its citation"
        assert sample.messages[-2]["content"].startswith("Evidence:")
        assert sample.messages[-1]["content"].startswith("Quote: ")
        if "E42" in sample.messages[-2]["content"].split("Question:")[-1]:
            assert "template" in sample.meta["question_origins"]


def test_refusals_need_a_term_the_documents_never_use(indexed_support):
    class Knowing(ScriptedTeacher):
        @staticmethod
        def reply(conversation):
            return "How long is the warranty on the speaker?"

    domain = load_domain(indexed_support)
    ctx = _context(domain, Knowing())
    samples = GENERATORS.get("refusal").run(ctx, ctx.chunks, 1000)
    assert ctx.log.counts["answerable"] >= 1, "the teacher's answerable question is rejected"
    assert samples and all(s.meta["question_origin"] == "template" for s in samples)
    for sample in samples:
        assert sample.answers == [domain.config.refusal]
        assert ctx.vocabulary.novel_share(sample.question) > 0


def test_eval_questions_are_kept_out_of_the_training_data(indexed_support):
    domain = load_domain(indexed_support)
    run_synth(domain, limit=40, progress=False)
    question = dataset.load_samples(domain.layout.synth)["train"][0].question
    (indexed_support / "eval.yaml").write_text(
        yaml.safe_dump({"questions": [{"question": question, "answer": "x"}]})
    )
    report = run_synth(domain, limit=40, progress=False)
    assert report.rejected["eval_overlap"] >= 1
    kept = dataset.load_samples(domain.layout.synth)
    assert question not in {s.question for rows in kept.values() for s in rows}


def test_user_data_in_three_formats_is_validated_and_merged(indexed_support):
    folder = indexed_support / "instructions"
    folder.mkdir()
    lines = [
        {
            "messages": [
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."},
            ]
        },
        {"conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}]},
        {"instruction": "Say hi", "input": "politely", "output": "Hello there."},
    ]
    (folder / "mine.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    domain = load_domain(indexed_support)
    report = run_synth(domain, limit=10, progress=False)
    assert report.user_samples == 3 and report.kept["user"] == 3
    train = dataset.load_samples(domain.layout.synth)["train"]
    user = [s for s in train if s.generator == "user"]
    assert user[2].messages[1]["content"] == "Say hi\n\npolitely"
    assert all(s.messages[0]["role"] == "system" for s in user)

    (folder / "bad.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "no answer"}]}\nnot json\n'
    )
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: .*end with an assistant.*\n.*bad.jsonl:2"):
        run_synth(domain, limit=10, progress=False)


def test_too_little_data_is_reported_with_counts(indexed_support):
    class Useless(ScriptedTeacher):
        @staticmethod
        def reply(conversation):
            return "I am a language model."

    # Template questions stand in for the teacher's, so a little data still comes out.
    report = run_synth(load_domain(indexed_support), limit=10, progress=False, teacher=Useless())
    assert report.rejected["parse"] > 0 and sum(report.kept.values()) > 0
    [warning] = report.warnings
    assert re.search(
        r"only \d+ training samples \(kept \d+ of target 10; rejected: .*parse", warning
    )

    headings_only = indexed_support / "docs"
    for path in headings_only.rglob("*.*"):
        path.write_text("Perch warranty\nTwo years\nTalon battery\nEighteen hours\n")
    domain = load_domain(indexed_support)
    from domainkit.retrieval import build_index

    from .conftest import HashEmbedder

    build_index(domain, HashEmbedder(), progress=False)
    with pytest.raises(DomainkitError, match="sentence"):
        run_synth(domain, limit=10, progress=False, teacher=Useless())


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca"])
def test_cli_synth_and_export(indexed_support, tmp_path, fmt):
    out = tmp_path / f"{fmt}.jsonl"
    result = CliRunner().invoke(
        app, ["synth", str(indexed_support), "--limit", "20", "--export", fmt, str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["export"]["samples"] == sum(summary["splits"].values())
    first = rows[0]
    if fmt == "messages":
        assert first["messages"][0]["role"] == "system"
    elif fmt == "sharegpt":
        assert [t["from"] for t in first["conversations"]][:3] == ["system", "human", "gpt"]
    else:
        assert {"instruction", "input", "output", "system", "history"} <= set(first)


def test_cli_synth_without_index_says_what_to_do(support_domain):
    result = CliRunner().invoke(app, ["synth", str(support_domain)])
    assert result.exit_code == 1 and "domainkit index" in result.output


def test_an_empty_split_is_saved_and_loads_as_empty(tmp_path):
    """A small first run can leave the validation split empty; saving must not fail."""
    from domainkit.synth.sample import Sample

    sample = Sample(
        messages=[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
        generator="raft",
        chunk_id="c1",
        source="a.md",
        teacher="t",
    )
    dataset.save(tmp_path, {"train": [sample], "validation": []}, [], {"kept": 1})
    loaded = dataset.load_samples(tmp_path)
    assert [s.messages for s in loaded["train"]] == [sample.messages]
    assert loaded["validation"] == []


@pytest.mark.integration
@pytest.mark.parametrize("kill_after", [1, 8])
def test_a_synth_run_killed_with_sigkill_resumes_from_its_saved_teacher_calls(
    indexed_support, tmp_path, kill_after
):
    """SIGKILL mid-run (no cleanup at all): the rerun serves the finished teacher calls from
    the cache, makes only the rest, and writes the same dataset an unbroken run writes."""
    import shutil
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    unbroken = tmp_path / "unbroken"
    shutil.copytree(indexed_support, unbroken)
    # The CLI in a fresh process, with the tests' embedder and scripted teacher registered.
    cli = [sys.executable, "-c", "import tests.conftest; from domainkit.cli import app; app()"]

    def synth(domain, delay="0", **kwargs):
        env = {**os.environ, "DOMAINKIT_TEST_TEACHER_DELAY": delay}
        command = [*cli, "synth", str(domain), "--limit", "40", "--json"]
        return subprocess.Popen(command, cwd=root, env=env, text=True, **kwargs)

    calls = indexed_support / ".domainkit" / "synth" / "calls.sqlite"

    def saved() -> int:
        if not calls.is_file():
            return 0
        try:
            with sqlite3.connect(f"file:{calls}?mode=ro", uri=True, timeout=1) as db:
                return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            return 0

    process = synth(indexed_support, delay="0.3", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while saved() < kill_after:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    at_kill = saved()
    assert not (indexed_support / ".domainkit" / "synth" / "CURRENT").exists(), "killed early"

    outputs = {}
    for name, domain in (("resumed", indexed_support), ("unbroken", unbroken)):
        run = synth(domain, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        outputs[name] = json.loads(out)
    resumed, whole = outputs["resumed"], outputs["unbroken"]
    assert resumed["teacher_calls"]["cached"] >= at_kill >= kill_after
    assert sum(resumed["teacher_calls"].values()) == sum(whole["teacher_calls"].values())
    assert resumed["teacher_calls"]["made"] < whole["teacher_calls"]["made"], (
        "finished calls were not made again",
        resumed,
        whole,
    )

    def rows(domain):
        samples = dataset.load_samples(load_domain(domain).layout.synth)
        return {
            split: sorted(json.dumps(s.to_row(), sort_keys=True) for s in split_samples)
            for split, split_samples in samples.items()
        }

    assert rows(indexed_support) == rows(unbroken), "the same dataset as an unbroken run"
    assert not list((indexed_support / ".domainkit").glob("**/*.tmp")), "no half-written file"


def test_an_unknown_generator_in_the_mix_fails_before_any_teacher_call(indexed_support):
    """Generator names are open to plug-ins, so a typo is caught when synth starts, with the
    names that exist, not halfway through."""
    from domainkit.errors import UnknownNameError

    config = yaml.safe_load((indexed_support / "domain.yaml").read_text())
    config["synth"]["mix"] = {"raft": 1.0, "quizz": 0.5}
    (indexed_support / "domain.yaml").write_text(yaml.safe_dump(config))
    teacher = ScriptedTeacher()
    with pytest.raises(UnknownNameError, match="unknown generator 'quizz'; available: .*raft"):
        run_synth(load_domain(indexed_support), teacher=teacher, limit=10, progress=False)
    assert teacher.conversations == []
