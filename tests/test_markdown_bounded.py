"""Model text cannot make a page slow or fail: Python-Markdown scanned from every "[" to the text's end looking for its
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


# As long as a saved version may be (runs.versions.MAX_VERSION_CHARS): the cleaner looks at each "](" and
# each definition once (3-4 s of CPU each before, for the link parser's bounded look from every "[").
VERSION_LONG = {
    "open addresses": "[x](" * 50_000,
    "escaped brackets": "\\[" * 100_000,
    "images": "![" * 100_000,
    "mixed": "[a](<b [c](d <e>) " * 11_000,
}


@pytest.mark.parametrize("name", sorted(VERSION_LONG))
def test_a_version_long_text_is_cleaned_in_well_under_a_second(name):
    once = time.process_time()
    cleaned = clean_markdown(VERSION_LONG[name])
    twice = time.process_time()
    clean_markdown(cleaned)  # what signing and export do again
    assert time.process_time() - twice < 1.0 and twice - once < 1.0, name


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


NESTED = {"dashes": "- " * 1_000 + "deep", "numbers": "1. " * 1_000 + "deep", "indented": "".join(
    "  " * i + "- deep\n" for i in range(600)
)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(NESTED))
def test_lists_nested_past_the_parsers_depth_show_as_written_not_a_500(name):
    html = page_html(NESTED[name])  # RecursionError before: every page showing it answered 500
    assert html.startswith("<pre>") and "deep" in html


@pytest.mark.django_db
def test_a_stage_page_with_such_an_answer_opens(clinician_client, data_dir):
    from patients.models import Report
    from runs.models import Run
    from tests.run_helpers import CONSOLIDATOR, COUNCIL, add_artifact, make_patient

    patient = make_patient("N-001")
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="3" * 64, status="ready")
    run = Run.objects.create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR, status="complete"
    )
    add_artifact(run, stage=1, model_id="gpt-5", text=NESTED["dashes"])
    page = clinician_client.get(f"/runs/{run.pk}/stages/1/")
    assert page.status_code == 200 and "deep" in page.content.decode()


@pytest.mark.parametrize("lines", [1_000, 20_000])
def test_a_diff_of_repeated_lines_is_drawn_at_once(lines):
    """difflib compared every pair of equal lines (cubic on repeated lines): 1,000 lines of "x" against "x"
    and "y" in turns took 12 s, on every view of the Stage 6 page and the write-up editor."""
    from runs.reading import draft_diff

    before = "\n".join("x" for _ in range(lines))
    after = "\n".join("y" if i % 2 else "x" for i in range(lines))
    started = time.process_time()
    diff, added, _removed = draft_diff(before, after)
    assert time.process_time() - started < 1.0
    assert added >= lines // 2 - 1 and {kind for kind, _ in diff} <= {"ctx", "add", "del", "gap"}


def test_a_small_edit_is_diffed_line_by_line_as_before():
    from runs.reading import draft_diff

    before = "# Final draft\n\n" + "\n".join(f"Line {i}." for i in range(300)) + "\n"
    after = before.replace("Line 10.", "Line ten.").replace("Line 290.", "Line 290, edited.")
    diff, added, removed = draft_diff(before, after)
    assert (added, removed) == (2, 2)
    assert (
        ("del", "Line 10.") in diff and ("add", "Line ten.") in diff and ("add", "Line 290, edited.") in diff
    )


def test_a_reply_of_spaces_has_its_end_marker_looked_for_at_once():
    """The runner strips the end marker from every markdown reply; a reply of 100 KB of spaces took 18 s of
    CPU with the event loop held (the run's heartbeat with it, past RUN_STALE_SECONDS)."""
    from council.stages.base import strip_marker

    started = time.process_time()
    assert strip_marker(" " * 200_000 + "x") == (" " * 200_000 + "x\n", False)
    assert time.process_time() - started < 0.5
    assert strip_marker("Report.\n  <!-- END OF REPORT -->  \n") == ("Report.\n", True)
