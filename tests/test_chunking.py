from domainkit.config.schema import ChunkingConfig
from domainkit.ingest import Chunker, Document
from domainkit.ingest.chunking import heading_sections

from .conftest import HashEmbedder

MANUAL = """# Kestrel Perch

Intro paragraph about the speaker.

## Setup

### Pairing

Hold the pair button for three seconds until the light blinks blue.

```
# not a heading, a comment in a code block
```

## Care

Wipe with a dry cloth.
"""


def _chunker(size=40, overlap=8):
    return Chunker(
        HashEmbedder().count_tokens, ChunkingConfig(chunk_size=size, chunk_overlap=overlap)
    )


def _doc(text, source="manual.md", markup="markdown"):
    return Document(text, source, "Kestrel Perch", "md", markup=markup)


def test_sections_follow_the_heading_path_and_skip_code_fences():
    sections = [
        (s.headings, MANUAL[s.start : s.end].strip()[:20]) for s in heading_sections(MANUAL)
    ]
    assert (("Kestrel Perch", "Setup", "Pairing"), "Hold the pair button") in sections
    assert (("Kestrel Perch", "Care"), "Wipe with a dry clot") in sections
    assert not any("not a heading" in h for headings, _ in sections for h in headings)


def test_chunks_are_exact_spans_with_headings_and_empty_sections_dropped():
    doc = _doc(MANUAL)
    chunks = _chunker().chunk(doc)
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
    assert [c.headings for c in chunks] == [
        ("Kestrel Perch",),
        ("Kestrel Perch", "Setup", "Pairing"),
        ("Kestrel Perch", "Care"),
    ]
    pairing = chunks[1]
    assert pairing.breadcrumb == "Kestrel Perch > Setup > Pairing"
    assert pairing.embed_text.startswith("Kestrel Perch > Setup > Pairing\n\nHold the pair")


def test_long_sections_are_split_within_budget_with_overlap():
    words = " ".join(f"word{i}" for i in range(300))
    doc = _doc(words, source="long.txt", markup="plain")
    chunks = _chunker(size=50, overlap=10).chunk(doc)
    assert len(chunks) >= 6
    assert all(c.n_tokens <= 50 for c in chunks)
    for left, right in zip(chunks, chunks[1:], strict=False):
        assert left.end > right.start, "consecutive chunks should overlap"
        assert doc.text[right.start : right.end] == right.text


def test_a_long_paragraph_is_cut_between_sentences_not_inside_one():
    sentences = [f"Sentence {i} says the speaker plays {i} songs in a row. " for i in range(40)]
    paragraph = "".join(sentences).strip() + " 1. Open the app. 2. Tap Pair."
    doc = _doc(paragraph, source="long.txt", markup="plain")
    chunks = _chunker(size=50, overlap=10).chunk(doc)
    assert len(chunks) >= 4
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text.startswith(("Sentence", "1. Open")), chunk.text[:30]
        assert chunk.text.endswith(("in a row.", "Tap Pair.")), chunk.text[-30:]


def test_chunk_ids_are_stable_and_change_only_with_content():
    chunker = _chunker()
    first = chunker.chunk(_doc(MANUAL))
    again = chunker.chunk(_doc(MANUAL))
    assert [c.id for c in first] == [c.id for c in again]
    edited = chunker.chunk(_doc(MANUAL.replace("dry cloth", "soft dry cloth")))
    changed = {c.id for c in edited} ^ {c.id for c in first}
    assert len(changed) == 2, "only the edited chunk's id changes (old out, new in)"
    elsewhere = chunker.chunk(_doc(MANUAL, source="copy.md"))
    assert not {c.id for c in elsewhere} & {c.id for c in first}, "same text, other file: new id"


def test_duplicate_chunks_in_one_document_are_kept_once():
    same, other = "The same words are here.", "Some other words are here."
    text = f"# A\n\n{same}\n\n# B\n\n{other}\n\n# A\n\n{same}\n"
    chunks = _chunker().chunk_all([_doc(text)])
    assert [c.text for c in chunks] == [same, other]


def test_roundtrip_through_dict():
    [chunk, *_] = _chunker().chunk(_doc(MANUAL))
    assert type(chunk).from_dict(chunk.to_dict()) == chunk


def test_setext_headings_in_markdown_and_plain_text():
    text = (
        "BILLING\n=======\n\nIntro to billing.\n\n"
        "HOW TO CANCEL\n-------------\n\nCancel any time in the app.\n\n"
        "- a list item\n- another\n"
    )
    sections = [(s.headings, text[s.start : s.end].strip()) for s in heading_sections(text)]
    assert (("BILLING",), "Intro to billing.") in sections
    assert sections[-1][0] == ("BILLING", "HOW TO CANCEL")
    assert sections[-1][1].startswith("Cancel any time")


def test_a_list_followed_by_a_rule_is_not_a_heading():
    text = "- item one\n---\n\nAfter the rule.\n"
    assert [s.headings for s in heading_sections(text)] == [()]
    assert [s.headings for s in heading_sections("1. Open the app\n---\n\nNext.\n")] == [()]


def test_a_numbered_title_underlined_to_its_length_is_a_heading():
    """Plain-text manuals number their underlined sections ("4. BATTERIES" over a dashed
    line as long as the title): each is a heading, so its passages carry it and the
    previous passage does not end with it (the sample safety leaflet's did)."""
    text = (
        "3. WATER AND LIQUIDS\n--------------------\n\nRinse the Talon in fresh water.\n\n"
        "4. BATTERIES\n------------\n\nTalon's battery keeps 80% after 500 cycles.\n"
    )
    sections = [(s.headings, text[s.start : s.end].strip()) for s in heading_sections(text)]
    assert (("3. WATER AND LIQUIDS",), "Rinse the Talon in fresh water.") in sections
    assert sections[-1] == (("4. BATTERIES",), "Talon's battery keeps 80% after 500 cycles.")
