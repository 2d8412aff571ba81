from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from patients.models import Patient


@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    return render(request, "patients/list.html", {"patients": Patient.objects.all()})
