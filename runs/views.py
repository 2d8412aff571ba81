"""Pages for council runs: the run wizard on the patient page, the live run page, the stage readers, select
and export. Thin: services write, selectors and runs.reading read. A request from htmx gets only the fragment
it asked for, rendered from the same template the full page includes. Upstream models are read through
council.health (cached), never by HTTP from here."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.humanize.templatetags.humanize import apnumber
from django.db import connection
from django.db.models import OuterRef
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

import audit
from accounts.models import profile_of
from council import timeline
from council.health import UpstreamHealth, cached_upstream_health
from council.stages import STEPS
from council.stages.registry import Step
from documents.markdown import page_html
from jobs import selectors as job_selectors
from patients import access as patient_access
from patients import selectors as patient_selectors
from patients.forms import RedactionForm
from patients.models import Patient, Report
from qeeg_site.json_rows import compiled, instances, json_rows, prefetched
from qeeg_site.prepared import Prepared
from runs import access, limits, patient_version, reading, selectors, services, sources, versions
from runs.models import CouncilChange, PatientVersionRequest, Run, RunEvent, RunReport
from runs.stream import stream_url


def _posted_id(request: HttpRequest, name: str) -> int:
    """The id a form posted, or 0 (which matches nothing) when it is missing or not a number."""
    try:
        return int(request.POST.get(name, ""))
    except ValueError:
        return 0


def _posted_ids(request: HttpRequest, name: str) -> list[int]:
    """Every id posted under `name` (a checkbox list); anything not a number matches nothing (0)."""
    return _ids(request.POST.getlist(name))


def _ids(values: list[str]) -> list[int]:
    ids = []
    for value in values:
        try:
            ids.append(int(value))
        except ValueError:
            ids.append(0)
    return ids


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    services.runs_mark_stale_interrupted()
    runs = access.runs_for(request.user).select_related("patient", "report")
    runs = runs.prefetch_related("report_links__report")[:200]
    return render(request, "runs/list.html", {"runs": runs})


# -- the wizard on the patient page ------------------------------------------------------------------------


def _model_choices(health: UpstreamHealth) -> dict[str, Any]:
    """Discovered models, the configured council first; a configured model the upstream does not list is
    shown, disabled, so the clinician sees why it is missing (never swapped for a look-alike)."""
    discovered = health.model_ids
    configured = list(settings.COUNCIL_MODELS)
    ordered = [m for m in configured if m in discovered] + sorted(
        m for m in discovered if m not in configured
    )
    owners = {m.id: m.owned_by or "" for m in health.models}
    council = [{"id": m, "available": True, "checked": m in configured, **_owner(owners[m])} for m in ordered]
    council += [
        {"id": m, "available": False, "checked": False, **_owner("")}
        for m in configured
        if m not in discovered
    ]
    consolidator = settings.COUNCIL_CONSOLIDATOR
    return {
        "council_choices": council,
        "consolidator_choices": [{"id": m, **_owner(owners[m])} for m in ordered],
        "consolidator_default": consolidator,
        "consolidator_available": consolidator in discovered,
        "has_unavailable": any(not m["available"] for m in council),
    }


def _owner(owned_by: str) -> dict[str, Any]:
    """Who /v1/models says owns a model; one whose owner calls it fake (a stand-in that writes made-up text,
    like the project's fake upstream) is marked so nobody takes its output for a real model's."""
    return {"owner": owned_by, "fake": "fake" in owned_by.lower()}


def _panel_context(patient: Patient, health: UpstreamHealth, error: str = "") -> dict[str, Any]:
    services.runs_mark_stale_interrupted()
    reports = list(patient.reports.all())
    ready = [r for r in reports if r.status == Report.Status.READY]
    # The same file uploaded twice shows once as itself and then as "same content as report n".
    first_of: dict[str, Report] = {}
    for report in sorted(ready, key=lambda r: (r.created_at, r.pk)):
        report.same_as = first_of.setdefault(report.sha256, report)
        if report.same_as is report:
            report.same_as = None
        report.session_dates = _session_dates(report)
    return {
        "patient": patient,
        "ready_reports": ready,
        "default_report_id": next((r.pk for r in ready if r.same_as is None), None),
        "reports_unfinished": any(
            r.status in (Report.Status.PENDING, Report.Status.PROCESSING) for r in reports
        ),
        "patient_runs": list(
            patient.runs.select_related("report").prefetch_related("report_links__report")[:50]
        ),
        "upstream": health,
        "wizard_error": error,
        "stage_count": len(STEPS),
        "stage_count_words": apnumber(len(STEPS)),
        **_model_choices(health),
    }


def _session_dates(report: Report) -> list[date]:
    """The dates of the sessions a report prints (its fact table), for choosing reports to put together."""
    facts = (patient_selectors.report_facts(report) or {}).get("facts") or []
    dates, _ = timeline.session_dates(timeline.ReportFacts(report.pk, facts, order=settings.DEID_DATE_ORDER))
    return [dates[index] for index in sorted(dates)]


def _estimate_context(user: Any, health: UpstreamHealth) -> dict[str, Any]:
    """What the council checked by default will cost in model calls, and what the user has left today."""
    council = [m["id"] for m in _model_choices(health)["council_choices"] if m["checked"]]
    consolidator = settings.COUNCIL_CONSOLIDATOR
    # From councils of two and three: a council of one skips peer review, so it says nothing per member.
    two = limits.planned_calls(council=["a", "b"], consolidator=consolidator)
    three = limits.planned_calls(council=["a", "b", "c"], consolidator=consolidator)
    return {
        "call_estimate": limits.planned_calls(council=council, consolidator=consolidator),
        "calls_per_member": three - two,
        "calls_fixed": 3 * two - 2 * three,
        "quota": limits.quota(user),
    }


@require_GET
async def patient_runs_panel(request: HttpRequest, patient_id: int) -> HttpResponse:
    """The runs panel of the patient page: the wizard and this patient's runs. Async, so a slow upstream
    check never holds up the one thread Django shares between synchronous views."""
    health = await cached_upstream_health()

    def render_panel() -> str:
        patient = access.patient_runs_for(request.user, patient_id)
        context = {**_panel_context(patient, health), **_estimate_context(request.user, health)}
        return render_to_string("runs/_patient_runs.html", context, request=request)

    return HttpResponse(await sync_to_async(render_panel)())


@require_POST
def run_start_from_wizard(request: HttpRequest, patient_id: int) -> HttpResponse:
    if request.POST.get("preview"):  # the wizard's "What the council will see" button: no run is made
        patient = access.patient_runs_for(request.user, patient_id)
        wanted = _posted_ids(request, "reports") + _posted_ids(request, "report")
        if not wanted:
            messages.error(request, "Tick the reports the run would read first.")
            return _redirect(request, reverse("patients:detail", args=[patient.pk]) + "#runs-panel")
        query = urlencode([("reports", pk) for pk in dict.fromkeys(wanted)])
        return _redirect(request, reverse("runs:reports_preview", args=[patient.pk]) + "?" + query)
    patient = access.patient_runs_for(request.user, patient_id, "start")
    wanted = _posted_ids(request, "reports") + _posted_ids(request, "report")
    reports = list(patient_access.reports_in_reach(request.user, wanted, patient=patient).values())
    try:
        if not reports or len(reports) != len(set(wanted)):
            raise services.RunRefused("Choose a ready report of this patient, or several of them.")
        council = [m.strip() for m in request.POST.getlist("council_models") if m.strip()]
        consolidator = request.POST.get("consolidator", "").strip()
        calls = limits.planned_calls(council=council, consolidator=consolidator)
        services.run_check_limits(user=request.user, calls=calls)  # before a run exists to leave behind
        run = services.run_create(
            patient=patient,
            reports=reports,
            council_models=request.POST.getlist("council_models"),
            consolidator=request.POST.get("consolidator", ""),
            user=request.user,
        )
        audit.record(request, "run.created", run)
        services.run_start(run=run, user=request.user)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
        return _redirect(request, reverse("patients:detail", args=[patient.pk]) + "#runs-panel")
    audit.record(request, "run.started", run)
    count = len(reports)
    over = f" over {count} reports on one timeline" if count > 1 else ""
    messages.success(request, f"Run {run.pk} started{over}: {len(run.council_models)} council models.")
    return _redirect(request, reverse("runs:detail", args=[run.pk]))


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


# -- the live run page -------------------------------------------------------------------------------------


def _live_context(run: Run, user: Any = None) -> dict[str, Any]:
    # Read by the progress and here (and by the council changes offered): one query, not two.
    artifacts = {(a.stage, a.model_id): a for a in selectors.run_artifacts(run)}
    progress = selectors.run_progress(run)
    timings = reading.stage_timings(
        run, _page_rows(run, "stage_events", RunEvent, reading.STAGE_EVENT_FIELDS)
    )
    # The council changes this user may make now, each with what it would do (shown before confirming).
    can_change = user is not None and user.has_perm(access.ACTIONS["reask"][0])
    members = services.member_choices(run, list(artifacts.values())) if can_change else {}
    # Each answer's own changes are fetched when its "Ask again or replace…" is opened (run_answer_changes).
    answers_open = can_change and run.status not in (Run.Status.RUNNING, Run.Status.QUEUED)
    retries = selectors.retries_in_flight(run)
    now = timezone.now()
    stages = []
    for stage in progress["stages"]:
        step = STEPS[stage["stage"]]
        timing = timings.get(stage["stage"], {})
        started, finished = timing.get("started"), timing.get("finished")
        models = []
        for model in stage["models"]:
            artifact = artifacts.get((stage["stage"], model["model_id"]))
            latency = artifact.latency_ms if artifact and artifact.latency_ms is not None else None
            retry = retries.get((stage["stage"], model["model_id"])) if model["status"] == "running" else None
            if retry is not None:
                retry = {**retry, "ago": round((now - retry["at"]).total_seconds(), 1)}
            models.append(
                {
                    **model,
                    "latency": f"{latency / 1000:.1f} s" if latency is not None else "",
                    "changeable": answers_open and artifact is not None,
                    "retry": retry,
                }
            )
        stages.append(
            {
                **stage,
                "models": models,
                "started": started,
                "finished": finished,
                "seconds": round(((finished or now) - started).total_seconds(), 1) if started else None,
                "ticking": bool(started and not finished and run.status == Run.Status.RUNNING),
                "readable": any(m["artifact_id"] for m in models),
                "live_labels": reading.stage_page(step).live_labels,
            }
        )
    finished = run.status in Run.FINISHED
    waiting = run.status == Run.Status.QUEUED
    return {
        "run": run,
        "stages": stages,
        "stage_cards": [_stage_card_html(run.pk, get_script_prefix(), _frozen(stage)) for stage in stages],
        # The page says each failure as a sentence; the raw errors are one click away on the stage cards.
        "council_summary": selectors.council_summary(run, list(run.artifacts.all()), explained=True),
        "finished": finished,
        "resumable": run.status in Run.RESUMABLE,
        "elapsed_seconds": run.elapsed_seconds(now),  # working time: never the wait before a resume
        "member_changes": [
            (model, [_offer(run, plan) for plan in plans]) for model, plans in members.items() if plans
        ],
        "council_changes": list(run.council_changes.all()),
        # Queued: how long it has waited for its runner, and why (no free slot, its process still starting).
        "waiting_seconds": round((now - run.queued_at).total_seconds(), 1)
        if waiting and run.queued_at
        else None,
        "waiting_reason": job_selectors.wait_reason(run.job) if waiting else "",
        "exports": _exports(run),
        "stream_url": stream_url(run.pk),
        "selected_step": _selected_step(run),
        "selection_stage": STEPS.selection_step.number,
        "facts_given": selectors.facts_given_summary(run),
        # A finished run's page sums up where its council disagreed (the stage pages have the full tables).
        "disagreement_html": _disagreement_html(run, _frozen(_fields(run, list(artifacts.values()))))
        if finished
        else "",
    }


@functools.lru_cache(maxsize=2048)
def _stage_card_html(run_id: int, script_prefix: str, stage: tuple) -> str:
    # Rendering the six cards was most of the page's template time; a card is rendered again only when
    # something it shows changed (all it is given is its key: the stage as `_frozen` keeps it, the run and
    # the prefix its links are made with).
    return render_to_string("runs/_stage_card.html", {"s": _thawed(stage), "run_id": run_id})


class _KeptBy:
    """A cache key compared by `key` alone, that holds `run` only while its value is made: the cache keeps the
    first key of each entry, and a run read for a page holds its patient, reports, artifacts and events."""

    __slots__ = ("key", "run")

    def __init__(self, key: tuple, run: Run) -> None:
        self.key, self.run = key, run

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _KeptBy) and self.key == other.key


def _disagreement_html(run: Run, fields: tuple) -> str:
    kept = _KeptBy(fields, run)
    try:
        return _disagreement_kept(kept)
    finally:
        kept.run = None  # the entry keeps its key (the fields) and its HTML, never the run's rows


@functools.lru_cache(maxsize=256)
def _disagreement_kept(kept: _KeptBy) -> str:
    # The summary reads the run's Stage 2-6 artifacts back from disk and parses them, and with its table it
    # was a tenth of the page's CPU; done again only when the run or one of its artifacts changed: it is kept
    # by every field of both (`_fields`; an artifact's file is named and hashed in its row) and the prefix
    # its links are made with.
    run = kept.run
    summary = reading.disagreement_summary(run)
    if summary.empty:
        return ""
    return render_to_string("runs/_disagreement_summary.html", {"summary": summary, "run": run})


def _fields(run: Run, artifacts: list) -> dict[str, Any]:
    """The run's and its artifacts' every field, and the link prefix: what `_disagreement_html` is kept by."""
    return {
        "run": {f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields},
        "artifacts": [{f.attname: getattr(a, f.attname) for f in a._meta.concrete_fields} for a in artifacts],
        "prefix": get_script_prefix(),
    }


def _frozen(value: Any) -> Any:
    """Dicts, lists and plain values as nested tuples: hashable, and equal exactly when the values are (of
    the same types too: 1 and 1.0 and True are shown differently)."""
    if isinstance(value, dict):
        return (dict, tuple([(key, _frozen(item)) for key, item in sorted(value.items())]))
    if isinstance(value, list | tuple):
        return (type(value), tuple([_frozen(item) for item in value]))  # lists: no generator frame per item
    return (type(value), value)


def _thawed(frozen: tuple) -> Any:
    kind, value = frozen
    if kind is dict:
        return {key: _thawed(item) for key, item in value}
    if kind is list or kind is tuple:
        return kind(_thawed(item) for item in value)
    return value


def _page_rows(run: Run, name: str, model: type, fields: tuple[str, ...]) -> list | None:
    """The rows `_run(…, page=True)` read as `name` in the run's query, or None (a run read without them)."""
    return instances(model, getattr(run, name), *fields) if hasattr(run, name) else None


OFFER_LABELS = {"drop": "Continue without it", "reask": "Ask again", "replace": "Replace", "rejoin": "Rejoin"}


def _offer(run: Run, plan: services.ChangePlan) -> dict[str, Any]:
    """A council change as its button shows it: what it does, where it posts."""
    return {
        "kind": plan.kind,
        "label": OFFER_LABELS[plan.kind],
        "sentence": plan.sentence,
        "url": reverse(f"runs:{plan.kind}", args=[run.pk]),
        "model": plan.model_id,
        "stage": plan.stage if plan.kind in ("reask", "replace") else None,
    }


def _replacements(run: Run) -> list[str]:
    """Models a replace may choose: what CLIProxyAPI lists now (cached health), not already in the council."""
    health = async_to_sync(cached_upstream_health)()
    return sorted(m for m in health.model_ids if m not in run.council_models)


def _unresolved(run: Run) -> list:
    """The selected text's flagged numbers nobody acknowledged yet: exporting asks for each."""
    if run.selected_artifact is None:
        return []
    text = versions.current_text(run, run.selected_artifact).text
    return selectors.unresolved_numbers(run.selected_artifact, selectors.fact_table(run), text)


def _selected_step(run: Run) -> Step | None:
    return STEPS.get(run.selected_artifact.stage) if run.selected_artifact_id else None


def _exports(run: Run, names: tuple[str, ...] = Run.WRITE_UP_EXPORTS) -> dict[str, str]:
    """What the download buttons say → where they point, for the export files on disk (the write-up's, or
    the patient version's)."""
    return {
        Run.EXPORTS[name][0]: reverse("api:run_export_download", args=[run.pk, name])
        for name in run.exported_names(names)
    }


# What the run page shows of a run's council changes, read (with its stage events) in the run's own query.
_CHANGE_FIELDS = tuple(field.attname for field in CouncilChange._meta.concrete_fields)


@functools.cache
def _page_reads(vendor: str) -> dict[str, Any]:
    """The run page's stage events and council changes as JSON in the run's query, compiled once."""
    return compiled(
        Run,
        stage_events=json_rows(reading.stage_events(OuterRef("pk")), *reading.STAGE_EVENT_FIELDS),
        council_changes_read=json_rows(CouncilChange.objects.filter(run=OuterRef("pk")), *_CHANGE_FIELDS),
    )


# A run's reports with their rows, in order; compiled once (building the prefetch was ~1 ms a page).
_report_links = Prepared(
    lambda run_id: RunReport.objects.select_related("report").filter(run_id=run_id),
    RunReport._meta.get_field("run"),
)


def _run(request: HttpRequest, pk: int, action: str = "view", *, page: bool = False) -> Run:
    """The run, if this user may do `action` to it. `page`: with what the run page shows besides (its stage
    events and council changes) in the same query, so the page reads five tables in five queries."""

    def read() -> Run:
        rows = Run.objects.select_related("patient", "report", "selected_artifact", "job")
        if page:
            rows = rows.annotate(**_page_reads(connection.vendor))
        found = access.run_for(request.user, pk, action, queryset=rows)
        _report_links.prefetch(found, "report_links")  # read by the page in several places: one query
        if page:  # `run.council_changes.all()` answers from these, as from a prefetch
            changes = instances(CouncilChange, found.council_changes_read, *_CHANGE_FIELDS)
            changes.sort(key=lambda change: (change.at, change.pk))  # the model's ordering
            prefetched(found, "council_changes", changes)
        return found

    run = read()
    # Never shown running when its runner died: settled (a compare-and-set write, never a launch) and read
    # again. A finished run has no runner to look for.
    if run.status in services.ACTIVE_STATUSES and services.runs_mark_stale_interrupted():
        run = read()
    return run


@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    context = _live_context(_run(request, pk, page=True), request.user)
    if request.htmx:
        return render(request, "runs/_run_body.html", context)
    return render(request, "runs/detail.html", context)


@require_GET
def run_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The status and progress fragment the run page re-fetches when the stream says something happened."""
    return render(request, "runs/_live.html", _live_context(_run(request, pk, page=True), request.user))


@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk, "start")
    try:
        started = services.run_start(run=run, user=request.user)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        if started:
            audit.record(request, "run.resumed", run)
            messages.success(
                request, f"Run {run.pk} resumed: finished calls are kept, the rest are made now."
            )
        else:
            messages.info(request, f"Run {run.pk} is already {run.get_status_display().lower()}.")
    return _redirect(request, reverse("runs:detail", args=[run.pk]))


@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk, "cancel")
    try:
        services.run_cancel(run=run)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "run.cancelled", run)
        messages.info(request, f"Run {run.pk}: cancelling. Finished calls are kept; Resume continues it.")
    return _redirect(request, reverse("runs:detail", args=[run.pk]))


@require_GET
def run_answer_changes(request: HttpRequest, pk: int) -> HttpResponse:
    """The changes of one answer (`?stage=&model=`: ask again, replace), each with what it would do, for the
    run page's "Ask again or replace…" when it is opened."""
    run = _run(request, pk, "reask")
    try:
        stage = int(request.GET.get("stage", ""))
    except ValueError:
        stage = 0
    artifacts = selectors.run_artifacts(run)
    plans = services.answer_choices(run, artifacts, stage, request.GET.get("model", "")) if stage else []
    context = {
        "run": run,
        "offers": [_offer(run, plan) for plan in plans],
        "replacements": _replacements(run),
    }
    return render(request, "runs/_answer_changes.html", context)


@require_POST
def run_council_change(request: HttpRequest, pk: int, change: str) -> HttpResponse:
    """Go on without a model, ask one answer again, put another model in a model's place, or let a model
    rejoin (runs/services.council_change); the page confirmed what it does first."""
    run = _run(request, pk, change)
    try:
        made, _, started = services.council_change(
            run=run,
            kind=change,
            model_id=request.POST.get("model", ""),
            stage=_posted_id(request, "stage") or None,
            replacement=request.POST.get("replacement", ""),
            reason=request.POST.get("reason", ""),
            user=request.user,
        )
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(
            request,
            services.CHANGE_AUDITED[change],
            run,
            stage=made.stage,
            model=made.model_id,
            replacement=made.replacement,
        )
        then = " The runner has started." if started else ""
        messages.success(request, f"{made.summary}{then}")
    return _redirect(request, reverse("runs:detail", args=[run.pk]))


# -- reading the stages ------------------------------------------------------------------------------------


@require_GET
def run_stage(request: HttpRequest, pk: int, stage: int) -> HttpResponse:
    step = STEPS.get(stage)
    if step is None:
        raise Http404(f"Stages are numbered {STEPS.number_range()}.")
    run = _run(request, pk)
    page = reading.stage_page(step)
    context: dict[str, Any] = {
        "run": run,
        "stage": step.number,
        "step": step,
        "stage_name": step.name,
        "stage_tabs": [{"number": s.number, "name": s.name} for s in STEPS],
        "stage_template": page.template,
        "label_map": sorted(run.label_map.items()),
        "exports": _exports(run),
        "selected_step": _selected_step(run),
        "unresolved": _unresolved(run) if step.number == STEPS.selection_step.number else [],
        **page.context(run, step),
    }
    audit.record(request, "artifact.viewed", run, stage=step.number)
    if request.htmx:
        return render(request, "runs/_stage.html", context)
    return render(request, "runs/stage.html", context)


# -- select and export -------------------------------------------------------------------------------------


@require_POST
def run_select(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk, "select")
    posted = _posted_id(request, "artifact")
    artifact = access.artifact_in_reach(request.user, posted) if posted else None
    try:
        if artifact is None or artifact.run_id != run.pk:
            raise services.RunRefused("Choose a final draft or the consolidation of this run.")
        services.run_select(run=run, artifact=artifact)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "run.selected", run, artifact=artifact.pk)
        who = STEPS[artifact.stage].output_name(artifact.model_id)
        messages.success(request, f"Selected {who}. Export it to get the Markdown and PDF.")
    return _redirect(
        request, reverse("runs:stage", args=[run.pk, STEPS.selection_step.number]) + "#selection"
    )


@require_POST
def run_export(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk, "export")
    try:
        services.run_export(run=run, acknowledge=request.POST.getlist("acknowledge"), user=request)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "run.exported", run, artifact=run.selected_artifact_id)
        messages.success(request, "Exported: download the Markdown or the PDF below.")
    return _redirect(
        request, reverse("runs:stage", args=[run.pk, STEPS.selection_step.number]) + "#selection"
    )


# -- what the council will see ---------------------------------------------------------------------------


@require_GET
def report_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The report as every stage gets it (de-identified text, context, page images), beside the original,
    with the redactions that apply and a form to add one. Built by the same function the pipeline uses."""
    report = access.report_for_runs(request.user, pk)
    if report.status != Report.Status.READY:
        raise Http404("The report is not read yet; there is nothing the council would see.")
    source = sources.council_source(patient=report.patient, report=report)
    audit.record(request, "deid.preview_viewed", report)
    return _preview(request, source=source, reports=[report], report=report, heading=report.original_name)


@require_GET
def run_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """What every stage of run `pk` is given: all its reports as the council gets them (one timeline, each
    report's text under its header, the merged fact table; one report: the table the run recorded)."""
    run = access.run_for(request.user, pk)
    reports = run.report_list()
    if unread := [r.original_name for r in reports if r.status != Report.Status.READY]:
        raise Http404(f"{', '.join(unread)} is being read again; there is nothing the council would see yet.")
    source = sources.run_source(run)
    audit.record(request, "deid.preview_viewed", run, reports=[r.pk for r in reports])
    return _preview(request, source=source, reports=source.history.reports, run=run, heading=f"Run {run.pk}")


@require_GET
def reports_preview(request: HttpRequest, patient_id: int) -> HttpResponse:
    """What a run over the reports ticked in the wizard (`?reports=1&reports=2`) would give every stage,
    before it is made: the same checks and the same function as a run's."""
    patient = access.patient_runs_for(request.user, patient_id)
    wanted = list(dict.fromkeys(_ids(request.GET.getlist("reports"))))
    if not wanted:
        return _refused_page("Choose the reports (reports=<id>, one or more) a run would read.")
    reports = list(patient_access.reports_in_reach(request.user, wanted, patient=patient).values())
    if len(reports) != len(wanted):
        raise Http404(
            f"{patient.label} has no report {', '.join(map(str, sorted(set(wanted) - {r.pk for r in reports})))}."
        )
    try:
        reports = services.run_reports(patient=patient, reports=reports)
    except services.RunRefused as exc:
        return _refused_page(exc.message, status=exc.status)
    source = sources.council_source(patient=patient, reports=reports, ordered=True)
    audit.record(request, "deid.preview_viewed", patient, reports=[r.pk for r in reports])
    count = len(reports)
    heading = f"A run over {count} reports" if count > 1 else f"A run over {reports[0].original_name}"
    return _preview(request, source=source, reports=reports, heading=heading)


def _refused_page(message: str, *, status: int = 422) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _preview(
    request: HttpRequest,
    *,
    source: sources.CouncilSource,
    reports: list[Report],
    heading: str,
    report: Report | None = None,
    run: Run | None = None,
) -> HttpResponse:
    """The "What the council will see" page of one report, a run, or the wizard's choice (runs/report_preview.html)."""
    patient = reports[0].patient
    history = source.history
    images = []
    for image in source.images:
        # Several reports: a page number of the run (numbered on across them) is one page of one report.
        where = history.page_of(image.page) if history is not None and len(reports) > 1 else None
        shown, own = where if where is not None else (reports[0], image.page)
        images.append({"image": image, "report": shown, "own_page": own})
    tables = history.tables if history is not None else {}
    redactions = patient.redactions.filter(report__isnull=True) | patient.redactions.filter(
        report__in=reports
    )
    context = {
        "heading": heading,
        "report": report,
        "run": run,
        "reports": reports,
        "patient": patient,
        "source": source,
        "pages": sources.preview_pages(source.original, source.report),
        "entered_context": patient.clinical_context(),
        "replaced": sorted(source.report.replaced.items()),
        "images": images,
        "table_states": [
            {
                "report": r,
                "lock": (tables.get(r.pk) or {}).get("lock"),
                "has_table": tables.get(r.pk) is not None,
            }
            for r in reports
        ],
        "redactions": redactions.select_related("report"),
        "redaction_form": RedactionForm(),
        "page_images_setting": settings.DEID_PAGE_IMAGES,
        "page_images_limit": settings.COUNCIL_PAGE_IMAGES,
    }
    return render(request, "runs/report_preview.html", context)


@require_GET
@never_cache
def report_preview_page(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """One page image exactly as it would be sent: painted out; 404 for a page that would not be sent."""
    report = access.report_for_runs(request.user, pk)
    if number not in sources.pages_to_send(report):
        raise Http404("This page image is not sent to the council.")
    png, decision = sources.painted_page(report, number, sources.identifiers_for(report.patient, report))
    if png is None:
        raise Http404(f"This page image is not sent: {decision.reason}.")
    audit.record(request, "deid.preview_viewed", report, page=number)
    return HttpResponse(png, content_type="image/png")


# -- edit and sign the write-up and the patient version ----------------------------------------------------
# One set of views for both kinds of signed text (runs/versions.py); runs/urls.py passes `kind`.

CLINICIAN, PATIENT = versions.CLINICIAN, versions.PATIENT
# The route names of each kind's pages, for the one template.
ROUTES = {
    CLINICIAN: {
        "page": "runs:write_up",
        "preview": "runs:write_up_preview",
        "save": "runs:write_up_save",
        "sign": "runs:write_up_sign",
        "version": "runs:write_up_version",
    },
    PATIENT: {
        "page": "runs:patient_version",
        "preview": "runs:patient_version_preview",
        "save": "runs:patient_version_save",
        "sign": "runs:patient_version_sign",
        "version": "runs:patient_version_version",
    },
}


def _write_up_context(
    request: HttpRequest, run: Run, *, kind: str, text: str | None = None, error: str = ""
) -> dict[str, Any]:
    """The editor of `kind`: the current text (or what was just posted and refused), its preview with the
    numbers the check flags, the versions and the diff of the current text against what the model wrote.
    The patient version's page also has what it needs to ask a model for one, and to export it."""
    context: dict[str, Any] = {
        "run": run,
        "kind": kind,
        "routes": ROUTES[kind],
        "noun": versions.NOUN[kind],
        "max_chars": versions.MAX_VERSION_CHARS,
        "error": error,
        "profile": profile_of(request.user),
        "edited": None,
    }
    if kind == PATIENT:
        context |= _patient_context(run)
        # What asking costs, shown before asking (runs/limits.py).
        context |= {"patient_calls": limits.PATIENT_VERSION_CALLS, "quota": limits.quota(request.user)}
        if context["patient_versions"] == 0:
            return context  # nothing to edit until a model has written it
    edited = versions.current_text(run, kind=kind)
    shown = edited.text if text is None else text
    diff, added, removed = reading.draft_diff(versions.model_text(run, kind), shown)
    history = versions.versions_of(run, kind)
    latest = history[-1] if history else None
    checked = selectors.text_numbers(edited.artifact, selectors.fact_table(run), shown, kind=kind)
    return context | {
        "edited": edited,
        "text": shown,
        "preview": reading.rendered(shown, selectors.run_page_url(run), checked.checks),
        "numbers": checked,
        "diff": diff,
        "added": added,
        "removed": removed,
        "versions": list(reversed(history)),
        "latest": latest,
        "can_sign": latest is not None and not latest.signed and text is None,
        # Signing asks for these, as the export does: the latest version's flagged numbers not acknowledged.
        "unresolved": checked.unresolved if text is None else [],
        "draft_name": STEPS[edited.artifact.stage].output_name(edited.artifact.model_id),
    }


def _patient_context(run: Run) -> dict[str, Any]:
    """Asking for a patient version (which model, the last request and how it went) and exporting it."""
    patient_version.requests_settle()
    # The models offered now (cached; one short check at most), for the choice of writer.
    health = async_to_sync(cached_upstream_health)()
    choices = patient_version.model_choices(run, list(health.model_ids))
    signed = versions.signed_write_up(run)
    latest = versions.latest_version(run, kind=PATIENT)
    return {
        "signed_write_up": signed,
        "patient_request": patient_version.latest_request(run),
        "model_choices": choices,
        "default_model": patient_version.default_model(run),
        "patient_versions": len(versions.versions_of(run, PATIENT)),
        # Written from an earlier signed write-up than the one that stands now: say so.
        "stale_source": latest is not None and signed is not None and latest.source_id != signed.pk,
        "patient_exports": _exports(run, Run.PATIENT_EXPORTS),
    }


def _to_selection(request: HttpRequest, run: Run, message: str) -> HttpResponse:
    messages.error(request, message)
    return _redirect(
        request, reverse("runs:stage", args=[run.pk, STEPS.selection_step.number]) + "#selection"
    )


def _write_up_page(request: HttpRequest, run: Run, *, kind: str, **kwargs: Any) -> HttpResponse:
    if run.selected_artifact_id is None:
        return _to_selection(request, run, "Select a final draft (or the consolidation) before editing it.")
    try:
        context = _write_up_context(request, run, kind=kind, **kwargs)
    except services.RunRefused as exc:
        return _to_selection(request, run, exc.message)
    return render(request, "runs/write_up.html", context, status=422 if kwargs.get("error") else 200)


@require_GET
def write_up(request: HttpRequest, pk: int, kind: str = CLINICIAN) -> HttpResponse:
    run = _run(request, pk)
    if not request.htmx:
        audit.record(request, "version.viewed", run, artifact=run.selected_artifact_id)
    waiting = request.GET.get("waiting", "")
    if kind == PATIENT and request.htmx and waiting.isdigit():
        # The page polls while a model writes: once that request has ended, the whole page is reloaded.
        patient_version.requests_settle()
        if not run.patient_requests.filter(pk=int(waiting), status__in=PatientVersionRequest.ACTIVE).exists():
            return HttpResponseClientRefresh()
    return _write_up_page(request, run, kind=kind)


@require_POST
def write_up_preview(request: HttpRequest, pk: int, kind: str = CLINICIAN) -> HttpResponse:
    """The live preview htmx asks for while the clinician types: the posted markdown through the one cleaner,
    its numbers checked against the fact table (flagged ones marked, with the summary line above)."""
    run = _run(request, pk, "edit")
    text = request.POST.get("text", "")
    if len(text) > versions.MAX_VERSION_CHARS:
        return HttpResponse(
            f"<p class='error'>Too long to preview: at most {versions.MAX_VERSION_CHARS:,} characters.</p>",
            status=413,
        )
    if run.selected_artifact is None:
        return HttpResponse(page_html(text))
    checked = selectors.text_numbers(run.selected_artifact, selectors.fact_table(run), text, kind=kind)
    context = {
        "numbers": checked,
        "preview": reading.rendered(text, selectors.run_page_url(run), checked.checks),
    }
    return render(request, "runs/_write_up_preview.html", context)


@require_POST
def write_up_save(request: HttpRequest, pk: int, kind: str = CLINICIAN) -> HttpResponse:
    run = _run(request, pk, "edit")
    text = request.POST.get("text", "")
    try:
        version = versions.version_save(run=run, text=text, user=request.user, kind=kind)
    except services.RunRefused as exc:
        return _write_up_page(request, run, kind=kind, text=text, error=exc.message)
    audit.record(request, "version.saved", version, number=version.number, kind=kind)
    flagged = (version.numbers or {}).get("flagged", 0)
    said = (
        f" {flagged} number{'s' if flagged != 1 else ''} flagged against the fact table." if flagged else ""
    )
    messages.success(request, f"Saved version {version.number}.{said} Sign it when it is final.")
    return _redirect(request, reverse(ROUTES[kind]["page"], args=[run.pk]))


@require_POST
def write_up_sign(request: HttpRequest, pk: int, number: int, kind: str = CLINICIAN) -> HttpResponse:
    run = _run(request, pk, "sign")
    try:
        version = versions.version_sign(
            run=run,
            number=number,
            user=request.user,
            acknowledge=request.POST.getlist("acknowledge"),
            kind=kind,
        )
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "version.signed", version, number=version.number, kind=kind)
        messages.success(
            request, f"Version {version.number} signed by {version.signature_line()}. Export it to send it."
        )
    return _redirect(request, reverse(ROUTES[kind]["page"], args=[run.pk]))


@require_GET
def write_up_version(request: HttpRequest, pk: int, number: int, kind: str = CLINICIAN) -> HttpResponse:
    """One saved version as it reads: its text with the numbers the check flags now, who wrote and signed
    it, its hash, and what the check said when it was saved."""
    run = _run(request, pk)
    version = run.versions.select_related("author", "base", "source").filter(kind=kind, number=number).first()
    if version is None:
        raise Http404(f"Run {run.pk} has no {versions.NOUN[kind]} version {number}.")
    try:
        text = versions.version_text(version)
    except services.RunRefused as exc:
        messages.error(request, exc.message)
        return _redirect(request, reverse(ROUTES[kind]["page"], args=[run.pk]))
    checked = selectors.text_numbers(version.base, selectors.fact_table(run), text, kind=kind)
    latest = versions.latest_version(run, version.base, kind)
    context = {
        "run": run,
        "kind": kind,
        "routes": ROUTES[kind],
        "noun": versions.NOUN[kind],
        "version": version,
        "html": reading.rendered(text, selectors.run_page_url(run), checked.checks),
        "numbers": checked,
        "current": latest is not None and latest.pk == version.pk,
        "draft_name": STEPS[version.base.stage].output_name(version.base.model_id),
    }
    audit.record(request, "artifact.viewed", version.base, stage=version.base.stage, version=version.number)
    return render(request, "runs/version.html", context)


@require_POST
def patient_version_ask(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask the chosen model to write the patient version from the signed write-up (a job; the page polls)."""
    run = _run(request, pk, "ask")
    try:
        asked = patient_version.request_create(
            run=run,
            model_id=request.POST.get("model", ""),
            user=request.user,
            origin=audit.origin_of(request),
        )
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "patient_version.requested", asked, model=asked.model_id[:200])
        messages.success(
            request, f"{asked.model_id} is writing the patient version; this page shows it when done."
        )
    return _redirect(request, reverse("runs:patient_version", args=[run.pk]))


@require_POST
def patient_version_export(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk, "export")
    try:
        services.patient_version_export(
            run=run, acknowledge=request.POST.getlist("acknowledge"), user=request.user
        )
    except services.RunRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "patient_version.exported", run, artifact=run.selected_artifact_id)
        messages.success(request, "Exported: download the patient version below.")
    return _redirect(request, reverse("runs:patient_version", args=[run.pk]) + "#patient-export")
