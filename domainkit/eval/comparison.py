"""The comparison conditions (the base model closed-book and as naive RAG, the tuned model
closed-book, the forgetting check): what the runtime is measured against, not what it
needs to be calibrated. They generate long unchecked answers and take most of an eval's
time, so a build runs them on request (``eval.compare: on`` or ``domainkit eval
--compare``) and otherwise reuses the base model's rows from the last run that had the
same base model, questions, index and settings.
"""

from __future__ import annotations

import json
import time

from domainkit.config.loading import Domain
from domainkit.eval.items import Item
from domainkit.utils.atomic import atomic_write_json
from domainkit.utils.hashing import code_hash, json_hash

# The base model's conditions: reusable while nothing they depend on changed.
REUSABLE = ("base closed-book", "naive RAG (base)")


def set_key(domain: Domain, items: list[Item]) -> str:
    """What the base model's answers to ``items`` depend on: the model, the questions, the
    index, the retrieval and prompt settings, and the code that answers."""
    from domainkit.retrieval.store import current_version

    version = current_version(domain.index_dir)
    config = domain.config
    return json_hash(
        [
            config.train.student_model,
            [(i.question, i.reference, i.answerable, i.spans) for i in items],
            version.name if version else None,
            config.retrieval.model_dump(mode="json"),
            config.render_system_prompt(),
            config.eval.max_new_tokens,
            code_hash("answer", "backends"),
        ]
    )


def load_reused(domain: Domain, sets: dict[str, list[Item]]) -> dict[str, dict]:
    """Per question set, the base model's conditions kept from a run whose key matches:
    ``{set: {"results": {condition: metrics}, "rows": [...], "written": date}}``."""
    path = domain.layout.eval_comparison
    if not path.is_file():
        return {}
    kept = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: kept[name]
        for name, items in sets.items()
        if name in kept and kept[name].get("key") == set_key(domain, items)
    }


def save(domain: Domain, sets: dict[str, list[Item]], results: dict, rows: list[dict]) -> None:
    """Keep the base model's conditions of this run for the next."""
    out = {}
    for name, items in sets.items():
        conditions = {c: m for c, m in results.get(name, {}).items() if c in REUSABLE}
        if conditions:
            out[name] = {
                "key": set_key(domain, items),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "results": conditions,
                "rows": [r for r in rows if r["set"] == name and r["condition"] in REUSABLE],
            }
    if out:
        atomic_write_json(domain.layout.eval_comparison, out)
