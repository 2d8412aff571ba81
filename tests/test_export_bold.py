"""Bold prints bold in every script the export prints: Latin, Greek and Cyrillic from DejaVu Sans Bold, Chinese,
Japanese and Korean from the bundled bold subset of Noto Sans CJK (bold italic too: CJK has no italic face),
and regular text stays regular. Read back from the PDF: the font PDFium reports for each character drawn."""

from __future__ import annotations

import ctypes

import pytest

from documents.markdown_pdf import FALLBACK_FILES, FONT_DIR, render_markdown_pdf


def drawn_fonts(data: bytes) -> list[tuple[str, str]]:
    """(character, font name) for each character on page 1, in reading order, as PDFium reports them."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    document = pdfium.PdfDocument(data)
    try:
        text = document[0].get_textpage()
        out = []
        for index in range(text.count_chars()):
            size = raw.FPDFText_GetFontInfo(text, index, None, 0, None)
            name = ctypes.create_string_buffer(size)
            raw.FPDFText_GetFontInfo(text, index, name, size, None)
            out.append((chr(raw.FPDFText_GetUnicode(text, index)), name.value.decode()))
        return out
    finally:
        document.close()


def fonts_of(drawn: list[tuple[str, str]], words: str) -> set[str]:
    """The faces the characters of `words` (not spaces) were drawn in where `words` first appears, without
    the subset prefix ("MPDFAA+NotoSansCJKSCBold" → "NotoSansCJKSCBold")."""
    text = "".join(character for character, _ in drawn)
    at = text.find(words)
    assert at >= 0, f"{words!r} is not in the PDF's text: {text!r}"
    return {
        font.split("+", 1)[-1] for character, font in drawn[at : at + len(words)] if not character.isspace()
    }


@pytest.fixture(scope="module")
def drawn() -> list[tuple[str, str]]:
    markdown = (
        "**粗壮患者 Жирный Έντονα Bold** and then 常规文字 Обычный Κανονικό plain.\n\n"
        "***强调한국어*** *斜写カタカナ*\n\n"
        "| 表头 | value |\n|---|---|\n| 单元 | 3 |\n"
    )
    return drawn_fonts(render_markdown_pdf(markdown, title="标题 Заголовок 017"))


def test_bold_cjk_is_drawn_in_the_bold_face(drawn):
    assert fonts_of(drawn, "粗壮患者") == {"NotoSansCJKSCBold"}
    assert fonts_of(drawn, "标题") == {"NotoSansCJKSCBold"}  # the title is bold
    assert fonts_of(drawn, "表头") == {"NotoSansCJKSCBold"}  # so is a table header
    assert fonts_of(drawn, "强调한국어") == {
        "NotoSansCJKSCBold"
    }  # bold italic: the bold face (no CJK italic)


def test_regular_cjk_stays_regular(drawn):
    assert fonts_of(drawn, "常规文字") == {"NotoSansCJKSC"}
    assert fonts_of(drawn, "单元") == {"NotoSansCJKSC"}
    assert fonts_of(drawn, "斜写カタカナ") == {"NotoSansCJKSC"}  # italic alone: upright, as CJK is set


def test_greek_and_cyrillic_bold_come_from_dejavu_bold(drawn):
    for words in ("Жирный", "Έντονα", "Bold", "Заголовок"):
        assert fonts_of(drawn, words) == {"DejaVuSansBold"}, words
    for words in ("Обычный", "Κανονικό", "plain"):
        assert fonts_of(drawn, words) == {"DejaVuSansBook"}, words


def test_both_cjk_faces_cover_the_same_characters():
    """Bold text never falls back to the regular face for a character only the regular has."""
    from fontTools.ttLib import TTFont

    covered = {style: set(TTFont(FONT_DIR / file).getBestCmap()) for style, file in FALLBACK_FILES.items()}
    assert covered[""] == covered["B"] and len(covered["B"]) > 28_000
