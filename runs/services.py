"""Writes for runs: create, start, claim, advance, record, finish, select, export. Pages, the API and
`runpipeline` all call these; every one is short and autocommitted, never held across a model call."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

import audit
from council.stages import STEPS
from council.stages.registry import Step
from council.stages.stage2_peer_review import assign_labels, label_for
from documents.files import write_atomic
from jobs.models import Job
from jobs.services import Beat, dead_rows, job_cancel, job_heartbeat, job_submit
from ledger import calls as ledger
from ledger.models import ModelCall
from patients.models import Patient, Report
from patients.selectors import reports_history
from runs import events, limits, selectors
from runs.models import (
    Artifact,
    CouncilChange,
    DraftVersion,
    NumberAcknowledgement,
    Run,
    RunReport,
)

if TYPE_CHECKING:
    from council.client import RetryNotice
    from council.stages.base import Usage
    from runs.exports import ExportPaths

log = logging.getLogger(__name__)

# A run can be claimed by a runner from these; `--from-stage` may also re-open a complete run.
CLAIMABLE = (Run.Status.CREATED, Run.Status.QUEUED, *Run.RESUMABLE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RunRefused(Exception):
    """A request about a run that cannot be honoured as asked; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- files ------------------------------------------------------------------------------------------------


def safe_model_file(model_id: str) -> str:
    """A file name for a model id: the id itself when it is already plain, else a slug plus a short hash of
    the real id, so two ids never share a file and nothing ever points outside the stage folder."""
    slug = _UNSAFE.sub("-", model_id).strip(".-")[:80]
    if slug == model_id and slug.lower() not in ("", "con", "nul", "prn", "aux"):
        return slug
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{slug or 'model'}-{digest}"


def artifact_relpath(*, run_id: int, stage: int, model_id: str, kind: str) -> str:
    return f"artifacts/{run_id}/stage-{stage}/{safe_model_file(model_id)}.{kind}"


# -- creating and starting --------------------------------------------------------------------------------


def discovered_model_ids() -> set[str]:
    """Model ids CLIProxyAPI lists right now (GET /v1/models). Asked through the health check, not the
    completion client: the request that creates a run holds a web thread, so it gets one attempt with the
    short health timeout instead of the retries and the ten-minute read timeout meant for model calls."""
    from council.health import NO_MODELS, fresh_upstream_health

    health = async_to_sync(fresh_upstream_health)()
    if health.problem not in (None, NO_MODELS):
        raise RunRefused(
            f"Could not check the models with CLIProxyAPI: {health.message} {health.hint}", status=503
        )
    return set(health.model_ids)


# Reports one run may read: each adds its text to every prompt of the run.
MAX_REPORTS = 12


def run_reports(*, patient: Patient, reports: Sequence[Report]) -> list[Report]:
    """The reports a new run reads, checked, in timeline order (patients.selectors.reports_history): all of
    this patient, ready, none twice, no two with the same content."""
    chosen = list({report.pk: report for report in reports}.values())
    if not chosen:
        raise RunRefused("Choose at least one ready report of this patient.")
    if len(chosen) > MAX_REPORTS:
        raise RunRefused(f"A run reads at most {MAX_REPORTS} reports; {len(chosen)} were chosen.")
    first_with: dict[str, Report] = {}
    for report in chosen:
        if report.patient_id != patient.pk:
            raise RunRefused(f"Report {report.pk} belongs to another patient, not to {patient.label}.")
        if report.status != Report.Status.READY:
            raise RunRefused(
                f"Report {report.pk} is not ready for the council (status: {report.get_status_display()})."
            )
        same = first_with.setdefault(report.sha256, report)
        if same is not report:
            raise RunRefused(
                f"Reports {same.pk} and {report.pk} have the same content (the same file uploaded twice); "
                "choose one of them."
            )
    return reports_history(chosen).reports if len(chosen) > 1 else chosen


def run_create(
    *,
    patient: Patient,
    report: Report | None = None,
    reports: Sequence[Report] = (),
    council_models: list[str],
    consolidator: str,
    user=None,
    available: set[str] | None = None,
) -> Run:
    """A new run over ready reports of this patient (`report`, or several: `reports`, put on one timeline),
    with discovered models only (never a substitute)."""
    chosen = run_reports(patient=patient, reports=[*([report] if report else []), *reports])
    models = [model.strip() for model in council_models if model.strip()]
    consolidator = consolidator.strip()
    if not models:
        raise RunRefused("Choose at least one council model.")
    if len(set(models)) != len(models):
        raise RunRefused("Each council model may be chosen only once.")
    if len(models) > 26:
        raise RunRefused("A council has at most 26 models.")
    if not consolidator:
        raise RunRefused("Choose a consolidator.")
    available = discovered_model_ids() if available is None else available
    missing = [model for model in [*models, consolidator] if model not in available]
    if missing:
        listed = ", ".join(sorted(available)) or "none"
        raise RunRefused(
            f"Not offered by CLIProxyAPI right now: {', '.join(dict.fromkeys(missing))}. "
            f"Discovered models: {listed}."
        )
    # Labels are shuffled once per run, so "Analysis A" says nothing about which model wrote it.
    order = list(range(len(models)))
    random.SystemRandom().shuffle(order)
    with transaction.atomic():
        run = Run.objects.create(
            patient=patient,
            report=chosen[0],
            council_models=models,
            consolidator=consolidator,
            label_map=assign_labels(models, order=order),
            prompt_versions=STEPS.prompt_versions(),
            created_by=user if user is not None and user.is_authenticated else None,
        )
        RunReport.objects.bulk_create(
            [RunReport(run=run, report=r, position=i) for i, r in enumerate(chosen)]
        )
    return run


def run_check_limits(
    *, user: Any, calls: int, run: Run | None = None, doing: str = "This run makes", starts_run: bool = True
) -> None:
    """RunRefused (429) when `user` may not set `calls` more model calls going now (runs/limits.py)."""
    try:
        limits.check_start(user=user, calls=calls, leaving_out=run, doing=doing, starts_run=starts_run)
    except limits.LimitReached as exc:
        raise RunRefused(exc.message, status=429) from exc


RUNPIPELINE = "runpipeline"


def run_start(*, run: Run, reopen: bool = False, user: Any = None) -> bool:
    """Queue the run and submit its runner's job: launched at once if fewer than JOBS_MAX_RUNNING jobs are in
    flight, else when a slot frees. False when there was nothing to do (it is running or queued). `reopen`
    starts a complete run again (a council change gave it something more to ask). Refused (429) past the
    starter's limits (`user`, else whoever created the run; runs/limits.py), who its calls are charged to."""
    runs_mark_stale_interrupted()
    run.refresh_from_db()
    if run.status in (Run.Status.RUNNING, Run.Status.QUEUED):
        return False
    if run.status == Run.Status.COMPLETE and not reopen:
        raise RunRefused(
            f"Run {run.pk} is already complete. To redo stages on purpose: manage.py runpipeline {run.pk} "
            "--from-stage N.",
            status=409,
        )
    # One transaction (on SQLite it holds the write lock from the start): two starts cannot both pass.
    with transaction.atomic():
        starter = user if getattr(user, "is_authenticated", False) else run.created_by
        run_check_limits(user=starter, calls=limits.calls_to_come(run), run=run)
        startable = [*Run.RESUMABLE, Run.Status.COMPLETE] if reopen else Run.RESUMABLE
        queued = Run.objects.filter(pk=run.pk, status__in=startable).update(
            status=Run.Status.QUEUED, queued_at=timezone.now(), error="", started_by=starter
        )
        if not queued:
            return False  # someone else queued or claimed it between our read and write
        job = job_submit(kind=RUNPIPELINE, args=[str(run.pk)])
        Run.objects.filter(pk=run.pk).update(job=job)
        # Inside the transaction, so the event is written before the runner (launched on commit) writes its own.
        events.event_emit(run=run, kind=events.STATUS, status=Run.Status.QUEUED, error="")
    job.refresh_from_db()
    if job.status == Job.Status.LOST and job.error:  # the launch itself failed
        run_finish(run_id=run.pk, status=Run.Status.FAILED, error=job.error)
        raise RunRefused(job.error, status=503)
    run.refresh_from_db()
    return True


def run_cancel(*, run: Run) -> bool:
    """Stop a queued or running run; it ends `cancelled` and Start resumes it. A queued one stops at once; a
    running one when its runner next heartbeats (RUN_HEARTBEAT_SECONDS). False if it had already ended."""
    runs_mark_stale_interrupted()
    run.refresh_from_db()
    if run.status not in (Run.Status.QUEUED, Run.Status.RUNNING):
        raise RunRefused(
            f"Run {run.pk} is {run.get_status_display().lower()}; only a queued or running run can be cancelled.",
            status=409,
        )
    if run.job is None or not job_cancel(job=run.job):
        return False
    if run.status == Run.Status.QUEUED:
        # Its job never began, so no runner will say so: the run ends here (compare-and-set on the job).
        run_finish(run_id=run.pk, status=Run.Status.CANCELLED, error=CANCELLED, job=run.job, held=False)
    return True


CANCELLED = "Cancelled before it finished; finished calls are kept. Start the run again to resume."


# -- the runner's side ------------------------------------------------------------------------------------


def run_claim(*, run_id: int, job: Job, reopen_complete: bool = False) -> Run | None:
    """Take the run for this runner with a compare-and-set update; None if another runner has it (or it is
    not in a state a runner may take). `reopen_complete` is for `--from-stage` on a finished run."""
    statuses = [*CLAIMABLE, Run.Status.COMPLETE] if reopen_complete else list(CLAIMABLE)
    now = timezone.now()
    claimed = Run.objects.filter(pk=run_id, status__in=statuses).update(
        status=Run.Status.RUNNING, job=job, finished_at=None, error="", working_since=now
    )
    if claimed != 1:
        return None
    Run.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    events.event_emit(run=run_id, kind=events.STATUS, status=Run.Status.RUNNING, error="")
    return Run.objects.get(pk=run_id)


def run_heartbeat(*, run_id: int, job: Job) -> Beat:
    """Say this runner is alive; LOST when the job or the run is no longer ours (judged dead, taken over)."""
    beat = job_heartbeat(job=job)
    if (
        beat is not Beat.LOST
        and not Run.objects.filter(pk=run_id, status=Run.Status.RUNNING, job=job).exists()
    ):
        return Beat.LOST
    return beat


def run_facts_record(*, run: Run) -> dict:
    """Record, once, the fact table the council is given: a copy of the run's table (its report's, or its
    reports' merged: `runs.selectors.fact_table`) as it is when the run first starts (`Run.facts_given_path`) and, on the run, its lock, its size and how many values were
    corrected. A resumed or redone run keeps its record, so every call of a run is given the same numbers
    and starts with the same text; a correction or lock made after the start changes the number check (on
    read), not the prompts. Returns the record."""
    if run.facts_given:
        return run.facts_given
    table = selectors.fact_table(run)
    now = timezone.now().isoformat(timespec="seconds")
    if table is None:
        given = {"at": now, "none": True}
    else:
        rows = table.get("facts") or []
        write_atomic(run.facts_given_path, json.dumps(table, ensure_ascii=False).encode("utf-8"))
        given = {
            "at": now,
            "lock": table.get("lock") or None,
            "facts": len(rows),
            "corrected": sum(1 for fact in rows if fact.get("correction")),
        }
    Run.objects.filter(pk=run.pk).update(facts_given=given)
    run.facts_given = given
    return given


def run_reset_check(*, run: Run, stage: int) -> list[Artifact]:
    """The answers redoing stages >= `stage` would discard, or RunRefused: a stage that does not exist, or a
    draft among them that the clinician edited or signed (`versions_kept`)."""
    if stage not in STEPS:
        raise RunRefused(f"--from-stage takes a stage from {STEPS.number_range()}.")
    doomed = list(run.artifacts.filter(stage__gte=stage))
    redone = [s.number for s in STEPS if s.number >= stage]
    versions_kept(run=run, discard=doomed, doing=f"redoing {_stages_words(redone)}")
    return doomed


def run_reset_from_stage(*, run: Run, stage: int) -> int:
    """Forget stages >= `stage` (rows and files) so they are made again; returns how many artifacts went.
    Refused (RunRefused, nothing changed) when that would discard an edited or signed draft."""
    with transaction.atomic():
        # Checked inside the write transaction: no version can be saved between the check and the delete.
        doomed = run_reset_check(run=run, stage=stage)
        Artifact.objects.filter(pk__in=[a.pk for a in doomed]).delete()
        Run.objects.filter(pk=run.pk).update(
            stages_done=min(run.stages_done, stage - 1), current_stage=stage - 1
        )
    _discard_files(run, doomed)
    run.refresh_from_db()
    return len(doomed)


def stage_begin(*, run_id: int, stage: int, models: list[str]) -> None:
    Run.objects.filter(pk=run_id).update(current_stage=stage)
    events.event_emit(run=run_id, kind=events.STAGE_STARTED, stage=stage, models=models)


def stage_end(
    *, run_id: int, stage: int, ok: int, failed: int, total: int, done: bool, dropped: int = 0
) -> None:
    """`done` means the stage's requirement holds, so a resumed run moves past it."""
    if done:
        Run.objects.filter(pk=run_id).update(stages_done=stage)
    events.event_emit(
        run=run_id,
        kind=events.STAGE_FINISHED,
        stage=stage,
        ok=ok,
        failed=failed,
        total=total,
        dropped=dropped,
    )


def model_dropped(*, run_id: int, stage: int, model_id: str) -> None:
    """The runner abandoned the call of a model the council goes on without."""
    log.warning("run %s: stage %s model %s left out while it was being asked", run_id, stage, model_id)
    events.event_emit(run=run_id, kind=events.MODEL_DROPPED, stage=stage, model_id=model_id)


def run_caught_up(*, run_id: int, models: Sequence[str]) -> None:
    """The (re)joining `models` have been asked what they missed; they take part like the others from now."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        Run.objects.filter(pk=run_id).update(catch_up=[m for m in run.catch_up if m not in models])


def model_started(*, run_id: int, stage: int, model_id: str, attempt: int = 1) -> None:
    events.event_emit(run=run_id, kind=events.MODEL_STARTED, stage=stage, model_id=model_id, attempt=attempt)


def model_retrying(*, run_id: int, stage: int, model_id: str, notice: RetryNotice) -> None:
    """A call of this model failed in a way worth another attempt; the client waits, then tries again."""
    events.event_emit(
        run=run_id,
        kind=events.MODEL_RETRYING,
        stage=stage,
        model_id=model_id,
        status=notice.status,
        wait_seconds=round(notice.wait_seconds, 1),
        attempt=notice.attempt,
        max_attempts=notice.max_attempts,
        sentence=notice.sentence,
        error=notice.message,
    )


@dataclass(frozen=True)
class Outcome:
    """What one (stage, model) call came to, as the runner hands it over for recording."""

    text: str | None  # None when the model failed
    usage: Usage | None = None
    error: str = ""  # the failure reason, or a caveat on an OK artifact
    details: dict[str, Any] | None = None  # what the step read from the reply besides its text


@dataclass(frozen=True)
class StoredText:
    """An artifact's text, already on disk: where (relative to DATA_DIR) and its SHA-256."""

    relpath: str
    sha256: str


def artifact_store_text(*, run_id: int, stage: int, model_id: str, text: str) -> StoredText:
    """Write an answer's file (temp + fsync + rename). No database: the runner calls it from a thread of its
    own, so the answers of a stage are written side by side instead of one after another in Django's one
    sync thread; `artifact_record` then writes the row."""
    kind = STEPS.kind_of(stage).value
    relpath = artifact_relpath(run_id=run_id, stage=stage, model_id=model_id, kind=kind)
    data = text.encode("utf-8")
    write_atomic(settings.DATA_DIR / relpath, data)
    return StoredText(relpath=relpath, sha256=hashlib.sha256(data).hexdigest())


def artifact_record(
    *, run_id: int, stage: int, model_id: str, outcome: Outcome, stored: StoredText | None = None
) -> Artifact:
    """Record a finished call the moment it finishes: the file (unless `stored` says it is written already),
    then its row and its events in ONE transaction, so a killed runner leaves the row with its events or
    neither (a missing row means the call is asked again on resume; a file without a row is overwritten)."""
    kind = STEPS.kind_of(stage).value
    usage = outcome.usage
    fields = {
        "kind": kind,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "latency_ms": usage.latency_ms if usage else None,
        "attempts": usage.attempts if usage else 0,
        "endpoint": usage.endpoint if usage else "",
        "error": outcome.error,
        "details": outcome.details or {},
    }
    if outcome.text is not None:
        if stored is None:
            stored = artifact_store_text(run_id=run_id, stage=stage, model_id=model_id, text=outcome.text)
        fields |= {"file_path": stored.relpath, "sha256": stored.sha256, "status": Artifact.Status.OK}
    else:
        fields |= {"file_path": "", "sha256": "", "status": Artifact.Status.FAILED}
    with transaction.atomic():
        artifact, _ = Artifact.objects.update_or_create(
            run_id=run_id, stage=stage, model_id=model_id, defaults=fields
        )
        ledger.call_made(
            user_id=limits.charged_for(run_id),
            kind=ModelCall.Kind.STAGE,
            model_id=model_id,
            run_id=run_id,
            stage=stage,
        )
        if artifact.status == Artifact.Status.OK:
            tokens = (artifact.prompt_tokens or 0) + (artifact.completion_tokens or 0)
            events.event_emit(
                run=run_id,
                kind=events.ARTIFACT_WRITTEN,
                stage=stage,
                model_id=model_id,
                artifact_id=artifact.pk,
                artifact_kind=kind,
                tokens=tokens,
                latency_ms=artifact.latency_ms,
            )
            events.event_emit(
                run=run_id,
                kind=events.MODEL_FINISHED,
                stage=stage,
                model_id=model_id,
                artifact_id=artifact.pk,
                prompt_tokens=artifact.prompt_tokens,
                completion_tokens=artifact.completion_tokens,
                latency_ms=artifact.latency_ms,
                attempts=artifact.attempts,
            )
        else:
            events.event_emit(
                run=run_id, kind=events.MODEL_FAILED, stage=stage, model_id=model_id, error=outcome.error
            )
    if artifact.status != Artifact.Status.OK:
        log.warning("run %s: stage %s model %s failed: %s", run_id, stage, model_id, outcome.error)
    return artifact


def run_finish(
    *, run_id: int, status: str, error: str = "", job: Job | None = None, held: bool = True
) -> bool:
    """End a runner's work on the run. With `job`, only if that job still holds it (running, or with
    `held=False` queued for it)."""
    runs = Run.objects.filter(pk=run_id)
    if job is not None:
        runs = runs.filter(status=Run.Status.RUNNING if held else Run.Status.QUEUED, job=job)
    now = timezone.now()
    updated = runs.update(status=status, error=error, finished_at=now, **_work_ends(runs, now))
    if updated:
        events.event_emit(run=run_id, kind=events.STATUS, status=status, error=error)
    return updated == 1


def _work_ends(runs, end) -> dict:
    """The fields that close the current runner's working time at `end` (added to the run's total): the clock
    of the run page, the API and the export counts working time only, never the wait before a resume."""
    since = runs.values_list("working_since", flat=True).first()
    if since is None:
        return {}
    return {
        "worked_seconds": F("worked_seconds") + max(0.0, (end - since).total_seconds()),
        "working_since": None,
    }


# What runs_mark_stale_interrupted looks at: a run in one of these has a runner that may have died.
ACTIVE_STATUSES = frozenset({Run.Status.RUNNING, Run.Status.QUEUED})


def runs_mark_stale_interrupted() -> int:
    """Runs whose runner died without a word (kill -9, a reboot, its host gone) or never started become
    interrupted, so they can resume. Dead is judged by the job's heartbeat (jobs/), wherever it ran. Writes by
    compare-and-set and launches nothing, so pages, the API and the stream call it before showing a run."""
    marked = 0
    candidates = Run.objects.filter(status__in=ACTIVE_STATUSES)
    for row, why in dead_rows(candidates):
        reason = f"{why} Start the run again to resume; finished calls are kept."
        same = Run.objects.filter(pk=row.pk, status=row.status, job_id=row.job_id)
        # A silent runner worked until its last heartbeat; the silence after it is not working time.
        worked_until = row.job.heartbeat_at if row.job and row.job.heartbeat_at else timezone.now()
        updated = same.update(
            status=Run.Status.INTERRUPTED,
            error=reason,
            finished_at=timezone.now(),
            **_work_ends(same, worked_until),
        )
        if updated:
            marked += 1
            log.warning("run %s: marked interrupted: %s", row.pk, reason)
            events.event_emit(run=row.pk, kind=events.STATUS, status=Run.Status.INTERRUPTED, error=reason)
    return marked


# -- who takes part: continue without a model, ask one answer again, replace a model, rejoin -------------

Change = CouncilChange.Kind
# The audit action (audit/actions.py) pages and the API record for each kind of change.
CHANGE_AUDITED = {
    Change.DROP: "run.model_dropped",
    Change.REASK: "run.model_reasked",
    Change.REPLACE: "run.model_replaced",
    Change.REJOIN: "run.model_rejoined",
}


@dataclass(frozen=True)
class ChangePlan:
    """What a council change would do, worked out before anything is written: the pages put `sentence` in
    the confirmation, the API answers it for `dry_run`, and the change records it as confirmed."""

    kind: str
    stage: int
    model_id: str
    replacement: str = ""
    discard: tuple[Artifact, ...] = ()  # answers thrown away, to be asked again
    redone: tuple[int, ...] = ()  # later stages asked again for every model, because they read what changed
    joins: tuple[int, ...] = ()  # done stages in which a (re)joining model is asked its missing answer first
    sentence: str = ""
    fields: dict = field(default_factory=dict, compare=False)  # the run's new membership fields
    calls: int = 0  # model calls the run has to make once the change is made (runs/limits.change_calls)

    def as_dict(self) -> dict:
        return {
            "change": self.kind,
            "stage": self.stage,
            "model": self.model_id,
            "replacement": self.replacement,
            "discarded": len(self.discard),
            "redone_stages": list(self.redone),
            "catch_up_stages": list(self.joins),
            "estimated_calls": self.calls,
            "detail": self.sentence,
        }


def _stages_words(numbers: Sequence[int]) -> str:
    numbers = sorted(numbers)
    if not numbers:
        return ""
    if len(numbers) == 1:
        return f"Stage {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"Stages {numbers[0]} to {numbers[-1]}"
    return "Stages " + ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def _answers(count: int) -> str:
    return f"{count} answer{'s' if count != 1 else ''}"


def _redo(run: Run, artifacts: list[Artifact], stages: Sequence[int]) -> tuple[list[Artifact], list[int]]:
    """Every answer of every step that reads any of `stages` (directly or through another step): they are
    asked again once what they read has changed."""
    redone = sorted({reader.number for stage in stages for reader in STEPS.readers_of(stage)})
    return [a for a in artifacts if a.stage in redone], redone


def _next_stage(run: Run) -> int:
    """The stage a stopped run asks next (a running one: the stage it is asking now)."""
    if run.status == Run.Status.RUNNING and run.current_stage:
        return run.current_stage
    return min(run.stages_done + 1, STEPS.last.number)


def _member(run: Run, model_id: str) -> None:
    if model_id in run.council_models:
        return
    if model_id == run.consolidator:
        consolidating = [s.number for s in STEPS if s.by_consolidator]
        raise RunRefused(
            f"{model_id} is this run's consolidator, not a council member: replace it in "
            f"{_stages_words(consolidating)} instead."
        )
    raise RunRefused(f"{model_id} is not in this run's council ({', '.join(run.council_models)}).")


def _step(stage: int | None) -> Step:
    step = STEPS.get(stage)
    if step is None:
        raise RunRefused(f"Give a stage from {STEPS.number_range()}.")
    return step


def versions_kept(*, run: Run, discard: Sequence[Artifact], doing: str) -> None:
    """RunRefused (409) when discarding the answers `discard` would take with it a draft the clinician edited
    or signed: a saved version, signed above all, is never thrown away under them. The refusal names each
    version and who signed it; `doing` says what would discard them ("redoing Stages 5 to 6")."""
    held = list(
        DraftVersion.objects.filter(run=run, base__in=[a.pk for a in discard])
        .select_related("base")
        .order_by("base__stage", "base__model_id", "kind", "number")
    )
    if not held:
        return
    drafts: dict[int, list[DraftVersion]] = {}
    for version in held:
        drafts.setdefault(version.base_id, []).append(version)
    named = []
    for versions in drafts.values():
        base = versions[0].base
        kinds = []
        for kind in DraftVersion.Kind:
            mine = [v for v in versions if v.kind == kind]
            if not mine:
                continue
            noun = "write-up version" if kind == DraftVersion.Kind.CLINICIAN else "patient version"
            numbers = ", ".join(str(v.number) for v in mine)
            signed = [f"{v.number} signed by {v.signature_line()}" for v in mine if v.signed]
            kinds.append(
                f"{noun}{'s' if len(mine) > 1 else ''} {numbers} "
                + (f"({'; '.join(signed)})" if signed else "(not signed)")
            )
        named.append(
            f"{' and '.join(kinds)}, edited from {STEPS[base.stage].output_name(base.model_id)} "
            f"(Stage {base.stage})"
        )
    what = "a signed version" if any(v.signed for v in held) else "a saved version"
    raise RunRefused(
        f"Run {run.pk} holds the clinician's work on a draft this would discard: {'; '.join(named)}. "
        f"{doing[:1].upper()}{doing[1:]} would throw that draft away, and {what} is never discarded. "
        "Start a new run over the same reports instead.",
        status=409,
    )


def council_change_plan(
    *, run: Run, kind: str, model_id: str, stage: int | None = None, replacement: str = ""
) -> ChangePlan:
    """What `kind` (drop, reask, replace, rejoin) of `model_id` would do to `run`, or RunRefused (409 when
    the run's state forbids it now, 422 when it makes no sense) with the reason in words."""
    runs_mark_stale_interrupted()
    run.refresh_from_db()
    if kind not in Change.values:
        raise RunRefused(f"A council change is one of {', '.join(Change.values)}, not {kind!r}.")
    model_id, replacement = model_id.strip(), replacement.strip()
    if run.status == Run.Status.QUEUED:
        raise RunRefused(
            f"Run {run.pk} is waiting for its runner; cancel it first, or wait until it runs.", status=409
        )
    if run.status == Run.Status.RUNNING and kind != Change.DROP:
        raise RunRefused(
            f"Run {run.pk} is asking Stage {run.current_stage} ({STEPS.name_of(run.current_stage)}) right now: "
            "a running run can only go on without a model. Cancel it (or wait until it stops), then "
            f"{Change(kind).label.lower()}.",
            status=409,
        )
    plan = _plan(run, list(run.artifacts.all()), kind, model_id, stage, replacement)
    versions_kept(run=run, discard=plan.discard, doing=_doing(plan))
    return plan


def _doing(plan: ChangePlan) -> str:
    """A council change as a clause: "asking gpt-5 again in Stage 1"."""
    if plan.kind == Change.REASK:
        return f"asking {plan.model_id} again in Stage {plan.stage}"
    if plan.kind == Change.REPLACE:
        return f"putting {plan.replacement} in {plan.model_id}'s place from Stage {plan.stage}"
    return f"this change ({Change(plan.kind).label.lower()} {plan.model_id})"


def _plan(
    run: Run, artifacts: list[Artifact], kind: str, model_id: str, stage, replacement: str
) -> ChangePlan:
    planner = {
        Change.DROP: _plan_drop,
        Change.REASK: _plan_reask,
        Change.REPLACE: _plan_replace,
        Change.REJOIN: _plan_rejoin,
    }[Change(kind)]
    plan = planner(run, artifacts, model_id, stage, replacement)
    calls = limits.change_calls(run, artifacts, plan)
    about = f" About {calls} model call{'s' if calls != 1 else ''} to come." if calls else ""
    return dataclasses.replace(plan, calls=calls, sentence=plan.sentence + about)


REPLACEMENT = "the model you choose"  # how a replace plan names its replacement before one is chosen


def _offers(run: Run, artifacts: list[Artifact]):
    """`offer(kind, model, stage)`: the plan of a change the run page may offer now, or None. Never a change
    that would discard a draft the clinician edited; nothing while the run waits for its runner."""
    if all(hasattr(artifact, "edited") for artifact in artifacts):  # read with them (selectors.run_artifacts)
        edited = {artifact.pk for artifact in artifacts if artifact.edited}
    else:
        edited = set(DraftVersion.objects.filter(run=run).values_list("base_id", flat=True))

    def offer(kind: str, model: str, stage: int | None = None) -> ChangePlan | None:
        if run.status == Run.Status.QUEUED:
            return None
        try:
            plan = _plan(run, artifacts, kind, model, stage, REPLACEMENT if kind == Change.REPLACE else "")
        except RunRefused:
            return None
        return None if edited & {a.pk for a in plan.discard} else plan

    return offer


def member_choices(run: Run, artifacts: list[Artifact]) -> dict[str, list[ChangePlan]]:
    """Per council member, the changes of its membership the run page offers (continue without, rejoin), each
    with the sentence its confirmation shows."""
    offer = _offers(run, artifacts)
    plans = {
        model: [offer(kind, model) for kind in (Change.DROP, Change.REJOIN)] for model in run.council_models
    }
    return {model: [p for p in offered if p] for model, offered in plans.items()}


def answer_choices(run: Run, artifacts: list[Artifact], stage: int, model_id: str) -> list[ChangePlan]:
    """The changes of one answer the run page offers (ask again, replace); none while the run runs."""
    offer = _offers(run, artifacts)
    return [p for kind in (Change.REASK, Change.REPLACE) if (p := offer(kind, model_id, stage))]


def _plan_drop(run: Run, artifacts: list[Artifact], model_id: str, stage, replacement) -> ChangePlan:
    _member(run, model_id)
    if model_id in run.dropped:
        raise RunRefused(f"{model_id} was already left out from Stage {run.dropped[model_id]}.", status=409)
    if run.status == Run.Status.COMPLETE:
        raise RunRefused(
            f"Run {run.pk} is complete: nobody is asked anything more. To take out an answer of {model_id}, "
            "ask it again or put another model in its place in that stage.",
            status=409,
        )
    stage = _next_stage(run)
    left = [m for m in run.council_models if m != model_id and m not in run.dropped]
    if not left:
        raise RunRefused(f"Without {model_id} nobody would be left in the council; replace it instead.")
    now = "its call in flight is abandoned and " if run.status == Run.Status.RUNNING else ""
    sentence = (
        f"Continue without {model_id} from Stage {stage} ({STEPS.name_of(stage)}): {now}it is not asked "
        f"again; its earlier answers stay and are still read. The council goes on with {', '.join(left)}."
    )
    if model_id == run.consolidator:
        sentence += (
            " It is also the consolidator and still writes the consolidation unless you replace it there."
        )
    return ChangePlan(
        Change.DROP, stage, model_id, sentence=sentence, fields={"dropped": {**run.dropped, model_id: stage}}
    )


def _plan_reask(run: Run, artifacts: list[Artifact], model_id: str, stage, replacement) -> ChangePlan:
    step = _step(stage)
    answer = next((a for a in artifacts if a.stage == step.number and a.model_id == model_id), None)
    if answer is None:
        raise RunRefused(f"{model_id} has no answer in Stage {step.number} ({step.name}) to ask again.")
    if model_id in run.dropped and run.dropped[model_id] <= step.number:
        raise RunRefused(
            f"{model_id} was left out from Stage {run.dropped[model_id]}; let it rejoin first.", status=409
        )
    redo, redone = _redo(run, artifacts, [step.number])
    discard = (answer, *redo)
    sentence = f"Ask {model_id} again in Stage {step.number} ({step.name}); its answer there is discarded."
    if redone:
        sentence += (
            f" {_stages_words(redone)} read it, so they are redone for every model "
            f"({_answers(len(redo))} discarded); everything before is kept."
        )
    else:
        sentence += " Nothing later reads it; every other answer is kept."
    return ChangePlan(
        Change.REASK,
        step.number,
        model_id,
        discard=discard,
        redone=tuple(redone),
        sentence=sentence,
        fields={"stages_done": min(run.stages_done, step.number - 1)},
    )


def _plan_replace(run: Run, artifacts: list[Artifact], model_id: str, stage, replacement) -> ChangePlan:
    step = _step(stage)
    if not replacement:
        raise RunRefused("Choose the model to put in its place.")
    if replacement == model_id:
        raise RunRefused(f"{model_id} cannot replace itself; ask it again instead.")
    if step.by_consolidator:
        if model_id != run.consolidator:
            raise RunRefused(
                f"Stage {step.number} ({step.name}) is written by the consolidator, {run.consolidator}; "
                "replace that one."
            )
        stages = [s.number for s in STEPS if s.by_consolidator and s.number >= step.number]
        own = [
            a
            for a in artifacts
            if a.stage in stages and a.model_id == model_id and a.status == Artifact.Status.OK
        ]
        redo, redone = _redo(run, artifacts, stages)
        discard = (*own, *redo)
        sentence = f"{replacement} writes {_stages_words(stages)} ({step.name.lower()}) instead of {model_id}"
        fields = {"consolidator": replacement, "stages_done": min(run.stages_done, step.number - 1)}
        joins: tuple[int, ...] = ()
    else:
        _member(run, model_id)
        if model_id in run.dropped and run.dropped[model_id] < step.number:
            raise RunRefused(
                f"{model_id} was left out from Stage {run.dropped[model_id]}; replace it there.", status=409
            )
        if replacement in run.council_models:
            raise RunRefused(f"{replacement} is already in this run's council.")
        stages = [s.number for s in STEPS if not s.by_consolidator and s.number >= step.number]
        own = [
            a
            for a in artifacts
            if a.stage in stages and a.model_id == model_id and a.status == Artifact.Status.OK
        ]
        redo, redone = _redo(run, artifacts, [step.number])
        discard = tuple({a.pk: a for a in (*own, *redo)}.values())
        joins = tuple(s.number for s in STEPS if not s.by_consolidator and s.number < step.number)
        label = label_for(len(run.label_map))
        sentence = (
            f"Put {replacement} in {model_id}'s place from Stage {step.number} ({step.name}): {model_id} is not "
            f"asked again (its earlier answers stay), and {replacement} joins the council as {label}"
        )
        if joins:
            sentence += f", answering {_stages_words(joins)} first"
        fields = {
            "council_models": [*run.council_models, replacement],
            "label_map": {**run.label_map, label: replacement},
            "dropped": {**run.dropped, model_id: step.number},
            "catch_up": [*run.catch_up, replacement] if joins else run.catch_up,
            "stages_done": min(run.stages_done, step.number - 1),
        }
    if redone:
        sentence += (
            f". {_stages_words(redone)} read that, so they are redone for every model "
            f"({_answers(len(discard))} discarded)."
        )
    else:
        sentence += f" ({_answers(len(discard))} discarded)." if discard else "."
    return ChangePlan(
        Change.REPLACE,
        step.number,
        model_id,
        replacement,
        discard=discard,
        redone=tuple(redone),
        joins=joins,
        sentence=sentence,
        fields=fields,
    )


def _plan_rejoin(run: Run, artifacts: list[Artifact], model_id: str, stage, replacement) -> ChangePlan:
    _member(run, model_id)
    answered = {a.stage for a in artifacts if a.model_id == model_id and a.status == Artifact.Status.OK}
    missing = tuple(
        s.number
        for s in STEPS
        if not s.by_consolidator and s.number <= run.stages_done and s.number not in answered
    )
    if model_id not in run.dropped and not missing:
        raise RunRefused(
            f"{model_id} has an answer in every stage done so far; it has nothing to rejoin.", status=409
        )
    if model_id in run.catch_up:
        raise RunRefused(f"{model_id} is already waiting to rejoin.", status=409)
    sentence = f"{model_id} rejoins the council"
    if missing:
        sentence += (
            f": it is asked its missing answers in {_stages_words(missing)} first, then takes part in every "
            "later stage. What the others already did is kept, so their work in those stages does not "
            f"include {model_id}'s (ask a stage again to include it)."
        )
    else:
        sentence += " and takes part in every later stage."
    dropped = {m: s for m, s in run.dropped.items() if m != model_id}
    return ChangePlan(
        Change.REJOIN,
        min(missing) if missing else _next_stage(run),
        model_id,
        joins=missing,
        sentence=sentence,
        fields={"dropped": dropped, "catch_up": [*run.catch_up, model_id] if missing else run.catch_up},
    )


def council_change_preview(*, run: Run, user: Any, **change: Any) -> ChangePlan:
    """`council_change_plan`, and RunRefused (429) when `user` has not the model calls left today for what
    the change starts (runs/limits.py); what a dry run answers and what a change is made from."""
    plan = council_change_plan(run=run, **change)
    if run.status != Run.Status.RUNNING:  # the change starts it: its calls are this person's (a drop is not)
        run_check_limits(user=user, calls=plan.calls, run=run, doing="This change makes")
    return plan


def council_change(
    *,
    run: Run,
    kind: str,
    model_id: str,
    stage: int | None = None,
    replacement: str = "",
    reason: str = "",
    user=None,
    available: set[str] | None = None,
) -> tuple[CouncilChange, ChangePlan, bool]:
    """Make a council change (see `council_change_plan`) and hand the run to its runner: a stopped run is
    started (a job, jobs/), a running one hears of a drop at its next heartbeat. Returns the change, the plan
    it carried out and whether a runner was started."""
    reason = reason.strip()
    if len(reason) > 500:
        raise RunRefused(f"Say why in at most 500 characters (this is {len(reason)}).")
    if kind == Change.DROP and not reason:
        raise RunRefused("Say why the council goes on without it: the run card prints the reason.")
    plan = council_change_preview(
        run=run, kind=kind, model_id=model_id, stage=stage, replacement=replacement, user=user
    )
    if plan.replacement:
        available = discovered_model_ids() if available is None else available
        if plan.replacement not in available:
            raise RunRefused(f"Not offered by CLIProxyAPI right now: {plan.replacement}.")
    doomed = {a.pk for a in plan.discard}
    fields = dict(plan.fields)
    if run.selected_artifact_id in doomed:
        fields["selected_artifact"] = None
    with transaction.atomic():
        # The run is still as the plan saw it (no runner took it, no other change landed): read again under
        # the write lock (SQLite's IMMEDIATE transaction; a row lock on PostgreSQL), then write.
        now = Run.objects.select_for_update().get(pk=run.pk)
        if _membership(now) != _membership(run):
            raise RunRefused(f"Run {run.pk} changed meanwhile; look at it again.", status=409)
        versions_kept(run=run, discard=plan.discard, doing=_doing(plan))  # none saved since the plan
        Run.objects.filter(pk=run.pk).update(**fields)
        Artifact.objects.filter(pk__in=doomed).delete()
        change = CouncilChange.objects.create(
            run=run,
            kind=plan.kind,
            stage=plan.stage,
            model_id=plan.model_id,
            replacement=plan.replacement,
            reason=reason,
            summary=plan.sentence,
            discarded=len(doomed),
            by=user if getattr(user, "is_authenticated", False) else None,
            by_name=_signed_name(user),
        )
        events.event_emit(
            run=run, kind=events.COUNCIL_CHANGED, stage=plan.stage, model_id=plan.model_id, change=plan.kind
        )
    _discard_files(run, plan.discard)
    run.refresh_from_db()
    started = False
    if run.status != Run.Status.RUNNING:
        started = run_start(run=run, reopen=True, user=user)
    return change, plan, started


def _membership(run: Run) -> tuple:
    """What a council change was planned on; a running run's stages move on meanwhile, and may."""
    moving = run.status == Run.Status.RUNNING
    done = None if moving else (run.stages_done, run.selected_artifact_id)
    return (run.status, run.job_id, run.dropped, run.catch_up, run.council_models, run.consolidator, done)


def _signed_name(user) -> str:
    if not getattr(user, "is_authenticated", False):
        return ""
    from accounts.models import profile_of

    return profile_of(user).signature_line() or user.get_username()


def _discard_files(run: Run, artifacts: Sequence[Artifact]) -> None:
    """The files of discarded answers; the export too if it was of one of them (never downloadable as
    current once its text is gone)."""
    for artifact in artifacts:
        if artifact.file_path:
            artifact.path.unlink(missing_ok=True)
    if run.selected_artifact_id in {a.pk for a in artifacts}:
        for name in Run.EXPORTS:
            run.export_path(name).unlink(missing_ok=True)


# -- after the run: selection and export ------------------------------------------------------------------


def run_select(*, run: Run, artifact: Artifact) -> Run:
    """Persist the clinician's pick: an output of a selectable step (a final draft, the consolidation)."""
    if artifact.run_id != run.pk:
        raise RunRefused(f"Artifact {artifact.pk} is not part of run {run.pk}.")
    step = STEPS.get(artifact.stage)
    if step is None or not step.selectable:
        raise RunRefused(
            f"Only {STEPS.selectable_phrase()} can be selected; artifact {artifact.pk} "
            f"is Stage {artifact.stage} ({STEPS.name_of(artifact.stage)})."
        )
    if artifact.status != Artifact.Status.OK or not artifact.path.is_file():
        raise RunRefused(
            f"Artifact {artifact.pk} has no text to select (it failed: {artifact.error or 'no file'})."
        )
    Run.objects.filter(pk=run.pk).update(selected_artifact=artifact)
    events.event_emit(run=run, kind=events.SELECTED, artifact_id=artifact.pk)
    run.refresh_from_db()
    return run


class NumbersUnresolved(RunRefused):
    """A text has flagged numbers nobody acknowledged: `unresolved` lists them (Check.as_dict)."""

    def __init__(self, unresolved: list[dict], *, doing: str = "exporting") -> None:
        count = len(unresolved)
        super().__init__(
            f"{count} number{'s' if count != 1 else ''} of the selected text "
            f"{'do' if count != 1 else 'does'} not match the fact table: "
            f"acknowledge each one (or correct the text) before {doing}.",
            status=409,
        )
        self.unresolved = unresolved


def numbers_acknowledge(
    *,
    run: Run,
    artifact: Artifact,
    text: str,
    acknowledge: Sequence[str] = (),
    user=None,
    doing: str,
    kind: str = "clinician",
) -> None:
    """The one acknowledgement path (exporting and signing, the write-up and the patient version alike):
    `text` (the model's `artifact`, or a version of `kind` from it) goes ahead only once each of its flagged
    numbers is acknowledged. `acknowledge` names numbers by key, recorded with `user` and the time;
    each is also in the audit trail (`user` may be the
    request, which also says from where); NumbersUnresolved lists the rest."""
    by, user = user, user.user if isinstance(user, HttpRequest) else user
    unresolved = selectors.unresolved_numbers(artifact, selectors.fact_table(run), text, kind=kind)
    wanted = set(acknowledge)
    for check in unresolved:
        if check.key in wanted:
            _, created = NumberAcknowledgement.objects.get_or_create(
                artifact=artifact,
                kind=kind,
                key=check.key,
                defaults={
                    "status": check.status,
                    "title": check.title(),
                    "by": user if getattr(user, "is_authenticated", False) else None,
                },
            )
            if created:  # the number's place and text as the draft wrote it, and what the check said
                audit.record(by, "run.acknowledged", artifact, number=check.key[:200], status=check.status)
    left = [check.as_dict() for check in unresolved if check.key not in wanted]
    if left:
        raise NumbersUnresolved(left, doing=doing)


def run_export(*, run: Run, acknowledge: Sequence[str] = (), user=None) -> ExportPaths:
    """Write final.md and final.pdf for the selected artifact (data/exports/<run_id>/). A text whose numbers
    were flagged against the fact table exports only once each flagged number is acknowledged (`acknowledge`
    names them by key, recorded with `user`, a user or the request, and the time); otherwise
    NumbersUnresolved lists them."""
    from runs.exports import export_run

    run.refresh_from_db()
    artifact = _exported_text(run, acknowledge, user, kind="clinician")
    paths = _exporting(lambda: export_run(run=run, artifact=artifact))
    events.event_emit(run=run, kind=events.EXPORTED, artifact_id=artifact.pk)
    return paths


def patient_version_export(*, run: Run, acknowledge: Sequence[str] = (), user=None) -> ExportPaths:
    """Write patient.md and patient.pdf for the latest patient version: as for the write-up, only once each
    of its flagged numbers is acknowledged (the same path)."""
    from runs.exports import export_patient_version

    run.refresh_from_db()
    _exported_text(run, acknowledge, user, kind="patient")
    return _exporting(lambda: export_patient_version(run=run))


def _exported_text(run: Run, acknowledge: Sequence[str], user, *, kind: str) -> Artifact:
    """The selected artifact, once every flagged number of the text of `kind` exported from it (the latest
    version, else the model's draft) is acknowledged."""
    from runs.versions import current_text, refuse_raw_html

    artifact = run.selected_artifact
    if artifact is None:
        raise RunRefused("Select a final draft (or the consolidation) before exporting.", status=409)
    edited = current_text(run, artifact, kind)
    refuse_raw_html(edited, doing="exporting")  # before its numbers: they are not what would be exported
    numbers_acknowledge(
        run=run,
        artifact=artifact,
        text=edited.text,
        acknowledge=acknowledge,
        user=user,
        doing="exporting",
        kind=kind,
    )
    return artifact


def _exporting(export: Callable[[], ExportPaths]) -> ExportPaths:
    from runs.exports import ExportError

    try:
        return export()
    except ExportError as exc:
        raise RunRefused(str(exc)) from exc
