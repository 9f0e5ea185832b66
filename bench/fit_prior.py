"""Fit the gate's prior (``domainkit/answer/prior.json``) on the shipped corpora's own
hand-written questions, and measure it leave-one-corpus-out.

The gate decides from the evidence alone before any calibration (the model is not read), so
the prior is fitted on what the runtime sees then: each eval.yaml question's evidence
features, whether it is answerable, and whether the evidence's answer is right. For each
corpus the fit that left it out is written too, and the runtime uses that one for that
corpus (matched by its documents), so its figures are never from a gate that saw its
questions.

The cut is set on the training corpora's answerable questions at a false-refusal budget
chosen by an inner leave-one-corpus-out loop (the largest budget whose held-out false
refusals stay within the target on every inner corpus), so nothing is tuned on the corpus
it is measured on.

    python bench/fit_prior.py                # index-only builds under bench/out/prior
    python bench/fit_prior.py --build-root /tmp/idx --write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from domainkit.answer.gate import FEATURES, PRIOR_FILE, PRIOR_WEIGHTS, Gate  # noqa: E402
from domainkit.eval.gate_fit import allowed_misses, fit_weights  # noqa: E402

CORPORA = ("customer-support", "legal", "education", "medical")
BUDGETS = (0.02, 0.04, 0.06, 0.08, 0.10)
TARGET = 0.10  # runtime.max_false_refusals' default
STRENGTH = 4.0  # eval.gate_fit.PRIOR_STRENGTH: the same shrinkage as calibration


def corpus_rows(name: str, build_root: Path) -> tuple[list[dict], str]:
    """Each eval.yaml question's features (the model not read), answerability and whether
    the evidence answers it right; and the corpus's documents fingerprint."""
    from domainkit.answer.compose import evidence_answer
    from domainkit.answer.evidence import EvidenceSelector
    from domainkit.answer.gate import features_of
    from domainkit.answer.retrieve import search_query
    from domainkit.config import load_domain
    from domainkit.eval.items import eval_items
    from domainkit.eval.metrics import is_correct
    from domainkit.retrieval import build_index, open_retriever
    from domainkit.retrieval.embedders import make_embedder
    from domainkit.retrieval.store import current_version, docs_fingerprint

    domain = load_domain(ROOT / "corpora" / name, build_root / name)
    if current_version(domain.index_dir) is None:
        build_index(domain, make_embedder(domain.config.retrieval), progress=False)
    retriever = open_retriever(domain)
    selector = EvidenceSelector(retriever.embedder, retriever.vocabulary, domain.config.evidence)
    words, refusal = domain.config.runtime.answer_words, domain.config.refusal
    rows = []
    for item in eval_items(domain):
        hits = retriever.search(search_query(item.question, []), k=domain.config.evidence.passages)
        evidence = selector.select(item.question, [h.chunk for h in hits])
        if not evidence.sentences:
            rows.append({"x": None, "answerable": item.answerable, "right": False})
            continue
        answer = evidence_answer(evidence, words)
        features = features_of(evidence, retriever.vocabulary, answer.text, None)
        right = item.answerable and is_correct(
            answer.text, item.reference or "", refusal, spans=item.spans
        )
        rows.append({"x": features.vector(), "answerable": item.answerable, "right": right})
    return rows, docs_fingerprint(domain.index_dir) or ""


def fit(rows: list[dict], budget: float) -> Gate:
    """Weights on ``rows`` (shrunk towards the hand-set gate, its signs kept, the model's
    refusal left out) and the cut that refuses at most ``budget`` of new answerable ones."""
    usable = [r for r in rows if r["x"] is not None]
    x = np.stack([r["x"] for r in usable])
    y = np.array([r["answerable"] for r in usable], dtype=float)
    target = {**PRIOR_WEIGHTS, "model_refusal": 0.0}
    weights, bias = fit_weights(x, y, target, STRENGTH)
    gate = Gate(weights, bias, 0.5, False)
    scores = sorted(_p(gate, r["x"]) for r in usable if r["answerable"])
    misses = allowed_misses(len(scores), budget)
    gate.threshold = scores[misses] if misses < len(scores) else 1.0
    return gate


def _p(gate: Gate, x: np.ndarray) -> float:
    w = np.array([gate.weights.get(name, 0.0) for name in FEATURES])
    return float(1 / (1 + np.exp(-(x @ w + gate.bias))))


def measure(gate: Gate, rows: list[dict]) -> dict:
    """On held-out rows: answerable refused, unanswerable refused, answerable right."""
    answered = [r["x"] is not None and _p(gate, r["x"]) >= gate.threshold for r in rows]
    pos = [(a, r) for a, r in zip(answered, rows, strict=True) if r["answerable"]]
    neg = [a for a, r in zip(answered, rows, strict=True) if not r["answerable"]]
    return {
        "false_refusals": round(sum(not a for a, _ in pos) / len(pos), 4),
        "refused_unanswerable": round(sum(not a for a in neg) / max(1, len(neg)), 4),
        "accuracy": round(sum(a and r["right"] for a, r in pos) / len(pos), 4),
        "answerable": len(pos),
        "unanswerable": len(neg),
    }


def choose_budget(data: dict[str, list[dict]]) -> float:
    """The largest budget whose held-out false refusals, each corpus left out in turn, all
    stay within ``TARGET``; the smallest budget when none does."""
    names = list(data)
    for budget in sorted(BUDGETS, reverse=True):
        worst = max(
            measure(fit([r for m in names if m != held for r in data[m]], budget), data[held])[
                "false_refusals"
            ]
            for held in names
        )
        if worst <= TARGET:
            return budget
    return min(BUDGETS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-root", type=Path, default=ROOT / "bench" / "out" / "prior")
    parser.add_argument("--write", action="store_true", help=f"write {PRIOR_FILE}")
    args = parser.parse_args()
    data, prints = {}, {}
    for name in CORPORA:
        data[name], prints[name] = corpus_rows(name, args.build_root)
        print(f"{name}: {len(data[name])} questions", flush=True)
    fits, loco = {}, {}
    print(f"\nleave-one-corpus-out (target false refusals <= {TARGET}):")
    print(
        f"  {'held out':<18} {'budget':>6} {'false ref':>9} {'refused unans':>13} {'accuracy':>8}"
    )
    for held in CORPORA:
        training = {m: data[m] for m in CORPORA if m != held}
        budget = choose_budget(training)
        gate = fit([r for rows in training.values() for r in rows], budget)
        loco[held] = {"budget": budget, **measure(gate, data[held])}
        hand = measure(_hand_set(), data[held])
        loco[held]["hand_set"] = hand
        row = loco[held]
        print(
            f"  {held:<18} {budget:>6} {row['false_refusals']:>9} "
            f"{row['refused_unanswerable']:>13} {row['accuracy']:>8}   hand-set gate: "
            f"{hand['false_refusals']} / {hand['refused_unanswerable']} / {hand['accuracy']}"
        )
        fits[f"without:{held}"] = _fit_record(gate, budget, [prints[held]], training)
    budget = choose_budget(data)
    gate = fit([r for rows in data.values() for r in rows], budget)
    fits["all"] = _fit_record(gate, budget, [], data)
    print(f"\nall four corpora: budget {budget}, cut {gate.threshold:.4f}, weights {gate.weights}")
    if args.write:
        record = {
            "written": time.strftime("%Y-%m-%d"),
            "made_by": "bench/fit_prior.py",
            "target_false_refusals": TARGET,
            "fits": fits,
            "leave_one_corpus_out": loco,
        }
        PRIOR_FILE.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {PRIOR_FILE}")
    return 0


def _hand_set() -> Gate:
    return Gate()


def _fit_record(gate: Gate, budget: float, excludes: list[str], data: dict) -> dict:
    return {
        "weights": {k: round(v, 4) for k, v in gate.weights.items()},
        "bias": round(gate.bias, 4),
        "threshold": round(gate.threshold, 6),
        "budget": budget,
        "fitted_on": sorted(data),
        "questions": sum(len(rows) for rows in data.values()),
        "excludes": excludes,
    }


if __name__ == "__main__":
    sys.exit(main())
