"""Export of a run's selected artifact as the clinician left it (its latest version, signed or marked
"Draft — not signed" on every page): data/exports/<run_id>/final.md and final.pdf, each ending with the run
card (when, which report, which council, how Stage 5 voted, which prompt versions). Both files are rendered in
memory first and then put in place by rename, so a failed export leaves the previous one whole."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.utils import timezone

from accounts.models import profile_of
from council import numbers
from council.schemas import FinalReview
from council.stages import STEPS
from documents.files import write_all_atomic
from documents.markdown import clean_markdown
from documents.markdown_pdf import Card, Unprintable, render_markdown_pdf
from runs import reading, selectors
from runs.models import Artifact, DraftVersion, PatientVersionRequest, Run
from runs.services import RunRefused
from runs.versions import PATIENT, Edited, current_text, refuse_raw_html

logger = logging.getLogger(__name__)


class ExportError(Exception):
    """The artifact cannot be exported (a user-facing reason: wrong run, failed call, missing file)."""


@dataclass(frozen=True)
class ExportPaths:
    md_path: Path
    pdf_path: Path


def export_run(*, run: Run, artifact: Artifact) -> ExportPaths:
    """Write final.md and final.pdf for `artifact` (a markdown artifact of `run`) into the run's exports folder,
    replacing any earlier export only once both new files are complete."""
    if artifact.run_id != run.pk:
        raise ExportError(f"Artifact {artifact.pk} belongs to run {artifact.run_id}, not run {run.pk}.")
    if artifact.status != Artifact.Status.OK or artifact.kind != Artifact.Kind.MARKDOWN:
        raise ExportError(
            f"{_artifact_name(artifact)} is not a finished markdown report and cannot be exported."
        )
    try:
        edited = current_text(run, artifact)
        refuse_raw_html(edited, doing="exporting")
    except RunRefused as error:
        raise ExportError(error.message) from error

    card = run_card(run=run, artifact=artifact, edited=edited)
    parts = [signature_block(edited), clinical_context_section(run), edited.text.strip()]
    parts.append(reading.disagreement_markdown(reading.disagreement_summary(run)))
    parts.append(facts_appendix(selectors.fact_table(run)))
    paths = _write_export(
        run,
        parts,
        title=export_title(run, signed=edited.signed),
        card=Card(heading=CARD_HEADING, caption=CARD_CAPTION, rows=card),
        names=(Run.EXPORT_MARKDOWN, Run.EXPORT_PDF),
    )
    logger.info("run %s exported %s to %s", run.pk, _artifact_name(artifact), run.exports_dir)
    return paths


def export_patient_version(*, run: Run) -> ExportPaths:
    """Write patient.md and patient.pdf: the latest patient version (signed, or "Draft — not signed" on
    every page), titled as the patient version, with a card saying how it was made (which model, from which
    signed write-up, its numbers checked). Both or neither, as for the write-up."""
    artifact = run.selected_artifact
    if artifact is None:
        raise ExportError("Select a final draft (or the consolidation) before exporting.")
    try:
        edited = current_text(run, artifact, PATIENT)
        refuse_raw_html(edited, doing="exporting")
    except RunRefused as error:
        raise ExportError(error.message) from error
    card = patient_card(run=run, edited=edited)
    paths = _write_export(
        run,
        [patient_heading(edited), edited.text.strip()],
        title=patient_title(run, signed=edited.signed),
        card=Card(heading=PATIENT_CARD_HEADING, caption=PATIENT_CARD_CAPTION, rows=card),
        names=(Run.EXPORT_PATIENT_MARKDOWN, Run.EXPORT_PATIENT_PDF),
    )
    logger.info("run %s exported patient version %s", run.pk, edited.version.number)
    return paths


def _write_export(
    run: Run, parts: list[str], *, title: str, card: Card, names: tuple[str, str]
) -> ExportPaths:
    """`parts` (markdown) with the card as a Markdown file and a PDF (`names`, in the run's exports folder).
    Each part is cleaned of raw HTML on its own (the signed text is clean already, and an unclosed tag in a
    model's disagreement statement or a typed context cannot reach into the next part); the PDF prints the
    same text."""
    markdown = "\n\n".join(clean_markdown(part) for part in parts if part) + "\n"
    final_md = final_markdown(markdown, card.rows, heading=card.heading)
    try:
        final_pdf = render_markdown_pdf(markdown, title=title, card=card)
    except Unprintable as error:
        # Refused whole, never printed with holes: the Markdown is not written either.
        raise ExportError(str(error)) from error
    paths = ExportPaths(md_path=run.export_path(names[0]), pdf_path=run.export_path(names[1]))
    # Both or neither: until both are complete, the earlier export stays whole.
    write_all_atomic({paths.md_path: final_md.encode("utf-8"), paths.pdf_path: final_pdf})
    return paths


PATIENT_TITLE = "Patient version"
PATIENT_CARD_HEADING = "How this summary was made"
PATIENT_CARD_CAPTION = (
    "Written in plain language from your clinician's signed report, then reviewed by your clinician."
)


def patient_title(run: Run, *, signed: bool) -> str:
    title = f"{PATIENT_TITLE}: a summary for you — {run.patient.label}"
    return title if signed else f"{title} — {NOT_SIGNED}"


def patient_heading(edited: Edited) -> str:
    """The first lines of the patient export: what it is, and who signed it (or that nobody has yet)."""
    lines = [
        f"> **{PATIENT_TITLE}** — a plain-language summary of your qEEG report for you. Your clinician's "
        "full report is the record; talk this summary over with them."
    ]
    version = edited.version
    if version.signed:
        lines.append(f"> Reviewed and **signed** by {version.signature_line()}.")
    else:
        lines.append(f"> **{NOT_SIGNED}.** Your clinician has not signed this summary yet.")
    return "  \n".join(lines)


def patient_card(*, run: Run, edited: Edited) -> list[tuple[str, str]]:
    """(label, value) rows: which model wrote it from which signed write-up, its versions and numbers."""
    version = edited.version
    source = version.source
    written = _first_written(run, version)
    request = PatientVersionRequest.objects.filter(version=written).first() if written else None
    rows = [
        ("Exported", _when(timezone.now())),
        ("Run", _run_line(run)),
        ("Patient", run.patient.label),
        ("Written by", f"{written.model_id}, from the signed write-up" if written else "not recorded"),
        (
            "From the write-up",
            f"version {source.number}, signed by {source.signature_line()}, sha256 {source.sha256}"
            if source
            else "not recorded",
        ),
        ("Patient version", _write_up_line(edited)),
        ("Signature", version.signature_line() if version.signed else NOT_SIGNED),
        ("Text sha256", version.sha256),
    ]
    rows.extend(_verification_rows(run, edited.artifact, edited.text, PATIENT))
    if request is not None:
        rows.append(("Prompt version", request.prompt_version))
    return rows


def _first_written(run: Run, version: DraftVersion) -> DraftVersion | None:
    """The model-written patient version this one comes from (itself, or the last one written before it)."""
    if version.model_id:
        return version
    return (
        DraftVersion.objects.filter(run=run, kind=PATIENT, number__lt=version.number)
        .exclude(model_id="")
        .order_by("-number")
        .first()
    )


CARD_HEADING = "Run card"
CARD_CAPTION = "How this document was produced: the council, its final review and the prompt versions."


NOT_SIGNED = "Draft — not signed"


def export_title(run: Run, *, signed: bool) -> str:
    # The patient label on every page header: loose printed pages stay attributable; so does a draft.
    title = f"qEEG Council report — {run.patient.label}"
    return title if signed else f"{title} — {NOT_SIGNED}"


def signature_block(edited: Edited) -> str:
    """The first lines of an export: who signed which version (and its hash), or that nobody has."""
    version = edited.version
    if version is None:
        return f"> **{NOT_SIGNED}.** The model's draft as written; nobody has reviewed or signed it."
    if not version.signed:
        return (
            f"> **{NOT_SIGNED}.** Version {version.number}, {'written' if version.model_id else 'edited'} by "
            f"{_written_by(version)}; "
            "it becomes final only when a clinician signs it."
        )
    return (
        f"> **Signed** by {version.signature_line()}.  \n"
        f"> Version {version.number}, sha256 `{version.sha256}`."
    )


CONTEXT_HEADING = "Clinical context"
FACTS_HEADING = "Appendix: values read from the report"


def clinical_context_section(run: Run) -> str:
    """What the clinician entered about the patient (age, sex, medications, referral reason), as a table."""
    rows = [("Patient", run.patient.label), *run.patient.clinical_context().items()]
    lines = [f"## {CONTEXT_HEADING}", "", "| Item | Detail |", "|---|---|"]
    lines += [f"| {_md_cell(label)} | {_md_cell(value)} |" for label, value in rows]
    return "\n".join(lines)


def facts_appendix(table: dict | None) -> str:
    """The report's fact table (patients/facts.py) with the page of every value, or a line saying there is
    none; a corrected value shows the reading it replaced."""
    lines = [f"## {FACTS_HEADING}", ""]
    facts = (table or {}).get("facts") or []
    if not facts:
        lines.append("No table of values was read from this report; check the numbers against its pages.")
        return "\n".join(lines)
    lines.append(
        f"{len(facts)} values as read from the report's pages (text layer or OCR), for checking the text above "
        "against the source."
    )
    lines += ["", "| Page | Metric | Site | Band | Session | Value | Unit |", "|---|---|---|---|---|---|---|"]
    for fact in sorted(facts, key=lambda f: (f.get("page") or 0, str(f.get("metric")), str(f.get("site")))):
        session = fact.get("session")
        if fact.get("session_date"):
            session = f"{session or ''} ({fact['session_date']})".strip()
        cells = [
            fact.get("page"),
            fact.get("metric"),
            fact.get("site"),
            fact.get("band"),
            session,
            _fact_value(fact),
            fact.get("unit"),
        ]
        lines.append("| " + " | ".join(_md_cell("" if c is None else c) for c in cells) + " |")
    return "\n".join(lines)


def _fact_value(fact: dict) -> str:
    correction = fact.get("correction")
    if isinstance(correction, dict) and correction.get("value") not in (None, ""):
        return f"{correction['value']} (read as {fact.get('value')})"
    return str(fact.get("value", ""))


def run_card(*, run: Run, artifact: Artifact, edited: Edited) -> list[tuple[str, str]]:
    """(label, value) rows describing how the exported text was produced."""
    first = STEPS.first
    completed = run.artifacts.filter(stage=first.number, status=Artifact.Status.OK).count()
    council = ", ".join(run.council_models)
    total = len(run.council_models)
    rows = [
        ("Exported", _when(timezone.now())),
        ("Run", _run_line(run)),
        ("Patient", run.patient.label),
        *_report_rows(run),
        ("Council", f"{council} ({completed} of {total} completed Stage {first.number})"),
        ("Consolidator", run.consolidator),
        *_change_rows(run),
        ("Exported text", _artifact_name(artifact)),
        ("Write-up", _write_up_line(edited)),
        ("Signature", edited.version.signature_line() if edited.signed else NOT_SIGNED),
        ("Text sha256", edited.version.sha256 if edited.version else _sha256(edited.text)),
    ]
    rows.extend(_stage5_rows(run))
    rows.extend(_verification_rows(run, artifact, edited.text))
    rows.append(("Prompt versions", _prompt_versions(run.prompt_versions)))
    return rows


def _verification_rows(
    run: Run, artifact: Artifact, text: str, kind: str = DraftVersion.Kind.CLINICIAN
) -> list[tuple[str, str]]:
    """The fact table's state and the exported text (a `kind` of text of `artifact`) checked against it,
    with every flagged number the clinician acknowledged: what it said, who and when."""
    given = ("Fact table given to the council", selectors.facts_given_summary(run)["sentence"])
    table = selectors.fact_table(run)
    if table is None:
        return [given, ("Fact table", "none (this report has no fact table; numbers not checked)")]
    lock = table.get("lock")
    rows = [
        given,
        (
            "Fact table now",
            f"locked by {lock['by']} at {lock['at']}" if lock else "not locked by a clinician",
        ),
    ]
    if not selectors.has_numbers(table):
        return [*rows, ("Numbers checked", "not checked: no page of the report was read into numbers")]
    checks = selectors.number_checks(artifact, table, text)
    if checks is None:
        return rows
    rows.append(("Numbers checked", numbers.summary_line(checks)))
    acknowledged = {a.key: a for a in artifact.acknowledgements.filter(kind=kind).select_related("by")}
    for check in checks:
        if check.flagged:
            ack = acknowledged.get(check.key)
            who = f"acknowledged by {ack.by or 'unknown'} {_when(ack.at)}" if ack else "not acknowledged"
            rows.append((f"Number “{check.mention.text}”", f"{check.title()} — {who}"))
    return rows


def final_markdown(report_markdown: str, card: list[tuple[str, str]], *, heading: str = CARD_HEADING) -> str:
    lines = [
        report_markdown.rstrip(),
        "",
        "---",
        "",
        f"## {heading}",
        "",
        "| Item | Detail |",
        "|---|---|",
    ]
    lines += [f"| {_md_cell(label)} | {_md_cell(value)} |" for label, value in card]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- helpers


def _write_up_line(edited: Edited) -> str:
    version = edited.version
    if version is None:
        return "the model's draft, not edited"
    return f"version {version.number}, saved by {_written_by(version)} {_when(version.created_at)}"


def _written_by(version: DraftVersion) -> str:
    return f"the model {version.model_id}" if version.model_id else _person(version.author)


def _person(user) -> str:
    if user is None:
        return "a removed user"
    return profile_of(user).signature_line()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _artifact_name(artifact: Artifact) -> str:
    return f"Stage {artifact.stage} {STEPS.name_of(artifact.stage).lower()} by {artifact.model_id}"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    local = timezone.localtime(moment)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def _run_line(run: Run) -> str:
    parts = [f"#{run.pk}", run.get_status_display().lower(), f"created {_when(run.created_at)}"]
    if run.finished_at:
        parts.append(f"finished {_when(run.finished_at)}")
    worked = run.elapsed_seconds()
    if worked is not None:
        parts.append(f"working time {duration(worked)}")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """ "42 s", "3 min 05 s", "1 h 02 min": how long, as a clinician reads it."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _report_rows(run: Run) -> list[tuple[str, str]]:
    """The report the run read, or each of its reports with the run's pages it is (numbered on)."""
    reports = run.report_list()
    if len(reports) == 1:
        return [("Report", _report_line(reports[0]))]
    rows, first = [], 1
    for number, report in enumerate(reports, start=1):
        count = report.page_count or 0
        pages = f"pages {first}\u2013{first + count - 1} of the run" if count else "no pages"
        rows.append((f"Report {number} of {len(reports)}", f"{_report_line(report)}; {pages}"))
        first += count
    return rows


def _report_line(report) -> str:
    details = [f"uploaded {_when(report.created_at)}"]
    if report.page_count:
        details.insert(0, f"{report.page_count} page{'s' if report.page_count != 1 else ''}")
    return f"{report.original_name} ({', '.join(details)})"


def _change_rows(run: Run) -> list[tuple[str, str]]:
    """Every change of who took part (a model gone on without, asked again, replaced, rejoined): which model,
    at which stage, by whom, when and why."""
    changes = list(run.council_changes.all())
    return [
        (f"Council change{f' {i}' if len(changes) > 1 else ''}", change.line())
        for i, change in enumerate(changes, 1)
    ]


def _stage5_rows(run: Run) -> list[tuple[str, str]]:
    """One row per council member: its vote and score, or why there is none. Read back through the same
    schema as the Stage 5 page, so the card and the page never disagree about a vote."""
    voting = STEPS["final_review"]
    artifacts = {artifact.model_id: artifact for artifact in run.artifacts.filter(stage=voting.number)}
    if not artifacts:
        return [(f"Stage {voting.number} {voting.name.lower()}", "not run")]
    rows = []
    for model_id in [*run.council_models, *sorted(set(artifacts) - set(run.council_models))]:
        artifact = artifacts.get(model_id)
        if artifact is None and model_id in run.dropped:
            summary = f"no vote (left out from Stage {run.dropped[model_id]})"
        elif artifact is None:
            summary = "no vote"
        elif artifact.status != Artifact.Status.OK:
            summary = f"no vote (failed: {_first_line(artifact.error) or 'no reason recorded'})"
        else:
            summary = _vote_summary(artifact)
        rows.append((f"Stage {voting.number} vote — {model_id}", summary))
    return rows


def _vote_summary(artifact: Artifact) -> str:
    vote = selectors.artifact_parsed(artifact)
    if not isinstance(vote, FinalReview):
        logger.warning(
            "run %s: final review artifact %s no longer reads as a vote", artifact.run_id, artifact.pk
        )
        return "vote unreadable"
    required, optional = vote.required_changes, vote.optional_changes
    parts = [vote.vote, f"quality {vote.quality_score_1to10}/10"]
    parts.append(f"{len(required)} required change{'s' if len(required) != 1 else ''}")
    if optional:
        parts.append(f"{len(optional)} optional")
    return " · ".join(parts)


def _prompt_versions(versions: dict) -> str:
    if not versions:
        return "not recorded"

    def order(key: str) -> tuple[int, str]:
        return (int(key), "") if str(key).isdigit() else (10**6, str(key))

    return ", ".join(str(versions[key]) for key in sorted(versions, key=order))


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0][:200] if (text or "").strip() else ""


def _md_cell(value: str) -> str:
    # A cell holds what people typed and reports printed (names, file names): cleaned on its own too.
    return clean_markdown(str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " "))
