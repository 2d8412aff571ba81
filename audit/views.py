"""The auditors' page: the trail filtered by user, action, patient and dates, and the same rows as CSV."""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit import bounds, services
from audit.actions import ACTIONS

READS_THE_TRAIL = "audit.view_auditevent"
PAGE_LIMIT = 500
CSV_FIELDS = [
    "at",
    "username",
    "action",
    "object_type",
    "object_id",
    "patient_id",
    "ip",
    "user_agent",
    "detail",
]


class AuditFilter(forms.Form):
    user = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False, choices=[("", "any action"), *sorted(ACTIONS.items())])
    patient = forms.IntegerField(required=False, min_value=1, label="Patient id")
    since = forms.DateField(
        required=False, label="From (day)", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(required=False, label="To (day)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("The first day comes after the last.")
        return data

    def events(self):
        data = self.cleaned_data
        return services.events(
            username=data.get("user") or "",
            action=data.get("action") or "",
            patient_id=data.get("patient"),
            since=data.get("since"),
            until=data.get("until"),
        )


def auditors_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 for a role that does not read the trail, and the refusal in the trail itself. An auditor's read
    first writes the counts of rows past their bound (audit.bounds), so it holds every refusal so far."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.has_perm(READS_THE_TRAIL):
            services.record_refusal(request.user, 403, permission=READS_THE_TRAIL)
            raise PermissionDenied
        bounds.write_counts()  # what was counted past a caller's bound, so far: in what the auditor reads
        return view(request, *args, **kwargs)

    return guarded


@require_GET
@auditors_only
def event_list(request: HttpRequest) -> HttpResponse:
    form = AuditFilter(request.GET or None)
    if request.GET and not form.is_valid():
        return render(request, "audit/list.html", {"form": form, "rows": []}, status=422)
    rows = list((form.events() if request.GET else services.events())[: PAGE_LIMIT + 1])
    query = request.GET.urlencode()
    return render(
        request,
        "audit/list.html",
        {
            "form": form,
            "rows": rows[:PAGE_LIMIT],
            "more": len(rows) > PAGE_LIMIT,
            "limit": PAGE_LIMIT,
            "query": query,
        },
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a value starting like a formula (a username typed at the sign-in
    page, any User-Agent) gets a leading apostrophe (OWASP's advice for CSV injection)."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@auditors_only
def event_csv(request: HttpRequest) -> HttpResponse:
    """Every row the filters select (no page limit), streamed."""
    form = AuditFilter(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse(
            " ".join(m for ms in form.errors.values() for m in ms), status=422, content_type="text/plain"
        )
    rows = form.events() if request.GET else services.events()
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(CSV_FIELDS)
        for event in rows.iterator(chunk_size=1000):
            yield writer.writerow(
                _cell(value)
                for value in [
                    event.at.isoformat(),
                    event.username,
                    event.action,
                    event.object_type,
                    event.object_id,
                    event.patient_id or "",
                    event.ip or "",
                    event.user_agent,
                    json.dumps(event.detail, sort_keys=True) if event.detail else "",
                ]
            )

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit.csv"'
    return response
