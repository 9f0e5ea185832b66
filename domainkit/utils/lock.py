"""One run at a time per build folder.

Two runs on one domain would delete each other's temporary and version folders, so every
command that writes the build folder holds an exclusive lock on ``BUILD/.lock``
(``flock``: the kernel releases it when the process dies, so a killed run never leaves a
stale lock). A second run fails at once, naming the one that holds it. The run that takes the lock
first clears what killed runs left half-written (``atomic.recover_leftovers``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from domainkit.errors import DomainkitError
from domainkit.utils.atomic import recover_leftovers

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not serialized there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


@contextmanager
def build_lock(build_dir: Path, command: str) -> Iterator[None]:
    """Hold the build folder's lock while the body runs.

    Raises:
        DomainkitError: Another process holds it.
    """
    if fcntl is None:
        log.warning("no file locking on this platform: do not run two commands on one domain")
        yield
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(build_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            raise DomainkitError(
                f"{build_dir} is in use by another domainkit run ({holder}); wait for it to "
                "finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()}, domainkit {command}, started {started}".encode())
        # No other run writes the folder now: whatever a killed one left half-written goes.
        recover_leftovers(build_dir)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
