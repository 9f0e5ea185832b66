"""Publish a folder of outputs atomically, keeping readers on a complete version.

Layout: ``<root>/CURRENT`` names the live ``v-*`` folder. A new version is written under a
temporary name, renamed into place, and only then does ``CURRENT`` switch (an atomic file
replace), so a killed writer leaves the previous version live and intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from domainkit.utils.atomic import atomic_write_text, fsync_dir, shareable

POINTER = "CURRENT"


def current_version(root: Path, marker: str) -> Path | None:
    """The live version folder, if there is one holding ``marker`` (its last-written file)."""
    pointer = root / POINTER
    if not pointer.is_file():
        return None
    version = root / pointer.read_text(encoding="utf-8").strip()
    return version if (version / marker).exists() else None


def publish(root: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Create a version folder with ``write(tmp_folder)`` and make it the live one.

    Args:
        root: Folder holding the versions.
        name: Stem of the version's name (a timestamp is appended).
        write: Fills the given empty folder; must write its completeness marker last.

    Returns:
        The new live version folder. Older versions are removed.
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        shareable(tmp)
        write(tmp)
        fsync_dir(tmp)
        version = root / f"v-{name}-{int(time.time() * 1000)}"
        os.replace(tmp, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / POINTER, version.name + "\n")
    fsync_dir(root)
    for old in root.glob("v-*"):
        if old != version:
            shutil.rmtree(old, ignore_errors=True)
    return version
