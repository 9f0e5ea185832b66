"""Every shipped recipe, and every sample corpus's domain.yaml, resolves to the settings
frozen in ``tests/assets/recipes_resolved.json``.

A change to a recipe file that is meant to change a resolved value updates the snapshot in
the same commit (``python -m tests.test_recipes`` rewrites it); a reorganisation of the
files (a shared base, comments) must leave it as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from domainkit.config import available_recipes, load_domain, load_recipe

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "assets" / "recipes_resolved.json"


def resolved() -> dict[str, dict]:
    """Each recipe on its own (``recipe:NAME``) and each sample corpus (``corpus:NAME``),
    as the validated settings a build would use."""
    out = {
        f"recipe:{name}": load_recipe(name).model_dump(mode="json") for name in available_recipes()
    }
    for domain in sorted((ROOT / "corpora").glob("*/domain.yaml")):
        config = load_domain(domain.parent).config
        out[f"corpus:{domain.parent.name}"] = config.model_dump(mode="json")
    return out


def test_every_recipe_and_corpus_resolves_as_frozen():
    frozen = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    now = resolved()
    assert sorted(now) == sorted(frozen)
    for name in frozen:
        assert now[name] == frozen[name], name


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(resolved(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
