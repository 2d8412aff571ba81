"""The exported Markdown holds no raw HTML and no link a page would not make (documents.markdown.clean_markdown),
and what is exported is what the clinician saw, had checked and signed: the model's draft is cleaned where the
editor, the number check, signing and the export read it, every saved version is cleaned before its hash, and
a version saved before (raw HTML in its signed bytes) is refused rather than silently changed on the way out."""

from __future__ import annotations

import hashlib
import html
import re

import markdown as python_markdown
import pytest
from markdown_it import MarkdownIt

from documents.markdown import clean_markdown
from patients import facts
from patients.models import Report
from runs import selectors, versions
from runs.models import DraftVersion, Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL, add_artifact, make_patient
from tests.test_export_clinician import _fact, _table

HOSTILE = """# Findings <script>alert('owned')</script>

Theta is **raised** at Fz <img src=x onerror="alert(2)"> (p < 0.05; amplitude <0.5 µV; 3 > 2).

<div onclick="steal()">
A raw *block* of HTML
</div>

<iframe src="https://evil.example/frame"></iframe>
<!-- a hidden comment -->
<style>body{display:none}</style>

- first <b onmouseover="x()">inline</b> tag and <a href="javascript:alert(3)">a raw link</a>
- [a markdown link](javascript:alert(4)) and [an encoded one](jav&#x61;script:alert(5)) and [spaced]( JAVASCRIPT:x)
- [custom handler](ms-msdt:/id%20PCWDiagnostic) and [data](data:text/html;base64,PHNjcmlwdD4=)
- [kept](https://example.org/guide "a title") and [relative](#findings) and [mail](mailto:a@example.org)
- ![tracker](https://evil.example/pixel.png) <https://example.org/autolink> <javascript:alert(6)>
- a [nested [inner](javascript:alert(7)) link](https://example.org)

> [ref]: javascript:alert(8)
> cited as [ref].

[def]: vbscript:msgbox(9)

| Site | Z |
|---|---|
| Fz | <span title="99">2.1</span> |
| Cz | *1.4* |

1. &lt;script&gt;literal&lt;/script&gt; stays text, and so does <<b>script>.
2. A & B, caf&eacute;.
"""

# What a viewer must never make of it: a tag the text did not ask for as markdown, or an event handler.
DANGEROUS = re.compile(r"<(script|img|iframe|style|div|span|b[ >])|\son\w+=", re.I)


def _commonmark(text: str) -> str:
    """How a CommonMark viewer (GitHub, editors) shows it, with its own link filter off: only the text decides."""
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    md.validateLink = lambda url: True
    return md.render(text)


def _python_markdown(text: str) -> str:
    return python_markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"])


def _hrefs(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]*)"', html)


def test_no_viewer_renders_html_scripts_or_unsafe_links_from_the_cleaned_text():
    cleaned = clean_markdown(HOSTILE)
    for render in (_commonmark, _python_markdown):
        html = render(cleaned)
        assert not DANGEROUS.search(html), html
        assert "<img" not in html and "<iframe" not in html and "<script" not in html
        assert sorted(set(_hrefs(html))) == [
            "#findings",
            "https://example.org",
            "https://example.org/autolink",
            "https://example.org/guide",
            "mailto:a@example.org",
        ], render
    # The text of it all stays readable, markdown and prose alike.
    for kept in ("# Findings", "Theta is **raised** at Fz", "p < 0.05; amplitude <0.5 µV; 3 > 2",
                 "A raw *block* of HTML", "inline", "a raw link", "[a markdown link](javascript:alert(4))",
                 "tracker", "| Fz | 2.1 |", "| Cz | *1.4* |", "A & B, caf&eacute;", "cited as [ref]"):  # fmt: skip
        assert kept in cleaned.replace("\\[", "[").replace("\\]", "]"), kept
    assert (
        "hidden comment" not in cleaned and "alert('owned')" not in cleaned and "display:none" not in cleaned
    )
    assert 'title="99"' not in cleaned  # an attribute's number is not text the clinician sees


def test_structure_survives_as_the_same_html_a_page_makes():
    clean_report = (
        "# Impression\n\n## Theta\n\n- **Fz** theta Z = +2.6 [p3]\n- *Cz* within norms\n  - nested item\n\n"
        "1. First\n2. Second\n\n> A quote with `code < 5`.\n\n| Site | Z |\n|:---|---:|\n| Fz | 2.6 |\n\n"
        "Line with a hard break  \nand [a link](https://example.org).\n\n```\nfenced <= 3\n```\n"
    )
    assert clean_markdown(clean_report) == clean_report
    assert _python_markdown(clean_markdown(clean_report)) == _python_markdown(clean_report)


@pytest.mark.parametrize(
    "text",
    [
        HOSTILE,
        "<<<b>b>>script>",
        "&amp;lt;x&gt;",
        "[x](<javascript:1>) [y]: javascript:2",
        "a\\![x](y) \\\\[z](javascript:3)",
    ],
)
def test_cleaning_is_idempotent(text):
    once = clean_markdown(text)
    assert clean_markdown(once) == once
    assert "<script" not in _commonmark(once) and "javascript:" not in "".join(_hrefs(_commonmark(once)))


def test_an_entity_or_a_broken_tag_never_becomes_a_tag():
    for text in ("&lt;script&gt;alert(1)&lt;/script&gt;", "<<b>script>alert(1)<</b>/script>", "<scr<b>ipt>x"):
        cleaned = clean_markdown(text)
        assert "<script" not in _commonmark(cleaned) and "<script" not in _python_markdown(cleaned), cleaned


# ---------------------------------------------------------------- what is exported is what was signed


@pytest.fixture
def run(data_dir) -> Run:
    patient = make_patient("H-001")
    report = Report.objects.create(
        patient=patient, original_name='<img src=x onerror="alert(1)">.pdf', sha256="1" * 64, page_count=3,
        status=Report.Status.READY,
    )  # fmt: skip
    patient.medications = "<script>unclosed"  # typed by staff: must not swallow what follows in the export
    patient.save()
    run = Run.objects.create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR, status="complete"
    )
    draft = add_artifact(run, stage=6, model_id="gpt-5", text=HOSTILE + "\nTheta at Fz was 77.7 [p1].\n")
    Run.objects.filter(pk=run.pk).update(selected_artifact=draft)
    run.refresh_from_db()
    facts.write_table(report.folder, _table(_fact(1, "Absolute power", "Fz", "12.5")))
    return run


def _exported(run) -> str:
    return run.export_path(Run.EXPORT_MARKDOWN).read_text()


def test_the_unedited_draft_exports_cleaned_with_its_numbers_acknowledged_where_shown(
    clinician_client, signer, run
):
    shown = clinician_client.get(f"/runs/{run.pk}/write-up/").content.decode()
    assert "onerror" not in shown.split("<textarea", 1)[1].split("</textarea>", 1)[0]
    refused = clinician_client.post(f"/api/runs/{run.pk}/export")
    assert refused.status_code == 409
    keys = [item["key"] for item in refused.json()["unresolved"]]
    # The keys the run page and the API hand out are the ones the export checks: offsets in the clean text.
    page_keys = [c.key for c in selectors.unresolved_numbers(
        run.selected_artifact, selectors.fact_table(run), versions.current_text(run).text)]  # fmt: skip
    assert keys == page_keys and any(key.endswith(":77.7") for key in keys)
    done = clinician_client.post(
        f"/api/runs/{run.pk}/export", {"acknowledge": keys}, content_type="application/json"
    )
    assert done.status_code == 200, done.content
    md = _exported(run)
    assert versions.current_text(run).text.strip() in md
    for render in (_commonmark, _python_markdown):
        html = render(md)
        assert (
            "<script" not in html and "<img" not in html and "onerror" not in html and "<iframe" not in html
        )
        assert not [
            url for url in _hrefs(html) if re.match(r"\s*(javascript|vbscript|ms-msdt|data):", url, re.I)
        ]
    assert "Theta at Fz was 77.7" in md and "## Run card" in md  # nothing swallowed by the unclosed <script>


def test_a_saved_version_is_cleaned_before_its_hash_and_exported_byte_for_byte(clinician_client, signer, run):
    typed = "# Mine\n\n<b onclick='x()'>Theta</b> at Fz.\n\n<script>steal()</script>\n[more](javascript:steal())\n"
    assert clinician_client.post(f"/runs/{run.pk}/write-up/save/", {"text": typed}).status_code in (200, 302)
    version = DraftVersion.objects.get()
    saved = version.path.read_text()
    assert saved == "# Mine\n\nTheta at Fz.\n\n\n[more\\](javascript:steal())\n"
    assert version.sha256 == hashlib.sha256(saved.encode()).hexdigest()
    signed = clinician_client.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert signed.status_code == 200, signed.content
    assert clinician_client.post(f"/api/runs/{run.pk}/export").status_code == 200
    md = _exported(run)
    assert saved.strip() in md and f"| Text sha256 | {version.sha256} |" in md
    # Saving the same text again is "nothing changed": the cleaned text is what was compared.
    again = clinician_client.post(
        f"/api/runs/{run.pk}/versions", {"text": typed}, content_type="application/json"
    )
    assert again.status_code == 409


def test_a_version_saved_with_raw_html_before_is_refused_not_rewritten(clinician_client, signer, run):
    raw = "# Old\n\n<script>alert(1)</script> Theta at Fz.\n"
    data = raw.encode()
    version = DraftVersion.objects.create(
        run=run, kind="clinician", number=1, base=run.selected_artifact, author=signer,
        file_path=f"versions/{run.pk}/v1-old.md", sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    version.path.parent.mkdir(parents=True, exist_ok=True)
    version.path.write_bytes(data)
    sign = clinician_client.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert sign.status_code == 409 and "raw HTML" in sign.json()["detail"]
    DraftVersion.objects.filter(pk=version.pk).update(
        signer_name="Dr Ada Rivera", signed_at=version.created_at
    )
    export = clinician_client.post(f"/api/runs/{run.pk}/export")
    assert export.status_code == 409 and "raw HTML" in export.json()["detail"]
    assert not run.export_path(Run.EXPORT_MARKDOWN).exists()
    # Saving it again (unchanged in the editor) makes a clean version 2, which can be signed and exported.
    assert clinician_client.post(f"/runs/{run.pk}/write-up/save/", {"text": raw}).status_code in (200, 302)
    assert DraftVersion.objects.get(number=2).path.read_text() == "# Old\n\n Theta at Fz.\n"
    assert clinician_client.post(f"/api/runs/{run.pk}/versions/2/sign").status_code == 200
    assert clinician_client.post(f"/api/runs/{run.pk}/export").status_code == 200


# Past the bounds of the link parser the pages use (BoundedLinks: 1,000 characters of a link's text, 500 of its
# address), and past CommonMark's 999-character label, a viewer still makes the link: so must the cleaner.
PAST_THE_BOUNDS = {
    "long text": "[" + "a" * 1_100 + "](javascript:alert(1))",
    "long title": '[x](javascript:alert(1) "' + "t" * 700 + '")',
    "long address": "[x](javascript:alert(1)" + "/" * 600 + ")",
    "deep nesting": "[[[[[x]]]]](javascript:alert(1))",
    "long label": "[" + "b" * 1_000 + "]\n\n[" + "b" * 1_000 + "]: javascript:alert(1)",
    "a tab in the scheme": "[x](java\tscript:alert(1))",
    "a label an escape joins": "[x](<javascript:1>) [y]: javascript:2",
}


@pytest.mark.parametrize("name", sorted(PAST_THE_BOUNDS))
def test_a_link_past_the_pages_parser_bounds_is_text_too(name):
    cleaned = clean_markdown(PAST_THE_BOUNDS[name])
    assert clean_markdown(cleaned) == cleaned
    for render in (_commonmark, _python_markdown):
        hrefs = [re.sub(r"\s", "", html.unescape(h)) for h in _hrefs(render(cleaned))]
        assert not [h for h in hrefs if "script" in h], (render.__name__, cleaned[:80])
