"""API endpoints for council runs, their artifacts, selection and export. Thin: services write, selectors
read. The live stream (/api/runs/{id}/stream) is in runs/stream.py."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import F, OuterRef, TextField
from django.db.models.functions import Cast, JSONObject
from django.http import FileResponse, HttpRequest, HttpResponse
from ninja import Router, Schema, Status
from ninja.errors import HttpError
from pydantic import BaseModel

import audit
from council.stages import STEPS
from patients import access as patient_access
from qeeg_site.json_rows import compiled, field_value, json_values
from runs import access, limits, patient_version, selectors, services, versions
from runs.models import Artifact, DraftVersion, PatientVersionRequest, Run, RunReport, elapsed_seconds

router = Router(tags=["runs"])


class RunIn(Schema):
    patient_id: int
    report_id: int | None = None  # one report, or
    report_ids: list[int] | None = None  # several of the patient's reports, put on one timeline
    council_models: list[str] | None = None  # default: COUNCIL_MODELS
    consolidator: str | None = None  # default: COUNCIL_CONSOLIDATOR


class RunSummary(BaseModel):
    # A plain pydantic model, not ninja's Schema: ninja's validator reads every field of every item through
    # its ORM-attribute getter in Python (a list of 200 runs: a third of its time); pydantic's own validates
    # the dicts built here in its compiled core. (Run lists give dicts, never model instances; a patient's
    # list is not validated at all but answered as built, in this schema's key order: see `_listed_run`.)

    id: int
    patient_id: int
    report_id: int  # the first of report_ids on the timeline
    report_ids: list[int]  # every report the run reads, in timeline order
    status: str
    status_display: str
    current_stage: int
    stages_done: int
    council_models: list[str]
    consolidator: str
    council_summary: str
    selected_artifact_id: int | None
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None  # working time: the runners' time on it, never the wait before a resume


class CouncilChangeRow(Schema):
    change: str  # drop | reask | replace | rejoin
    stage: int
    model_id: str
    replacement: str
    reason: str
    summary: str  # what it did, as confirmed
    discarded: int  # answers discarded to be asked again
    by: str
    at: datetime


class RunDetail(RunSummary):
    dropped: dict[str, int]  # model id → the stage from which it is no longer asked
    catch_up: list[str]  # models that (re)joined, answering what they missed first
    council_changes: list[CouncilChangeRow]
    label_map: dict[str, str]
    prompt_versions: dict[str, str]
    heartbeat_at: datetime | None
    stages: list[dict[str, Any]]
    votes: list[dict[str, Any]]
    exports: dict[str, str]
    # The fact table the council was given (recorded when the run first started): state, lock, counts and
    # the sentence the run page and the export print ("Started on an unlocked fact table: …").
    fact_table: dict[str, Any]
    estimated_calls: int  # model calls the whole run makes (one per stage and taker): what the quota counts


class StartOut(Schema):
    started: bool
    detail: str
    run: RunDetail


class CancelOut(Schema):
    cancelled: bool
    detail: str
    run: RunDetail


class ArtifactOut(Schema):
    id: int
    stage: int
    stage_name: str
    model_id: str
    label: str
    kind: str
    status: str
    error: str
    file_path: str
    sha256: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int | None
    attempts: int
    endpoint: str
    selectable: bool
    created_at: datetime


class ArtifactDetail(ArtifactOut):
    text: str
    data: dict[str, Any] | None  # a JSON step's output (peer review, final review): the validated JSON


class SelectIn(Schema):
    artifact_id: int


class ExportOut(Schema):
    artifact_id: int
    md_url: str
    pdf_url: str


class StageInputOut(Schema):
    stage: int
    key: str
    required: bool


class StageOut(Schema):
    number: int
    key: str
    name: str
    kind: str  # md | json
    output_schema: dict[str, Any] | None  # what a JSON step stores
    takers: str  # council | consolidator
    takers_with_output_of: str | None  # only members with an output of this earlier step
    takers_at_least: int  # fewer takers: the step is skipped
    inputs: list[StageInputOut]
    selectable: bool
    prompt: str
    requirement: str


def _run(request: HttpRequest, run_id: int, action: str = "view") -> Run:
    run = access.run_for(request.user, run_id, action, queryset=Run.objects.select_related("job"))
    # A run whose runner died is never returned as running: settled (a write, never a launch) and read again.
    if run.status in services.ACTIVE_STATUSES and services.runs_mark_stale_interrupted():
        run = access.run_for(request.user, run_id, action, queryset=Run.objects.select_related("job"))
    return run


def _refused(exc: services.RunRefused) -> HttpError:
    return HttpError(exc.status, exc.message)


# A summary's columns (as `.values()` names them); read alone for a list, no JSON of label maps decoded.
SUMMARY_FIELDS = (
    "id",
    "patient_id",
    "report_id",
    "status",
    "current_stage",
    "stages_done",
    "council_models",
    "consolidator",
    "selected_artifact_id",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "worked_seconds",
    "working_since",
    "dropped",
)
# Read for a summary, not shown in it as such.
_SUMMARY_INPUTS = ("worked_seconds", "working_since", "dropped")
# A list of runs is answered as built (see `_listed_run`): its keys in the schema's order, its times as text.
_LISTED_KEYS = tuple(RunSummary.model_fields)
_LISTED_TIMES = ("created_at", "started_at", "finished_at")
_json_time = DjangoJSONEncoder().default  # the text ninja's encoder (Django's) makes of a datetime
# get_status_display() builds the choices dict anew on every call.
STATUS_LABELS = {value: str(label) for value, label in Run.Status.choices}


def _summary(run: Run) -> dict[str, Any]:
    values = {name: getattr(run, name) for name in SUMMARY_FIELDS}
    report_ids = [link.report_id for link in run.report_links.all()]
    return _summary_of(values, selectors.council_summary(run), report_ids)


def _summary_of(values: dict[str, Any], council_summary: str, report_ids: list[int]) -> dict[str, Any]:
    """A run summary from the run's SUMMARY_FIELDS values and its reports' ids in order."""
    return {
        **{name: value for name, value in values.items() if name not in _SUMMARY_INPUTS},
        "report_ids": report_ids or [values["report_id"]],
        "status_display": STATUS_LABELS.get(values["status"], values["status"]),
        "council_summary": council_summary,
        "elapsed_seconds": elapsed_seconds(
            status=values["status"],
            started_at=values["started_at"],
            worked_seconds=values["worked_seconds"],
            working_since=values["working_since"],
        ),
    }


def _detail(run: Run) -> dict[str, Any]:
    progress = selectors.run_progress(run)
    exports = {name: f"/api/runs/{run.pk}/export/{name}" for name in run.exported_names()}
    return {
        **_summary(run),
        "dropped": run.dropped,
        "catch_up": run.catch_up,
        "council_changes": [
            {
                "change": c.kind,
                "stage": c.stage,
                "model_id": c.model_id,
                "replacement": c.replacement,
                "reason": c.reason,
                "summary": c.summary,
                "discarded": c.discarded,
                "by": c.by_name,
                "at": c.at,
            }
            for c in run.council_changes.all()
        ],
        "label_map": run.label_map,
        "prompt_versions": run.prompt_versions,
        "heartbeat_at": run.job.heartbeat_at if run.job else None,
        "stages": progress["stages"],
        "votes": selectors.final_votes(run),
        "exports": exports,
        "fact_table": selectors.facts_given_summary(run),
        "estimated_calls": limits.run_estimate(run),
    }


def _artifact(artifact: Artifact, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "id": artifact.pk,
        "stage": artifact.stage,
        "stage_name": STEPS.name_of(artifact.stage),
        "model_id": artifact.model_id,
        "label": labels.get(artifact.model_id, ""),
        "kind": artifact.kind,
        "status": artifact.status,
        "error": artifact.error,
        "file_path": artifact.file_path,
        "sha256": artifact.sha256,
        "prompt_tokens": artifact.prompt_tokens,
        "completion_tokens": artifact.completion_tokens,
        "latency_ms": artifact.latency_ms,
        "attempts": artifact.attempts,
        "endpoint": artifact.endpoint,
        "selectable": artifact.stage in {s.number for s in STEPS.selectable}
        and artifact.status == Artifact.Status.OK,
        "created_at": artifact.created_at,
    }


@router.get("/stages", response=list[StageOut])
def stages(request: HttpRequest):
    """The council's steps in run order, as the registry defines them (council/stages/)."""
    return [
        {
            "number": step.number,
            "key": step.key,
            "name": step.name,
            "kind": step.kind.value,
            "output_schema": step.schema.model_json_schema() if step.schema else None,
            "takers": step.takers.who.value,
            "takers_with_output_of": step.takers.with_output_of,
            "takers_at_least": step.takers.at_least,
            "inputs": [
                {"stage": STEPS[i.step].number, "key": i.step, "required": i.required} for i in step.inputs
            ],
            "selectable": step.selectable,
            "prompt": step.prompt,
            "requirement": STEPS.requirement(step),
        }
        for step in STEPS
    ]


@router.post("/runs", response={201: RunDetail})
def run_create(request: HttpRequest, payload: RunIn):
    access.require(request.user, *access.ACTIONS["start"])
    patient = patient_access.patient_in_reach(request.user, payload.patient_id)
    if patient is None:
        raise HttpError(422, f"There is no patient {payload.patient_id}.")
    if (payload.report_id is None) == (payload.report_ids is None):
        raise HttpError(422, "Give report_id (one report) or report_ids (several), not both.")
    wanted = [payload.report_id] if payload.report_id is not None else list(payload.report_ids or [])
    found = patient_access.reports_in_reach(request.user, wanted)
    if missing := [pk for pk in wanted if pk not in found]:
        raise HttpError(422, f"There is no report {', '.join(map(str, dict.fromkeys(missing)))}.")
    if len(set(wanted)) != len(wanted):
        raise HttpError(422, "Each report may be given only once.")
    try:
        run = services.run_create(
            patient=patient,
            reports=[found[pk] for pk in wanted],
            council_models=list(settings.COUNCIL_MODELS)
            if payload.council_models is None
            else payload.council_models,
            consolidator=payload.consolidator or settings.COUNCIL_CONSOLIDATOR,
            user=request.user,
        )
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "run.created", run)
    return Status(201, _detail(run))


@router.post("/runs/{run_id}/start", response={202: StartOut})
def run_start(request: HttpRequest, run_id: int):
    run = _run(request, run_id, "start")
    was = run.status
    try:
        started = services.run_start(run=run, user=request.user)
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    if started:
        audit.record(request, "run.started" if was == Run.Status.CREATED else "run.resumed", run)
    run.refresh_from_db()
    detail = (
        f"Started; follow it at /api/runs/{run.pk}/stream."
        if started
        else f"Nothing to do: the run is {run.status}."
    )
    return Status(202, {"started": started, "detail": detail, "run": _detail(run)})


@router.post("/runs/{run_id}/cancel", response={202: CancelOut})
def run_cancel(request: HttpRequest, run_id: int):
    """Stop a queued or running run: it ends `cancelled` (a running one at its runner's next heartbeat, within
    RUN_HEARTBEAT_SECONDS) and keeps its finished calls; start it again to resume. 409 if it is not
    queued or running."""
    run = _run(request, run_id, "cancel")
    try:
        cancelled = services.run_cancel(run=run)
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "run.cancelled", run)
    run.refresh_from_db()
    if run.status == Run.Status.CANCELLED:
        detail = "Cancelled; start it again to resume."
    elif cancelled:
        detail = (
            f"Cancelling: the runner stops at its next heartbeat; follow it at /api/runs/{run.pk}/stream."
        )
    else:
        detail = f"Nothing to cancel: the run is {run.status}."
    return Status(202, {"cancelled": cancelled, "detail": detail, "run": _detail(run)})


class CouncilChangeIn(Schema):
    model: str  # the council member (or, for replace in a consolidator's stage, the consolidator)
    stage: int | None = None  # reask and replace: the stage; drop and rejoin work it out
    replacement: str = ""  # replace: the model put in its place
    reason: str = ""  # why (required to go on without a model); printed on the run card
    dry_run: bool = False  # say what it would do and its `estimated_calls`, change nothing (429: over quota)


class CouncilChangeOut(Schema):
    done: bool
    started: bool  # a runner was started for it (a running run hears of a drop at its next heartbeat)
    detail: str
    plan: dict[str, Any]
    run: RunDetail


def _council_change(request: HttpRequest, run_id: int, kind: str, payload: CouncilChangeIn):
    run = _run(request, run_id, kind)
    change = {
        "kind": kind,
        "model_id": payload.model,
        "stage": payload.stage,
        "replacement": payload.replacement,
    }
    try:
        if payload.dry_run:
            plan = services.council_change_preview(run=run, user=request.user, **change)
            run.refresh_from_db()
            return Status(
                200,
                {
                    "done": False,
                    "started": False,
                    "detail": plan.sentence,
                    "plan": plan.as_dict(),
                    "run": _detail(run),
                },
            )
        made, plan, started = services.council_change(
            run=run, reason=payload.reason, user=request.user, **change
        )
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(
        request,
        services.CHANGE_AUDITED[kind],
        run,
        stage=made.stage,
        model=made.model_id,
        replacement=made.replacement,
    )
    run.refresh_from_db()
    return Status(
        202,
        {
            "done": True,
            "started": started,
            "detail": made.summary,
            "plan": plan.as_dict(),
            "run": _detail(run),
        },
    )


@router.post("/runs/{run_id}/drop", response={200: CouncilChangeOut, 202: CouncilChangeOut})
def run_drop_model(request: HttpRequest, run_id: int, payload: CouncilChangeIn):
    """Go on without a council member from the stage the run asks next (a running run: its call in flight is
    abandoned at the runner's next heartbeat). Needs a `reason`. 409 for a complete run."""
    return _council_change(request, run_id, "drop", payload)


@router.post("/runs/{run_id}/reask", response={200: CouncilChangeOut, 202: CouncilChangeOut})
def run_reask_model(request: HttpRequest, run_id: int, payload: CouncilChangeIn):
    """Ask one model again in one `stage`: its answer there and every answer of the later stages that read
    it are discarded and asked again (the plan lists them; `dry_run` to see it first). 409 while running."""
    return _council_change(request, run_id, "reask", payload)


@router.post("/runs/{run_id}/replace", response={200: CouncilChangeOut, 202: CouncilChangeOut})
def run_replace_model(request: HttpRequest, run_id: int, payload: CouncilChangeIn):
    """Put `replacement` in `model`'s place from `stage`: it joins with a new label (answering the earlier
    stages first), the replaced model is no longer asked, later stages that read the stage are redone."""
    return _council_change(request, run_id, "replace", payload)


@router.post("/runs/{run_id}/rejoin", response={200: CouncilChangeOut, 202: CouncilChangeOut})
def run_rejoin_model(request: HttpRequest, run_id: int, payload: CouncilChangeIn):
    """Let a model that failed (or was left out of) an early stage rejoin: its missing answers in the stages
    already done are asked first, then it takes part in the later stages; the others' answers are kept."""
    return _council_change(request, run_id, "rejoin", payload)


@router.get("/runs/{run_id}", response=RunDetail)
def run_detail(request: HttpRequest, run_id: int):
    return _detail(_run(request, run_id))


@router.get("/patients/{patient_id}/runs", response=list[RunSummary])
def patient_runs(request: HttpRequest, patient_id: int):
    # One query: each run's columns, its reports and what its council summary reads (its Stage 1 outputs and
    # failures), all as text the database writes; each run's answer is made from that text (`_listed_run`).
    reads = _list_reads(connection.vendor)
    rows = access.patient_run_rows(request.user, patient_id, ("status", "worked_seconds"), **reads)
    # A run whose runner died is never listed as running or queued: settled (and read again) when one of
    # these says so. Most lists have none, and the settling is a query of every active run in the clinic.
    if (
        any(row["status"] in services.ACTIVE_STATUSES for row in rows)
        and services.runs_mark_stale_interrupted()
    ):
        rows = access.patient_run_rows(request.user, patient_id, ("status", "worked_seconds"), **reads)
    listed = [
        # A running run's working time moves with the clock: made anew each time, never kept.
        (_listed_run.__wrapped__ if row["status"] == Run.Status.RUNNING else _listed_run)(
            row["worked_seconds"], *(row[name] for name in reads)
        )
        for row in rows
    ]
    # What ninja's renderer makes of the list of these objects (json.dumps' list separator).
    return HttpResponse("[" + ", ".join(listed) + "]", content_type=_api().get_content_type())


# A listed run's own columns (attnames), read as one JSON object, so that a run's whole answer depends on
# text alone; worked_seconds is read as itself (JSON text would round the float).
_LISTED_COLUMNS = tuple(
    name for name in SUMMARY_FIELDS if name not in ("council_models", "dropped", "worked_seconds")
)
_LISTED_FIELDS = {name: Run._meta.get_field(name) for name in _LISTED_COLUMNS}


@functools.cache
def _list_reads(vendor: str) -> dict[str, Any]:
    """The list's reads beside `status` and `worked_seconds`, compiled once per database (building them
    anew was a third of the request): a run's columns as one JSON object, its JSON columns as their text, its
    reports and its council summary's artifacts as JSON arrays (NULL when none)."""
    text = TextField()
    return compiled(
        Run,
        listed_columns=Cast(JSONObject(**{name: F(name) for name in _LISTED_COLUMNS}), text),
        listed_council=Cast("council_models", text),
        listed_dropped=Cast("dropped", text),
        listed_reports=Cast(
            json_values(RunReport.objects.filter(run=OuterRef("pk")), p="position", r="report_id"), text
        ),
        listed_outcomes=Cast(
            json_values(
                selectors.summary_artifacts().filter(run=OuterRef("pk")),
                stage="stage",
                model_id="model_id",
                status="status",
                error="error",
            ),
            text,
        ),
    )


# Listed runs' answers, kept by everything they are made from: a run changed in any way it shows, its
# council, its reports, a Stage 1 output or a failure of any stage, reads as other text, so it is made anew
# (nothing to invalidate). ~1.5 KB each with its key.
LISTED_RUNS_KEPT = 4096


@functools.lru_cache(maxsize=LISTED_RUNS_KEPT)
def _listed_run(
    worked_seconds: float, columns: str, council: str, dropped: str, reports: str | None, outcomes: str | None
) -> str:
    """One run of a patient's list, as ninja would write it validated as a RunSummary (the same bytes: keys in
    the schema's order, times as Django's encoder writes them; tests/test_run_list_json.py compares)."""
    values = {name: field_value(_LISTED_FIELDS[name], raw) for name, raw in json.loads(columns).items()}
    values.update(
        council_models=json.loads(council), dropped=json.loads(dropped), worked_seconds=worked_seconds
    )
    links = sorted(json.loads(reports or "[]"), key=lambda link: link["p"])
    artifacts = [selectors.Outcome(**outcome) for outcome in json.loads(outcomes or "[]")]
    summary = _summary_of(
        values,
        selectors.summary_text(values["council_models"], artifacts, values["dropped"]),
        [link["r"] for link in links],
    )
    for name in _LISTED_TIMES:
        if summary[name] is not None:
            summary[name] = _json_time(summary[name])
    return _api().renderer.render(None, {name: summary[name] for name in _LISTED_KEYS}, response_status=200)


def _api():
    from qeeg_site.api import api  # it imports this module's router

    return api


@router.get("/runs/{run_id}/artifacts", response=list[ArtifactOut])
def run_artifacts(request: HttpRequest, run_id: int):
    run = _run(request, run_id)
    labels = selectors.labels_by_model(run)
    return [_artifact(a, labels) for a in run.artifacts.all()]


@router.get("/runs/{run_id}/artifacts/{artifact_id}", response=ArtifactDetail)
def run_artifact(request: HttpRequest, run_id: int, artifact_id: int):
    artifact = access.artifact_for(request.user, run_id, artifact_id)
    audit.record(request, "artifact.viewed", artifact, stage=artifact.stage)
    parsed = selectors.artifact_parsed(artifact)
    return {
        **_artifact(artifact, selectors.labels_by_model(artifact.run)),
        "text": selectors.artifact_text(artifact),
        "data": parsed.model_dump() if parsed is not None else None,
    }


@router.post("/runs/{run_id}/select", response=RunDetail)
def run_select(request: HttpRequest, run_id: int, payload: SelectIn):
    run = _run(request, run_id, "select")
    # Out of the caller's reach is no artifact at all (the run's own check then names another run's).
    artifact = access.artifact_in_reach(request.user, payload.artifact_id)
    if artifact is None:
        raise HttpError(422, f"There is no artifact {payload.artifact_id}.")
    try:
        run = services.run_select(run=run, artifact=artifact)
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "run.selected", run, artifact=artifact.pk)
    return _detail(run)


def _acknowledged(request: HttpRequest) -> list[str]:
    """Keys of flagged numbers (from a 409 answer's `unresolved`) the clinician acknowledges: an optional
    JSON body `{"acknowledge": ["key", …]}`; no JSON body acknowledges nothing."""
    if request.content_type != "application/json" or not request.body.strip():
        return []
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        raise HttpError(422, f"The body is not JSON: {exc}.") from exc
    keys = body.get("acknowledge", []) if isinstance(body, dict) else None
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise HttpError(422, 'Send {"acknowledge": ["key", …]} with the keys of the numbers to acknowledge.')
    return keys


@router.post("/runs/{run_id}/export", response={200: ExportOut, 409: dict})
def run_export(request: HttpRequest, run_id: int):
    """Export the selected text. 409 lists its flagged numbers not yet acknowledged (`unresolved`, each
    with its `key`, status and nearest fact); post again with their keys in `acknowledge`."""
    run = _run(request, run_id, "export")
    try:
        services.run_export(run=run, acknowledge=_acknowledged(request), user=request)
    except services.NumbersUnresolved as exc:
        return Status(409, {"detail": exc.message, "unresolved": exc.unresolved})
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "run.exported", run, artifact=run.selected_artifact_id)
    return {
        "artifact_id": run.selected_artifact_id,
        "md_url": f"/api/runs/{run.pk}/export/{Run.EXPORT_MARKDOWN}",
        "pdf_url": f"/api/runs/{run.pk}/export/{Run.EXPORT_PDF}",
    }


@router.get("/runs/{run_id}/export/{name}")
def run_export_download(request: HttpRequest, run_id: int, name: str):
    run = _run(request, run_id)
    try:
        path = run.export_path(name)
    except ValueError as exc:
        raise HttpError(404, str(exc)) from exc
    if not path.is_file():
        raise HttpError(404, f"Run {run.pk} has not been exported yet: POST /api/runs/{run.pk}/export first.")
    content_type = Run.EXPORTS[name][1]
    audit.record(request, "export.downloaded", run, file=name)
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=f"run-{run.pk}-{name}", content_type=content_type
    )


# -- the clinician's write-up: versions and signatures -----------------------------------------------------


class VersionIn(Schema):
    text: str


class VersionOut(Schema):
    number: int
    artifact_id: int  # the model draft it was edited from
    sha256: str
    author: str
    created_at: datetime
    signed: bool
    signer_name: str
    signer_credentials: str
    signed_at: datetime | None
    numbers: dict[str, int] | None  # what the number check said of the text when it was saved
    kind: str  # clinician (the write-up) | patient (the patient version)
    model_id: str  # a patient version written by a model: which; "" when a person saved it
    source_version: int | None  # a patient version: the signed write-up version it was written from


class VersionDetail(VersionOut):
    text: str
    numbers_now: str  # the check on read (a correction of the fact table since the save shows here)
    unresolved: list[dict[str, Any]]  # flagged numbers not yet acknowledged: signing asks for each


def _version(version: DraftVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "artifact_id": version.base_id,
        "sha256": version.sha256,
        "author": version.author.get_username() if version.author else "",
        "created_at": version.created_at,
        "signed": version.signed,
        "signer_name": version.signer_name,
        "signer_credentials": version.signer_credentials,
        "signed_at": version.signed_at,
        "numbers": version.numbers,
        "kind": version.kind,
        "model_id": version.model_id,
        "source_version": version.source.number if version.source else None,
    }


def _versions(request: HttpRequest, run_id: int, kind: str) -> list[dict[str, Any]]:
    return [_version(v) for v in versions.versions_of(access.run_for(request.user, run_id), kind)]


def _version_save(request: HttpRequest, run_id: int, text: str, kind: str):
    try:
        version = versions.version_save(
            run=access.run_for(request.user, run_id, "edit"), text=text, user=request.user, kind=kind
        )
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "version.saved", version, number=version.number, kind=kind)
    return Status(201, _version(version))


def _version_detail(request: HttpRequest, run_id: int, number: int, kind: str) -> dict[str, Any]:
    run = access.run_for(request.user, run_id)
    version = (
        DraftVersion.objects.filter(run_id=run.pk, kind=kind, number=number).select_related("base").first()
    )
    if version is None:
        raise HttpError(404, f"Run {run_id} has no {versions.NOUN[kind]} version {number}.")
    try:
        text = versions.version_text(version)
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "version.viewed", version)
    checked = selectors.text_numbers(version.base, selectors.fact_table(run), text, kind=kind)
    return {
        **_version(version),
        "text": text,
        "numbers_now": checked.line,
        "unresolved": [check.as_dict() for check in checked.unresolved],
    }


def _version_sign(request: HttpRequest, run_id: int, number: int, kind: str):
    run = access.run_for(request.user, run_id, "sign")
    try:
        version = versions.version_sign(
            run=run, number=number, user=request.user, acknowledge=_acknowledged(request), kind=kind
        )
    except services.NumbersUnresolved as exc:
        return Status(409, {"detail": exc.message, "unresolved": exc.unresolved})
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "version.signed", version, number=version.number, kind=kind)
    return _version(version)


@router.get("/runs/{run_id}/versions", response=list[VersionOut])
def run_versions(request: HttpRequest, run_id: int):
    """The saved versions of the write-up (of the selected draft), oldest first (the export uses the last)."""
    return _versions(request, run_id, versions.CLINICIAN)


@router.post("/runs/{run_id}/versions", response={201: VersionOut})
def run_version_save(request: HttpRequest, run_id: int, payload: VersionIn):
    """Save the next version of the write-up; its numbers are checked as it is saved (`numbers`)."""
    return _version_save(request, run_id, payload.text, versions.CLINICIAN)


@router.get("/runs/{run_id}/versions/{number}", response=VersionDetail)
def run_version(request: HttpRequest, run_id: int, number: int):
    return _version_detail(request, run_id, number, versions.CLINICIAN)


@router.post("/runs/{run_id}/versions/{number}/sign", response={200: VersionOut, 409: dict})
def run_version_sign(request: HttpRequest, run_id: int, number: int):
    """Sign a version as the caller (name and credentials from their profile); only the latest, only once.
    As for an export, 409 lists its flagged numbers not yet acknowledged (`unresolved`); post again with
    their keys in `{"acknowledge": [...]}`."""
    return _version_sign(request, run_id, number, versions.CLINICIAN)


# -- the patient version: asked of one model, then versions and signatures as the write-up's -----------------


class PatientRequestIn(Schema):
    model_id: str | None = None  # default: PATIENT_VERSION_MODEL, else the run's consolidator


class PatientRequestOut(Schema):
    id: int
    model_id: str
    status: str  # queued | running | done | failed
    error: str
    source_version: int  # the signed write-up version it is written from
    version: int | None  # the patient version it wrote
    prompt_version: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int | None
    created_at: datetime
    finished_at: datetime | None


def _patient_request(row: PatientVersionRequest) -> dict[str, Any]:
    return {
        "id": row.pk,
        "model_id": row.model_id,
        "status": row.status,
        "error": row.error,
        "source_version": row.source.number,
        "version": row.version.number if row.version else None,
        "prompt_version": row.prompt_version,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "latency_ms": row.latency_ms,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


@router.post("/runs/{run_id}/patient-version/requests", response={202: PatientRequestOut})
def patient_version_ask(request: HttpRequest, run_id: int, payload: PatientRequestIn):
    """Ask one model to write the patient version from the signed write-up (de-identified first). It is
    written by a job; follow it with GET …/requests. 409 without a signed write-up or while one is being
    written; 422 for a model CLIProxyAPI does not offer."""
    run = _run(request, run_id, "ask")
    try:
        asked = patient_version.request_create(
            run=run, model_id=payload.model_id or "", user=request.user, origin=audit.origin_of(request)
        )
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "patient_version.requested", asked, model=asked.model_id[:200])
    return Status(202, _patient_request(asked))


@router.get("/runs/{run_id}/patient-version/requests", response=list[PatientRequestOut])
def patient_version_requests(request: HttpRequest, run_id: int):
    """Every request for a patient version of this run, newest first."""
    run = _run(request, run_id)
    patient_version.requests_settle()
    return [_patient_request(r) for r in run.patient_requests.select_related("source", "version")]


@router.get("/runs/{run_id}/patient-versions", response=list[VersionOut])
def patient_versions(request: HttpRequest, run_id: int):
    """The patient versions (of the selected draft), oldest first: the first a model wrote, then edits."""
    return _versions(request, run_id, versions.PATIENT)


@router.post("/runs/{run_id}/patient-versions", response={201: VersionOut})
def patient_version_save(request: HttpRequest, run_id: int, payload: VersionIn):
    """Save an edit of the patient version as its next version (numbers checked as it is saved)."""
    return _version_save(request, run_id, payload.text, versions.PATIENT)


@router.get("/runs/{run_id}/patient-versions/{number}", response=VersionDetail)
def patient_version_detail(request: HttpRequest, run_id: int, number: int):
    return _version_detail(request, run_id, number, versions.PATIENT)


@router.post("/runs/{run_id}/patient-versions/{number}/sign", response={200: VersionOut, 409: dict})
def patient_version_sign(request: HttpRequest, run_id: int, number: int):
    """Sign the latest patient version, as the write-up is signed (409 `unresolved` for flagged numbers)."""
    return _version_sign(request, run_id, number, versions.PATIENT)


@router.post("/runs/{run_id}/patient-version/export", response={200: ExportOut, 409: dict})
def patient_version_export(request: HttpRequest, run_id: int):
    """Export the latest patient version as patient.md and patient.pdf ("Draft — not signed" until it is).
    409 lists its flagged numbers not yet acknowledged, as for the write-up's export."""
    run = _run(request, run_id, "export")
    try:
        services.patient_version_export(run=run, acknowledge=_acknowledged(request), user=request.user)
    except services.NumbersUnresolved as exc:
        return Status(409, {"detail": exc.message, "unresolved": exc.unresolved})
    except services.RunRefused as exc:
        raise _refused(exc) from exc
    audit.record(request, "patient_version.exported", run, artifact=run.selected_artifact_id)
    return {
        "artifact_id": run.selected_artifact_id,
        "md_url": f"/api/runs/{run.pk}/export/{Run.EXPORT_PATIENT_MARKDOWN}",
        "pdf_url": f"/api/runs/{run.pk}/export/{Run.EXPORT_PATIENT_PDF}",
    }
