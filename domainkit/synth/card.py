"""The dataset card (README.md) of an exported synthetic dataset: how it was made, what the
filters removed, and its splits, with Hugging Face front matter naming the data files."""

from __future__ import annotations

from domainkit.config.loading import Domain

_GENERATORS = {
    "raft": "evidence block (gold sentences among retrieved distractors) + question -> quote "
    "of the line that answers, or the refusal when the gold line was left out",
    "near_miss": "a real question with one name or figure swapped for one the documents never "
    "mention -> the refusal",
    "refusal": "a question the documents do not answer -> the refusal",
    "self_chat": "Baize-style multi-turn dialogs in the same evidence format, for tone",
    "reviewed": "a user's question a reviewer marked (`domainkit review`), in the same "
    "evidence format -> quote of the line the reviewer chose, or the refusal",
}
_REVIEWED_NOTE = (
    "\n`reviewed` holds users' questions a reviewer marked. They are also the domain's "
    "validation questions (they calibrate its gate): a model trained on them needs other "
    "questions to be measured on.\n"
)
_FILTERS = {
    "parse": "the teacher's reply held no usable question (or copied an example)",
    "roundtrip": "searching with the question did not bring back its source passage",
    "relevance": "the question shares no term with its passage",
    "near_duplicate": "too close to a kept sample, or a paraphrase that repeats its question",
    "restated": "another passage states the fact, so leaving the gold line out would not "
    "make the question unanswerable",
    "no_swap": "no name or figure to swap for a near miss",
    "answerable": "a would-be refusal whose terms the documents mostly contain",
    "evidence": "the gold line did not make it into the evidence block",
    "eval_overlap": "too close to an evaluation question (kept out so the evaluation stays fair)",
    "length": "too long or too short",
}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def _card_data(name: str, total: int, data_files: dict[str, str]):
    """The card's YAML header: license, tasks, tags, size and the split files."""
    from huggingface_hub import DatasetCardData

    return DatasetCardData(
        license="other",
        task_categories=["question-answering", "text-generation"],
        tags=["synthetic", "domainkit", "raft", "retrieval-augmented-generation"],
        size_categories=[_size_category(total)],
        pretty_name=f"{name} (domainkit synthetic instructions)",
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f} for s, f in data_files.items()],
            }
        ],
    )


def dataset_card(domain: Domain, summary: dict, data_files: dict[str, str]) -> str:
    """README.md for the dataset folder; ``data_files`` maps split name to its file name."""
    from huggingface_hub import DatasetCard

    config = domain.config
    splits = summary.get("splits", {})
    data = _card_data(config.name, sum(splits.values()), data_files)
    teacher = config.synth.teacher
    kept = summary.get("kept", {})
    rejected = summary.get("rejected", {})
    generator_rows = "\n".join(
        f"| {name} | {count} | {_GENERATORS.get(name, '')} |"
        for name, count in sorted(kept.items())
    )
    filter_rows = "\n".join(
        f"| {name} | {count} | {_FILTERS.get(name, '')} |"
        for name, count in sorted(rejected.items(), key=lambda kv: -kv[1])
    )
    calls = summary.get("teacher_calls", {})
    recipe = f" (recipe `{config.recipe}`)" if config.recipe else ""
    body = f"""# {config.name}: synthetic instruction data

Made by domainkit from the documents of the `{config.name}` domain{recipe}.
Each line is a chat (`messages`: system, user, assistant) in the exact format the domainkit
runtime sends: an evidence block of numbered sentences from the documents and a question,
answered by quoting the line that answers it (`Quote: ...`) or by the refusal
"{config.refusal}". Answers are copied from the documents, so they are correct by
construction as far as the source is; the teacher writes questions and dialog turns.

## How it was made

- Teacher: `{teacher.model}` ({teacher.backend} backend); calls made:
  {calls.get("made", 0)}, answered from the cache: {calls.get("cached", 0)}.
- Personal data spans masked: {summary.get("pii_masked", 0)}; samples the user supplied:
  {summary.get("user_samples", 0)}.
- Every line keeps its provenance: `generator`, `source` (document), `chunk_id`, `teacher`.
- Split by source passage, so no passage has samples on both sides.

| generator | kept | what a sample is |
|---|---|---|
{generator_rows}

## Filters (samples rejected)

| filter | rejected | why |
|---|---|---|
{filter_rows}

## Splits

| split | samples | file |
|---|---|---|
{chr(10).join(f"| {s} | {splits.get(s, 0)} | {f} |" for s, f in data_files.items())}
{_REVIEWED_NOTE if "reviewed" in data_files else ""}

## Limitations

- The license is that of the source documents (not known to domainkit): check it before sharing.
- Questions are generated; real users phrase theirs differently.
- Refusals follow the domain's own wording and policy.
"""
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
