"""Pages for clinicians. Thin: forms validate, services write, selectors read. A request from htmx gets
only the fragment it asked for, rendered from the same template the full page includes."""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from patients import selectors, services
from patients.forms import PatientForm
from patients.models import Patient, Report


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


# The list shows this many patients at most; the page says so when there are more, and search finds them.
LIST_LIMIT = 200


def _list_context(request: HttpRequest, form: PatientForm | None = None) -> dict:
    q = request.GET.get("q", "")
    patients = list(selectors.patient_search(q)[: LIST_LIMIT + 1])
    return {
        "patients": patients[:LIST_LIMIT],
        "more_patients": len(patients) > LIST_LIMIT,
        "list_limit": LIST_LIMIT,
        "q": q,
        "form": form or PatientForm(),
    }


@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    if _is_htmx(request):
        return render(request, "patients/_patient_table.html", context)
    return render(request, "patients/list.html", context)


@require_POST
def patient_create(request: HttpRequest) -> HttpResponse:
    form = PatientForm(request.POST)
    if form.is_valid():
        try:
            patient = services.patient_create(**form.cleaned_data, user=request.user)
        except services.PatientLabelTaken as exc:
            form.add_error("label", exc.message)
        else:
            messages.success(request, f"Patient {patient.label} created.")
            return redirect("patients:detail", pk=patient.pk)
    return render(request, "patients/list.html", _list_context(request, form), status=422)


def _resume_orphaned(reports: list[Report]) -> None:
    # An ingesting process killed meanwhile would leave its report "processing" until the next restart.
    if any(report.status == Report.Status.PROCESSING for report in reports):
        services.reports_resume_orphaned()


def _detail_context(patient: Patient, form: PatientForm | None = None) -> dict:
    reports = list(patient.reports.all())
    _resume_orphaned(reports)
    return {
        "patient": patient,
        "form": form or PatientForm(instance=patient),
        "reports": reports,
        "reports_unfinished": selectors.reports_unfinished(reports),
    }


@require_GET
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=pk)
    return render(request, "patients/detail.html", _detail_context(patient))


@require_POST
def patient_update(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=pk)
    form = PatientForm(request.POST, instance=Patient.objects.get(pk=pk))
    if form.is_valid():
        try:
            services.patient_update(patient=patient, **form.cleaned_data)
        except services.PatientLabelTaken as exc:
            form.add_error("label", exc.message)
        else:
            messages.success(request, "Saved.")
            return redirect("patients:detail", pk=patient.pk)
    return render(request, "patients/detail.html", _detail_context(patient, form), status=422)


@require_GET
def patient_reports(request: HttpRequest, pk: int) -> HttpResponse:
    """The reports fragment; it polls itself every 2 s while a report is unfinished."""
    patient = get_object_or_404(Patient, pk=pk)
    return render(request, "patients/_reports.html", _detail_context(patient))


@require_POST
def report_upload(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=pk)
    try:
        reports = services.report_upload(
            patient=patient, files=request.FILES.getlist("files"), user=request.user
        )
    except services.ReportRejected as exc:
        messages.error(request, f"Nothing was uploaded: {exc.message}")
    else:
        names = ", ".join(report.original_name for report in reports)
        messages.success(request, f"Uploaded {names}; reading the pages now.")
    return redirect("patients:detail", pk=patient.pk)


def _report_context(report: Report) -> dict:
    return {
        "report": report,
        "patient": report.patient,
        "pages": selectors.report_pages(report),
        "facts": selectors.report_facts(report),
    }


@require_GET
def report_detail(request: HttpRequest, pk: int) -> HttpResponse:
    report = get_object_or_404(Report.objects.select_related("patient"), pk=pk)
    _resume_orphaned([report])
    if _is_htmx(request):
        return render(request, "patients/_report_body.html", _report_context(report))
    return render(request, "patients/report.html", _report_context(report))


@require_POST
def report_reingest(request: HttpRequest, pk: int) -> HttpResponse:
    report = get_object_or_404(Report, pk=pk)
    if services.report_reingest(report=report):
        messages.success(request, f"Reading {report.original_name} again.")
    return redirect("patients:report", pk=report.pk)


@require_GET
def report_original(request: HttpRequest, pk: int) -> FileResponse:
    report = get_object_or_404(Report, pk=pk)
    if not report.original_path.exists():
        raise Http404("The original file is missing.")
    return FileResponse(
        open(report.original_path, "rb"),
        as_attachment=True,
        filename=report.original_name,
        content_type=report.original_content_type,
    )


def _page_png(pk: int, number: int, *, thumb: bool) -> FileResponse:
    report = get_object_or_404(Report, pk=pk)
    path = selectors.report_page_image(report, number, thumb=thumb)
    if path is None:
        raise Http404("No such page image.")
    response = FileResponse(open(path, "rb"), content_type="image/png")  # noqa: SIM115 (FileResponse closes it)
    # Page images never change for a given ingestion; let the browser keep them for a while.
    response["Cache-Control"] = "private, max-age=300"
    return response


@require_GET
def report_page_image(request: HttpRequest, pk: int, number: int) -> FileResponse:
    return _page_png(pk, number, thumb=False)


@require_GET
def report_thumb(request: HttpRequest, pk: int, number: int) -> FileResponse:
    return _page_png(pk, number, thumb=True)
