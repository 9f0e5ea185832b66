"""Read every document under a docs/ folder, skipping (and reporting) what cannot be read."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from domainkit.config.schema import IngestConfig
from domainkit.errors import IngestError, UnknownNameError
from domainkit.ingest.document import Document
from domainkit.ingest.loaders import LOADERS, LoadError
from domainkit.utils.atomic import atomic_write_jsonl, read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedFile:
    source: str
    reason: str


@dataclass
class IngestResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files_read: int = 0

    def save(self, path: Path) -> None:
        """Write the result as JSON lines (its counts and skips first, then each
        document), atomically: the build's ingest stage hands it to the index stage."""
        head = {"files_read": self.files_read, "skipped": [asdict(s) for s in self.skipped]}
        atomic_write_jsonl(path, [head, *(asdict(d) for d in self.documents)])

    @classmethod
    def load(cls, path: Path) -> IngestResult:
        head, *documents = read_jsonl(path)
        return cls(
            documents=[Document(**d) for d in documents],
            skipped=[SkippedFile(**s) for s in head["skipped"]],
            files_read=head["files_read"],
        )


def list_files(docs_dir: Path, settings: IngestConfig) -> list[Path]:
    """Files under ``docs_dir`` matching the include globs and none of the exclude globs,
    less those ``screen_files`` refuses."""
    return screen_files(docs_dir, settings)[0]


def screen_files(docs_dir: Path, settings: IngestConfig) -> tuple[list[Path], list[SkippedFile]]:
    """The files to read, and those refused with a reason: a symlink that leads out of
    ``docs_dir`` (unless ``follow_symlinks``: a shared folder could otherwise pull in any file
    the user can read, and send it to a remote teacher), a name that is not UTF-8, and
    anything that is not a regular file (a pipe, a socket, a device, a dangling link)."""
    found: set[Path] = set()
    for pattern in settings.include:
        # Not only regular files: a pipe or device named like a document is refused below
        # (reading a pipe waits forever), not silently left out.
        found.update(p for p in docs_dir.glob(pattern) if not p.is_dir())
    visible = [p for p in found if not _hidden(p.relative_to(docs_dir))]
    wanted = sorted(
        p for p in visible if not any(p.relative_to(docs_dir).match(x) for x in settings.exclude)
    )
    root = docs_dir.resolve()
    kept, refused = [], []
    for path in wanted:
        source = path.relative_to(docs_dir).as_posix()
        reason = _refusal(path, source, root, settings)
        if reason is None:
            kept.append(path)
        else:
            shown = source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            refused.append(SkippedFile(shown, reason))
    return kept, refused


def _refusal(path: Path, source: str, root: Path, settings: IngestConfig) -> str | None:
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8; rename it"
    if not settings.follow_symlinks and not path.resolve().is_relative_to(root):
        return (
            "a symlink to a file outside the documents folder (set ingest.follow_symlinks: "
            "true to read it)"
        )
    if not path.is_file():
        return (
            "not a regular file (a pipe, socket or device)"
            if path.exists()
            else "a symlink to a file that does not exist"
        )
    return None


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "~$")) for part in relative.parts)


def load_documents(
    docs_dir: Path, settings: IngestConfig | None = None, *, progress: bool = True
) -> IngestResult:
    """Load all documents under ``docs_dir``, with a progress bar for large folders.

    Raises:
        IngestError: ``docs_dir`` is missing, holds no files, or no file could be read.
    """
    settings = settings or IngestConfig()
    docs_dir = Path(docs_dir)
    if not docs_dir.is_dir():
        raise IngestError(f"{docs_dir}: documents folder not found; put your documents there")
    files, refused = screen_files(docs_dir, settings)
    if not files and not refused:
        raise IngestError(f"{docs_dir}: no documents found (supported: {supported_suffixes()})")
    result = IngestResult(skipped=list(refused))
    for skipped in refused:
        log.info("skipped %s: %s", skipped.source, skipped.reason)
    for path in tqdm(
        files, desc="Reading documents", unit="file", disable=not progress or len(files) < 50
    ):
        source = path.relative_to(docs_dir).as_posix()
        try:
            result.documents.extend(_load_one(path, source, settings))
            result.files_read += 1
        except LoadError as e:
            log.info("skipped %s: %s", source, e)
            result.skipped.append(SkippedFile(source, str(e)))
    if not result.documents:
        reasons = "; ".join(f"{s.source}: {s.reason}" for s in result.skipped[:5])
        total = len(files) + len(refused)
        raise IngestError(f"{docs_dir}: none of {total} files could be read ({reasons})")
    return result


def _load_one(path: Path, source: str, settings: IngestConfig) -> list[Document]:
    try:
        loader = LOADERS.get(path.suffix)
    except UnknownNameError:
        raise LoadError(f"unsupported file type {path.suffix or '(none)'}") from None
    try:
        size_mb = path.stat().st_size / 2**20
        if size_mb > settings.max_file_mb:
            raise LoadError(f"{size_mb:.0f} MB is over the {settings.max_file_mb:g} MB limit")
        with time_limit(settings.max_file_seconds):
            return loader(path, source)
    except LoadError:
        raise
    except _OutOfTime:
        raise LoadError(
            f"reading it took longer than {settings.max_file_seconds:g} s (ingest.max_file_seconds)"
        ) from None
    except OSError as e:  # unreadable, or gone since it was listed
        raise LoadError(f"could not read it ({e.strerror or e})") from e
    except Exception as e:  # a third-party parser failing on odd input must not stop the run
        raise LoadError(f"could not parse ({type(e).__name__}: {e})") from e


class _OutOfTime(BaseException):
    """Raised inside a loader whose file has used up its time budget (a BaseException, so
    a parser's own ``except Exception`` cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the block with ``_OutOfTime`` after ``seconds`` of wall time.

    Document parsers are Python code (pypdf, python-docx, BeautifulSoup), so a timer signal
    stops them between two bytecodes, wherever a crafted file has them looping. Signals reach
    only the main thread: elsewhere (a server, a test worker) the block runs unbounded.
    """
    usable = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def supported_suffixes() -> str:
    return ", ".join(LOADERS.names())
