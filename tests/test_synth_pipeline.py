"""``domainkit synth`` end to end with the scripted teacher on the small support domain."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from domainkit.cli import app
from domainkit.config import load_domain
from domainkit.errors import ConfigError, DomainkitError
from domainkit.retrieval import open_retriever
from domainkit.synth import dataset, run_synth, synth_dir
from domainkit.synth.context import SynthContext
from domainkit.synth.generators import GENERATORS
from domainkit.synth.prompts import Prompts
from domainkit.synth.teachers import CachedTeacher, CallCache

from .conftest import ScriptedTeacher


def _context(domain, teacher=None, tmp_path=None):
    cache = CallCache(synth_dir(domain) / "calls.sqlite")
    return SynthContext(
        domain.config,
        CachedTeacher(teacher or ScriptedTeacher(), cache),
        open_retriever(domain),
        Prompts(),
    )


def test_synth_writes_a_datasetdict_with_provenance(indexed_support):
    domain = load_domain(indexed_support)
    report = run_synth(domain, limit=30, progress=False)
    samples = dataset.load_samples(synth_dir(domain))
    assert set(samples) == {"train", "validation"}
    rows = samples["train"] + samples["validation"]
    assert len(rows) == sum(report.kept.values()) <= 30
    assert {s.generator for s in rows} == {"qa", "raft", "self_chat", "refusal"}
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
    samples = dataset.load_samples(synth_dir(domain))
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


def test_raft_has_gold_in_the_configured_share_and_retrieved_distractors(indexed_support):
    domain = load_domain(indexed_support)
    ctx = _context(domain)
    samples = GENERATORS.get("raft").run(ctx, ctx.chunks, 1000)
    assert len(samples) >= 5
    absent = [s for s in samples if s.meta["gold_position"] is None]
    assert len(absent) == round(len(samples) * domain.config.synth.raft_gold_absent)
    for sample in samples:
        passages = sample.meta["passages"]
        position = sample.meta["gold_position"]
        user = sample.messages[1]["content"]
        if position is None:
            assert sample.chunk_id not in passages
            assert sample.messages[-1]["content"] == domain.config.refusal
        else:
            assert passages[position] == sample.chunk_id
            assert sample.messages[-1]["content"].endswith(f"[{position + 1}]")
        distractors = [p for p in passages if p != sample.chunk_id]
        retrieved = [h.chunk.id for h in ctx.retriever.search(sample.question, k=20)]
        assert all(d in retrieved for d in distractors)
        assert user.startswith("Passages:\n[1] ") and sample.question in user


def test_self_chat_keeps_good_dialogs_and_drops_malformed_ones(indexed_support):
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
    sources = {s.source for s in samples}
    assert "errors/codes.md" not in sources and len(sources) >= 2
    assert any(r.filter == "parse" and r.generator == "self_chat" for r in ctx.log.rejections)
    for sample in samples:
        roles = [m["role"] for m in sample.messages]
        assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * sample.meta["turns"]


def test_teacher_answers_that_fail_grounding_are_replaced_or_dropped(indexed_support):
    class Inventive(ScriptedTeacher):
        @staticmethod
        def reply(conversation):
            if "using only the information given" in conversation[0]["content"]:
                return "It costs 999 crowns and takes 77 days."
            return ScriptedTeacher.reply(conversation)

    domain = load_domain(indexed_support)
    ctx = _context(domain, Inventive())
    samples = GENERATORS.get("qa").run(ctx, ctx.chunks, 1000)
    assert samples and all(s.meta["answer_origin"] == "extract" for s in samples)
    assert all("999" not in s.answers[0] for s in samples)
    assert ctx.log.counts["grounding"] == ctx.log.replaced_by_extract > 0

    strict = domain.config.model_copy(deep=True)
    strict.synth.extractive_fallback = False
    ctx = _context(domain, Inventive())
    ctx.config = strict
    assert GENERATORS.get("qa").run(ctx, ctx.chunks, 1000) == []


def test_refusals_need_a_term_the_documents_never_use(indexed_support):
    class Knowing(ScriptedTeacher):
        calls = 0

        def reply(self, conversation):
            Knowing.calls += 1
            if Knowing.calls % 2:
                return "How long is the warranty on the speaker?"
            return "Do you sell gift vouchers?"

    domain = load_domain(indexed_support)
    ctx = _context(domain, Knowing())
    samples = GENERATORS.get("refusal").run(ctx, ctx.chunks, 1000)
    assert [s.question for s in samples] == ["Do you sell gift vouchers?"] * len(samples)
    assert ctx.log.counts["answerable"] >= 1
    assert all(s.answers == [domain.config.refusal] for s in samples)


def test_eval_questions_are_kept_out_of_the_training_data(indexed_support):
    domain = load_domain(indexed_support)
    run_synth(domain, limit=40, progress=False)
    question = dataset.load_samples(synth_dir(domain))["train"][0].question
    (indexed_support / "eval.yaml").write_text(
        yaml.safe_dump({"questions": [{"question": question, "answer": "x"}]})
    )
    report = run_synth(domain, limit=40, progress=False)
    assert report.rejected["eval_overlap"] >= 1
    kept = dataset.load_samples(synth_dir(domain))
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
    train = dataset.load_samples(synth_dir(domain))["train"]
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

    with pytest.raises(DomainkitError, match=r"no training samples survived.*rejected: parse \d+"):
        run_synth(load_domain(indexed_support), limit=10, progress=False, teacher=Useless())


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
        generator="qa",
        chunk_id="c1",
        source="a.md",
        teacher="t",
    )
    dataset.save(tmp_path, {"train": [sample], "validation": []}, [], {"kept": 1})
    loaded = dataset.load_samples(tmp_path)
    assert [s.messages for s in loaded["train"]] == [sample.messages]
    assert loaded["validation"] == []
