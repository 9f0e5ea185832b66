"""Serving: time to first token and tokens/s at 1, 4 and 16 concurrent clients, with the
embedded model, through the real HTTP server and the official ``openai`` client.

Each level runs twice in the same process: with domainkit's batching queue, and with
``max_batch=1`` (one request generated at a time, what a plain
``model.generate``-per-request server does). Every client streams its answers.

    .venv/bin/python bench/serve.py [--domain corpora/customer-support] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]


def one_request(client, question: str, max_tokens: int) -> dict:
    started = time.perf_counter()
    first = None
    usage = None
    stream = client.chat.completions.create(
        model="bench",
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"policy": "rag"},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - started
        usage = chunk.usage or usage
    return {
        "ttft": first if first is not None else time.perf_counter() - started,
        "seconds": time.perf_counter() - started,
        "tokens": usage.completion_tokens if usage else 0,
    }


def level(url: str, questions: list[str], clients: int, rounds: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    jobs = [questions[i % len(questions)] for i in range(clients * rounds)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda q: one_request(client, q, max_tokens), jobs))
    wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "requests": len(results),
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
        "tokens_per_s": tokens / wall,
        "per_stream": statistics.median(r["tokens"] / r["seconds"] for r in results),
        "wall": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", type=Path, default=ROOT / "corpora" / "customer-support")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    args = parser.parse_args()

    from domainkit.config import load_domain
    from domainkit.config.evalset import load_eval_set
    from domainkit.retrieval import build_index
    from domainkit.retrieval.embedders import make_embedder
    from domainkit.runtime import Assistant
    from domainkit.runtime.generation import Scheduler
    from domainkit.runtime.server import create_app, serve_in_thread

    domain = load_domain(args.domain)
    build_index(domain, make_embedder(domain.config.retrieval), progress=False)  # no-op if current
    questions = [q.question for q in load_eval_set(domain.eval_path).questions if q.answerable]
    assistant = Assistant.from_domain(domain)
    batched = Scheduler(assistant.scheduler.generator, max_batch=16)
    print(
        f"{domain.config.train.student_model} ({'tuned' if assistant.tuned else 'base'}), "
        f"policy rag, top_k {domain.config.retrieval.top_k}, max_tokens {args.max_tokens}, "
        f"{args.rounds} streamed requests per client, CPU threads {os.cpu_count()}\n"
    )
    print(
        f"  {'clients':>7} {'server':<22} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'tokens/s':>9} {'per stream':>10}"
    )
    for clients in [int(x) for x in args.levels.split(",")]:
        rows = {}
        for name, max_batch in (("one at a time", 1), ("domainkit batching", 16)):
            assistant.scheduler = (
                batched if max_batch > 1 else Scheduler(batched.generator, max_batch=1)
            )
            app = create_app(assistant, model_name="bench")
            with serve_in_thread(app) as url:
                level(url, questions, 1, 1, 4)  # warm-up
                rows[name] = r = level(url, questions, clients, args.rounds, args.max_tokens)
            print(
                f"  {clients:>7} {name:<22} {r['ttft_p50']:8.2f}s {r['ttft_p95']:8.2f}s "
                f"{r['tokens_per_s']:9.1f} {r['per_stream']:10.1f}"
            )
        ratio = rows["domainkit batching"]["tokens_per_s"] / rows["one at a time"]["tokens_per_s"]
        print(f"  {'':>7} throughput ratio x{ratio:.2f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
