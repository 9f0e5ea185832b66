"""Serving: time to first token and tokens/s at 1, 4 and 16 concurrent clients, with the
embedded model, through the real HTTP server and the official ``openai`` client; then the
peak memory of 8 concurrent ``max_tokens: 1024`` generations against the idle server's.

Each level runs twice in the same process: with domainkit's continuous batching (up to 16
rows), and with ``max_batch=1`` (one request generated at a time, what a plain
``model.generate``-per-request server does; the bench first times one request both ways,
so the baseline is seen to be as fast as ``model.generate``). Every client streams its
answers.

``--policy rag`` (the default) measures the runtime's real, evidence-first prompts: the
answer is one of the evidence lines, scored in one forward pass, not generated token by
token. ``--policy closed`` measures generation (the model's own words, no retrieval);
``--policy naive`` generation from the top passages whole (~1,100-token prompts).

    .venv/bin/python bench/serve.py [--domain corpora/customer-support] [--build-dir DIR]
        [--max-tokens 64] [--policy rag|closed|naive] [--memory-only | --no-memory]
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


def one_request(client, question: str, max_tokens: int, policy: str = "rag") -> dict:
    started = time.perf_counter()
    first = None
    usage = None
    stream = client.chat.completions.create(
        model="bench",
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"policy": policy},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - started
        usage = chunk.usage or usage
    return {
        "ttft": first if first is not None else time.perf_counter() - started,
        "seconds": time.perf_counter() - started,
        "tokens": usage.completion_tokens if usage else 0,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
    }


def level(
    url: str, questions: list[str], clients: int, rounds: int, max_tokens: int, policy: str
) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    jobs = [questions[i % len(questions)] for i in range(clients * rounds)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda q: one_request(client, q, max_tokens, policy), jobs))
    wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "results": results,
        "requests": len(results),
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
        "tokens_per_s": tokens / wall,
        "per_stream": statistics.median(r["tokens"] / r["seconds"] for r in results),
        "wall": wall,
    }


def rss_mb() -> float:
    """This process's resident memory (the server runs in a thread of it)."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def kv_cache_mb(config, rows: int, tokens: int, bytes_per_value: int) -> float:
    """Keys and values of ``rows`` sequences of ``tokens`` each, over all layers."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * heads * head_dim * bytes_per_value
    return rows * tokens * per_token / 2**20


def single_request(generator, question: str, max_tokens: int) -> None:
    """One request of ``max_tokens`` greedy tokens: ``model.generate`` against domainkit's
    decoder with one row (the one-at-a-time server below), best of three each."""
    import torch

    from domainkit.backends import GenRequest

    messages = [{"role": "user", "content": question}]
    ids = torch.tensor([generator._ids(messages)], device=generator.lm.device)
    plain, ours = [], []
    for _ in range(3):
        started = time.perf_counter()
        with torch.inference_mode():
            generator.lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
            )
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        generator.generate([GenRequest(messages, max_tokens, stop=())])
        ours.append(time.perf_counter() - started)
    print(
        f"one request, {max_tokens} tokens: model.generate {min(plain):.2f} s, "
        f"domainkit's decoder {min(ours):.2f} s (x{min(plain) / min(ours):.2f} the speed)\n"
    )


# Small models stop early on most questions; this one runs to the token limit.
LONG_PROMPT = "Write a very long, detailed story about a dragon and a knight, at least 2000 words."


def memory_check(assistant, questions: list[str], rows: int = 8, max_tokens: int = 1024) -> None:
    """Peak memory of ``rows`` concurrent long generations against the idle server plus
    the KV cache those rows need (a padded batch holds every row to the longest prompt
    plus the most generated tokens)."""
    import gc
    import threading

    from domainkit.runtime.server import create_app, serve_in_thread

    model = assistant.scheduler.generator.lm.model
    app = create_app(assistant, model_name="bench")
    with serve_in_thread(app) as url:
        level(url, questions, 1, 1, 4, "closed")  # warm-up
        gc.collect()
        idle = rss_mb()
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        r = level(url, [LONG_PROMPT], rows, 1, max_tokens, "closed")
        done.set()
        sampler.join()
    results = r["results"]
    longest = max(x["prompt_tokens"] for x in results) + max(x["tokens"] for x in results)
    bytes_per_value = next(model.parameters()).element_size()
    kv = kv_cache_mb(model.config, rows, longest, bytes_per_value)
    bound = 1.5 * (idle + kv)
    print(
        f"memory: {rows} concurrent long closed-book requests with max_tokens {max_tokens} "
        f"(generated {min(x['tokens'] for x in results)}-{max(x['tokens'] for x in results)} "
        f"tokens each, {r['wall']:.0f} s)\n"
        f"  idle server RSS {idle:.0f} MB; KV cache for {rows} x {longest} tokens {kv:.0f} MB; "
        f"peak RSS {peak[0]:.0f} MB = x{peak[0] / (idle + kv):.2f} of idle + KV "
        f"({'within' if peak[0] <= bound else 'OVER'} the x1.5 bound, {bound:.0f} MB)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", type=Path, default=ROOT / "corpora" / "customer-support")
    parser.add_argument(
        "--build-dir",
        type=Path,
        help="the domain's build folder, when not its default (domainkit build --build-dir)",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    parser.add_argument("--policy", choices=["rag", "closed", "naive"], default="rag")
    parser.add_argument(
        "--memory-only", action="store_true", help="only the 8 x max_tokens 1024 memory check"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the 8 x max_tokens 1024 memory check"
    )
    args = parser.parse_args()

    from domainkit.answer.assistant import Assistant
    from domainkit.backends.scheduler import Scheduler
    from domainkit.config import load_domain
    from domainkit.config.evalset import load_eval_set
    from domainkit.retrieval import build_index
    from domainkit.retrieval.embedders import make_embedder
    from domainkit.runtime.server import create_app, serve_in_thread

    domain = load_domain(args.domain, args.build_dir)
    build_index(domain, make_embedder(domain.config.retrieval), progress=False)  # no-op if current
    questions = [q.question for q in load_eval_set(domain.eval_path).questions if q.answerable]
    assistant = Assistant.from_domain(domain)
    policies = sorted({*assistant.settings.client_policies, "rag", "closed", args.policy})
    assistant = assistant.with_parts(
        settings=assistant.settings.model_copy(update={"client_policies": policies})
    )
    if args.memory_only:
        memory_check(assistant, questions)
        return 0
    batched = Scheduler(assistant.scheduler.generator, max_batch=16)
    print(
        f"{domain.config.train.student_model} ({'tuned' if assistant.tuned else 'base'}), "
        f"policy {args.policy}, top_k {domain.config.retrieval.top_k}, "
        f"max_tokens {args.max_tokens}, "
        f"{args.rounds} streamed requests per client, CPU threads {os.cpu_count()}\n"
    )
    single_request(batched.generator, LONG_PROMPT, args.max_tokens)
    print(
        f"  {'clients':>7} {'server':<22} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'tokens/s':>9} {'per stream':>10}"
    )
    for clients in [int(x) for x in args.levels.split(",")]:
        rows = {}
        for name, max_batch in (("one at a time", 1), ("domainkit batching", 16)):
            scheduler = batched if max_batch > 1 else Scheduler(batched.generator, max_batch=1)
            app = create_app(assistant.with_parts(scheduler=scheduler), model_name="bench")
            with serve_in_thread(app) as url:
                level(url, questions, 1, 1, 4, args.policy)  # warm-up
                rows[name] = r = level(
                    url, questions, clients, args.rounds, args.max_tokens, args.policy
                )
            print(
                f"  {clients:>7} {name:<22} {r['ttft_p50']:8.2f}s {r['ttft_p95']:8.2f}s "
                f"{r['tokens_per_s']:9.1f} {r['per_stream']:10.1f}"
            )
        ratio = rows["domainkit batching"]["tokens_per_s"] / rows["one at a time"]["tokens_per_s"]
        ttft = rows["domainkit batching"]["ttft_p50"] / rows["one at a time"]["ttft_p50"]
        print(f"  {'':>7} throughput ratio x{ratio:.2f}, median TTFT ratio x{ttft:.2f}\n")
    if not args.no_memory:
        memory_check(assistant, questions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
