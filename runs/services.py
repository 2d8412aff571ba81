"""Writes for runs: create, start, claim, advance, record, finish, select, export. Pages, the API and
`runpipeline` all call these; every one is short and autocommitted, never held across a model call."""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from council.stages import STEPS
from council.stages.stage2_peer_review import assign_labels
from documents.files import write_atomic
from jobs.models import Job
from jobs.services import Beat, dead_rows, job_cancel, job_heartbeat, job_submit
from patients.models import Patient, Report
from runs import events, selectors
from runs.models import Artifact, NumberAcknowledgement, Run

if TYPE_CHECKING:
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


def run_create(
    *,
    patient: Patient,
    report: Report,
    council_models: list[str],
    consolidator: str,
    user=None,
    available: set[str] | None = None,
) -> Run:
    """A new run over a ready report of this patient, with discovered models only (never a substitute)."""
    if report.patient_id != patient.pk:
        raise RunRefused(f"Report {report.pk} belongs to another patient, not to {patient.label}.")
    if report.status != Report.Status.READY:
        raise RunRefused(
            f"Report {report.pk} is not ready for the council (status: {report.get_status_display()})."
        )
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
    return Run.objects.create(
        patient=patient,
        report=report,
        council_models=models,
        consolidator=consolidator,
        label_map=assign_labels(models, order=order),
        prompt_versions=STEPS.prompt_versions(),
        created_by=user if user is not None and user.is_authenticated else None,
    )


RUNPIPELINE = "runpipeline"


def run_start(*, run: Run) -> bool:
    """Queue the run and submit its runner's job: launched at once if fewer than JOBS_MAX_RUNNING jobs are in
    flight, else when a slot frees. False when there was nothing to do (it is running or queued)."""
    runs_mark_stale_interrupted()
    run.refresh_from_db()
    if run.status in (Run.Status.RUNNING, Run.Status.QUEUED):
        return False
    if run.status == Run.Status.COMPLETE:
        raise RunRefused(
            f"Run {run.pk} is already complete. To redo stages on purpose: manage.py runpipeline {run.pk} "
            "--from-stage N.",
            status=409,
        )
    with transaction.atomic():
        queued = Run.objects.filter(pk=run.pk, status__in=Run.RESUMABLE).update(
            status=Run.Status.QUEUED, queued_at=timezone.now(), error=""
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


def run_reset_from_stage(*, run: Run, stage: int) -> int:
    """Forget stages >= `stage` (rows and files) so they are made again; returns how many artifacts went."""
    if stage not in STEPS:
        raise RunRefused(f"--from-stage takes a stage from {STEPS.number_range()}.")
    doomed = list(run.artifacts.filter(stage__gte=stage))
    with transaction.atomic():
        Artifact.objects.filter(pk__in=[a.pk for a in doomed]).delete()
        Run.objects.filter(pk=run.pk).update(
            stages_done=min(run.stages_done, stage - 1), current_stage=stage - 1
        )
    for artifact in doomed:
        if artifact.file_path:
            artifact.path.unlink(missing_ok=True)
    if run.selected_artifact_id in {a.pk for a in doomed}:
        # The export was of an artifact that no longer exists; it must not be downloadable as current.
        for name in Run.EXPORTS:
            run.export_path(name).unlink(missing_ok=True)
    run.refresh_from_db()
    return len(doomed)


def stage_begin(*, run_id: int, stage: int, models: list[str]) -> None:
    Run.objects.filter(pk=run_id).update(current_stage=stage)
    events.event_emit(run=run_id, kind=events.STAGE_STARTED, stage=stage, models=models)


def stage_end(*, run_id: int, stage: int, ok: int, failed: int, total: int, done: bool) -> None:
    """`done` means the stage's requirement holds, so a resumed run moves past it."""
    if done:
        Run.objects.filter(pk=run_id).update(stages_done=stage)
    events.event_emit(run=run_id, kind=events.STAGE_FINISHED, stage=stage, ok=ok, failed=failed, total=total)


def model_started(*, run_id: int, stage: int, model_id: str, attempt: int = 1) -> None:
    events.event_emit(run=run_id, kind=events.MODEL_STARTED, stage=stage, model_id=model_id, attempt=attempt)


@dataclass(frozen=True)
class Outcome:
    """What one (stage, model) call came to, as the runner hands it over for recording."""

    text: str | None  # None when the model failed
    usage: Usage | None = None
    error: str = ""  # the failure reason, or a caveat on an OK artifact


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


def runs_mark_stale_interrupted() -> int:
    """Runs whose runner died without a word (kill -9, a reboot, its host gone) or never started become
    interrupted, so they can resume. Dead is judged by the job's heartbeat (jobs/), wherever it ran. Writes by
    compare-and-set and launches nothing, so pages, the API and the stream call it before showing a run."""
    marked = 0
    candidates = Run.objects.filter(status__in=(Run.Status.RUNNING, Run.Status.QUEUED))
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
    *, run: Run, artifact: Artifact, text: str, acknowledge: Sequence[str] = (), user=None, doing: str
) -> None:
    """The one acknowledgement path (export and signing alike): `text` (the model's `artifact`, or a version
    edited from it) goes ahead only once each of its flagged numbers is acknowledged. `acknowledge` names
    numbers by key, recorded with `user` and the time; NumbersUnresolved lists the rest."""
    unresolved = selectors.unresolved_numbers(artifact, selectors.fact_table(run), text)
    wanted = set(acknowledge)
    for check in unresolved:
        if check.key in wanted:
            NumberAcknowledgement.objects.get_or_create(
                artifact=artifact,
                key=check.key,
                defaults={
                    "status": check.status,
                    "title": check.title(),
                    "by": user if getattr(user, "is_authenticated", False) else None,
                },
            )
    left = [check.as_dict() for check in unresolved if check.key not in wanted]
    if left:
        raise NumbersUnresolved(left, doing=doing)


def run_export(*, run: Run, acknowledge: Sequence[str] = (), user=None) -> ExportPaths:
    """Write final.md and final.pdf for the selected artifact (data/exports/<run_id>/). A text whose numbers
    were flagged against the fact table exports only once each flagged number is acknowledged (`acknowledge`
    names them by key, recorded with `user` and the time); otherwise NumbersUnresolved lists them."""
    from runs.exports import ExportError, export_run

    run.refresh_from_db()
    artifact = run.selected_artifact
    if artifact is None:
        raise RunRefused("Select a final draft (or the consolidation) before exporting.", status=409)
    from runs.versions import current_text

    # The text that is exported: the clinician's latest edit of the draft, else the model's text.
    numbers_acknowledge(
        run=run,
        artifact=artifact,
        text=current_text(run, artifact).text,
        acknowledge=acknowledge,
        user=user,
        doing="exporting",
    )
    try:
        paths = export_run(run=run, artifact=artifact)
    except ExportError as exc:
        raise RunRefused(str(exc)) from exc
    events.event_emit(run=run, kind=events.EXPORTED, artifact_id=artifact.pk)
    return paths
