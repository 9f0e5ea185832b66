"""Teacher generation throughput: domainkit's local teacher (the ``local`` chat backend,
batched) against plain one-prompt-at-a-time ``model.generate``, on the same prompts, model
and settings.

The prompts are the question-writing and paraphrasing prompts synth sends for the
customer-support corpus. Throughput counts generated tokens up to each reply's end (not
padding). Greedy by default; ``--temperature 0.7 --top-p 0.9`` samples as synth does.

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
from domainkit.config.schema import TeacherConfig  # noqa: E402
from domainkit.models import load_causal_lm  # noqa: E402
from domainkit.retrieval import build_index, load_index, make_embedder  # noqa: E402
from domainkit.synth.facts import facts_of  # noqa: E402
from domainkit.synth.prompts import Prompts  # noqa: E402
from domainkit.synth.teachers import Sampling, make_teacher  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "customer-support"


def synth_prompts(n: int) -> dict[str, list[list[dict]]]:
    """The two prompts synth sends the teacher most: question writing (a fact line of a
    passage and worked examples) and paraphrasing (a question and worked examples)."""
    domain = load_domain(CORPUS, build_dir=Path(tempfile.mkdtemp()))
    build_index(domain, make_embedder(domain.config.retrieval), progress=False)
    prompts = Prompts()
    question_system = prompts.render("question_system", user="a customer")
    paraphrase_system = prompts.render("paraphrase_system")
    questions, paraphrases = [], []
    for chunk in load_index(domain.index_dir).chunks:
        for fact in facts_of(chunk, 1):
            user = prompts.render("question_user", fact=fact.text)
            questions.append(prompts.with_examples("question", question_system, user))
            question = f"What does this mean: {fact.text[:80]}?"
            paraphrases.append(prompts.with_examples("paraphrase", paraphrase_system, question))
    return {"question prompts": questions[:n], "paraphrase prompts": paraphrases[:n]}


def count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts)


def one_at_a_time(lm, conversations: list[list[dict]], sampling: Sampling) -> list[str]:
    """What a user writes without batching: one ``generate`` call per prompt."""
    out = []
    decoding = (
        {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.temperature > 0
        else {"do_sample": False}
    )
    torch.manual_seed(sampling.seed)
    for conversation in conversations:
        prompt = lm.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        inputs = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            generated = lm.model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=lm.tokenizer.pad_token_id,
                **decoding,
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
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    args = parser.parse_args()

    lm = load_causal_lm(args.model)
    sampling = Sampling(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens
    )
    teachers = {
        size: make_teacher(TeacherConfig(model=args.model, batch_size=size))
        for size in args.batch_size
    }
    for teacher in teachers.values():  # load and warm up outside the timings
        teacher.generate([[{"role": "user", "content": "warm-up"}]], Sampling(max_new_tokens=4))
    decoding = "greedy" if args.temperature == 0 else f"T={args.temperature}, top-p {args.top_p}"
    print(
        f"Model {args.model} on {lm.device}, {torch.get_num_threads()} threads, {decoding}, "
        f"up to {args.max_new_tokens} new tokens per prompt"
    )
    for kind, conversations in synth_prompts(args.prompts).items():
        lengths = [
            len(lm.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False))
            for c in conversations
        ]
        print(f"\n{kind}: {len(conversations)} prompts of {min(lengths)}-{max(lengths)} characters")
        start = time.perf_counter()
        single = one_at_a_time(lm, conversations, sampling)
        single_seconds = time.perf_counter() - start
        single_tokens = count_tokens(lm.tokenizer, single)
        baseline = single_tokens / single_seconds
        print(
            f"  {'one prompt at a time (model.generate)':40} {single_tokens:6d} tokens "
            f"{single_seconds:7.1f}s {baseline:7.1f} tokens/s"
        )
        for batch_size, teacher in teachers.items():
            start = time.perf_counter()
            batched = teacher.generate(conversations, sampling)
            seconds = time.perf_counter() - start
            tokens = count_tokens(lm.tokenizer, batched)
            same = sum(a == b for a, b in zip(batched, single, strict=True)) / len(conversations)
            print(
                f"  {f'domainkit teacher, batch {batch_size}':40} {tokens:6d} tokens "
                f"{seconds:7.1f}s {tokens / seconds:7.1f} tokens/s  "
                f"x{tokens / seconds / baseline:.1f}  (identical text: {same:.0%})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
