"""Teacher generation throughput: domainkit's batched local teacher against plain
one-prompt-at-a-time ``model.generate``, on the same prompts, model and settings.

The prompts are the question-writing and grounded-answer prompts synth sends for the
customer-support corpus. Throughput counts generated tokens up to each reply's end (not
padding), greedy decoding.

    .venv/bin/python bench/synth.py [--prompts 24] [--max-new-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from domainkit.config import load_domain  # noqa: E402
from domainkit.llm import generate_batch, load_causal_lm, render_prompts  # noqa: E402
from domainkit.prompting import chat  # noqa: E402
from domainkit.retrieval import build_index, load_index, make_embedder  # noqa: E402
from domainkit.synth.parsing import fact_sentences  # noqa: E402
from domainkit.synth.prompts import Prompts  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "customer-support"


def synth_prompts(n: int) -> dict[str, list[list[dict]]]:
    """Two kinds of real synth prompts: question writing (a statement and worked examples)
    and grounded answering (a whole passage in the prompt, so prefill dominates)."""
    domain = load_domain(CORPUS, build_dir=Path(tempfile.mkdtemp()))
    build_index(domain, make_embedder(domain.config.retrieval), progress=False)
    prompts = Prompts()
    answer_system = prompts.render(
        "answer_system", system_prompt=domain.config.render_system_prompt()
    )
    question_system = prompts.render("question_system", user="a customer")
    questions, answers = [], []
    for chunk in load_index(domain.index_dir).chunks:
        for fact in fact_sentences(chunk.text, 1):
            user = prompts.render("question_user", fact=fact)
            questions.append(prompts.with_examples("question", question_system, user))
            user = prompts.render(
                "answer_user", passage=chunk.text, question=f"Can you tell me about this: {fact}"
            )
            answers.append(chat(answer_system, ("user", user)))
    return {"question prompts": questions[:n], "answer prompts": answers[:n]}


def count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts)


def one_at_a_time(lm, prompts: list[str], max_new_tokens: int) -> list[str]:
    """What a user writes without batching: one ``generate`` call per prompt."""
    out = []
    for prompt in prompts:
        inputs = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            generated = lm.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        new = generated[0, inputs["input_ids"].shape[1] :]
        out.append(lm.tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
    args = parser.parse_args()

    lm = load_causal_lm(args.model)
    generate_batch(lm, ["warm-up"], max_new_tokens=4)
    print(
        f"Model {args.model} on {lm.device}, {torch.get_num_threads()} threads, greedy, "
        f"up to {args.max_new_tokens} new tokens per prompt"
    )
    for kind, conversations in synth_prompts(args.prompts).items():
        prompts = render_prompts(lm, conversations)
        lengths = [len(lm.tokenizer.encode(p)) for p in prompts]
        print(f"\n{kind}: {len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens")
        start = time.perf_counter()
        single = one_at_a_time(lm, prompts, args.max_new_tokens)
        single_seconds = time.perf_counter() - start
        single_tokens = count_tokens(lm.tokenizer, single)
        baseline = single_tokens / single_seconds
        print(
            f"  {'one prompt at a time (model.generate)':40} {single_tokens:6d} tokens "
            f"{single_seconds:7.1f}s {baseline:7.1f} tokens/s"
        )
        for batch_size in args.batch_size:
            start = time.perf_counter()
            batched = generate_batch(
                lm, prompts, max_new_tokens=args.max_new_tokens, batch_size=batch_size
            )
            seconds = time.perf_counter() - start
            tokens = count_tokens(lm.tokenizer, batched)
            same = sum(a == b for a, b in zip(batched, single, strict=True)) / len(prompts)
            print(
                f"  {f'domainkit batched, batch {batch_size}':40} {tokens:6d} tokens "
                f"{seconds:7.1f}s {tokens / seconds:7.1f} tokens/s  "
                f"x{tokens / seconds / baseline:.1f}  (identical text: {same:.0%})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
