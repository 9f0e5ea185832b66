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


def _zip_bomb(path: Path, inflated_mb: int) -> None:
    """A .docx whose document.xml inflates to ``inflated_mb`` MB (about 1 MB per GB on disk)."""
    import zipfile

    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bomb,
        bomb.open("word/document.xml", "w", force_zip64=True) as member,
    ):
        for _ in range(inflated_mb):
            member.write(b"\0" * 2**20)


def _pdf_bomb(path: Path, inflated_mb: int) -> None:
    """A one-page PDF whose content stream inflates to ``inflated_mb`` MB."""
    import zlib

    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(b" " * 2**20) for _ in range(inflated_mb)) + packer.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(data), data),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))


def test_an_index_run_over_hostile_files_reports_each_and_indexes_every_good_one(tmp_path):
    """The issue's whole list in one docs/ folder, through a real ``index`` run: it ends
    within 60 s, every good file is indexed, and every bad one is either read harmlessly
    (crafted text) or reported with its reason."""
    from domainkit.config import load_domain
    from domainkit.retrieval.store import build_index
    from tests.conftest import HashEmbedder, write_domain

    good = {
        "warranty.md": "# Warranty\n\nThe Perch has a two-year warranty.\n",
        "returns.txt": "Returns\n\nReturn any product within 30 days for a refund.\n",
    }
    said = "\n\nThis crafted file still states that repairs take ten days.\n"
    crafted = {
        "spaces.md": "# Spaces\n\nword" + " " * 2**20 + "end" + said,
        "separators.md": "# x" + "\u2028" * 100_000 + "y" + said,
        "hashes.md": "# x" + "#" * 60_000 + "y\n\n" + "#" * 60_000 + said,
    }
    root = write_domain(tmp_path / "domain", {**good, **crafted})
    docs = root / "docs"
    _zip_bomb(docs / "bomb.docx", inflated_mb=1024)
    _pdf_bomb(docs / "bomb.pdf", inflated_mb=256)
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    (docs / "link-out.txt").symlink_to(tmp_path / "secret.txt")
    (docs / "gone.md").symlink_to(docs / "deleted.md")  # vanished before it was read
    with open(os.fsencode(docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"A file whose name is Latin-1.")
    os.mkfifo(docs / "pipe.txt")  # reading it would wait forever
    locked = docs / "locked.md"
    locked.write_text("# Locked\n\nNobody may read this.\n")
    locked.chmod(0)
    readable = os.access(locked, os.R_OK)  # root reads it anyway

    started = time.perf_counter()
    report = build_index(load_domain(root), HashEmbedder(), progress=False)
    seconds = time.perf_counter() - started
    assert seconds < 60, f"the index run took {seconds:.0f} s"
    print(f"index run over the hostile files: {seconds:.1f} s")

    reasons = {s.source: s.reason for s in report.skipped}
    assert "inflate to 1024 MB" in reasons["bomb.docx"]
    assert "inflates past" in reasons["bomb.pdf"]
    assert "outside the documents folder" in reasons["link-out.txt"]
    assert "does not exist" in reasons["gone.md"]
    assert "UTF-8" in reasons["caf\\xe9.txt"]
    assert "not a regular file" in reasons["pipe.txt"]
    assert ("locked.md" in reasons) is not readable
    expected = set(good) | set(crafted) | ({"locked.md"} if readable else set())
    assert report.files_read == len(expected)
    from domainkit.retrieval.store import load_index

    sources = {c.source for c in load_index(root / ".domainkit" / "index").chunks}
    assert sources == expected
    assert report.documents >= len(expected) and not any("root:x" in r for r in reasons)


@pytest.mark.integration
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
