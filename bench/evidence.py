"""Evidence selection, without any model: how often the answer the runtime would build from
the evidence alone is right, against the sentences a user would otherwise quote.

For each domain's answerable questions (eval.yaml, or another question file), in one run:

- ``top-N cosine``: the N retrieved sentences most similar to the question (MiniLM cosine
  over the sentences of the same retrieved passages), quoted together: the baseline from
  the answer-quality issue;
- ``evidence``: what ``domainkit`` answers with no model (policy ``evidence``): the
  selector's best sentence with its lead-in and the best other sentences of its passage,
  within ``runtime.answer_words``;
- ``oracle``: the share of questions for which some selected sentence, made the answer the
  same way, would be right (the ceiling for the reader's choice).

Accuracy is the project's own ``is_correct`` (at least half the reference's key facts, or a
gold span). The domains need an index (``domainkit index DOMAIN``).

    .venv/bin/python bench/evidence.py [DOMAIN[:QUESTIONS.yaml] ...]

The default is the four shipped corpora and the SQuAD 2.0 article's validation half
(``bench/squad2.py make``); its scored half stays for ``bench/squad2.py score``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETS = [
    "corpora/customer-support",
    "corpora/legal",
    "corpora/education",
    "corpora/medical",
    "bench/out/squad2:validation.yaml",
]


def measure(spec: str) -> dict | None:
    from domainkit.answer.compose import compose
    from domainkit.answer.evidence import EvidenceSelector
    from domainkit.config import load_domain
    from domainkit.config.evalset import load_eval_set
    from domainkit.eval.metrics import is_correct
    from domainkit.retrieval import open_retriever
    from domainkit.retrieval.units import text_units

    folder, _, questions_file = spec.partition(":")
    root = (ROOT / folder) if not Path(folder).is_absolute() else Path(folder)
    if not (root / "domain.yaml").is_file():
        print(f"{spec}: no domain.yaml (for SQuAD: bench/squad2.py make)", file=sys.stderr)
        return None
    domain = load_domain(root)
    questions = [
        q for q in load_eval_set(root / (questions_file or "eval.yaml")).questions if q.answerable
    ]
    retriever = open_retriever(domain)
    selector = EvidenceSelector(retriever.embedder, retriever.vocabulary, domain.config.evidence)
    words = domain.config.runtime.answer_words
    refusal = domain.config.refusal
    right = {"top-1 cosine": 0, "top-2 cosine": 0, "top-3 cosine": 0, "evidence": 0, "oracle": 0}
    lengths: dict[str, list[int]] = {name: [] for name in right if name != "oracle"}
    for q in questions:

        def correct(text: str, q=q) -> bool:
            return is_correct(text, q.answer or "", refusal, q.spans)

        hits = retriever.search(q.question, k=domain.config.evidence.passages)
        sentences = list(
            dict.fromkeys(
                " ".join(h.chunk.text[u.start : u.end].split())
                for h in hits
                for u in text_units(h.chunk.text)
            )
        )
        if sentences:
            vectors = retriever.embedder.embed(sentences)
            query = retriever.embedder.embed([q.question])[0]
            order = sorted(range(len(sentences)), key=lambda i: -float(vectors[i] @ query))
            for n in (1, 2, 3):
                text = " ".join(sentences[i] for i in order[:n])
                right[f"top-{n} cosine"] += correct(text)
                lengths[f"top-{n} cosine"].append(len(text.split()))
        evidence = selector.select(q.question, [h.chunk for h in hits])
        if evidence.sentences:
            answer = compose(evidence, evidence.best(), words)
            right["evidence"] += correct(answer)
            lengths["evidence"].append(len(answer.split()))
            right["oracle"] += any(correct(compose(evidence, s, words)) for s in evidence.ranked)
    n = max(1, len(questions))
    return {
        "set": spec,
        "questions": len(questions),
        **{name: count / n for name, count in right.items()},
        "words": {k: statistics.median(v) if v else 0 for k, v in lengths.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="*", default=DEFAULT_SETS, help="DOMAIN[:QUESTIONS.yaml]")
    args = parser.parse_args()
    results = [r for r in map(measure, args.sets) if r]
    if not results:
        return 1
    names = ["top-1 cosine", "top-2 cosine", "top-3 cosine", "evidence", "oracle"]
    print(f"{'set':36} {'n':>4} " + " ".join(f"{n:>13}" for n in names))
    for r in results:
        cells = " ".join(
            f"{r[n]:>6.3f} ({r['words'][n]:>3.0f}w)" if n in r["words"] else f"{r[n]:>13.3f}"
            for n in names
        )
        print(f"{r['set']:36} {r['questions']:>4} {cells}")
    means = " ".join(f"{statistics.mean(r[n] for r in results):>13.3f}" for n in names)
    print(f"{'mean':36} {'':>4} {means}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
