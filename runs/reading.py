"""What the run pages show, prepared from the run's artifacts: model text rendered safely, Stage 2 reviews
with the label map revealed and an aggregate ranking, the Stage 5 tally, and draft diffs. Reads only; the
pages' views call these, the selectors underneath do the file and schema work.

Each step of the registry (council/stages/) gets a page: the generic one (every output, rendered), or one
of its own named in `PAGES` by step key. A new step needs no entry here to be readable."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils.html import escape
from django.utils.safestring import SafeString

from council import disagreement, numbers, prompts
from council.anonymize import redactor
from council.schemas import PeerReview
from council.stages import STEPS
from council.stages.registry import Step
from documents.markdown import annotated_page_html
from runs import events, selectors, versions
from runs.models import Artifact, Run, RunEvent


@dataclass
class ModelOutput:
    artifact: Artifact
    model_id: str
    label: str
    ok: bool
    error: str
    html: SafeString | None = None
    text: str = ""
    output_name: str = ""  # "the consolidation", "the final draft by gpt-5"
    selectable: bool = False
    selected: bool = False
    diff: list[tuple[str, str]] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    # Its numbers checked against the fact table (None: the step does not check, or there is no table).
    checks: list[numbers.Check] | None = None
    numbers_line: str = ""

    @property
    def flagged(self) -> list[numbers.Check]:
        return [check for check in self.checks or [] if check.flagged]


def rendered(
    text: str, page_url: Callable[[int], str | None], checks: list[numbers.Check] | None
) -> SafeString:
    """Model markdown as safe HTML: flagged numbers in a <mark> whose title names the nearest fact and its
    page, and every page citation (`[p3]`, `(p. 3)`) a link to that page's image."""
    spans = []
    for check in checks or []:
        if check.flagged:
            opening = (
                f'<mark class="number-flag {check.status}" title="{escape(check.title())}" '
                f'data-status="{check.status}">'
            )
            spans.append((check.mention.start, check.mention.end, opening, "</mark>"))
    flagged = [(start, end) for start, end, *_ in spans]
    for start, end, page in numbers.citations(text):
        if any(a < end and start < b for a, b in flagged):
            continue
        href = page_url(page)
        if href is None:
            continue
        opening = f'<a class="citation" href="{href}" title="Page {page} of the report">'
        spans.append((start, end, opening, "</a>"))
    return annotated_page_html(text, spans)


def stage_outputs(run: Run, stage: int, *, shown: bool = True) -> list[ModelOutput]:
    """A stage's outputs as its page shows them; `shown=False` for their texts alone (no HTML, no number
    checks: what the disagreement summary reads)."""
    labels = selectors.labels_by_model(run)
    step = STEPS.get(stage)
    table = selectors.fact_table(run) if shown and step is not None and step.checks_numbers else None
    page_url = selectors.run_page_url(run) if shown else None
    outputs = []
    for artifact in selectors.stage_artifacts(run, stage):
        ok = artifact.status == Artifact.Status.OK
        text = selectors.artifact_text(artifact) if ok else ""
        markdown = shown and ok and artifact.kind == Artifact.Kind.MARKDOWN
        checks = selectors.number_checks(artifact, table, text) if markdown else None
        outputs.append(
            ModelOutput(
                artifact=artifact,
                model_id=artifact.model_id,
                label=labels.get(artifact.model_id, ""),
                ok=ok,
                error=artifact.error,
                html=rendered(text, page_url, checks) if markdown else None,
                text=text,
                output_name=step.output_name(artifact.model_id) if step else "",
                selectable=ok and step is not None and step.selectable,
                selected=run.selected_artifact_id == artifact.pk,
                checks=checks,
                numbers_line=numbers.summary_line(checks) if checks is not None else "",
            )
        )
    return outputs


def draft_diff(before: str, after: str) -> tuple[list[tuple[str, str]], int, int]:
    """Line diff of `after` against `before` (a final draft against the consolidation, an edited write-up
    against the model's draft), as (kind, line) pairs for runs/_diff.html to escape: kind is "add", "del",
    "ctx" or "gap". Unchanged stretches are cut to two lines of context."""
    lines: list[tuple[str, str]] = []
    added = removed = 0
    a, b = before.splitlines(), after.splitlines()
    for group in _line_matcher(a, b).get_grouped_opcodes(2):
        if lines:
            lines.append(("gap", "…"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(("ctx", line) for line in a[i1:i2])
                continue
            if tag in ("replace", "delete"):
                lines.extend(("del", line) for line in a[i1:i2])
                removed += i2 - i1
            if tag in ("replace", "insert"):
                lines.extend(("add", line) for line in b[j1:j2])
                added += j2 - j1
    return lines, added, removed


# difflib compares every pair of equal lines: on repeated lines it is cubic (1,000 lines of "x" against "x"
# and "y" in turns took 12 s; a model's or an editor's text, on every view of Stage 6 and the editor). The
# lines both texts start and end with are matched first; the rest is compared exactly when small, with
# difflib's own junk heuristic up to DIFF_MAX_LINES, and past that shown as one changed stretch.
DIFF_EXACT_LINES = 200
DIFF_MAX_LINES = 2000


def _line_matcher(a: list[str], b: list[str]) -> difflib.SequenceMatcher:
    """A SequenceMatcher of `a` and `b` whose opcodes are read as described above."""
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    middle_a, middle_b = a[head : len(a) - tail], b[head : len(b) - tail]
    longest = max(len(middle_a), len(middle_b))
    codes: list[tuple[str, int, int, int, int]] = [("equal", 0, head, 0, head)] if head else []
    if longest > DIFF_MAX_LINES:
        tag = "replace" if middle_a and middle_b else "delete" if middle_a else "insert"
        codes.append((tag, head, head + len(middle_a), head, head + len(middle_b)))
    elif longest:
        inner = difflib.SequenceMatcher(None, middle_a, middle_b, autojunk=longest > DIFF_EXACT_LINES)
        codes += [
            (tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in inner.get_opcodes()
        ]
    if tail:
        codes.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    matcher.opcodes = codes  # read by get_grouped_opcodes in place of its own
    return matcher


def final_drafts(run: Run) -> tuple[ModelOutput | None, list[ModelOutput]]:
    """The consolidation and the Stage 6 drafts, each draft with its diff against the consolidation."""
    consolidation = next((o for o in stage_outputs(run, STEPS["consolidation"].number) if o.ok), None)
    drafts = stage_outputs(run, STEPS["final_draft"].number)
    for draft in drafts:
        if draft.ok and consolidation is not None:
            draft.diff, draft.added, draft.removed = draft_diff(consolidation.text, draft.text)
    return consolidation, drafts


@dataclass
class ReviewerCard:
    model_id: str
    label: str
    ok: bool
    error: str
    reviews: list[dict[str, Any]] = field(default_factory=list)
    ranking: list[dict[str, str]] = field(default_factory=list)
    notes: str = ""


@dataclass
class RankingRow:
    label: str
    model_id: str
    points: int
    first_places: int
    positions: list[int]
    # reviewer model id → the place it gave this analysis (1 = best); a reviewer never ranks its own.
    by_reviewer: dict[str, int] = field(default_factory=dict)

    @property
    def mean_position(self) -> float:
        return sum(self.positions) / len(self.positions) if self.positions else 0.0

    @property
    def spread(self) -> int:
        """How far apart the reviewers placed it (best place to worst): 0 when they agree."""
        return max(self.positions) - min(self.positions) if self.positions else 0

    def cells(self, reviewers: list[ReviewerCard]) -> list[dict[str, Any]]:
        """One cell per reviewer, in the reviewers' order: the place it gave, or why there is none."""
        cells = []
        for card in reviewers:
            if card.label == self.label:
                cells.append({"text": "own", "why": "A reviewer does not rank its own analysis."})
            elif not card.ok:
                cells.append({"text": "—", "why": "This review failed."})
            elif card.model_id in self.by_reviewer:
                place = self.by_reviewer[card.model_id]
                cells.append({"text": str(place), "place": place, "why": f"Ranked {ordinal(place)}."})
            else:
                cells.append({"text": "—", "why": "Not ranked by this reviewer."})
        return cells


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def peer_reviews(run: Run) -> tuple[list[ReviewerCard], list[RankingRow]]:
    """Stage 2 as one card per reviewer (labels shown with the model behind them) and a Borda count across
    reviewers: in a ranking of n analyses the best gets n-1 points, the worst 0. Each reviewer ranks the
    others only, so every analysis is ranked by the same number of reviewers when all of them answered."""
    label_map: dict[str, str] = dict(run.label_map)
    labels = selectors.labels_by_model(run)
    cards: list[ReviewerCard] = []
    rows: dict[str, RankingRow] = {}
    for artifact in selectors.stage_artifacts(run, STEPS["peer_review"].number):
        card = ReviewerCard(
            model_id=artifact.model_id,
            label=labels.get(artifact.model_id, ""),
            ok=artifact.status == Artifact.Status.OK,
            error=artifact.error,
        )
        parsed = selectors.artifact_parsed(artifact)
        if isinstance(parsed, PeerReview):
            card.reviews = [
                {**review.model_dump(), "model_id": label_map.get(review.analysis_label, "?")}
                for review in sorted(parsed.reviews, key=lambda r: r.analysis_label)
            ]
            card.ranking = [
                {"label": lab, "model_id": label_map.get(lab, "?")} for lab in parsed.ranking_best_to_worst
            ]
            card.notes = parsed.overall_notes
            n = len(parsed.ranking_best_to_worst)
            for position, lab in enumerate(parsed.ranking_best_to_worst):
                row = rows.setdefault(lab, RankingRow(lab, label_map.get(lab, "?"), 0, 0, []))
                row.points += n - 1 - position
                row.first_places += position == 0
                row.positions.append(position + 1)
                row.by_reviewer[artifact.model_id] = position + 1
        elif card.ok:
            card.ok, card.error = False, card.error or "The stored review could not be read back."
        cards.append(card)
    ranking = sorted(rows.values(), key=lambda r: (-r.points, r.mean_position, r.label))
    return cards, ranking


@dataclass
class Tally:
    votes: list[dict[str, Any]]
    approve: int
    revise: int
    mean_score: float | None
    # Each distinct change once, numbered as the Stage 6 prompt numbers them, with the models that asked.
    required_changes: list[disagreement.PooledChange]
    failed: list[Artifact]


def final_review_tally(run: Run) -> Tally:
    votes = selectors.final_votes(run)
    scores = [v["quality_score_1to10"] for v in votes]
    return Tally(
        votes=votes,
        approve=sum(v["vote"] == "APPROVE" for v in votes),
        revise=sum(v["vote"] == "REVISE" for v in votes),
        mean_score=round(sum(scores) / len(scores), 1) if scores else None,
        required_changes=disagreement.pool_required_changes(
            (v["model_id"], v["required_changes"]) for v in votes
        ),
        failed=selectors.stage_artifacts(run, STEPS["final_review"].number, Artifact.Status.FAILED),
    )


def changes_applied(run: Run, drafts: list[ModelOutput]) -> list[dict[str, Any]]:
    """Each required change against each final draft: whether the draft says it applied it, and why. The
    changes are pooled and redacted exactly as the Stage 6 prompt gave them, so row n is the drafts' change
    n. What a draft says is its own claim, read strictly from its applied-or-not section
    (council/disagreement.py); a draft that did not say, or said it in another form, is "not stated"."""
    redact = redactor([*run.council_models, run.consolidator])
    pooled = disagreement.pool_required_changes(
        (vote["model_id"], [redact(change) for change in vote["required_changes"]])
        for vote in selectors.final_votes(run)
    )
    rows = []
    for change in pooled:
        cells = []
        for draft in drafts:
            details = draft.artifact.details or {}
            given = [disagreement.change_key(text) for text in details.get("required_changes", [])]
            if not draft.ok:
                cell = {"state": "failed", "text": "—", "why": "This draft failed."}
            elif "required_changes" not in details:
                cell = {
                    "state": "unknown",
                    "text": "not asked",
                    "why": "This draft's prompt did not ask it to say.",
                }
            elif change.key not in given:
                cell = {
                    "state": "unknown",
                    "text": "not given",
                    "why": "This change was not among those the draft was given.",
                }
            elif details.get("applied") is None:
                cell = {
                    "state": "unstated",
                    "text": "not stated",
                    "why": f"The draft does not say: {details.get('problem') or 'no statement'}.",
                }
            else:
                line = details["applied"][given.index(change.key)]
                cell = {
                    "state": "applied" if line["applied"] else "not-applied",
                    "text": "applied" if line["applied"] else "not applied",
                    "why": line["reason"],
                }
            cells.append(cell)
        rows.append({"change": change, "cells": cells})
    return rows


def disagreements(run: Run, consolidation: ModelOutput | None) -> dict[str, Any]:
    """The consolidation's "where the council disagreed" section, labels shown with the models behind them;
    or why there is none to show (not asked by this run's prompt, not written, not in the asked form)."""
    version = run.prompt_versions.get(str(STEPS["consolidation"].number), "")
    asked = bool(version) and disagreement.DISAGREEMENT_HEADING in prompts.load(version).user
    if consolidation is None:
        return {"asked": asked, "section": None}
    revised = selectors.stage_artifacts(run, STEPS["revision"].number, Artifact.Status.OK)
    labels = selectors.labels_by_model(run)
    known = {labels[a.model_id] for a in revised if a.model_id in labels}
    section = disagreement.read_disagreements(consolidation.text, known)
    label_map = dict(run.label_map)

    def side(group: tuple[str, ...]) -> list[dict[str, str]]:
        return [{"label": label, "model_id": label_map.get(label, "?")} for label in group]

    points = [
        {"point": p, "majority": side(p.majority), "minority": side(p.minority)} for p in section.points
    ]
    return {"asked": asked, "section": section, "points": points}


STAGE_EVENT_FIELDS = ("id", "kind", "stage", "created_at")


def stage_events(run: Any) -> QuerySet[RunEvent]:
    """A run's stage started / finished events (`run`: a run, or an OuterRef to one)."""
    kinds = (events.STAGE_STARTED, events.STAGE_FINISHED)
    return RunEvent.objects.filter(run=run, kind__in=kinds).only(*STAGE_EVENT_FIELDS)


def stage_timings(run: Run, read: list[RunEvent] | None = None) -> dict[int, dict[str, datetime | None]]:
    """When each stage started and finished (the last time, for a resumed run), from the run's events (those
    `read` already, in order, or read here)."""
    timings: dict[int, dict[str, datetime | None]] = {}
    for event in stage_events(run).order_by("pk") if read is None else read:
        entry = timings.setdefault(event.stage or 0, {"started": None, "finished": None})
        if event.kind == events.STAGE_STARTED:
            entry["started"], entry["finished"] = event.created_at, None
        else:
            entry["finished"] = event.created_at
    return timings


# -- one page per step ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePage:
    """How a step is read: the partial that shows it and the context that partial needs."""

    template: str
    context: Callable[[Run, Step], dict[str, Any]]
    live_labels: bool = False  # the live card names each member's label (a reviewer skipped its own)


def _outputs_context(run: Run, step: Step) -> dict[str, Any]:
    return {"outputs": stage_outputs(run, step.number)}


def _peer_review_context(run: Run, step: Step) -> dict[str, Any]:
    reviewers, ranking = peer_reviews(run)
    rows = [{"row": row, "cells": row.cells(reviewers)} for row in ranking]
    return {"reviewers": reviewers, "ranking": ranking, "ranking_rows": rows}


def _consolidation_context(run: Run, step: Step) -> dict[str, Any]:
    outputs = stage_outputs(run, step.number)
    consolidation = next((o for o in outputs if o.ok), None)
    revision = STEPS["revision"].number
    return {"outputs": outputs, "disagreement": disagreements(run, consolidation), "revision_stage": revision}


def _final_review_context(run: Run, step: Step) -> dict[str, Any]:
    consolidation = next((o for o in stage_outputs(run, STEPS["consolidation"].number) if o.ok), None)
    drafts = STEPS["final_draft"].number
    return {"tally": final_review_tally(run), "consolidation": consolidation, "final_draft_stage": drafts}


def _final_draft_context(run: Run, step: Step) -> dict[str, Any]:
    consolidation, drafts = final_drafts(run)
    version = versions.latest_version(run)
    write_up = {"version": version, "signed": bool(version and version.signed)}
    return {
        "consolidation": consolidation,
        "drafts": drafts,
        "write_up": write_up,
        "changes": changes_applied(run, drafts),
    }


OUTPUTS_PAGE = StagePage("runs/_stage_outputs.html", _outputs_context)
PAGES: dict[str, StagePage] = {
    "peer_review": StagePage("runs/_stage_peer_review.html", _peer_review_context, live_labels=True),
    "consolidation": StagePage("runs/_stage_consolidation.html", _consolidation_context),
    "final_review": StagePage("runs/_stage_final_review.html", _final_review_context),
    "final_draft": StagePage("runs/_stage_final_draft.html", _final_draft_context),
}


def stage_page(step: Step) -> StagePage:
    return PAGES.get(step.key, OUTPUTS_PAGE)


# -- where the council disagreed, in one place: the run's page and its export --------------------------------


@dataclass
class DisagreementSummary:
    """Stage 2's places per reviewer, Stage 4's stated disagreements, Stage 6's required changes and who
    says it applied them: the stage pages' tables, cut to what a clinician scans first."""

    ranking: list[dict[str, Any]]  # label, model_id, points, spread, places: [(reviewer, place)]
    disagreement: dict[str, Any]  # as `disagreements`: asked, section, points
    changes: list[dict[str, Any]]  # number, text, applied / not_applied / unstated: [model ids]
    review_stage: int
    consolidation_stage: int
    draft_stage: int

    @property
    def empty(self) -> bool:
        return not self.ranking and self.disagreement.get("section") is None and not self.changes


def disagreement_summary(run: Run) -> DisagreementSummary:
    reviewers, rows = peer_reviews(run)
    ranking = [
        {
            "label": row.label,
            "model_id": row.model_id,
            "points": row.points,
            "spread": row.spread,
            "places": [
                (card.model_id, row.by_reviewer[card.model_id])
                for card in reviewers
                if card.model_id in row.by_reviewer
            ],
        }
        for row in rows
    ]
    # Their texts only: neither the drafts' HTML nor their diffs are shown here.
    consolidation = next(
        (o for o in stage_outputs(run, STEPS["consolidation"].number, shown=False) if o.ok), None
    )
    drafts = stage_outputs(run, STEPS["final_draft"].number, shown=False)
    changes = []
    for row in changes_applied(run, drafts):
        by_state: dict[str, list[str]] = {"applied": [], "not-applied": [], "unstated": []}
        for draft, cell in zip(drafts, row["cells"], strict=True):
            if cell["state"] in by_state:
                by_state[cell["state"]].append(draft.model_id)
        changes.append(
            {
                "number": row["change"].number,
                "text": row["change"].text,
                "applied": by_state["applied"],
                "not_applied": by_state["not-applied"],
                "unstated": by_state["unstated"],
            }
        )
    return DisagreementSummary(
        ranking=ranking,
        disagreement=disagreements(run, consolidation),
        changes=changes,
        review_stage=STEPS["peer_review"].number,
        consolidation_stage=STEPS["consolidation"].number,
        draft_stage=STEPS["final_draft"].number,
    )


def disagreement_markdown(summary: DisagreementSummary) -> str:
    """The summary as the export's section (markdown), "" when the run has none of it."""
    if summary.empty:
        return ""
    lines = ["## Where the council disagreed", ""]
    if summary.ranking:
        lines.append(
            f"Peer review (Stage {summary.review_stage}), each analysis's place from each reviewer (1 = best):"
        )
        lines.append("")
        for row in summary.ranking:
            places = ", ".join(f"{place} by {reviewer}" for reviewer, place in row["places"]) or "not ranked"
            lines.append(
                f"- {row['label']} ({row['model_id']}): {row['points']} points; {places}"
                + (f"; spread {row['spread']}" if row["spread"] else "")
            )
        lines.append("")
    section = summary.disagreement.get("section")
    if section is not None:
        lines.append(f"Consolidation (Stage {summary.consolidation_stage}):")
        lines.append("")
        if section.problem:
            lines.append(f"- Not stated in the form asked ({section.problem}); nothing is inferred.")
        elif section.none:
            lines.append("- The consolidator says the revisions did not disagree on any point.")
        for point in summary.disagreement.get("points", []):
            minority = ", ".join(f"{s['label']} ({s['model_id']})" for s in point["minority"])
            majority = ", ".join(f"{s['label']} ({s['model_id']})" for s in point["majority"])
            lines.append(
                f"- {point['point'].point} Majority: {majority or '—'}; minority: {minority or '—'}."
            )
        lines.append("")
    if summary.changes:
        lines.append(
            f"Required changes and the final drafts (Stage {summary.draft_stage}; each draft's own statement):"
        )
        lines.append("")
        for change in summary.changes:
            said = [
                f"{word}: {', '.join(models)}"
                for word, models in (
                    ("applied", change["applied"]),
                    ("not applied", change["not_applied"]),
                    ("not stated", change["unstated"]),
                )
                if models
            ]
            lines.append(f"{change['number']}. {change['text']} — {'; '.join(said) or 'no draft says'}")
    return "\n".join(lines).rstrip()
