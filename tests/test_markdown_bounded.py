"""Model text cannot make a page slow: Python-Markdown scanned from every "[" to the text's end looking for its
"]" (and from every "](" for its ")"), so 16 KB of "[" took 72 s to render on a page, in the editor and in the
export. Bounded here (documents.markdown.BoundedLinks) with the same links as before for any sane text."""

from __future__ import annotations

import time

import markdown as python_markdown
import pytest

from documents.markdown import EXTENSIONS, clean_markdown, page_html, safe_html

# 32 KB each: a Stage 1 answer is up to ~100 KB (COUNCIL_MAX_TOKENS, continued twice).
HOSTILE = {
    "open brackets": "[" * 32_000,
    "bracketed words": "[a " * 10_700,
    "nested": "[" * 16_000 + "]" * 16_000,
    "images": "![" * 16_000,
    "open addresses": "[a](" * 8_000,
    "unclosed nesting": ("[" * 999 + "]") * 32,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_page_of_brackets_renders_in_well_under_a_second_or_two(name):
    text = HOSTILE[name]
    for render in (page_html, clean_markdown):
        started = time.process_time()
        render(text)
        assert time.process_time() - started < 2.0, (name, render.__name__)  # 30-96 s of CPU before


SANE = [
    'See [the guide](https://example.org/guide "Guide") and [p3], [a [nested] link](https://e.org).',
    "![chart](chart.png) then [ref link][r] and [r] again.\n\n[r]: https://r.example.org 'R'",
    "Angle <https://auto.example.org> and [empty]() and [paren](https://e.org/a_(b)) and [x] (y).",
    "| Site | Z |\n|---|---|\n| [Fz](#fz) | 2.1 [p4] |\n\n- [one](https://1.org)\n- two [p5]\n",
    "Escaped \\[not a link](https://e.org) and `[code](x)` and [ref-missing][nope].",
]


@pytest.mark.parametrize("text", SANE)
def test_ordinary_links_render_as_python_markdown_renders_them(text):
    stock = python_markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"])
    bounded = python_markdown.markdown(text, extensions=EXTENSIONS)
    assert bounded == stock
    assert safe_html(text, tags={"a", "p"}, attributes={"a": {"href"}}).count("<a ") == stock.count("<a ")
