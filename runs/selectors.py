"""Reads for runs: progress per stage, artifact text, the Stage 5 votes. Pages, the API, the stream, the
export and `runpipeline` all read through these."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

from django.db.models import Exists, OuterRef, Q, QuerySet

from council import numbers
from council.explain import explain
from council.schemas import FinalReview, InvalidReply, PeerReview
from council.stages import STEPS
from patients.models import Report
from qeeg_site.prepared import Prepared
from runs import events
from runs.models import Artifact, DraftVersion, Run, RunEvent


class ModelProgress(TypedDict):
    model_id: str
    label: str
    status: str  # ok | failed | running | pending | dropped
    error: str
    artifact_id: int | None


class StageProgress(TypedDict):
    stage: int
    name: str
    state: str  # pending | running | done | partial | failed | skipped
    ok: int
    failed: int
    dropped: int  # left out by a council change: counted in total, never asked
    total: int
    summary: str  # "2 of 3 models"
    models: list[ModelProgress]


def artifact_text(artifact: Artifact) -> str:
    """The stored text of an artifact ("" for a failed one: it has no file, only its reason)."""
    if artifact.status != Artifact.Status.OK or not artifact.file_path:
        return ""
    return artifact.path.read_text(encoding="utf-8")


def artifact_parsed(artifact: Artifact) -> PeerReview | FinalReview | None:
    """A JSON step's artifact read back through its schema (None for markdown or failures)."""
    step = STEPS.get(artifact.stage)
    if step is None or step.schema is None or artifact.status != Artifact.Status.OK:
        return None
    try:
        return step.read(artifact_text(artifact))
    except (InvalidReply, OSError):
        return None


def labels_by_model(run: Run) -> dict[str, str]:
    return {model: label for label, model in run.label_map.items()}


def council_in(run: Run, stage: int) -> list[str]:
    """The council members still asked in `stage`: every one but those left out from it or an earlier one."""
    return [m for m in run.council_models if m not in run.dropped or run.dropped[m] > stage]


def stage_participants(
    run: Run, artifacts: list[Artifact], stage: int, *, with_dropped: bool = False
) -> list[str]:
    """Who takes part in a stage, as its registry entry says (the council, the consolidator, or the members
    with an output of an earlier stage), given the artifacts so far. A model left out of the stage is not
    asked; `with_dropped` names it anyway (where it would have taken part), for honest counts."""
    succeeded: dict[int, set[str]] = {}
    for artifact in artifacts:
        if artifact.status == Artifact.Status.OK:
            succeeded.setdefault(artifact.stage, set()).add(artifact.model_id)
    council = run.council_models if with_dropped else council_in(run, stage)
    return STEPS.participants(stage, council=council, consolidator=run.consolidator, succeeded=succeeded)


def left_out(run: Run, model_id: str, stage: int) -> bool:
    return model_id in run.dropped and run.dropped[model_id] <= stage


def retries_in_flight(run: Run) -> dict[tuple[int, str], dict[str, Any]]:
    """(stage, model id) → the latest retry of a call still in flight in the run's current stage: its
    sentence ("429 from the upstream, retrying in 12 s, attempt 3 of 5") and when it was said."""
    if run.status != Run.Status.RUNNING or not run.current_stage:
        return {}
    kinds = (events.MODEL_STARTED, events.MODEL_RETRYING, events.MODEL_FINISHED, events.MODEL_FAILED)
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    rows = RunEvent.objects.filter(run=run, stage=run.current_stage, kind__in=kinds).order_by("id")
    for event in rows.only("kind", "stage", "model_id", "data", "created_at"):
        key = (event.stage, event.model_id)
        if event.kind == events.MODEL_RETRYING:
            latest[key] = {**event.data, "at": event.created_at}
        else:
            latest.pop(key, None)  # a new call, or an answer: the retry is over
    return latest


def run_artifacts(run: Run) -> list[Artifact]:
    """The run's artifacts, prefetched on it (one query for the page and whatever reads `run.artifacts`),
    each with `edited`: a version of the clinician's was written from it (a change must never discard it)."""
    return _artifacts_read.prefetch(run, "artifacts")


# Compiled once per process and database (qeeg_site.prepared): building the EXISTS and the prefetch again on
# every run page cost more than their query.
_artifacts_read = Prepared(
    lambda run_id: Artifact.objects.filter(run_id=run_id).annotate(
        edited=Exists(DraftVersion.objects.filter(run=OuterRef("run_id"), base=OuterRef("pk")))
    ),
    Artifact._meta.get_field("run"),
)


def run_progress(run: Run) -> dict[str, Any]:
    """Status, per-stage progress with each model's state and reason, and an honest council summary."""
    artifacts = list(run.artifacts.all())
    by_stage: dict[int, dict[str, Artifact]] = {}
    for artifact in artifacts:
        by_stage.setdefault(artifact.stage, {})[artifact.model_id] = artifact
    labels = labels_by_model(run)
    stages: list[StageProgress] = []
    for step in STEPS:
        stage = step.number
        rows = by_stage.get(stage, {})
        after = step.takers.with_output_of
        if after is None or run.stages_done >= STEPS[after].number:
            # A model left out still counts in the stage, as "dropped": "2 of 3 models", never "2 of 2".
            participants = stage_participants(run, artifacts, stage, with_dropped=True)
        else:
            # Provisional until the step it depends on says who is left.
            participants = step.takers.everyone(run.council_models, run.consolidator)
        for model in rows:
            if model not in participants:
                participants.append(model)
        models: list[ModelProgress] = []
        for model in participants:
            artifact = rows.get(model)
            if artifact is not None:
                status = artifact.status
            elif left_out(run, model, stage):
                status = "dropped"
            elif run.status == Run.Status.RUNNING and run.current_stage == stage:
                status = "running"
            else:
                status = "pending"
            models.append(
                {
                    "model_id": model,
                    "label": labels.get(model, ""),
                    "status": status,
                    "error": artifact.error if artifact is not None else "",
                    "artifact_id": artifact.pk if artifact is not None else None,
                }
            )
        ok = sum(m["status"] == Artifact.Status.OK for m in models)
        failed = sum(m["status"] == Artifact.Status.FAILED for m in models)
        dropped = sum(m["status"] == "dropped" for m in models)
        total = len(models)
        asking = run.status == Run.Status.RUNNING and run.current_stage == stage
        if stage <= run.stages_done and asking and run.catch_up:
            state = "running"  # a model that (re)joined is answering what it missed here
        elif stage <= run.stages_done:
            state = "skipped" if total == 0 else ("partial" if failed or ok < total else "done")
        elif run.current_stage == stage and run.status == Run.Status.RUNNING:
            state = "running"
        elif run.current_stage == stage and (ok or failed):
            state = "failed" if run.status == Run.Status.FAILED else "partial"
        else:
            state = "pending"
        unit = "model" if total == 1 else "models"
        stages.append(
            {
                "stage": stage,
                "name": step.name,
                "state": state,
                "ok": ok,
                "failed": failed,
                "dropped": dropped,
                "total": total,
                "summary": f"{ok} of {total} {unit}",
                "models": models,
            }
        )
    return {
        "status": run.status,
        "current_stage": run.current_stage,
        "stages_done": run.stages_done,
        "council_summary": council_summary(run, artifacts),
        "stages": stages,
    }


class Outcome(NamedTuple):
    """What a run summary needs of one artifact (read as plain values for lists of runs)."""

    stage: int
    model_id: str
    status: str
    error: str


def summary_artifacts() -> QuerySet[Artifact]:
    """The artifacts a council summary reads: the first stage's, and every failure."""
    return Artifact.objects.filter(Q(stage=STEPS.first.number) | Q(status=Artifact.Status.FAILED))


def council_summaries(
    councils: dict[int, list[str]], dropped: dict[int, dict[str, int]] | None = None
) -> dict[int, str]:
    """`council_summary` of many runs (run id → its council, and → the models it went on without) from one
    query of plain values: only the Stage 1 outputs and the failures, never a model instance per artifact
    (200 runs: 5 ms instead of 25)."""
    dropped = dropped or {}
    outcomes: dict[int, list[Outcome]] = {run_id: [] for run_id in councils}
    rows = (
        summary_artifacts()
        .filter(run__in=list(outcomes))
        .values_list("run_id", "stage", "model_id", "status", "error")
    )
    for run_id, *row in rows:
        outcomes[run_id].append(Outcome(*row))
    return {
        run_id: summary_text(council, outcomes[run_id], dropped.get(run_id) or {})
        for run_id, council in councils.items()
    }


def council_summary(
    run: Run, artifacts: Sequence[Artifact | Outcome] | None = None, *, explained: bool = False
) -> str:
    """ "3 of 3 models", or "2 of 3 models (gemini-2.5-pro failed Stage 1: …)": how many council members
    took part (the first stage), then every failure of any stage with its reason — a gap is never hidden.
    `explained`: each reason as the clinician's sentence (council/explain.py) rather than the raw error."""
    artifacts = list(run.artifacts.all()) if artifacts is None else artifacts
    return summary_text(run.council_models, artifacts, run.dropped, explained=explained)


def summary_text(
    council: list[str],
    artifacts: Sequence[Artifact | Outcome],
    dropped: dict[str, int],
    *,
    explained: bool = False,
) -> str:
    """`council_summary` from a run's council, its `summary_artifacts` (or all of them) and its `dropped`."""
    total = len(council)
    first = STEPS.first.number  # once: the registry sorts its steps on every `first`
    stage1 = {a.model_id: a for a in artifacts if a.stage == first}
    if not stage1:
        return f"{total} council models, not started" if total != 1 else "1 council model, not started"
    ok = [m for m in council if m in stage1 and stage1[m].status == Artifact.Status.OK]
    failures = [
        f"{a.model_id} failed Stage {a.stage}: {explain(a.error) if explained else a.error}"
        for a in sorted(artifacts, key=lambda a: (a.stage, a.model_id))
        if a.status == Artifact.Status.FAILED
    ]
    failures += [f"{model} left out from Stage {stage}" for model, stage in dropped.items()]
    text = f"{len(ok)} of {total} models"
    return f"{text} ({'; '.join(failures)})" if failures else text


def stage_artifacts(run: Run, stage: int, status: str | None = None) -> list[Artifact]:
    """A stage's artifacts in model order (only those of `status`, if given), taken from the run's artifacts
    as read once: prefetched for a page (`prefetch_related_objects([run], "artifacts")`), no query each."""
    return [a for a in run.artifacts.all() if a.stage == stage and (status is None or a.status == status)]


def final_votes(run: Run) -> list[dict[str, Any]]:
    """Stage 5 votes for the UI and the export's run card: label, model, vote, score, required changes."""
    labels = labels_by_model(run)
    votes = []
    voting = STEPS["final_review"].number
    for artifact in stage_artifacts(run, voting, Artifact.Status.OK):
        vote = artifact_parsed(artifact)
        if isinstance(vote, FinalReview):
            votes.append(
                {
                    "model_id": artifact.model_id,
                    "label": labels.get(artifact.model_id, ""),
                    "vote": vote.vote,
                    "quality_score_1to10": vote.quality_score_1to10,
                    "required_changes": vote.required_changes,
                    "optional_changes": vote.optional_changes,
                }
            )
    return votes


# -- numbers checked against the fact table ----------------------------------------------------------------


def fact_table(run: Run) -> dict[str, Any] | None:
    """The run's fact table as it is now (corrections and lock included), or None without one: the number
    check and the export read it; the council was given it as it was when the run started
    (`facts_given`). See `reports_fact_table`."""
    return reports_fact_table(run.report_list())


def reports_fact_table(reports: Sequence[Report]) -> dict[str, Any] | None:
    """The one fact table of a run over `reports` (in the run's order): one report's own table; several
    reports' merged (patients.selectors.reports_history, council/timeline.py): each fact once, sessions by
    timeline index, pages numbered on across the reports (facts, per-page quality and missing facts alike,
    each with `report_id` and `report_page`); locked when every report's table is (the last lock). None when
    no report has a table."""
    from patients.selectors import report_facts, reports_history

    if len(reports) == 1:
        return report_facts(reports[0])
    history = reports_history(reports, ordered=True)
    tables = [history.tables[r.pk] for r in history.reports]
    if all(table is None for table in tables):
        return None
    pages: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for report, table in zip(history.reports, tables, strict=True):
        before = history.first_page(report) - 1
        where = {"report_id": report.pk}
        for page in (table or {}).get("pages") or []:
            pages.append({**page, **where, "page": before + page["page"], "report_page": page["page"]})
        for row in (table or {}).get("missing") or []:
            session = history.timeline.index_of(report.pk, row.get("session"))
            missing.append(
                {**row, **where, "page": before + row["page"], "report_page": row["page"], "session": session}
            )
    locks = [(table or {}).get("lock") for table in tables]
    return {
        "schema": 1,
        "facts": history.facts,
        "pages": pages,
        "missing": missing,
        "disagreements": sum(bool(f.get("disagreement")) for f in history.facts),
        "lock": locks[-1] if all(locks) else None,
        "reports": [r.pk for r in history.reports],
    }


def run_page_url(run: Run):
    """page number as the run's drafts cite it → the address of that page's image (None: no such page).
    Several reports: pages are numbered on across them, in the run's order."""
    from django.urls import reverse

    from patients.selectors import reports_history

    reports = run.report_list()
    if len(reports) == 1:
        return lambda page: reverse("patients:report_page", args=[reports[0].pk, page])
    history = reports_history(reports, ordered=True)

    def url(page: int) -> str | None:
        found = history.page_of(page)
        return reverse("patients:report_page", args=[found[0].pk, found[1]]) if found else None

    return url


def number_checks(
    artifact: Artifact, table: dict[str, Any] | None, text: str | None = None
) -> list[numbers.Check] | None:
    """Every number of a markdown artifact of a step that checks its numbers, checked against `table`; None
    when the step does not check numbers, the artifact failed, or the report has no fact table. Computed on
    read: a correction or lock of the table after the run changes the verdict at once. A table with no
    numbers (no reader knew the report's layout) checks nothing: the run card says so."""
    step = STEPS.get(artifact.stage)
    if table is None or step is None or not step.checks_numbers or artifact.status != Artifact.Status.OK:
        return None
    if not has_numbers(table):  # no reader knew the report's layout: nothing to check against
        return None
    text = artifact_text(artifact) if text is None else text
    named = named_numbers(artifact.run_id) if numbers.long_numbers(text) else frozenset()
    return numbers.check(text, table["facts"], named)


def named_numbers(run_id: int) -> frozenset[str]:
    """The long numbers that name something in a run (council/numbers.py `is_identifier`): those its reports'
    own text prints, which whoever reads the run may read too. Never the patient's recorded identifiers or
    redactions, which a clinician cannot see: a typed number left unflagged only because it is one of them
    would tell them it is, so such a number is checked like any other. Read only for a text that has a long
    number at all."""
    from patients.selectors import report_text

    run = Run.objects.select_related("report").get(pk=run_id)
    return numbers.named_numbers(*(report_text(report) for report in run.report_list()))


def has_numbers(table: dict[str, Any] | None) -> bool:
    return bool(table) and any(fact.get("number") is not None for fact in table["facts"])


@dataclass(frozen=True)
class TextNumbers:
    """A text's numbers checked against the fact table, for a page: every check (None when nothing is
    checked), the flagged ones nobody acknowledged, and the one-line summary."""

    checks: list[numbers.Check] | None
    unresolved: list[numbers.Check]

    @property
    def line(self) -> str:
        return numbers.summary_line(self.checks) if self.checks is not None else ""

    @property
    def flagged(self) -> list[numbers.Check]:
        return [check for check in self.checks or [] if check.flagged]


def text_numbers(
    artifact: Artifact, table: dict[str, Any] | None, text: str | None = None, *, kind: str = "clinician"
) -> TextNumbers:
    """`text` (default: the artifact's own; else a version of `kind` edited or written from it: the write-up,
    the patient version) checked once: the checks and the flagged numbers not acknowledged for it."""
    checks = number_checks(artifact, table, text)
    flagged = [check for check in checks or [] if check.flagged]
    acknowledged = (
        set(artifact.acknowledgements.filter(kind=kind).values_list("key", flat=True)) if flagged else set()
    )
    return TextNumbers(checks=checks, unresolved=[c for c in flagged if c.key not in acknowledged])


def unresolved_numbers(
    artifact: Artifact, table: dict[str, Any] | None, text: str | None = None, *, kind: str = "clinician"
) -> list[numbers.Check]:
    """The flagged numbers of `artifact` (or of `text`, a version of `kind` from it) nobody acknowledged."""
    return text_numbers(artifact, table, text, kind=kind).unresolved


# -- the fact table the council was given ----------------------------------------------------------------


def facts_given(run: Run) -> dict[str, Any] | None:
    """The fact table as `run` was given it (recorded when it first started, runs.services.
    run_facts_record), or None: not started yet, or its report had no table."""
    if run.pk is None or not run.facts_given or run.facts_given.get("none"):
        return None
    try:
        return json.loads(run.facts_given_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def facts_given_summary(run: Run) -> dict[str, Any]:
    """What the run page, the run's API detail and its export say about the fact table the council was
    given: `state` (`locked`, `unlocked`, `none`, `not_started`, `before_fact_tables`), the lock, counts, and
    one sentence. A run may start on an unlocked table; it then says so everywhere."""
    given = run.facts_given or {}
    lock = given.get("lock") or None
    summary: dict[str, Any] = {
        "state": "",
        "locked": bool(lock),
        "locked_by": lock["by"] if lock else None,
        "locked_at": lock["at"] if lock else None,
        "recorded_at": given.get("at"),
        "facts": given.get("facts", 0),
        "corrected": given.get("corrected", 0),
    }
    if not given:
        if run.started_at is None:
            state = "not_started"
            sentence = "Not started yet: the council will be given the report's fact table as it is then."
        else:
            state = "before_fact_tables"
            sentence = (
                "Started before fact tables went into the prompts: the council had the report text only."
            )
    elif given.get("none"):
        state, sentence = "none", "The report had no fact table: the council had the report text only."
    elif lock:
        state = "locked"
        sentence = f"The council was given the fact table locked by {lock['by']} at {lock['at']}."
    else:
        state = "unlocked"
        corrected = summary["corrected"]
        sentence = (
            "Started on an unlocked fact table: the council was given the values as the page readers read "
            "them" + (f" ({corrected} corrected)" if corrected else "") + ", not a table a clinician had "
            "checked and locked."
        )
    return {**summary, "state": state, "sentence": sentence}
