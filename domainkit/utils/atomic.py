"""Crash-safe writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _umask_at_import() -> int:
    current = os.umask(0)  # os.umask can only set it: set and restore, once, at import
    os.umask(current)
    return current


_UMASK_AT_IMPORT = _umask_at_import()


def umask() -> int:
    """The process umask (from /proc where there is one, so a later change is seen)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


def shareable(path: Path) -> None:
    """Give a temporary file or folder (created 0600 / 0700) the mode a plain one would get."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    lines = (json.dumps(row, ensure_ascii=False) for row in rows)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fsync_file(path: Path) -> None:
    """Flush a file written by another library (torch.save) to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_dir(target: Path) -> None:
    """Undo what a killed ``replace_dir`` left beside ``target``: its unfinished new folder
    is deleted, and an old folder renamed aside mid-swap takes its name back (or is deleted,
    when the new one had already taken it)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    for aside in target.parent.glob(f".{target.name}.*.old"):  # a run killed mid-swap
        if not target.exists():
            os.replace(aside, target)
        else:
            shutil.rmtree(aside, ignore_errors=True)


def recover_leftovers(root: Path) -> list[Path]:
    """``recover_dir`` for every folder under ``root`` that a killed ``replace_dir`` left
    something beside, whether or not a later run publishes that folder again (a cached
    bundle stays; the half-copied one beside it must go). Safe only while no other run
    writes ``root``: call it under the build lock.

    Returns:
        The folders recovered.
    """
    targets = set()
    for pattern in (".*.tmp", ".*.old"):
        for path in Path(root).rglob(pattern):
            parts = path.name[1:].rsplit(".", 2)  # .{name}.{random or pid}.{tmp or old}
            if path.is_dir() and len(parts) == 3 and parts[0]:
                targets.add(path.parent / parts[0])
    for target in sorted(targets):
        log.info("removing what a killed run left beside %s", target)
        recover_dir(target)
    return sorted(targets)


def replace_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Fill a new folder beside ``target`` with ``write(folder)``, then swap it in.

    The old folder is renamed aside before the new one takes its name and deleted only after,
    so a killed run leaves a complete old or new folder (for an instant, the old one under a
    hidden ``.old`` name), never a half-written one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    try:
        shareable(tmp)
        write(tmp)
        fsync_dir(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target
