"""Where each resolved setting of a domain comes from: the schema's default, a recipe file
(or the base it builds on), or the domain's own domain.yaml (``domainkit config``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from domainkit.config.loading import Sources, domain_sources, merge_sources, validate_config
from domainkit.config.schema import DomainConfig

DEFAULT = "default"


@dataclass(frozen=True)
class Setting:
    """One leaf of the resolved configuration.

    Attributes:
        path: Dotted name, e.g. ``train.lora_r`` (a mapping's keys are leaves of their own:
            ``synth.mix.raft``).
        value: The resolved value, as JSON would hold it.
        source: ``default``, or the file that set it last.
    """

    path: str
    value: Any
    source: str


def explain_domain(root: Path | str) -> list[Setting]:
    """Every resolved setting of the domain folder ``root``, in the schema's order, with
    the file it came from."""
    sources = domain_sources(Path(root))
    config = validate_config(merge_sources(sources), sources)
    return explain(config, sources)


def explain(config: DomainConfig, sources: Sources) -> list[Setting]:
    """``config``'s leaves, each with the last of ``sources`` that sets it (else default)."""
    settings = []
    for loc, value in _leaves(config.model_dump(mode="json"), ()):
        source = next((_shown(f) for f, raw in reversed(sources) if _sets(raw, loc)), DEFAULT)
        settings.append(Setting(".".join(loc), value, source))
    return settings


def as_dict(settings: list[Setting]) -> dict[str, dict[str, Any]]:
    """``{dotted name: {"value": ..., "source": ...}}``, for JSON."""
    return {s.path: {"value": s.value, "source": s.source} for s in settings}


def as_annotated_yaml(settings: list[Setting]) -> str:
    """The settings nested as YAML, each leaf followed by ``# source``."""
    lines: list[str] = []
    opened: tuple[str, ...] = ()
    for setting in settings:
        *parents, key = setting.path.split(".")
        shared = 0
        while shared < min(len(parents), len(opened)) and parents[shared] == opened[shared]:
            shared += 1
        for depth in range(shared, len(parents)):
            lines.append(f"{'  ' * depth}{parents[depth]}:")
        opened = tuple(parents)
        text = f"{'  ' * len(parents)}{key}: {_scalar(setting.value)}"
        lines.append(f"{text.ljust(48)}  # {setting.source}")
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    """A value on one line, as YAML would read it back (a multi-line text JSON-quoted)."""
    if isinstance(value, str) and "\n" in value:
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(
        value, default_flow_style=True, width=10**6, allow_unicode=True, sort_keys=False
    )
    return text.strip().removesuffix("...").strip()


def _shown(path: Path) -> str:
    """A file as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _leaves(value: Any, loc: tuple[str, ...]):
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaves(inner, (*loc, str(key)))
    else:
        yield loc, value


def _sets(raw: Any, loc: tuple[str, ...]) -> bool:
    for part in loc:
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True
