"""Simulate learning from use on a shipped corpus: users ask, a reviewer marks, the
assistant is rebuilt; what changed on questions it has not been told about?

For each corpus, eval.yaml is split by a hash of each question into a *reviewed* half and
a *scored* half. A copy of the corpus is built (demo size by default) with the scored half
as its eval.yaml, then served by ``domainkit serve``:

1. before: the scored half and the hand-written rewordings of reviewed questions
   (``bench/feedback_rewordings.yaml``) are asked through the server;
2. the reviewed half is asked through the server, and a reviewer who knows each question's
   reference answer marks every exchange with ``domainkit review --mark``, as a person
   would: ``--right`` when the answer holds the reference, ``--not-in-docs`` for a question
   the documents do not answer, else ``--line`` with the evidence line (or a line found with
   ``--search``) that holds it, else the few lines seen that hold it together (``--line A
   --line B``), else ``--answer-text``;
3. ``domainkit build`` again (only what the reviews affect re-runs), then after: the same
   questions as before.

    python bench/feedback.py                       # all four corpora, --limit 120
    python bench/feedback.py --corpora legal --limit 120
    python bench/feedback.py --again --rewordings bench/feedback_rewordings_heldout.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "feedback"
CORPORA = ("customer-support", "legal", "education", "medical")
REWORDINGS = ROOT / "bench" / "feedback_rewordings.yaml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def reviewed_half(question: str) -> bool:
    return int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 2 == 0


def domainkit(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "domainkit"), *args], capture_output=True, text=True, env=ENV, cwd=ROOT
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"domainkit {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def prepare(corpus: str, folder: Path) -> tuple[list[dict], list[dict]]:
    """A fresh copy of the corpus whose eval.yaml is the scored half; (reviewed, scored)."""
    shutil.rmtree(folder, ignore_errors=True)
    source = ROOT / "corpora" / corpus
    shutil.copytree(
        source, folder, ignore=shutil.ignore_patterns(".domainkit", "logs", "validation.yaml")
    )
    questions = yaml.safe_load((source / "eval.yaml").read_text())["questions"]
    reviewed = [q for q in questions if reviewed_half(q["question"])]
    scored = [q for q in questions if not reviewed_half(q["question"])]
    (folder / "eval.yaml").write_text(yaml.safe_dump({"questions": scored}, sort_keys=False))
    return reviewed, scored


class Server:
    """``domainkit serve`` on a free port, for the length of a ``with`` block."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> Server:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [str(BIN / "domainkit"), "serve", str(self.folder), "--port", str(self.port)],
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        import httpx

        deadline = time.time() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read()[-3000:])
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)
                return self
            except httpx.HTTPError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ask(self, question: str) -> dict:
        import httpx

        body = {"messages": [{"role": "user", "content": question}]}
        data = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=300).json()
        return {
            "id": data["id"],
            "text": data["choices"][0]["message"]["content"],
            "route": data["domainkit"]["route"],
        }

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def refused(answer: dict, refusal: str) -> bool:
    from domainkit.eval.metrics import is_refusal

    return answer["route"] == "refusal" or is_refusal(answer["text"], refusal)


def right(answer: dict, question: dict, refusal: str) -> bool:
    from domainkit.eval.metrics import is_correct

    return is_correct(answer["text"], question["answer"], refusal, spans=question.get("spans"))


def score(answers: list[dict], questions: list[dict], refusal: str) -> dict:
    """Answerable right, unanswerable refused, answerable refused; and the right-or-rightly-
    refused share over all."""
    pos = [(a, q) for a, q in zip(answers, questions, strict=True) if q.get("answerable", True)]
    neg = [a for a, q in zip(answers, questions, strict=True) if not q.get("answerable", True)]
    ok = [right(a, q, refusal) for a, q in pos] + [refused(a, refusal) for a in neg]
    return {
        "accuracy": round(sum(ok[: len(pos)]) / max(1, len(pos)), 4),
        "refused_unanswerable": round(sum(ok[len(pos) :]) / max(1, len(neg)), 4),
        "false_refusals": round(sum(refused(a, refusal) for a, _ in pos) / max(1, len(pos)), 4),
        "right_or_rightly_refused": round(sum(ok) / max(1, len(ok)), 4),
        "answerable": len(pos),
        "unanswerable": len(neg),
    }


def review(folder: Path, exchanges: list[tuple[dict, dict]], refusal: str) -> dict[str, int]:
    """Mark every exchange through ``domainkit review --mark`` as a reviewer who knows the
    reference would; the verdicts given, by kind."""
    from domainkit.eval.metrics import is_correct

    listed = json.loads(domainkit("review", str(folder), "--json", "--limit", "500").stdout)
    by_id = {e["id"]: e for e in listed["exchanges"]}
    kinds: dict[str, int] = {}
    for question, answer in exchanges:
        shown = by_id[answer["id"]]
        spans = {"spans": question.get("spans")}
        if not question.get("answerable", True):
            flags = ["--not-in-docs"]
        elif right(answer, question, refusal):
            flags = ["--right"]
        else:
            seen = list(shown["evidence"])
            holds = [e["id"] for e in seen if is_correct(e["text"], question["answer"], **spans)]
            if not holds:
                for words in (question["answer"], question["question"]):
                    found = json.loads(
                        domainkit("review", str(folder), "--search", words, "--json").stdout
                    )["lines"]
                    seen += found
                    holds = [
                        x["id"] for x in found if is_correct(x["text"], question["answer"], **spans)
                    ]
                    if holds:
                        break
            # No one line holds it: the few lines seen that hold it together, ticked.
            holds = holds[:1] or lines_holding(seen, question)
            flags = [f for x in holds for f in ("--line", x)] or [
                "--answer-text",
                question["answer"],
            ]
        domainkit("review", str(folder), "--mark", answer["id"], *flags)
        kind = "lines" if flags.count("--line") > 1 else flags[0].lstrip("-")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def lines_holding(lines: list[dict], question: dict, most: int = 3) -> list[str]:
    """The ids of the fewest of ``lines`` (at most ``most``) whose text together holds the
    reference's key facts, the most telling first; none when no such few do."""
    from domainkit.eval.metrics import is_correct, key_fact_recall

    texts = {x["id"]: x["text"] for x in lines}
    chosen: list[str] = []
    held = 0.0
    for _ in range(most):
        best, recall = max(
            (
                (i, key_fact_recall(" ".join(texts[c] for c in [*chosen, i]), question["answer"]))
                for i in texts
                if i not in chosen
            ),
            key=lambda pair: pair[1],
            default=(None, 0.0),
        )
        if best is None or recall <= held:
            return []
        chosen, held = [*chosen, best], recall
        if is_correct(" ".join(texts[c] for c in chosen), question["answer"]):
            return chosen
    return []


def build(folder: Path, limit: int | None, start: str | None = None) -> float:
    started = time.perf_counter()
    args = ["build", str(folder)] + (["--limit", str(limit)] if limit else [])
    args += ["--from", start] if start else []
    domainkit(*args)
    return round(time.perf_counter() - started, 1)


def simulate(corpus: str, limit: int | None, rewordings: list[dict]) -> dict:
    from domainkit.config import load_domain

    folder = OUT / corpus
    reviewed, scored = prepare(corpus, folder)
    refusal = load_domain(folder).config.refusal
    by_question = {q["question"]: q for q in reviewed}
    reworded = [{**by_question[r["original"]], "question": r["rewording"]} for r in rewordings]
    result: dict = {"corpus": corpus, "limit": limit, "build_seconds": build(folder, limit)}
    with Server(folder) as server:
        result["before"] = {
            "scored": score([server.ask(q["question"]) for q in scored], scored, refusal),
            "rewordings": score([server.ask(q["question"]) for q in reworded], reworded, refusal),
        }
        exchanges = [(q, server.ask(q["question"])) for q in reviewed]
        result["reviewed_before"] = score([a for _, a in exchanges], reviewed, refusal)
    result["verdicts"] = review(folder, exchanges, refusal)
    return after(result, folder, limit, scored, reworded, refusal)


def again(corpus: str, limit: int | None, rewordings: list[dict], other_set: bool = False) -> dict:
    """A reviewed copy rebuilt with the code as it is now and scored after again; the build,
    the before figures and the verdicts stay those of the first run. With ``other_set``
    (rewordings other than those the copy was first scored with) there is no before figure
    for the rewordings."""
    from domainkit.config import load_domain

    folder = OUT / corpus
    result = json.loads((OUT / f"{corpus}.json").read_text())
    questions = yaml.safe_load((ROOT / "corpora" / corpus / "eval.yaml").read_text())["questions"]
    reviewed = [q for q in questions if reviewed_half(q["question"])]
    scored = [q for q in questions if not reviewed_half(q["question"])]
    by_question = {q["question"]: q for q in reviewed}
    reworded = [{**by_question[r["original"]], "question": r["rewording"]} for r in rewordings]
    refusal = load_domain(folder).config.refusal
    result["again"] = True
    if other_set:
        result["before"]["rewordings"] = None
    # From the reviews stage: the code that made the earlier stages may have changed since
    # (their fingerprints with it), what they made has not.
    return after(result, folder, limit, scored, reworded, refusal, start="reviews")


def after(result: dict, folder: Path, limit, scored, reworded, refusal: str, start=None) -> dict:
    """Rebuild a reviewed copy (only what the reviews affect re-runs) and score it again."""
    before = _stages(folder)
    result["rebuild_seconds"] = build(folder, limit, start)
    with Server(folder) as server:
        scored_after = [server.ask(q["question"]) for q in scored]
        reworded_after = [server.ask(q["question"]) for q in reworded]
        result["after"] = {
            "scored": score(scored_after, scored, refusal),
            "rewordings": score(reworded_after, reworded, refusal),
            "rewordings_by_route": _routes(reworded_after),
            "rewordings_wrong": _wrong(reworded_after, reworded, refusal),
        }
    state = _stages(folder)
    result["rebuilt_stages"] = [
        n for n in state if state[n].get("finished") != before[n].get("finished")
    ]
    result["calibration"] = {
        k: v
        for k, v in state["eval"]["summary"]["calibration"].items()
        if k in ("guarded_questions", "guarded", "answered", "refused", "reader_weight", "note")
    }
    result["reviews"] = state["reviews"]["summary"]
    return result


def _wrong(answers: list[dict], questions: list[dict], refusal: str) -> list[dict]:
    """The questions neither answered right nor rightly refused, with what was said."""
    return [
        {"question": q["question"], "route": a["route"], "said": a["text"][:200]}
        for a, q in zip(answers, questions, strict=True)
        if not (right(a, q, refusal) if q.get("answerable", True) else refused(a, refusal))
    ]


def _routes(answers: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in answers:
        counts[a["route"]] = counts.get(a["route"], 0) + 1
    return counts


def _stages(folder: Path) -> dict[str, dict]:
    return json.loads((folder / ".domainkit" / "build.json").read_text())["stages"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--limit", type=int, default=120, help="build size; 0 for a full build")
    parser.add_argument(
        "--table", action="store_true", help="only print the table of the results on disk"
    )
    parser.add_argument(
        "--rewordings",
        type=Path,
        default=REWORDINGS,
        help="another rewordings file (with --again; results go to CORPUS.STEM.json)",
    )
    parser.add_argument(
        "--again",
        action="store_true",
        help="rebuild the reviewed copies on disk with the current code and score them again",
    )
    args = parser.parse_args()
    other = args.rewordings.resolve() != REWORDINGS
    if other and not (args.again or args.table):
        parser.error("--rewordings needs --again (or --table): a first run uses the default set")
    rewordings = yaml.safe_load(args.rewordings.read_text())
    suffix = f".{args.rewordings.stem}.json" if other else ".json"
    OUT.mkdir(parents=True, exist_ok=True)
    corpora = args.corpora.split(",")
    for corpus in [] if args.table else corpora:
        print(f"== {corpus}", flush=True)
        if args.again:
            result = again(corpus, args.limit or None, rewordings[corpus], other)
        else:
            result = simulate(corpus, args.limit or None, rewordings[corpus])
        print(json.dumps(result, indent=1), flush=True)
        # One file per corpus, so corpora can run side by side.
        (OUT / f"{corpus}{suffix}").write_text(json.dumps(result, indent=1))
    saved = [OUT / f"{c}{suffix}" for c in corpora if (OUT / f"{c}{suffix}").exists()]
    print_table([json.loads(p.read_text()) for p in saved])
    return 0


def print_table(results: list[dict]) -> None:
    print(
        "\ncorpus             | rewordings before -> after | scored: accuracy    "
        "| unanswerable refused | false refusals"
    )
    gains = []
    for r in results:
        b, a = r["before"], r["after"]
        gains.append(a["scored"]["refused_unanswerable"] - b["scored"]["refused_unanswerable"])
        first = b["rewordings"]["right_or_rightly_refused"] if b["rewordings"] else None
        print(
            f"{r['corpus']:<18} | {'  - ' if first is None else f'{first:.2f}'} -> "
            f"{a['rewordings']['right_or_rightly_refused']:.2f}              | "
            f"{b['scored']['accuracy']:.2f} -> {a['scored']['accuracy']:.2f}     | "
            f"{b['scored']['refused_unanswerable']:.2f} -> "
            f"{a['scored']['refused_unanswerable']:.2f}         | "
            f"{b['scored']['false_refusals']:.2f} -> {a['scored']['false_refusals']:.2f}"
        )
    print(f"mean gain in unanswerable refused (scored half): {sum(gains) / len(gains):+.3f}")


if __name__ == "__main__":
    sys.exit(main())
