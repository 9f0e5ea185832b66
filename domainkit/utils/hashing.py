"""Stable short content hashes used for ids and fingerprints."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def text_hash(*parts: str, length: int = 16) -> str:
    """sha256 of the parts joined by NUL, as ``length`` hex characters."""
    h = hashlib.sha256("\0".join(parts).encode("utf-8"))
    return h.hexdigest()[:length]


def json_hash(obj: Any, length: int = 16) -> str:
    return text_hash(json.dumps(obj, sort_keys=True, default=str), length=length)


def file_hash(path: Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def code_hash(*packages: str) -> str:
    """Hash of the domainkit source that ``packages`` run: the files of each package (a
    folder or module under ``domainkit/``, e.g. ``"ingest"``, ``"prompting"``) and every
    domainkit module they import, directly or not, at the top of a file or inside a
    function (``import_closure``). An edit to any of them changes it; an edit elsewhere
    does not."""
    from domainkit import __version__

    files = [(f.relative_to(_ROOT).as_posix(), _source_hash(f)) for f in import_closure(*packages)]
    return json_hash([__version__, files])


def _source_hash(path: Path) -> str:
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = file_hash(path)
    return _HASHES[key]


_HASHES: dict[tuple[Path, int, int], str] = {}


_ROOT = Path(__file__).resolve().parents[1]  # the domainkit package folder


def import_closure(*packages: str) -> list[Path]:
    """The domainkit source files of ``packages`` and of every domainkit module they
    import, found statically (``import`` statements anywhere in a file, relative ones
    included), with the ``__init__.py`` of each package on the way."""
    seen: set[Path] = set()
    todo: list[Path] = []
    for package in packages:
        folder = _ROOT / package.replace(".", "/")
        if folder.is_dir():
            todo += sorted(folder.rglob("*.py"))
        todo += [p for p in (folder.with_suffix(".py"),) if p.is_file()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            todo += _module_files(module)
    return sorted(seen)


_IMPORTS: dict[tuple[Path, int, int], set[str]] = {}  # parsed once per file version


def _imported_modules(path: Path) -> set[str]:
    """Dotted names of the domainkit modules a file imports (a ``from X import y`` counts
    as ``X.y`` too: ``y`` may be a submodule)."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _IMPORTS:
        _IMPORTS[key] = _parse_imports(path)
    return _IMPORTS[key]


def _parse_imports(path: Path) -> set[str]:
    import ast

    package = ".".join(("domainkit", *path.relative_to(_ROOT).with_suffix("").parts))
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "._"  # relative imports start at the package
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n == "domainkit" or n.startswith("domainkit.")}


@functools.lru_cache(maxsize=4096)
def _module_files(module: str) -> tuple[Path, ...]:
    """The file of a dotted domainkit module (if it is one) and its packages' __init__.py."""
    parts = module.split(".")[1:]
    files = []
    for depth in range(len(parts) + 1):
        base = _ROOT.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if depth and candidate == _ROOT.with_suffix(".py"):
                continue
            if candidate.is_file():
                files.append(candidate)
    return tuple(files)
