"""Disagreement made visible: the consolidation's "where the council disagreed" section and each final
draft's "applied or not" statement, read strictly (council/disagreement.py), and the run pages that show them
with each reviewer's Stage 2 ranking beside the aggregate."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from django.urls import reverse

from council import disagreement, prompts
from council.schemas import FinalReview
from council.stages import STEPS, stage4_consolidation, stage6_final_draft
from council.stages.base import CallLimits, CouncilInput
from runs import exports
from runs.models import Artifact
from tests.run_helpers import CONSOLIDATOR, COUNCIL, add_artifact, run_pipeline_here
from tests.stage_fakes import ScriptedClient

SOURCE = CouncilInput(report_text="=== PAGE 1 / 1 ===\n[text layer]\nTheta 6.1 uV", clinical_context={})

SECTION = """# Consolidated

Theta is discussed above (p. 1).

## Where the council disagreed

- **Point:** whether frontal theta is elevated
  - **Majority (A, C):** elevated at Fz, as the
    table shows
  - **Minority (B):** within normal limits
  - **Resolution:** the table is followed (p. 1)
- **Point:** montage
  - **Majority (A)**: linked ears
  - **Minority (C)**: not stated in the report
  - **Resolution:** the report does not say; left open
"""


def test_a_disagreement_section_is_read_with_its_minority_by_label():
    section = disagreement.read_disagreements(SECTION, ["A", "B", "C"])
    assert section.read and not section.none
    first, second = section.points
    assert first.majority == ("A", "C") and first.minority == ("B",)
    assert first.majority_view == "elevated at Fz, as the table shows"  # a wrapped line joins its part
    assert first.resolution == "the table is followed (p. 1)"
    assert (second.majority, second.minority) == (("A",), ("C",))


def test_the_one_sentence_for_no_disagreement_is_read_as_none():
    text = "# R\n\n## Where the council disagreed\n\nThe revisions did not disagree on any point.\n"
    section = disagreement.read_disagreements(text, ["A", "B"])
    assert section.read and section.none and section.points == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# Consolidated\n\nNo such section.\n", "has no “Where the council disagreed” section"),
        ("## Where the council disagreed\n\n## Next\n", "section is empty"),
        (SECTION.replace("  - **Minority (B):** within normal limits\n", ""), "point 1 has no Minority"),
        (SECTION.replace("Minority (B)", "Minority (D)"), "names D, which is not a revision label"),
        (SECTION.replace("Minority (B)", "Minority (A)"), "puts A in both the majority and the minority"),
        (SECTION.replace("Minority (B)", "Minority ()"), "minority names no revision label"),
        (SECTION.replace("Minority (C)", "Minority (B, C)"), "minority (2) outnumbers its majority"),
        (SECTION.replace("- **Point:** montage", "- montage was unclear"), "not in the asked form"),
        (SECTION.replace("the table is followed (p. 1)", ""), "Resolution is empty"),
    ],
)
def test_a_section_not_in_the_asked_form_is_refused_with_the_reason(text, problem):
    section = disagreement.read_disagreements(text, ["A", "B", "C"])
    assert not section.read and section.points == ()
    assert problem in section.problem


DRAFT = """# Final report

Findings with pages (p. 1).

## Required changes: applied or not

1. APPLIED — the montage is stated in Methods
2. NOT APPLIED — the report does not support a diagnosis (p. 1)
"""


def test_the_applied_statement_is_read_and_cut_off_the_draft():
    body, statement = disagreement.split_applied(DRAFT, 2)
    assert body == "# Final report\n\nFindings with pages (p. 1).\n"
    assert statement == {
        "applied": [
            {"number": 1, "applied": True, "reason": "the montage is stated in Methods"},
            {"number": 2, "applied": False, "reason": "the report does not support a diagnosis (p. 1)"},
        ],
        "problem": "",
    }


@pytest.mark.parametrize(
    ("text", "count", "problem"),
    [
        ("# Final report\n\nNo statement.\n", 1, "has no “Required changes: applied or not” section"),
        (DRAFT, 3, "does not answer change 3"),
        (DRAFT.replace("2. NOT APPLIED", "1. NOT APPLIED"), 2, "answers change 1 twice"),
        (DRAFT.replace("2. NOT APPLIED", "7. NOT APPLIED"), 2, "answers change 7; there are 2"),
        (DRAFT.replace("NOT APPLIED", "PARTLY APPLIED"), 2, "a line is not"),
        (DRAFT.replace(" — the montage is stated in Methods", ""), 2, "a line is not"),
        (DRAFT + "Also some prose.\n", 2, "a line is not"),
    ],
)
def test_a_statement_not_in_the_asked_form_is_refused_whole(text, count, problem):
    body, statement = disagreement.split_applied(text, count)
    assert statement["applied"] is None and problem in statement["problem"]
    assert "applied or not" not in body  # the write-up never carries the council's bookkeeping


def test_a_statement_is_cut_even_when_text_follows_it():
    text = DRAFT + "\n## Further findings\n\nMore text.\n"
    body, statement = disagreement.split_applied(text, 2)
    assert statement["problem"] == "" and "APPLIED" not in body and body.endswith("More text.\n")


def test_required_changes_are_pooled_once_in_first_asked_order():
    pooled = disagreement.pool_required_changes(
        [("gpt-5", ["Cite the montage.", "Drop the diagnosis."]), ("claude", ["cite  the MONTAGE.", " "])]
    )
    assert [(c.number, c.text, c.voters) for c in pooled] == [
        (1, "Cite the montage.", ["gpt-5", "claude"]),
        (2, "Drop the diagnosis.", ["gpt-5"]),
    ]


# -- the stages ---------------------------------------------------------------------------------------------


def test_a_consolidation_without_the_section_is_kept_with_a_note_saying_so():
    client = ScriptedClient(["# Consolidated\n\nAll fine (p. 1).\n<!-- END OF REPORT -->"])
    output = asyncio.run(
        stage4_consolidation.run(client, "m", SOURCE, CallLimits(), revisions={"A": "a", "B": "b"})
    )
    assert output.text.startswith("# Consolidated")
    assert "Where the council disagreed is not stated" in output.note
    prompt = client.calls[0][1][1]["content"]
    assert "## Where the council disagreed" in prompt and "**Minority (B):**" in prompt


def test_a_consolidation_with_the_section_has_no_note():
    client = ScriptedClient([SECTION + "<!-- END OF REPORT -->"])
    revisions = {"A": "a", "B": "b", "C": "c"}
    output = asyncio.run(stage4_consolidation.run(client, "m", SOURCE, CallLimits(), revisions=revisions))
    assert output.note == ""


def test_a_final_draft_states_per_numbered_change_and_the_statement_is_kept_beside_it():
    votes = [
        FinalReview(
            vote="REVISE",
            required_changes=["State the montage.", "Drop the diagnosis."],
            quality_score_1to10=6,
        ),
        FinalReview(vote="REVISE", required_changes=["state the  montage."], quality_score_1to10=7),
    ]
    client = ScriptedClient([DRAFT + "<!-- END OF REPORT -->"])
    output = asyncio.run(
        stage6_final_draft.run(client, "m", SOURCE, CallLimits(), consolidation="# C", votes=votes)
    )
    prompt = client.calls[0][1][1]["content"]
    # The same change asked twice is numbered once, as the page numbers it.
    assert "1. State the montage.\n2. Drop the diagnosis.\n\n## Optional" in prompt
    assert "## Required changes: applied or not" in prompt
    assert "Required changes: applied or not" not in output.text
    assert output.details["required_changes"] == ["State the montage.", "Drop the diagnosis."]
    assert [line["applied"] for line in output.details["applied"]] == [True, False]


def test_the_current_prompts_ask_for_both_sections_and_keep_the_shared_start():
    # Version 4 of both: version 3's sections on the shared start with the fact table (shared.v2).
    assert STEPS["consolidation"].prompt == "stage4_consolidation.v4"
    assert STEPS["final_draft"].prompt == "stage6_final_draft.v4"
    for version in ("stage4_consolidation.v4", "stage6_final_draft.v4"):
        assert prompts.load(version).shared == "shared.v2"
    assert "## Where the council disagreed" in prompts.load("stage4_consolidation.v4").user
    assert "## Required changes: applied or not" in prompts.load("stage6_final_draft.v4").user


# -- the pages, over a run against the fake upstream ----------------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


def _cells(html: str, table_id: str) -> list[list[str]]:
    table = html[html.index(f'id="{table_id}"') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>") :], re.DOTALL)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
        for row in rows
    ]


@pytestmark_db
def test_the_run_pages_show_rankings_disagreement_and_changes_applied(run, fake_upstream, clinician_client):
    # Two reviewers ask for changes; the fake signs each with its model id, which the drafts see redacted.
    fake_upstream.script("gpt-5", vote="REVISE")
    fake_upstream.script("gemini-2.5-pro", vote="REVISE")
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    by_model = {model: label for label, model in run.label_map.items()}

    # Stage 2: each reviewer's place for each analysis beside the aggregate.
    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 2])).content.decode()
    rows = _cells(page, "ranking-table")
    assert len(rows) == 3
    reviews = {a.model_id: json.loads(a.path.read_text()) for a in run.artifacts.filter(stage=2)}
    for row in rows:
        label, places = row[1], row[7:]
        for reviewer, place in zip(sorted(COUNCIL), places, strict=True):
            if by_model[reviewer] == label:
                assert place == "own"
            else:
                assert int(place) == reviews[reviewer]["ranking_best_to_worst"].index(label) + 1

    # Stage 4: the fake's minority, by label and the model behind it.
    consolidation = run.artifacts.get(stage=4)
    assert consolidation.error == ""
    section = disagreement.read_disagreements(consolidation.path.read_text(), run.label_map)
    [point] = section.points
    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 4])).content.decode()
    assert 'id="disagreement-missing"' not in page
    minority = point.minority[0]
    assert f"<strong>{minority}</strong> <code>{run.label_map[minority]}</code>" in page

    # Stage 6: each required change against each draft, as each draft states it.
    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    assert 'id="changes-applied"' in page
    drafts = list(run.artifacts.filter(stage=6).order_by("model_id"))
    for draft in drafts:
        given = draft.details["required_changes"]
        assert (
            given[0] == "FAKE ([council member]): state the montage and reference used." and len(given) >= 2
        )
        assert draft.details["applied"] is not None and len(draft.details["applied"]) == len(given)
        assert "applied or not" not in draft.path.read_text()
    # The fake's gpt-5 (an odd-length id) does not apply the last change: both states are shown.
    assert drafts[-1].model_id == "gpt-5" and drafts[-1].details["applied"][-1]["applied"] is False
    table = page[page.index('class="changes-table"') :]
    for number, change in enumerate(drafts[0].details["required_changes"], 1):
        row = table[table.index(change) :]
        row = row[: row.index("</tr>")]
        states = re.findall(r'class="badge ([a-z-]+)"', row)
        assert states == [
            "applied" if d.details["applied"][number - 1]["applied"] else "not-applied" for d in drafts
        ]

    # The run's own page sums all three up, and so does the export.
    top = clinician_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert 'id="disagreement-summary"' in top
    for row in _cells(top, "summary-ranking"):
        label = row[0].split()[0]
        for reviewer in sorted(COUNCIL):
            if by_model[reviewer] != label:
                place = reviews[reviewer]["ranking_best_to_worst"].index(label) + 1
                assert f"{place} by {reviewer}" in " ".join(row[2].split())
    summary = top[top.index('id="disagreement-summary"') :]
    assert f"<strong>{minority}</strong> <code>{run.label_map[minority]}</code>" in summary
    last = drafts[0].details["required_changes"][-1]
    refused = ", ".join(d.model_id for d in drafts if not d.details["applied"][-1]["applied"])
    assert f"{last} — " in summary and f'badge not-applied">not applied</span> {refused}</li>' in summary
    paths = exports.export_run(run=run, artifact=drafts[0])
    exported = paths.md_path.read_text()
    part = exported[exported.index("## Where the council disagreed") : exported.index("## Appendix: values")]
    assert f"{minority} ({run.label_map[minority]})" in part and "minority:" in part
    assert (
        f"{len(drafts[0].details['required_changes'])}. {last} — " in part
        and f"not applied: {refused}" in part
    )
    assert "1 by " in part and "points" in part


@pytestmark_db
def test_the_page_says_so_when_the_consolidation_or_a_draft_does_not(run, clinician_client):
    for label, model in sorted(run.label_map.items()):
        add_artifact(run, stage=3, model_id=model, text=f"revision {label}")
    add_artifact(run, stage=4, model_id=CONSOLIDATOR, text="# Consolidated\n\nNo section at all.\n")
    vote = {
        "vote": "REVISE",
        "required_changes": ["State the montage."],
        "optional_changes": [],
        "quality_score_1to10": 5,
    }
    add_artifact(run, stage=5, model_id="gpt-5", text=json.dumps(vote))
    draft = add_artifact(run, stage=6, model_id="gpt-5", text="# Final\n")
    draft.details = {
        "required_changes": ["State the montage."],
        "applied": None,
        "problem": "the draft has no x section",
    }
    draft.save()
    old = add_artifact(
        run, stage=6, model_id="gemini-2.5-pro", text="# Final, written before drafts were asked\n"
    )
    assert old.details == {}

    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 4])).content.decode()
    assert 'id="disagreement-missing"' in page and "does not say where the council disagreed" in page
    assert "Nothing is inferred here" in page

    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    table = page[page.index('class="changes-table"') :]
    row = table[table.index("State the montage.") :]
    row = row[: row.index("</tr>")]
    assert re.findall(r'class="badge ([a-z-]+)"', row) == ["unknown", "unstated"]  # gemini (old), gpt-5
    assert "the draft has no x section" in row


@pytestmark_db
def test_an_old_run_says_its_prompt_did_not_ask(run, clinician_client):
    run.prompt_versions = {**run.prompt_versions, "4": "stage4_consolidation.v2"}
    run.save()
    add_artifact(run, stage=4, model_id=CONSOLIDATOR, text="# Consolidated\n")
    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 4])).content.decode()
    assert "did not ask where the council disagreed" in page
    assert Artifact.objects.filter(run=run).count() == 1


def test_a_heading_line_of_spaces_and_tabs_reads_at_once():
    """A model's heading with 40 KB of spaces and tabs before a last word took 12 s to read (a lazy title
    before the closing "#"s backtracked), on the run page and in the runner that records each draft."""
    import time

    line = "## Where the council" + " \t" * 20_000 + "x\n"
    started = time.process_time()
    disagreement.read_disagreements(line + "- **Point:** p\n", ["A", "B"])
    disagreement.split_applied(line, 2)
    assert time.process_time() - started < 1.0
    # Closing hashes and spaces still come off the title.
    assert disagreement.read_disagreements(
        "## Where the council disagreed ##  \n\nNone.\n", ["A"]
    ).problem != ("the consolidation has no “Where the council disagreed” section")
