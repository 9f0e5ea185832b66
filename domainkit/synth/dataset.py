"""The synth dataset on disk: a ``datasets.DatasetDict`` plus JSONL, exports and user data."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from domainkit.config.layout import DatasetVersion
from domainkit.errors import ConfigError, DomainkitError
from domainkit.synth.sample import Sample
from domainkit.utils import versioned
from domainkit.utils.atomic import atomic_write_jsonl

SPLITS = ("train", "validation")
EXPORT_FORMATS = ("messages", "sharegpt", "alpaca")
_MARKER = DatasetVersion(Path()).summary.name


def features():
    from datasets import Features, Value

    text = Value("string")
    return Features(
        {
            "id": text,
            "messages": [{"role": text, "content": text}],
            "generator": text,
            "chunk_id": text,
            "source": text,
            "teacher": text,
            "scores": text,
            "meta": text,
        }
    )


def split_by_chunk(samples: Iterable[Sample], is_validation: Callable[[str], bool]):
    """Train/validation by seed chunk, so no chunk's samples sit on both sides."""
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        side = sample.chunk_id is not None and is_validation(sample.chunk_id)
        splits["validation" if side else "train"].append(sample)
    return splits


def save(
    synth_dir: Path, splits: dict[str, list[Sample]], rejected: list[dict], summary: dict
) -> Path:
    """Publish a new dataset version: dataset/ (load_from_disk), JSONL files and the summary."""
    from datasets import Dataset, DatasetDict

    def write(folder: Path) -> None:
        files = DatasetVersion(folder)
        rows = {name: [s.to_row() for s in samples] for name, samples in splits.items()}
        # datasets cannot save an empty split; it is left out and loads back as empty.
        DatasetDict(
            {
                name: Dataset.from_list(split_rows, features=features())
                for name, split_rows in rows.items()
                if split_rows
            }
        ).save_to_disk(str(files.dataset))
        for name, split_rows in rows.items():
            atomic_write_jsonl(files.split(name), split_rows)
        atomic_write_jsonl(files.rejected, rejected)
        files.summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    return versioned.publish(synth_dir, "dataset", write)


def current(synth_dir: Path) -> Path:
    version = versioned.current_version(synth_dir, _MARKER)
    if version is None:
        raise DomainkitError(f"{synth_dir}: no dataset yet; run `domainkit synth` first")
    return version


def load_summary(synth_dir: Path) -> dict:
    """What the current dataset's synth run did (kept, rejected, teacher calls, splits)."""
    return json.loads(DatasetVersion(current(synth_dir)).summary.read_text(encoding="utf-8"))


def load_samples(synth_dir: Path) -> dict[str, list[Sample]]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(DatasetVersion(current(synth_dir)).dataset))
    splits: dict[str, list[Sample]] = {"train": [], "validation": []}
    splits.update({name: [Sample.from_row(row) for row in dataset[name]] for name in dataset})
    return splits


def export(samples: Iterable[Sample], fmt: str, path: Path) -> int:
    """Write samples as JSONL in a format other fine-tuning tools read; returns the count."""
    convert = {"messages": _as_messages, "sharegpt": _as_sharegpt, "alpaca": _as_alpaca}
    if fmt not in convert:
        raise DomainkitError(f"unknown export format {fmt!r}; expected {', '.join(convert)}")
    rows = [convert[fmt](s.messages) for s in samples]
    atomic_write_jsonl(path, rows)
    return len(rows)


def _as_messages(messages: list[dict]) -> dict:
    return {"messages": messages}


_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def _as_sharegpt(messages: list[dict]) -> dict:
    return {
        "conversations": [
            {"from": _SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages
        ]
    }


def _as_alpaca(messages: list[dict]) -> dict:
    """Alpaca with the multi-turn extension (system, history) that LLaMA-Factory reads."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    turns = [m["content"] for m in messages if m["role"] != "system"]
    pairs = list(zip(turns[::2], turns[1::2], strict=False))
    *history, (instruction, output) = pairs
    return {
        "instruction": instruction,
        "input": "",
        "output": output,
        "system": system,
        "history": [list(p) for p in history],
    }


def read_user_data(folder: Path, system_prompt: str) -> list[Sample]:
    """Validate and convert the user's own JSONL files (messages, ShareGPT or Alpaca lines).

    Raises:
        ConfigError: Listing every invalid line as ``file:line: problem``.
    """
    samples, problems = [], []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                messages = _validated(_to_messages(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                problems.append(f"{path}:{number}: {e}")
                continue
            if messages[0]["role"] != "system":
                messages = [{"role": "system", "content": system_prompt}, *messages]
            samples.append(Sample(messages, "user", None, path.name, "user"))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ConfigError(f"invalid instruction data:\n  {shown}{more}")
    return samples


def _to_messages(row: dict) -> list[dict]:
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in row:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if "conversations" in row:
        roles = {
            "human": "user",
            "user": "user",
            "gpt": "assistant",
            "assistant": "assistant",
            "model": "assistant",
            "system": "system",
        }
        return [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
    if "instruction" in row:
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for user, assistant in row.get("history") or []:
            messages += [
                {"role": "user", "content": user},
                {"role": "assistant", "content": assistant},
            ]
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return messages + [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": row["output"]},
        ]
    raise ValueError("unknown format: expected a 'messages', 'conversations' or 'instruction' key")


def _validated(messages: list[dict]) -> list[dict]:
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError("the conversation must end with an assistant message")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(f"message {i + 1} has role {message['role']!r}, expected {expected!r}")
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise ValueError(f"message {i + 1} is empty")
    return messages
