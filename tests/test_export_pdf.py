"""documents.markdown_pdf: the clinician's printable PDF — Unicode, tables drawn as tables, untrusted markdown handled."""

from __future__ import annotations

# ruff: noqa: RUF001  (the Unicode signs are what these tests are about)
import logging
import re

import pytest

from documents import markdown_pdf as pdf_module
from documents.markdown_pdf import Card, clean_html, normalize_markdown, render_markdown_pdf
from tests.export_samples import FINAL_DRAFT, WIDE_TABLE, pdf_pages_text, ruled_lines

CARD = [
    ("Exported", "2026-11-26 09:10 UTC"),
    ("Council", "gpt-5, claude-sonnet-4-5, gemini-2.5-pro (3 of 3 completed Stage 1)"),
    ("Stage 5 vote — gpt-5", "APPROVE · quality 8/10 · 0 required changes"),
    ("Prompt versions", "stage1_analysis.v1, stage5_final_review.v1"),
]

BAND_TABLE = """| Band | Fz | Cz |
|---|---:|---:|
| Delta δ | +0.4 | +0.2 |
| Theta θ | +2.6 | +2.3 |
| Alpha α | −0.9 | −0.7 |
| Beta β | −2.3 | −1.8 |
"""


def render(markdown: str, card: list[tuple[str, str]] | None = None) -> bytes:
    return render_markdown_pdf(
        markdown, title="qEEG Council report — P-0042", card=Card(heading="Run card", rows=card or [])
    )


def test_unicode_signs_and_units_survive_as_text():
    text = "".join(pdf_pages_text(render(FINAL_DRAFT, CARD)))
    for sign in ("µV", "µV²", "−2.3", "→", "±", "≥", "≤", "°C", "kΩ", "θ/β", "α", "β", "δ", "↑", "↓", "—"):
        assert sign in text, sign
    # Core PDF fonts would have turned every one of them into "?"; the sample has no real question mark.
    assert "?" not in text


def test_table_cells_are_in_the_text_row_by_row():
    text = "".join(pdf_pages_text(render(FINAL_DRAFT)))
    assert "Theta θ 4–8 Hz 31.7 29.5 21.0 +2.6 +2.3 ↑" in text
    assert "Beta β 13–30 Hz 6.1 7.2 6.8 −2.3 −1.8 ↓" in text
    assert "Band Range Fz (µV²) Cz (µV²) Pz (µV²) Z (Fz) Z (Cz) Flag" in text


def test_tables_are_drawn_as_ruled_tables_not_text():
    as_table = ruled_lines(render(BAND_TABLE))
    as_text = ruled_lines(render_text_tables(BAND_TABLE))
    # 5 rows → 6 horizontal borders, 3 columns → 4 vertical borders; plain rows draw neither.
    assert as_table[0] - as_text[0] == 6
    assert as_table[1] == 4
    assert as_text[1] == 0


def render_text_tables(markdown: str) -> bytes:
    renderer = pdf_module.Renderer(title="t", text_tables={0})
    return renderer.render(pdf_module.parse_markdown(markdown), None)


def test_long_table_repeats_its_header_on_every_page():
    rows = "".join(f"| Ch{n} | θ 4–8 Hz | −{n / 10:.1f} |\n" for n in range(120))
    pages = pdf_pages_text(render("| Channel | Band | Z-score |\n|---|---|---:|\n" + rows))
    assert len(pages) >= 3
    for page in pages:
        assert "Channel Band Z-score" in page
    assert "Ch119" in pages[-1]


def test_headings_lists_quote_code_and_emphasis_render():
    data = render(FINAL_DRAFT, CARD)
    text = "\n".join(pdf_pages_text(data))
    assert "1. P300 (oddball): latency 372 ms" in text
    assert "• Frontal midline theta excess" in text
    assert "◦ Most marked at Fz" in text  # the 2-space nested item became a nested list
    assert "Caution. qEEG findings support" in text
    assert "protocol: Cz θ/β down-train" in text
    assert "**" not in text and "`" not in text
    assert not any(line.startswith(("#", ">", "- ")) for line in text.splitlines())
    # Bold, italic and code come from the embedded fonts, not from Latin-1 core fonts.
    for font in (b"+DejaVuSansBook", b"+DejaVuSansBold", b"+DejaVuSansOblique", b"+DejaVuSansMonoBook"):
        assert font in data, font
    assert b"/Helvetica" not in data and b"/Times" not in data


def test_run_card_closes_the_document():
    pages = pdf_pages_text(render(FINAL_DRAFT, CARD))
    last = pages[-1]
    card = last[last.index("Run card") :]
    for label, _ in CARD:
        assert label in card
    assert "APPROVE · quality 8/10" in card
    assert "stage5_final_review.v1" in card
    assert "Suggested next steps" not in card


def test_pages_are_numbered_and_carry_the_title():
    pages = pdf_pages_text(render(FINAL_DRAFT * 2, CARD))
    total = len(pages)
    assert total >= 3
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {total}" in page
        assert "qEEG Council report — P-0042" in page


def test_raw_html_from_the_model_is_dropped_not_printed():
    markdown = (
        "Findings follow.\n\n<script>alert('owned')</script>\n\n"
        '<img src="x" onerror="alert(2)"> <b onclick="steal()">Theta</b> excess at Fz.\n\n'
        "<style>body { display: none }</style><iframe src='http://example.org'></iframe>\n\n" + BAND_TABLE
    )
    html = clean_html(markdown)
    assert "script" not in html and "onclick" not in html and "onerror" not in html and "iframe" not in html
    text = "".join(pdf_pages_text(render(markdown)))
    assert "Theta excess at Fz." in text
    assert "alert" not in text and "display" not in text and "<" not in text
    assert "Theta θ +2.6 +2.3" in text


def test_malformed_tables_do_not_crash_and_keep_their_words(caplog):
    ragged = "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n| only |\n"
    raw = "<table><tr><td>raw</td><td colspan=9>span</td></tr><tr><td><table><tr><td>inner</td></tr></table>"
    broken = "| no separator | here |\n| x | y |\n"
    with caplog.at_level(logging.WARNING, logger="documents.markdown_pdf"):
        data = render(f"{ragged}\n{raw}\n\n{broken}\n\n{WIDE_TABLE}\nAfter the tables.", CARD)
    text = "".join(pdf_pages_text(data))
    assert "Column0" in text and "Column79" in text and "value79xyzxyz" in text
    assert "inner" in text and "only" in text and "no separator" in text
    assert "After the tables." in text and "Run card" in text
    # The 80-column table could not be laid out, so it was written as rows of text, and we said so.
    assert any("drawn as text" in record.getMessage() for record in caplog.records)


def test_any_layout_failure_falls_back_to_a_plain_text_pdf(monkeypatch):
    def broken(self, tree, card):
        raise RuntimeError("layout bug")

    monkeypatch.setattr(pdf_module.Renderer, "render", broken)
    text = "".join(pdf_pages_text(render(FINAL_DRAFT, CARD)))
    assert "excess frontal theta" in text and "−2.3" in text
    assert "Stage 5 vote — gpt-5: APPROVE" in text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1. one\n   - nested\n2. two\n", "<li>one<ul>\n<li>nested</li>"),
        ("Findings:\n- a\n- b\n", "<p>Findings:</p>\n<ul>\n<li>a</li>"),
        ("Table:\n| a | b |\n|---|---|\n| 1 | 2 |\n", "<p>Table:</p>\n<table>"),
        ("```\n  - not a list\n```\n", "<pre><code>  - not a list"),
    ],
)
def test_llm_style_markdown_is_read_as_meant(source, expected):
    assert expected in clean_html(source), normalize_markdown(source)


def test_control_characters_and_common_emoji_are_cleaned():
    text = "".join(
        pdf_pages_text(render("Result ✅ approved, ❌ none\x00 rejected \x1b[31mred\x1b[0m ⚠️ check."))
    )
    assert "Result ✔ approved, ✘ none rejected red ⚠ check." in text


def test_runaway_nesting_is_still_laid_out_as_a_list():
    deep = "".join("  " * level + f"- level {level}\n" for level in range(30))
    text = "".join(pdf_pages_text(render(deep)))
    # Rich layout (bullets) rather than the plain-text fallback: indentation stops growing at a limit.
    assert "▪ level 29" in text and "• level 0" in text


def test_a_layout_failure_logs_one_short_line_with_no_text_of_the_document(monkeypatch, caplog):
    """The fallbacks say what failed and where in one line: no traceback (fpdf2's run to a hundred lines) and
    no error message, which may quote the text being laid out."""

    def broken(self, tree, card):
        raise RuntimeError("cannot place 'Jane Synthpatient, born 1961-04-02' on the page")

    with caplog.at_level(logging.WARNING, logger="documents.markdown_pdf"):
        render(f"{WIDE_TABLE}\nJane Synthpatient's values.", CARD)  # fpdf2 itself fails on this table
        monkeypatch.setattr(pdf_module.Renderer, "render", broken)
        text = "".join(pdf_pages_text(render("Jane Synthpatient's write-up.", CARD)))
    assert "Jane Synthpatient's write-up." in text  # the plain-text fallback
    table, layout = (record for record in caplog.records if record.name == "documents.markdown_pdf")
    for record in (table, layout):
        line = record.getMessage()
        assert record.exc_info is None and record.stack_info is None, line
        assert "\n" not in line and len(line) < 240, line
        assert "Synthpatient" not in line and "1961" not in line and "value79" not in line, line
    assert re.fullmatch(
        r"table 1 drawn as text \(80 columns do not fit across the page at markdown_pdf\.py:\d+ in column_widths\)",
        table.getMessage(),
    )
    assert re.fullmatch(
        r"PDF layout failed \(RuntimeError at test_export_pdf\.py:\d+ in broken, from markdown_pdf\.py:\d+ in "
        r"render_markdown_pdf\); writing the report as plain text",
        layout.getMessage(),
    )
