"""Pages for clinicians. Thin: forms validate, services write, selectors read. A request from htmx gets
only the fragment it asked for, rendered from the same template the full page includes."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.translation import get_language
from django.views.decorators.http import require_GET, require_POST

import audit
from council import timeline
from documents import charts
from ledger import calls as ledger
from patients import access, search_index, selectors, services
from patients.forms import IdentifierForm, PatientForm, RedactionForm
from patients.models import Patient, PatientIdentifier, Redaction, Report, fold

# The list shows this many patients at most; the page says so when there are more, and search finds them.
LIST_LIMIT = 200


class PatientRow(NamedTuple):
    """What one row of the patient list shows, and all of it: the key of its rendered HTML."""

    pk: int
    label: str
    age: int | None
    sex: str
    sex_display: str
    report_count: int
    referral_reason: str  # as the row shows it (REASON_CHARS): the key never holds a whole long text
    created_at: datetime
    time_zone: str  # the date is shown in it
    script_prefix: str  # its link is made with it (a site served under two prefixes links each to its own)


# The row shows this much of the reason for referral (the template's `truncatechars`, done before the row is
# a key: a reason is any length, and 4,096 kept rows holding each whole one could hold gigabytes).
REASON_CHARS = 60


@lru_cache(maxsize=4096)
def _patient_row_html(row: PatientRow) -> str:
    # Rendering 200 rows was most of the list's time (12-16 ms); a row is rendered again only when something
    # it shows changed, since that is its key.
    return render_to_string("patients/_patient_row.html", {"patient": row})


# The fields each row shows, read as plain tuples (no model instances: building 200 of them was a fifth of
# the list's time).
_ROW_FIELDS = ("pk", "label", "age", "sex", "report_count", "referral_reason", "created_at")

# A search reads its rows through the trigram index when the index finds at most this many patients: sorting
# a few is quicker than walking the label index past thousands to find them; for more, the walk in label
# order finds the first page's rows sooner.
LIST_NARROWED_MAX = 500


def _patient_rows(rows: list[tuple]) -> str:
    """The rows' HTML as the table's body shows it, joined here: a template loop over 200 kept rows cost more
    than the rows, and so did `format_html_join` (a format and an escape check per row, a fifth of the page):
    each row's HTML is the template's own, safe already."""
    zone = timezone.get_current_timezone_name()
    prefix = get_script_prefix()
    sexes = dict(Patient.Sex.choices)

    def shown(reason: str) -> str:
        return Truncator(reason).chars(REASON_CHARS) if len(reason) > REASON_CHARS else reason

    parts = (
        _patient_row_html(
            PatientRow(pk, label, age, sex, str(sexes.get(sex, sex)), count, shown(reason), at, zone, prefix)
        )
        for pk, label, age, sex, count, reason, at in rows
    )
    # Each part is a rendered template's output, escaped there: safe as it is.
    return mark_safe("".join(f"\n  {part}\n  " for part in parts))


def _list_rows(q: str, user) -> list[tuple]:
    """The first LIST_LIMIT + 1 patients of the search, as `_ROW_FIELDS` tuples, in label order."""
    patients = selectors.patient_search(q, within=access.patients_for(user))
    narrowed = getattr(patients, "narrowed", None)
    if narrowed is not None and search_index.finds_at_most(q.strip(), fold(q.strip()), LIST_NARROWED_MAX):
        patients = narrowed  # the same rows in the same order (patients.selectors.patient_search)
    return list(patients.values_list(*_ROW_FIELDS)[: LIST_LIMIT + 1])


@lru_cache(maxsize=16)
def _blank_patient_fields(language: str | None) -> str:
    # The new-patient form's fields, empty: the same HTML on every list page (in one language), and their
    # widgets' templates were a third of the list's time. A form with what was typed and its errors (a
    # refused create) is rendered as it is.
    return render_to_string("patients/_patient_fields.html", {"form": PatientForm()})


def _list_context(request: HttpRequest, form: PatientForm | None = None) -> dict:
    q = request.GET.get("q", "")
    rows = _list_rows(q, request.user)
    return {
        "patient_rows": _patient_rows(rows[:LIST_LIMIT]),
        "more_patients": len(rows) > LIST_LIMIT,
        "list_limit": LIST_LIMIT,
        "q": q,
        "form": form or SimpleLazyObject(PatientForm),  # made only if the page renders it
        "blank_patient_fields": _blank_patient_fields(get_language()) if form is None else "",
        "may": access.abilities(request.user),
    }


@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    if request.htmx:
        return render(request, "patients/_patient_table.html", context)
    return render(request, "patients/list.html", context)


@require_POST
def patient_create(request: HttpRequest) -> HttpResponse:
    access.require_action(request.user, "create")
    form = PatientForm(request.POST)
    if form.is_valid():
        try:
            patient = services.patient_create(**form.cleaned_data, user=request.user)
        except services.PatientLabelTaken as exc:
            form.add_error("label", exc.message)
        else:
            audit.record(request, "patient.created", patient)
            messages.success(request, f"Patient {patient.label} created.")
            return redirect("patients:detail", pk=patient.pk)
    return render(request, "patients/list.html", _list_context(request, form), status=422)


def _detail_context(
    request: HttpRequest,
    patient: Patient,
    form: PatientForm | None = None,
    *,
    identifier_form: IdentifierForm | None = None,
) -> dict:
    reports = list(patient.reports.select_related("job"))
    if services.reports_settled(reports):
        reports = list(patient.reports.select_related("job"))
    for report in reports:
        report.ingest = selectors.ingest_progress(report)
    context = {
        "patient": patient,
        "form": form or PatientForm(instance=patient),
        "reports": reports,
        "reports_unfinished": selectors.reports_unfinished(reports),
        "may": access.abilities(request.user),
        "may_handle_identifiers": access.can(request.user, "view_identifiers"),
    }
    context |= _trends_context(patient)
    if context["may"]["upload"] and settings.FACTS_VISION_MODEL and settings.DEID_PAGE_IMAGES == "paint":
        # The vision reader's calls are charged to the uploader: the most one report may make, and what is left.
        context["vision_estimate"] = {
            "model": settings.FACTS_VISION_MODEL,
            "calls": settings.FACTS_VISION_MAX_PAGES,
            "allowance": ledger.allowance(request.user),
        }
    if context["may_handle_identifiers"]:
        context["identifiers"] = list(patient.identifiers.all())
        context["identifier_form"] = identifier_form or IdentifierForm()
    return context


@require_GET
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    patient = access.patient_for(request.user, pk)
    context = _detail_context(request, patient)
    audit.record(request, "patient.viewed", patient)
    if context.get("identifiers"):
        audit.record(request, "identifiers.viewed", patient, count=len(context["identifiers"]))
    return render(request, "patients/detail.html", context)


@require_POST
def patient_update(request: HttpRequest, pk: int) -> HttpResponse:
    patient = access.patient_for(request.user, pk, "edit")
    form = PatientForm(request.POST, instance=Patient.objects.get(pk=pk))
    if form.is_valid():
        try:
            services.patient_update(patient=patient, **form.cleaned_data)
        except services.PatientLabelTaken as exc:
            form.add_error("label", exc.message)
        else:
            audit.record(request, "patient.edited", patient, fields=sorted(form.changed_data))
            messages.success(request, "Saved.")
            return redirect("patients:detail", pk=patient.pk)
    return render(request, "patients/detail.html", _detail_context(request, patient, form), status=422)


@require_GET
def patient_reports(request: HttpRequest, pk: int) -> HttpResponse:
    """The reports fragment; it polls itself every 2 s while a report is unfinished."""
    patient = access.patient_for(request.user, pk)
    return render(request, "patients/_reports.html", _detail_context(request, patient))


@require_POST
def report_upload(request: HttpRequest, pk: int) -> HttpResponse:
    patient = access.patient_for(request.user, pk, "upload")
    try:
        reports = services.report_upload(
            patient=patient, files=request.FILES.getlist("files"), user=request.user
        )
    except services.ReportRejected as exc:
        messages.error(request, f"Nothing was uploaded: {exc.message}")
    else:
        for report in reports:
            audit.record(request, "report.uploaded", report)
        names = ", ".join(report.original_name for report in reports)
        messages.success(request, f"Uploaded {names}; reading the pages now.")
        for report in reports:
            earlier = selectors.report_duplicate_of(report)
            if earlier is not None:
                messages.warning(
                    request,
                    format_html(
                        '{} has the same content as <a href="{}">{}</a> (report {}, uploaded {}); '
                        "delete one of them if it was uploaded twice by mistake.",
                        report.original_name,
                        reverse("patients:report", args=[earlier.pk]),
                        earlier.original_name,
                        earlier.pk,
                        date_format(timezone.localtime(earlier.created_at), "Y-m-d H:i"),
                    ),
                )
    return redirect("patients:detail", pk=patient.pk)


def _report_context(request: HttpRequest, report: Report, *, fact_id: str = "", error: str = "") -> dict:
    table = selectors.report_facts(report)
    return {
        "report": report,
        "patient": report.patient,
        "pages": selectors.report_pages(report),
        "ingest": selectors.ingest_progress(report),
        "facts": table,
        "may": access.abilities(request.user),
        "viewer": _fact_viewer(report, table, fact_id or request.GET.get("fact", ""), error=error),
    }


def _fact_viewer(report: Report, table: dict | None, fact_id: str, *, error: str = "") -> dict | None:
    """The fact shown beside the table: its page image with the value's box highlighted, its correction
    form. None when no fact is chosen (or the id names none)."""
    if not table or not fact_id:
        return None
    fact = next((row for row in table["facts"] if row["id"] == fact_id), None)
    if fact is None:
        return None
    by_id = {row["id"]: row for row in table["facts"]}
    return {
        "fact": fact,
        "highlight": selectors.fact_highlight(report, table, fact),
        "others": [by_id[other] for other in fact.get("disagrees_with", []) if other in by_id],
        "basis": _confidence_basis(fact),
        "lock": table.get("lock"),
        "error": error,
    }


def _confidence_basis(fact: dict) -> str:
    from patients.readers import vision  # numpy and the page readers: only when a fact is shown

    return vision.confidence_basis(fact)


@require_GET
def report_detail(request: HttpRequest, pk: int) -> HttpResponse:
    report = access.report_for(request.user, pk)
    if services.reports_settled([report]):
        report.refresh_from_db()
    if request.htmx:
        return render(request, "patients/_report_body.html", _report_context(request, report))
    audit.record(request, "report.viewed", report)
    return render(request, "patients/report.html", _report_context(request, report))


@require_GET
def report_fact(request: HttpRequest, pk: int) -> HttpResponse:
    """The viewer for one fact (`?fact=<id>`): htmx swaps it in beside the table; without htmx the report
    page shows it (the same fragment, rendered in place)."""
    report = access.report_for(request.user, pk)
    fact_id = request.GET.get("fact", "")
    if not request.htmx:
        return redirect(_fact_url(report, fact_id))
    context = _report_context(request, report, fact_id=fact_id)
    if context["viewer"] is None:
        return HttpResponse("This report's fact table has no such fact.", status=404)
    return render(request, "patients/_fact_viewer.html", context)


def _fact_url(report: Report, fact_id: str) -> str:
    return f"{reverse('patients:report', args=[report.pk])}?{urlencode({'fact': fact_id})}#fact-viewer"


@require_POST
def report_fact_correct(request: HttpRequest, pk: int) -> HttpResponse:
    """Correct the chosen fact's value (form: fact, value, note). On a refusal the report page comes back
    with the reason beside the fact (422, or 409 for a locked table), nothing written."""
    report = access.report_for(request.user, pk, "correct_facts")
    fact_id = request.POST.get("fact", "")
    try:
        fact = services.fact_correct(
            report=report,
            fact_id=fact_id,
            value=request.POST.get("value", ""),
            note=request.POST.get("note", ""),
            user=request.user,
        )
    except services.FactsRefused as exc:
        context = _report_context(request, report, fact_id=fact_id, error=exc.message)
        if context["viewer"] is None:
            messages.error(request, exc.message)
        return render(request, "patients/report.html", context, status=exc.status)
    audit.record(request, "fact.corrected", report, page=fact["page"], removed=fact["correction"] is None)
    if fact["correction"] is None:
        messages.success(
            request, f"Put back as read: {fact['metric']} on page {fact['page']} is {fact['value']}."
        )
    else:
        messages.success(
            request,
            f"Corrected {fact['metric']} on page {fact['page']}: {fact['correction']['value']} "
            f"(read as {fact['value']}).",
        )
    return redirect(_fact_url(report, fact_id))


@require_POST
def report_facts_lock(request: HttpRequest, pk: int) -> HttpResponse:
    """Lock the fact table (or `unlock=1`: lift the lock)."""
    report = access.report_for(request.user, pk, "lock_facts")
    unlock = request.POST.get("unlock") == "1"
    try:
        lock = services.facts_lock(report=report, locked=not unlock, user=request.user)
    except services.FactsRefused as exc:
        messages.error(request, exc.message)
    else:
        audit.record(request, "facts.unlocked" if unlock else "facts.locked", report)
        messages.success(
            request,
            f"Fact table unlocked (it was locked by {lock['by']}): values can be corrected again."
            if unlock
            else "Fact table locked: runs started now are given it as checked, and it takes no corrections "
            "until someone unlocks it.",
        )
    return redirect(reverse("patients:report", args=[report.pk]) + "#facts")


@require_POST
def report_reingest(request: HttpRequest, pk: int) -> HttpResponse:
    report = access.report_for(request.user, pk, "reingest")
    if services.report_reingest(report=report):
        audit.record(request, "report.reingested", report)
        messages.success(request, f"Reading {report.original_name} again.")
    return redirect("patients:report", pk=report.pk)


@require_GET
def report_original(request: HttpRequest, pk: int) -> FileResponse:
    report = access.report_for(request.user, pk)
    if not report.original_path.exists():
        raise Http404("The original file is missing.")
    audit.record(request, "report.downloaded", report)
    return FileResponse(
        open(report.original_path, "rb"),
        as_attachment=True,
        filename=report.original_name,
        content_type=report.original_content_type,
    )


def _page_png(request: HttpRequest, pk: int, number: int, *, thumb: bool) -> FileResponse:
    report = access.report_for(request.user, pk)
    path = selectors.report_page_image(report, number, thumb=thumb)
    if path is None:
        raise Http404("No such page image.")
    if not thumb:  # a thumbnail is part of the report page, which is recorded as it is shown
        audit.record(request, "report.viewed", report, part="page", page=number)
    response = FileResponse(open(path, "rb"), content_type="image/png")  # noqa: SIM115 (FileResponse closes it)
    # Page images never change for a given ingestion; let the browser keep them for a while.
    response["Cache-Control"] = "private, max-age=300"
    return response


@require_GET
def report_page_image(request: HttpRequest, pk: int, number: int) -> FileResponse:
    return _page_png(request, pk, number, thumb=False)


@require_GET
def report_thumb(request: HttpRequest, pk: int, number: int) -> FileResponse:
    return _page_png(request, pk, number, thumb=True)


# --- identifiers (staff) and redactions (whoever reads the report) -------------------------------------------


@require_POST
def identifier_add(request: HttpRequest, pk: int) -> HttpResponse:
    patient = access.patient_for(request.user, pk, "change_identifiers")
    form = IdentifierForm(request.POST)
    if form.is_valid():
        try:
            services.identifier_add(patient=patient, **form.cleaned_data, user=request.user)
        except services.IdentifierRejected as exc:
            form.add_error("value", exc.message)
        else:
            audit.record(request, "identifiers.changed", patient, change="added")
            messages.success(request, "Identifier recorded; it is removed from everything the council sees.")
            return redirect(reverse("patients:detail", args=[patient.pk]) + "#identifiers")
    context = _detail_context(request, patient, identifier_form=form)
    return render(request, "patients/detail.html", context, status=422)


@require_POST
def identifier_delete(request: HttpRequest, pk: int, identifier_id: int) -> HttpResponse:
    patient = access.patient_for(request.user, pk, "change_identifiers")
    identifier = get_object_or_404(PatientIdentifier, pk=identifier_id, patient_id=patient.pk)
    services.identifier_delete(identifier=identifier)
    audit.record(request, "identifiers.changed", patient, change="removed")
    messages.success(request, "Identifier removed.")
    return redirect(reverse("patients:detail", args=[pk]) + "#identifiers")


def _preview_url(report: Report) -> str:
    return reverse("runs:report_preview", args=[report.pk])


@require_POST
def redaction_add(request: HttpRequest, pk: int) -> HttpResponse:
    report = access.report_for(request.user, pk, "redact")
    form = RedactionForm(request.POST)
    if not form.is_valid():
        return HttpResponse(
            "Enter a phrase to remove and say whether it is for this report or every report.", status=422
        )
    try:
        services.redaction_add(
            patient=report.patient,
            report=report if form.cleaned_data["scope"] == "report" else None,
            phrase=form.cleaned_data["phrase"],
            user=request.user,
        )
    except services.IdentifierRejected as exc:
        messages.error(request, f"Not added: {exc.message}")
    else:
        messages.success(request, "Redaction added; it is removed from what the council sees.")
    return redirect(_preview_url(report))


@require_POST
def redaction_delete(request: HttpRequest, pk: int, redaction_id: int) -> HttpResponse:
    report = access.report_for(request.user, pk, "redact")
    redaction = get_object_or_404(Redaction, pk=redaction_id, patient_id=report.patient_id)
    services.redaction_delete(redaction=redaction)
    messages.success(request, "Redaction removed.")
    return redirect(_preview_url(report))


# -- trends: each measurement across the patient's sessions ------------------------------------------------


def _trend_key(series: timeline.Series) -> dict[str, str]:
    return {"metric": series.metric, "site": series.site or "", "band": series.band or ""}


def _trend(history: selectors.History, series: timeline.Series) -> charts.Trend:
    changes = series.changes()
    return charts.Trend(
        title=series.title,
        unit=series.unit,
        x_labels=tuple(
            f"S{s.index}" + (f"\nday {s.day}" if s.day is not None else "") for s in history.timeline.sessions
        ),
        points=tuple((p.session - 1, p.number) for p in series.points),
        beyond=tuple(c.beyond_threshold for c in changes),
        target=charts.target_range(series.target),
    )


def _chart(patient: Patient, series: timeline.Series) -> dict:
    changes = series.changes()
    return {
        "src": reverse("patients:trend", args=[patient.pk]) + "?" + urlencode(_trend_key(series)),
        "alt": f"{series.title}: "
        + ", ".join(
            f"S{p.session} {p.value}{' ' + series.unit if series.unit else ''}" for p in series.points
        ),
        "threshold": series.threshold,
        "changes": [
            {"text": c.text(series.unit, series.threshold), "beyond": c.beyond_threshold} for c in changes
        ],
    }


def _trends_context(patient: Patient) -> dict:
    history, all_series = selectors.patient_series(patient)
    plain = [s for s in all_series if s.site is None and s.band is None]
    grouped: dict[str, list[timeline.Series]] = {}
    for s in all_series:
        if s.site is not None or s.band is not None:
            grouped.setdefault(s.metric, []).append(s)
    by_id = {r.pk: r for r in history.reports}
    return {
        "trend_sessions": [
            {
                "index": s.index,
                "date": s.date,
                "day": s.day,
                "members": [{"report": by_id[r], "session": n} for r, n in s.members],
                "notes": s.notes,
            }
            for s in history.timeline.sessions
        ],
        "trend_notes": history.timeline.notes,
        "trend_charts": [_chart(patient, s) for s in plain],
        "trend_groups": [
            {
                "metric": metric,
                "charts": [_chart(patient, s) for s in items],
                "beyond": sum(bool(c.beyond_threshold) for s in items for c in s.changes()),
            }
            for metric, items in grouped.items()
        ],
    }


@require_GET
def patient_trend(request: HttpRequest, pk: int) -> HttpResponse:
    """One measurement across the patient's sessions as an SVG chart (`metric`, `site`, `band` in the query)."""
    patient = access.patient_for(request.user, pk)
    history, all_series = selectors.patient_series(patient)  # kept: read and worked out once for every chart
    wanted = {k: request.GET.get(k, "") for k in ("metric", "site", "band")}
    series = next((s for s in all_series if _trend_key(s) == wanted), None)
    if series is None:
        # Past the last like a page past the last (qeeg_site/pagination.py): the patient exists, the chart not.
        return HttpResponse(
            f"This patient has no measurement {wanted['metric']!r} (site {wanted['site'] or '-'}, band "
            f"{wanted['band'] or '-'}) read in two sessions or more.",
            status=422,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(charts.svg(_trend(history, series)), content_type="image/svg+xml")
