"""Read recipes and domain folders into a validated ``DomainConfig``."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domainkit.config.layout import Layout
from domainkit.config.schema import DomainConfig
from domainkit.errors import ConfigError

DOMAIN_FILE = "domain.yaml"
VALIDATION_FILE = "validation.yaml"
EVAL_FILE = "eval.yaml"
# A recipe file may build on another (``base: _base``) and set only what differs from it.
BASE_KEY = "base"
SCHEMA_HINT = (
    "`domainkit config --schema` prints every field; the documentation's configuration "
    "reference describes them"
)

Sources = list[tuple[Path, dict[str, Any]]]


def recipes_dir() -> Path:
    """The folder of shipped recipes.

    ``$DOMAINKIT_RECIPES`` if set; else the copy an installed wheel carries
    (``domainkit/_recipes``); else the checkout's top-level ``recipes/`` (an editable install).
    A recipe given as a path, relative to the domain folder, never reaches this lookup.
    """
    override = os.environ.get("DOMAINKIT_RECIPES")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]
    installed = package / "_recipes"
    return installed if installed.is_dir() else package.parent / "recipes"


def available_recipes() -> list[str]:
    """The shipped recipes' names; files named ``_*.yaml`` are bases, not recipes."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml") if not p.stem.startswith("_"))


def recipe_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """Resolve a recipe given by name (``legal``) or by a path to a YAML file."""
    candidate = Path(name_or_path)
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    shipped = recipes_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"unknown recipe {name_or_path!r}: expected one of {', '.join(available_recipes())} "
        "or a path to a recipe YAML file"
    )


class _NoAliasLoader(yaml.SafeLoader):
    """``safe_load`` without aliases: a few lines of nested aliases (a "billion laughs"
    file) expand to gigabytes, and settings files have no need for them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, values replace)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_config(data: dict[str, Any], sources: Sources) -> DomainConfig:
    """Validate merged settings; each error names the file whose value is at fault.

    Args:
        data: The merged settings.
        sources: ``(file, raw mapping)`` pairs, most specific last (recipe, then domain.yaml).
    """
    try:
        return DomainConfig.model_validate(data)
    except ValidationError as e:
        lines = [_describe_error(err, sources) for err in e.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _describe_error(err: Any, sources: Sources) -> str:
    loc = [str(part) for part in err["loc"]]
    field = ".".join(loc) or "(top level)"
    file = next((f for f, raw in reversed(sources) if _has_path(raw, err["loc"])), sources[-1][0])
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = f"unknown field (check the spelling; {SCHEMA_HINT})"
    elif err["type"] == "missing":
        return f"{file}: field '{field}' is required"
    return f"{file}: field '{field}': got {err.get('input')!r}: {message}"


def _has_path(raw: Any, loc: tuple) -> bool:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return False
    return True


def recipe_sources(path: Path) -> Sources:
    """A recipe file and the bases it builds on, as ``(file, raw mapping)`` pairs, the
    most general first; the ``base`` key itself is taken out of each mapping.

    A base is looked up beside the file that names it, then as any recipe is.
    """
    chain: Sources = []
    seen: set[Path] = set()
    while True:
        if path.resolve() in seen:
            raise ConfigError(f"{path}: field '{BASE_KEY}': recipes build on each other in a loop")
        seen.add(path.resolve())
        raw = dict(read_yaml_mapping(path))
        base = raw.pop(BASE_KEY, None)
        chain.insert(0, (path, raw))
        if base is None:
            return chain
        if not isinstance(base, str):
            raise ConfigError(f"{path}: field '{BASE_KEY}': got {base!r}: expected a name")
        sibling = path.parent / f"{base}.yaml"
        path = sibling if sibling.is_file() else recipe_path(base, relative_to=path.parent)


def merge_sources(sources: Sources) -> dict[str, Any]:
    """The sources' settings merged in order, each over the ones before it."""
    merged: dict[str, Any] = {}
    for _, raw in sources:
        merged = deep_merge(merged, raw)
    return merged


def load_recipe(name_or_path: str) -> DomainConfig:
    """Load and validate one recipe on its own (over its bases)."""
    sources = recipe_sources(recipe_path(name_or_path))
    return validate_config(merge_sources(sources), sources)


@dataclass(frozen=True)
class Domain:
    """A domain folder: its validated configuration and where its files live."""

    root: Path
    config: DomainConfig

    @property
    def docs_dir(self) -> Path:
        return self.root / self.config.docs_dir

    @property
    def build_dir(self) -> Path:
        return self.root / self.config.build_dir

    @property
    def layout(self) -> Layout:
        """The build folder's paths."""
        return Layout(self.build_dir)

    @property
    def index_dir(self) -> Path:
        return self.layout.index

    @property
    def eval_path(self) -> Path:
        return self.root / EVAL_FILE

    @property
    def log_path(self) -> Path:
        """The conversation log (``runtime.log_path``), outside the build folder."""
        return self.root / self.config.runtime.log_path

    @property
    def validation_path(self) -> Path:
        """Hand-written validation questions (eval.yaml's format): used with the synth
        validation split to calibrate the runtime, never scored."""
        return self.root / VALIDATION_FILE


def load_domain(root: Path | str, build_dir: Path | str | None = None) -> Domain:
    """Load a domain folder: its domain.yaml merged over the recipe it names.

    Args:
        root: The domain folder (holding domain.yaml and docs/).
        build_dir: Overrides the configured build folder (absolute, or relative to ``root``).
    """
    root = Path(root)
    sources = domain_sources(root)
    config = validate_config(merge_sources(sources), sources)
    if build_dir is not None:
        config = config.model_copy(update={"build_dir": str(build_dir)})
    return Domain(root=root, config=config)


def domain_sources(root: Path) -> Sources:
    """The files a domain's settings come from, as ``(file, raw mapping)`` pairs, most
    general first: the recipe's bases, the recipe, then domain.yaml."""
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (expected a domain folder with {DOMAIN_FILE})")
    domain_file = root / DOMAIN_FILE
    if not domain_file.is_file():
        raise ConfigError(
            f"{domain_file}: not found; create one with `domainkit init {root} --recipe NAME`"
        )
    raw = read_yaml_mapping(domain_file)
    recipe_name = raw.get("recipe")
    if recipe_name is None:
        return [(domain_file, raw)]
    if not isinstance(recipe_name, str):
        raise ConfigError(f"{domain_file}: field 'recipe': got {recipe_name!r}: expected a name")
    return [*recipe_sources(recipe_path(recipe_name, relative_to=root)), (domain_file, raw)]
