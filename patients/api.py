"""API endpoints for patients and their reports."""

from __future__ import annotations

from ninja import ModelSchema, Router
from ninja.pagination import PageNumberPagination, paginate

from patients.models import Patient

router = Router(tags=["patients"])


class PatientOut(ModelSchema):
    class Meta:
        model = Patient
        fields = [
            "id",
            "label",
            "notes",
            "age",
            "sex",
            "handedness",
            "medications",
            "referral_reason",
            "created_at",
            "updated_at",
        ]


@router.get("/patients", response=list[PatientOut])
@paginate(PageNumberPagination, page_size=50)
def patient_list(request, q: str = ""):
    patients = Patient.objects.all()
    if q:
        patients = patients.filter(label__icontains=q)
    return patients
