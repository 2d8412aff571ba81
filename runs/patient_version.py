"""The patient version of a run: one model, chosen by the clinician, writes a plain-language summary for the
patient from the signed write-up; the clinician then reviews, edits and signs it like the write-up (it is a
DraftVersion of kind "patient": runs/versions.py), and exports it as its own PDF (runs/exports.py).

The writing is a job (jobs/): `manage.py patientversion <request id>` claims its PatientVersionRequest,
de-identifies the signed text through runs.sources (the one path) and sends it through the council client,
whose guard refuses anything still identifying. A web request only queues it, never waits on a model."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

import audit
from council import patient_version as council_patient
from council.client import UpstreamError
from council.deid import IdentifierRefused
from council.stages.base import CompletionClient, ModelFailed
from jobs.models import Job
from jobs.services import Beat, dead_rows, job_heartbeat, job_submit
from ledger import calls as ledger
from ledger.models import ModelCall
from runs import limits, pipeline, services, sources, versions
from runs.models import DraftVersion, PatientVersionRequest, Run

log = logging.getLogger(__name__)

PATIENT_VERSION = "patientversion"  # the job kind, and the manage.py command that does it
Request = PatientVersionRequest


def default_model(run: Run) -> str:
    """PATIENT_VERSION_MODEL when set, else the run's consolidator (it already read the whole report)."""
    return settings.PATIENT_VERSION_MODEL or run.consolidator


def model_choices(run: Run, discovered: list[str]) -> list[str]:
    """The models a clinician may choose: the run's own first (consolidator, then council), then every other
    model the upstream offers; only models it offers now."""
    own = [m for m in dict.fromkeys([default_model(run), run.consolidator, *run.council_models]) if m]
    return [m for m in own if m in discovered] + sorted(m for m in discovered if m not in own)


def latest_request(run: Run) -> PatientVersionRequest | None:
    return run.patient_requests.select_related("source").order_by("-created_at", "-pk").first()


def request_create(
    *,
    run: Run,
    model_id: str,
    user,
    available: set[str] | None = None,
    origin: tuple[str, str] | None = None,
) -> PatientVersionRequest:
    """Queue the writing of a patient version from the signed write-up by `model_id` (default: see
    default_model). Refused without a signed write-up, for a model the upstream does not offer, or while
    another request of this run is still being written, or (429) past the asker's model calls today.
    `origin`: where the asker's request came from (audit.origin_of), for the job's audit row."""
    requests_settle()
    source = versions.signed_write_up(run)
    if source is None:
        raise services.RunRefused(
            "Sign the write-up first: the patient version is written from the signed text.", status=409
        )
    model_id = (model_id or "").strip() or default_model(run)
    available = services.discovered_model_ids() if available is None else available
    if model_id not in available:
        listed = ", ".join(sorted(available)) or "none"
        raise services.RunRefused(
            f"Not offered by CLIProxyAPI right now: {model_id}. Discovered models: {listed}."
        )
    try:
        with transaction.atomic():
            services.run_check_limits(
                user=user,
                calls=limits.PATIENT_VERSION_CALLS,
                doing="Writing the patient version makes",
                starts_run=False,
            )
            request = PatientVersionRequest.objects.create(
                run=run,
                source=source,
                model_id=model_id,
                prompt_version=council_patient.PROMPT,
                requested_by=user if getattr(user, "is_authenticated", False) else None,
            )
            request.job = job_submit(kind=PATIENT_VERSION, args=[str(request.pk)], origin=origin)
            request.save(update_fields=["job"])
    except IntegrityError as error:
        busy = run.patient_requests.filter(status__in=PatientVersionRequest.ACTIVE).first()
        raise services.RunRefused(
            f"A patient version is already being written{f' by {busy.model_id}' if busy else ''}; "
            "wait for it to finish.",
            status=409,
        ) from error
    request.job.refresh_from_db()
    if request.job.status == Job.Status.LOST and request.job.error:  # the launch itself failed
        request_finish(request_id=request.pk, status=Request.Status.FAILED, error=request.job.error)
        raise services.RunRefused(request.job.error, status=503)
    return request


def requests_settle() -> int:
    """Requests whose writer died without a word (or never started) fail, saying so; asked again, a new
    request starts. Compare-and-set, launches nothing: pages and the API call it before they show one."""
    settled = 0
    for row, why in dead_rows(PatientVersionRequest.objects.filter(status__in=PatientVersionRequest.ACTIVE)):
        settled += PatientVersionRequest.objects.filter(
            pk=row.pk, status=row.status, job_id=row.job_id
        ).update(
            status=Request.Status.FAILED,
            error=f"{why} Nothing was written; ask again.",
            finished_at=timezone.now(),
        )
    return settled


def request_claim(*, request_id: int, job: Job) -> PatientVersionRequest | None:
    """Take a queued request for this runner (compare-and-set); None when it is not waiting for one."""
    taken = PatientVersionRequest.objects.filter(pk=request_id, status=Request.Status.QUEUED).update(
        status=Request.Status.RUNNING, job=job
    )
    if not taken:
        return None
    return PatientVersionRequest.objects.select_related("run__patient", "run__report", "source").get(
        pk=request_id
    )


def request_finish(*, request_id: int, status: str, error: str = "", called: bool = False, **fields) -> bool:
    """End a request; `called`: its model was asked (answered, failed or was stopped while it wrote), a
    call counted against whoever asked for it (ledger/calls.py), in the same transaction."""
    with transaction.atomic():
        updated = PatientVersionRequest.objects.filter(
            pk=request_id, status__in=PatientVersionRequest.ACTIVE
        ).update(status=status, error=error, finished_at=timezone.now(), **fields)
        if updated and called:
            row = PatientVersionRequest.objects.values("requested_by_id", "run_id", "model_id").get(
                pk=request_id
            )
            ledger.call_made(
                user_id=row["requested_by_id"],
                kind=ModelCall.Kind.PATIENT_VERSION,
                model_id=row["model_id"],
                run_id=row["run_id"],
            )
    return updated == 1


# -- the runner's side (manage.py patientversion) -----------------------------------------------------------


def prompt_inputs(request: PatientVersionRequest) -> tuple[str, dict[str, str]]:
    """The signed write-up and the clinical context as they are sent: de-identified by runs.sources with
    the report's identifiers and its `day 0` (the signed file is checked against its hash first)."""
    run = request.run
    text = versions.version_text(request.source)
    return sources.write_up_source(patient=run.patient, reports=run.report_list(), text=text)


def record(request: PatientVersionRequest, output) -> DraftVersion:
    """The model's summary as patient version N (by the model, from the signed write-up), and the request
    done."""
    version = versions.version_write(
        run=request.run,
        kind=DraftVersion.Kind.PATIENT,
        base=request.source.base,
        source=request.source,
        text=output.text,
        author=None,
        model_id=request.model_id,
    )
    usage = output.usage
    request_finish(
        request_id=request.pk,
        status=Request.Status.DONE,
        called=True,
        error=output.note,
        version=version,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency_ms=usage.latency_ms,
    )
    if request.requested_by is not None:
        audit.record(
            request.requested_by,
            "patient_version.written",
            version,
            origin=request.job.origin if request.job_id else None,  # where they asked from
            number=version.number,
            model=request.model_id[:200],
        )
    return version


async def write(request: PatientVersionRequest, *, job: Job, client: CompletionClient) -> str:
    """Have the model write it, heartbeating meanwhile; returns the request's final status. A cancel or a
    lost claim stops the call; the request then fails, saying so."""
    try:
        write_up, context = await sync_to_async(prompt_inputs)(request)
    except services.RunRefused as error:
        await sync_to_async(request_finish)(
            request_id=request.pk, status=Request.Status.FAILED, error=error.message
        )
        return Request.Status.FAILED
    work = asyncio.create_task(
        council_patient.write_patient_version(
            client,
            request.model_id,
            write_up=write_up,
            clinical_context=context,
            limits=pipeline.limits_from_settings(),
        )
    )
    beat = asyncio.create_task(_beat(job, work))
    try:
        output = await work
    except asyncio.CancelledError:
        why = beat.result() if beat.done() and not beat.cancelled() else None
        error = "Cancelled before the model finished." if why is Beat.CANCEL else "The writer was stopped."
        await sync_to_async(request_finish)(
            request_id=request.pk,
            status=Request.Status.FAILED,
            called=True,  # stopped while the model wrote: the call was made
            error=f"{error} Nothing was written; ask again.",
        )
        return Request.Status.FAILED
    except (ModelFailed, UpstreamError, IdentifierRefused) as failure:
        message = getattr(failure, "message", None) or str(failure)
        log.warning("patient version request %s failed: %s", request.pk, message)
        await sync_to_async(request_finish)(
            request_id=request.pk,
            status=Request.Status.FAILED,
            called=not isinstance(failure, IdentifierRefused),  # the guard's refusal sent nothing
            error=f"{request.model_id}: {message}",
        )
        return Request.Status.FAILED
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    await sync_to_async(record)(request, output)
    return Request.Status.DONE


async def _beat(job: Job, work: asyncio.Task) -> Beat:
    """Heartbeat until the work ends; a cancel or a lost claim stops it."""
    while True:
        await asyncio.sleep(settings.RUN_HEARTBEAT_SECONDS)
        beat = await sync_to_async(job_heartbeat)(job=job)
        if beat is not Beat.HELD:
            work.cancel()
            return beat
