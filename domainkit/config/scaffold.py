"""``domainkit init``: scaffold a new domain folder from a recipe."""

from __future__ import annotations

from pathlib import Path

from domainkit.config.loading import DOMAIN_FILE, EVAL_FILE, load_recipe
from domainkit.errors import ConfigError
from domainkit.utils.atomic import atomic_write_text

_DOMAIN_TEMPLATE = """\
# {name}: a domainkit domain. Any setting of the recipe can be overridden here.
# `domainkit config {folder}` shows every setting and where its value comes from;
# `domainkit config --schema` (or the documentation's configuration reference) lists
# every field with its type, default and description.
name: {name}
organization: {organization}
recipe: {recipe}
description: {description}

# persona:
#   assistant_name: {assistant_name}
#   tone: {tone}
# chunking:
#   chunk_size: {chunk_size}   # tokens of the embedder; larger keeps more context per passage
"""

_EVAL_TEMPLATE = """\
# Hand-written evaluation questions. Phrase them as users would, not as the documents do,
# and include questions the documents do not answer (answerable: false).
questions:
  - question: "An example question a user would ask?"
    answer: "The short reference answer."
    source: docs/example.md
  - question: "Something plausible that the documents never mention?"
    answerable: false
"""

_DOC_TEMPLATE = """\
# Example document

Replace this file with your own documents: Markdown, text, HTML, PDF or Word files,
in any sub-folders of docs/.
"""


def scaffold_domain(root: Path, recipe: str, organization: str | None = None) -> list[Path]:
    """Create ``root`` with domain.yaml, docs/ and eval.yaml; never overwrites existing files.

    Returns:
        The files written.
    """
    root = Path(root)
    if (root / DOMAIN_FILE).exists():
        raise ConfigError(f"{root / DOMAIN_FILE}: already exists; not overwriting it")
    base = load_recipe(recipe)
    name = root.resolve().name
    text = _DOMAIN_TEMPLATE.format(
        name=name,
        folder=root,
        recipe=recipe,
        organization=organization or "Your Organization",
        description=f"{base.description or 'An assistant'} for {organization or name}.",
        assistant_name=base.persona.assistant_name,
        tone=base.persona.tone,
        chunk_size=base.chunking.chunk_size,
    )
    planned = {
        root / DOMAIN_FILE: text,
        root / EVAL_FILE: _EVAL_TEMPLATE,
        root / "docs" / "example.md": _DOC_TEMPLATE,
    }
    written = []
    for path, content in planned.items():
        if path.exists():
            continue
        atomic_write_text(path, content)
        written.append(path)
    return written
