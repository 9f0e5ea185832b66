"""End to end with the real embedded embedder (all-MiniLM-L6-v2) on the shipped corpora."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from domainkit.cli import app
from domainkit.config import load_domain
from domainkit.retrieval import build_index, make_embedder, open_retriever

CORPORA = Path(__file__).resolve().parents[1] / "corpora"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def support(tmp_path_factory):
    """The customer-support corpus indexed once into a temporary build folder."""
    domain = load_domain(CORPORA / "customer-support", build_dir=tmp_path_factory.mktemp("build"))
    report = build_index(domain, make_embedder(domain.config.retrieval), progress=False)
    return domain, report


def test_every_file_of_the_corpus_is_read(support):
    domain, report = support
    files = [p for p in domain.docs_dir.rglob("*") if p.is_file()]
    assert report.files_read == len(files) >= 15 and not report.skipped
    assert report.index_type == "flat" and report.chunks > len(files)


def test_eval_questions_find_their_source_document(support):
    """Hybrid retrieval puts the document a hand-written question came from in the top 5."""
    domain, _ = support
    retriever = open_retriever(domain)
    questions = yaml.safe_load(domain.eval_path.read_text())["questions"]
    answerable = [q for q in questions if q.get("answerable", True)]
    found = 0
    for q in answerable:
        sources = {"docs/" + h.chunk.source for h in retriever.search(q["question"], k=5)}
        found += q["source"] in sources
    hit_rate = found / len(answerable)
    assert hit_rate >= 0.75, f"hit@5 {hit_rate:.2f} over {len(answerable)} questions"


def test_cli_search_on_the_real_model(support, tmp_path):
    domain, _ = support
    result = CliRunner().invoke(
        app,
        [
            "search",
            str(domain.root),
            "light flashing green after setup",
            "--json",
            "--build-dir",
            str(domain.build_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "led-and-button-reference.html" in result.stdout


def test_edit_one_document_reembeds_only_its_chunks(tmp_path):
    root = tmp_path / "legal"
    shutil.copytree(CORPORA / "legal", root, ignore=shutil.ignore_patterns(".domainkit"))
    domain = load_domain(root)
    embedder = make_embedder(domain.config.retrieval)
    first = build_index(domain, embedder, progress=False)
    rent = root / "docs" / "code" / "part-4-rent.md"
    rent.write_text(rent.read_text() + "\n\n## Section 99. Test\n\nA new closing section.\n")
    second = build_index(domain, embedder, progress=False)
    assert 1 <= second.embedded <= 3 and second.reused >= first.chunks - 3


def test_synth_with_the_embedded_teacher(support):
    """A small synth run with SmolLM2-135M as teacher: data is made, checked and saved; every
    quote is a line of its own evidence block and every other reply is the refusal."""
    from domainkit.synth import dataset, run_synth

    domain, _ = support
    report = run_synth(domain, limit=12, progress=False)
    assert sum(report.rejected.values()) > 0, "a 135M teacher always gets some output rejected"
    samples = dataset.load_samples(domain.layout.synth)
    rows = samples["train"] + samples["validation"]
    assert rows and len(rows) == sum(report.kept.values())
    for sample in rows:
        assert sample.teacher == "hf:SmolLM2-135M-Instruct"
        user, reply = sample.messages[-2]["content"], sample.messages[-1]["content"]
        assert user.startswith("Evidence:\n")
        if reply.startswith("Quote: "):
            assert (
                "\n" + reply.removeprefix("Quote: ") + "\n" in user.split("\n\nQuestion:")[0] + "\n"
            )
        else:
            assert reply == domain.config.refusal


def test_the_demo_questions_on_the_embedded_models(support):
    """The README's two demo questions, with the untuned SmolLM2 and the uncalibrated gate:
    the warranty comes from the documents with its citation; Bitcoin is refused."""
    from domainkit.runtime import Assistant

    domain, _ = support
    assistant = Assistant.from_domain(domain, tuned=False)
    warranty = assistant.answer(
        [{"role": "user", "content": "How long is the warranty on the Talon speaker?"}]
    )
    assert warranty.route in ("answer", "evidence") and "2-year" in warranty.text
    # The citation that closes the "2-year" line's passage names the Talon's own guide.
    after = warranty.text[warranty.text.index("2-year") :]
    cited = int(after.split("[", 1)[1].split("]", 1)[0])
    assert "talon" in warranty.sources[cited - 1].document.lower()
    bitcoin = assistant.answer(
        [{"role": "user", "content": "Can I pay for my order with Bitcoin?"}]
    )
    assert bitcoin.route == "refusal" and bitcoin.gate["unknown"] == 1


def test_tuned_smollm2_exports_to_q8_gguf_and_loads_back(support):
    """The demo's student with a LoRA adapter, exported to q8_0 GGUF and reloaded by
    transformers: same tokenizer, and greedy answers that match the merged model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domainkit.models import resolve_causal_lm
    from domainkit.train.export import export_model

    domain, _ = support
    base = resolve_causal_lm(domain.config.train.student_model)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=8, target_modules=["q_proj", "v_proj"]),
    )
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.002)  # a small, real change to the model
    adapter = domain.build_dir / "train" / "adapter"
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    report = export_model(domain, adapter, base, domain.build_dir / "export", {"gguf"})
    trip = report.round_trip
    assert (
        report.paths["gguf"].stat().st_size
        < 0.6 * (report.paths["merged"] / "model.safetensors").stat().st_size
    )
    assert trip.tokenizer_same and len(trip.answers) == 3
    assert trip.same >= 2 and all(a["agree_tokens"] >= 8 for a in trip.answers), trip.answers
    merged = AutoModelForCausalLM.from_pretrained(report.paths["merged"])
    original = AutoModelForCausalLM.from_pretrained(base)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], original.state_dict()[name]), "merged"
