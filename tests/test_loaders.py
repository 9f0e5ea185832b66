import zipfile

import docx
import pytest
from fpdf import FPDF

from domainkit.config.schema import IngestConfig
from domainkit.errors import IngestError
from domainkit.ingest import LOADERS, LoadError, load_documents
from domainkit.ingest.document import Document
from domainkit.ingest.normalize import normalize_text


def _pdf(path, pages):
    pdf = FPDF()
    for heading, body in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, body, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def _docx(path):
    document = docx.Document()
    document.add_heading("Repair Agreement", level=1)
    document.add_paragraph("Repairs take ten working days.")
    document.add_heading("Fees", level=2)
    document.add_paragraph("Diagnosis costs 25 crowns.", style="List Bullet")
    document.save(str(path))


def test_markdown_keeps_headings_and_title(tmp_path):
    path = tmp_path / "a.md"
    path.write_text("# Shipping\n\nOrders   ship in 2 days.\r\n\n\n\n## Zones\n\nZone A.\n")
    [doc] = LOADERS.get(".md")(path, "a.md")
    assert doc.title == "Shipping" and doc.markup == "markdown"
    assert doc.text == "# Shipping\n\nOrders ship in 2 days.\n\n## Zones\n\nZone A."


def test_text_uses_first_line_as_title(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Battery care\n\nCharge monthly.")
    [doc] = LOADERS.get(".txt")(path, "notes.txt")
    assert doc.title == "Battery care" and doc.markup == "plain"


def test_text_with_underlined_headings_chunks_as_markdown(tmp_path):
    path = tmp_path / "billing.txt"
    path.write_text("BILLING\n\nHOW TO CANCEL\n-------------\nCancel in the app.\n")
    [doc] = LOADERS.get(".txt")(path, "billing.txt")
    assert doc.markup == "markdown"


def test_html_turns_headings_into_markdown_and_drops_boilerplate(tmp_path):
    path = tmp_path / "p.html"
    path.write_text(
        "<html><head><title>Returns | Kestrel</title><style>p{}</style></head><body>"
        "<nav><a href='/'>Home</a> Menu</nav><main><h1>Returns</h1><p>Within <b>30</b> days.</p>"
        "<h2>Fees</h2><ul><li>Soundbar: 15%</li><li>Speaker: none</li></ul>"
        "<table><tr><th>Item</th><th>Fee</th></tr><tr><td>Talon</td><td>10%</td></tr></table>"
        "</main><footer>Copyright Kestrel</footer><script>var x=1;</script></body></html>"
    )
    [doc] = LOADERS.get(".html")(path, "p.html")
    assert doc.title == "Returns"
    assert "# Returns" in doc.text and "## Fees" in doc.text
    assert "Within 30 days." in doc.text
    assert "- Soundbar: 15%" in doc.text and "Talon | 10%" in doc.text
    for boilerplate in ("Menu", "Copyright", "var x", "p{}"):
        assert boilerplate not in doc.text


def test_html_drops_breadcrumbs_and_navigation_roles(tmp_path):
    """A breadcrumb trail is navigation, not content: left in, it became a 'sentence' that
    matched every question about its page and was quoted as the answer."""
    path = tmp_path / "p.html"
    path.write_text(
        "<html><body><main>"
        '<p class="breadcrumb"><a href="/">Support</a> &rsaquo; App &rsaquo; Using the app</p>'
        '<ol class="Breadcrumbs-list"><li>Home</li><li>Guides</li></ol>'
        '<div role="navigation">Previous page</div>'
        '<div aria-label="Breadcrumb">Docs / App</div>'
        "<h1>Using the app</h1><p>The app runs on iOS and Android.</p>"
        '<p class="note">Not on desktops.</p>'
        "</main></body></html>"
    )
    [doc] = LOADERS.get(".html")(path, "p.html")
    assert "The app runs on iOS and Android." in doc.text and "Not on desktops." in doc.text
    for navigation in ("Support", "Home", "Guides", "Previous page", "Docs / App"):
        assert navigation not in doc.text


def test_pdf_yields_a_document_per_page_with_page_numbers(tmp_path):
    path = tmp_path / "guide.pdf"
    _pdf(path, [("Quick start", "Plug in the speaker."), ("Pairing", "Hold the button.")])
    docs = LOADERS.get(".pdf")(path, "guide.pdf")
    assert [d.page for d in docs] == [1, 2]
    assert "Plug in the speaker." in docs[0].text and "Hold the button." in docs[1].text


def test_a_pdf_whose_text_runs_past_the_per_file_budget_is_refused(tmp_path, monkeypatch):
    """Each compressed stream is capped by pypdf, but a PDF of many pages, each inflating to
    a long text, could still fill memory page by page: its text as a whole has a budget."""
    from domainkit.ingest import loaders

    path = tmp_path / "long.pdf"
    _pdf(path, [("Part", "All work and no play. " * 40)] * 3)
    assert len(LOADERS.get(".pdf")(path, "long.pdf")) == 3, "within the budget: read"
    monkeypatch.setattr(loaders, "MAX_TEXT_MB", 2000 / 2**20)  # about two pages' text
    with pytest.raises(LoadError, match="more than .* of text"):
        LOADERS.get(".pdf")(path, "long.pdf")


def test_docx_headings_and_lists_become_markdown(tmp_path):
    path = tmp_path / "r.docx"
    _docx(path)
    [doc] = LOADERS.get(".docx")(path, "r.docx")
    assert doc.title == "Repair Agreement"
    assert "# Repair Agreement" in doc.text and "## Fees" in doc.text
    assert "- Diagnosis costs 25 crowns." in doc.text


def test_latin1_text_is_detected_not_rejected(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("Le café coûte trois euros à la pièce, très cher.\n".encode("latin-1") * 3)
    [doc] = LOADERS.get(".txt")(path, "old.txt")
    assert "café coûte" in doc.text


def test_normalize_rejoins_pdf_layout_lines_only_when_asked():
    raw = "The warranty is valid for two\nyears from the date of pur-\nchase.\nClaims\nare free."
    assert normalize_text(raw, layout=True) == (
        "The warranty is valid for two years from the date of purchase.\nClaims are free."
    )
    assert normalize_text(raw) == raw


def test_a_pdf_line_wrapped_before_a_figure_rejoins_its_sentence():
    # pypdf keeps the page's line breaks; a break before "10 seconds." cut that sentence in
    # two, and a passage could then start (and an answer be quoted) with "10 seconds.".
    raw = (
        "The light turns solid white when Perch is connected, then dims after\n"
        "10 seconds.\nSteps to follow\n1. Open the app.\nPrices from\n2 pounds,\n"
        "3 pounds or less.\nStep 4: Install the latest firmware"
    )
    assert normalize_text(raw, layout=True) == (
        "The light turns solid white when Perch is connected, then dims after 10 seconds.\n"
        "Steps to follow\n1. Open the app.\nPrices from 2 pounds, 3 pounds or less.\n"
        "Step 4: Install the latest firmware"
    )


BROKEN = {
    "corrupt.pdf": (b"%PDF-1.4\n garbage that is not a pdf", "unreadable PDF"),
    "binary.txt": (b"\x00\x01\x02ELF\x00\x00" * 50, "binary content"),
    "bad-encoding.md": (bytes(range(128, 256)) * 4, "not valid UTF-8"),
    "empty.md": (b"   \n\n", "empty file"),
    "broken.docx": (b"PK\x03\x04 not really a zip", "unreadable Word file"),
    "image.png": (b"\x89PNG\r\n", "unsupported file type .png"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_are_skipped_with_path_and_reason(tmp_path, name):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nReadable text.")
    content, reason = BROKEN[name]
    (docs / name).write_bytes(content)
    result = load_documents(docs)
    assert [d.source for d in result.documents] == ["good.md"]
    [skipped] = result.skipped
    assert skipped.source == name
    assert reason in skipped.reason


def test_a_plugged_in_loader_skips_a_file_with_its_own_reason(tmp_path, monkeypatch):
    """A loader registered from outside raises the public ``LoadError``; the run goes on
    and reports the loader's reason."""
    from domainkit.ingest import LOADERS

    monkeypatch.setattr(LOADERS, "_items", dict(LOADERS._items))

    @LOADERS.register(".memo")
    def load_memo(path, source):
        raise LoadError("memo files need a password")

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nText.\n")
    (docs / "secret.memo").write_text("...")
    result = load_documents(docs)
    assert [(s.source, s.reason) for s in result.skipped] == [
        ("secret.memo", "memo files need a password")
    ]


def test_docx_without_document_part_is_skipped(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    with zipfile.ZipFile(docs / "odd.docx", "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    (docs / "ok.txt").write_text("fine")
    result = load_documents(docs)
    assert [s.source for s in result.skipped] == ["odd.docx"]


def test_missing_or_empty_docs_folder_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match="documents folder not found"):
        load_documents(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no documents found"):
        load_documents(tmp_path / "empty")


def test_folder_of_only_unreadable_files_is_an_error(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_bytes(b"")
    with pytest.raises(IngestError, match="none of 1 files could be read"):
        load_documents(tmp_path / "docs")


def test_include_exclude_and_hidden_files(tmp_path):
    docs = tmp_path / "docs"
    (docs / "drafts").mkdir(parents=True)
    (docs / ".git").mkdir()
    (docs / "a.md").write_text("a")
    (docs / "drafts" / "b.md").write_text("b")
    (docs / ".git" / "c.md").write_text("c")
    (docs / "~$lock.docx").write_bytes(b"x")
    result = load_documents(docs, IngestConfig(exclude=["drafts/*"]))
    assert [d.source for d in result.documents] == ["a.md"] and not result.skipped


class _EntryPoint:
    """What ``importlib.metadata.entry_points`` yields for an installed plug-in."""

    def __init__(self, name: str, value: str, loaded=None, error: Exception | None = None):
        self.name, self.value, self._loaded, self._error = name, value, loaded, error

    def load(self):
        if self._error is not None:
            raise self._error
        return self._loaded


def test_an_installed_plug_in_joins_its_registry_through_its_entry_point(tmp_path, monkeypatch):
    """A package offering a loader in the ``domainkit.loaders`` group is used without being
    imported by the user; a plug-in that fails to import stops nothing else, and asking for
    it by name gives its error."""
    from domainkit import registry
    from domainkit.errors import UnknownNameError
    from domainkit.registry import Registry

    def load_memo(path, source):
        return [Document(path.read_text().upper(), source, "Memo", "memo")]

    groups = {
        "domainkit.loaders": [
            _EntryPoint(".memo", "memo_plugin:load_memo", load_memo),
            _EntryPoint(".broken", "broken_plugin:load", error=ImportError("no module named x")),
            _EntryPoint(".md", "other_plugin:load_md", load_memo),  # a built-in name: ignored
        ]
    }
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: groups.get(group, []))
    loaders = Registry("loader", "domainkit.loaders")
    loaders._items = dict(LOADERS._items)  # the built-ins, as registered at import
    monkeypatch.setattr("domainkit.ingest.corpus.LOADERS", loaders)

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.memo").write_text("the memo text")
    (docs / "good.md").write_text("# Good\n\nText.\n")
    result = load_documents(docs)
    texts = {d.source: d.text for d in result.documents}
    assert texts["note.memo"] == "THE MEMO TEXT" and "Text." in texts["good.md"]
    assert ".memo" in loaders.names() and loaders.get(".md") is LOADERS.get(".md")
    with pytest.raises(UnknownNameError, match="'.broken' failed to load.*no module named x"):
        loaders.get(".broken")
    with pytest.raises(UnknownNameError, match="unknown loader '.nope'; available: .*.memo"):
        loaders.get(".nope")
