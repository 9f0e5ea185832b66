"""Documents are untrusted: crafted text cannot stall ingest, and files that are not the
user's documents (symlinks out of docs/, unreadable, badly named) are skipped with a reason."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from domainkit.config.schema import ChunkingConfig, IngestConfig
from domainkit.ingest.chunking import Chunker
from domainkit.ingest.corpus import list_files, load_documents
from domainkit.ingest.normalize import atx_heading, normalize_text


@pytest.fixture
def deadline():
    """Fail (not hang) if the body runs for more than 60 s: a guard, not a timing test."""

    def expired(*_):
        raise TimeoutError("ingest ran for more than 60 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Warranty", (1, "Warranty")),
        ("### Returns ###", (3, "Returns")),
        ("## C#", (2, "C#")),  # a closing sequence needs a space before it
        ("## Setup #2 #", (2, "Setup #2")),
        ("#NoSpace", None),
        ("####### seven", None),
        ("#   ", None),
    ],
)
def test_atx_headings(line, expected):
    assert atx_heading(line) == expected


def test_crafted_text_is_read_in_linear_time(tmp_path, deadline):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "spaces.md").write_text("# Spaces\n\nword" + " " * 1_000_000 + "end\n")
    (docs / "separators.md").write_text("# x" + "\u2028" * 100_000 + "y\n\nBody text.\n")
    (docs / "hashes.md").write_text("# x" + "#" * 60_000 + "y\n\n" + "#" * 60_000 + "\n")
    (docs / "good.md").write_text("# Warranty\n\nThe Perch has a two-year warranty.\n")
    result = load_documents(docs, progress=False)
    assert result.files_read == 4 and not result.skipped
    chunker = Chunker(lambda text: len(text.split()), ChunkingConfig())
    chunks = [c for d in result.documents for c in chunker.chunk(d)]
    assert any("two-year warranty" in c.text for c in chunks)
    spaced = next(d for d in result.documents if d.source == "spaces.md")
    assert "word end" in spaced.text, "runs of spaces collapse to one"


def test_normalize_strips_trailing_spaces_of_every_line():
    assert normalize_text("a  \t\nb \n\n\n\nc\t") == "a\nb\n\nc"


def test_files_that_are_not_the_users_documents_are_skipped_with_reasons(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "good.md").write_text("# Good\n\nThe warranty lasts two years.\n")
    (docs / "inside.txt").write_text("Returns within 30 days.")
    (docs / "link-out.txt").symlink_to(outside)
    (docs / "sub" / "link-in.txt").symlink_to(docs / "inside.txt")
    bad_name = os.fsencode(docs) + b"/caf\xe9.txt"
    with open(bad_name, "wb") as f:
        f.write(b"A file whose name is Latin-1.")
    result = load_documents(docs, progress=False)
    reasons = {s.source: s.reason for s in result.skipped}
    assert "outside" in reasons["link-out.txt"] and "follow_symlinks" in reasons["link-out.txt"]
    assert "UTF-8" in reasons["caf\\xe9.txt"]
    assert {d.source for d in result.documents} == {"good.md", "inside.txt", "sub/link-in.txt"}
    assert all("root:x" not in d.text for d in result.documents)
    assert Path(docs / "link-out.txt") not in list_files(docs, IngestConfig()), (
        "the index fingerprint does not read it either"
    )
    allowed = load_documents(docs, IngestConfig(follow_symlinks=True), progress=False)
    assert "link-out.txt" in {d.source for d in allowed.documents}


def _docs_with_a_bad_file(tmp_path, monkeypatch, name: str, misbehave) -> Path:
    """docs/ with good.md and ``name``, whose Markdown loader calls ``misbehave(path)``
    first."""
    from domainkit.ingest import corpus

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe warranty lasts two years.\n")
    (docs / name).write_text("# Bad\n\nText.\n")
    real = corpus.LOADERS.get(".md")

    def loader(path, source):
        if path.name == name:
            misbehave(path)
        return real(path, source)

    monkeypatch.setattr(corpus.LOADERS, "get", lambda suffix: loader)
    return docs


def test_a_file_that_cannot_be_read_is_skipped(tmp_path, monkeypatch):
    def locked(path):
        raise PermissionError(13, "Permission denied", str(path))

    docs = _docs_with_a_bad_file(tmp_path, monkeypatch, "locked.md", locked)
    result = load_documents(docs, progress=False)
    assert [d.source for d in result.documents] == ["good.md"]
    assert "Permission denied" in result.skipped[0].reason


def test_a_file_that_stalls_its_parser_is_skipped_after_its_time_budget(tmp_path, monkeypatch):
    from domainkit.config.schema import IngestConfig

    def loop_forever(path):
        while True:  # a parser looping on crafted input, even one that catches every
            with contextlib.suppress(Exception):  # Exception it meets
                sum(range(10_000))

    docs = _docs_with_a_bad_file(tmp_path, monkeypatch, "crafted.md", loop_forever)
    started = time.perf_counter()
    result = load_documents(docs, IngestConfig(max_file_seconds=0.5), progress=False)
    assert time.perf_counter() - started < 5
    assert [d.source for d in result.documents] == ["good.md"]
    assert result.skipped[0].source == "crafted.md"
    assert "longer than 0.5 s (ingest.max_file_seconds)" in result.skipped[0].reason


def test_a_docx_that_inflates_past_the_limit_is_skipped(tmp_path, monkeypatch):
    import zipfile

    from domainkit.ingest import loaders

    monkeypatch.setattr(loaders, "MAX_INFLATED_MB", 8)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe warranty lasts two years.\n")
    with zipfile.ZipFile(docs / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("word/document.xml", b"\0" * (16 * 2**20))
    assert (docs / "bomb.docx").stat().st_size < 100_000, "small on disk"
    result = load_documents(docs, progress=False)
    assert [d.source for d in result.documents] == ["good.md"]
    assert "inflate to 16 MB, over the 8 MB limit" in result.skipped[0].reason


def test_two_processes_on_one_domain_one_fails_at_once(indexed_support):
    """A real second process: the lock is the kernel's, not the interpreter's."""
    import subprocess
    import sys

    from domainkit.config import load_domain

    build = load_domain(indexed_support).build_dir
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from domainkit.utils.lock import build_lock\n"
            "with build_lock(Path(sys.argv[1]), 'build'):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(build),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [sys.executable, "-m", "domainkit", "index", str(indexed_support), "--force"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"pid {holder.pid}, domainkit build" in second.stderr
    finally:
        holder.kill()
        holder.wait()
    assert (build / "index" / "CURRENT").is_file(), "the live index is still there"
