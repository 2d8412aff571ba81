from __future__ import annotations

import unicodedata
from datetime import date
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models.functions import Lower

# Letters that are not a base letter plus an accent, so NFKD leaves them: folded by hand.
_LETTERS = str.maketrans({"ø": "o", "đ": "d", "ħ": "h", "\u0131": "i", "ł": "l", "œ": "oe", "æ": "ae", "þ": "th",
                          "ŧ": "t", "ð": "d"})  # fmt: skip


def fold(text: str) -> str:
    """`text` without case or accents, for search: "Ødegård" and "odegard" fold to the same."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_LETTERS)


class Patient(models.Model):
    class Sex(models.TextChoices):
        UNKNOWN = "", "Not recorded"
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"

    class Handedness(models.TextChoices):
        UNKNOWN = "", "Not recorded"
        RIGHT = "right", "Right"
        LEFT = "left", "Left"
        AMBIDEXTROUS = "ambidextrous", "Ambidextrous"

    label = models.CharField(max_length=100, help_text="How the clinic refers to this patient; unique.")
    # The label folded (no case, no accents; see fold), kept by save() for accent-insensitive search.
    label_folded = models.CharField(max_length=300, editable=False, default="", db_index=True)
    notes = models.TextField(blank=True)
    age = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MaxValueValidator(130)])
    sex = models.CharField(max_length=16, choices=Sex.choices, blank=True, default=Sex.UNKNOWN)
    handedness = models.CharField(max_length=16, choices=Handedness.choices, blank=True, default="")
    medications = models.TextField(blank=True)
    referral_reason = models.TextField("reason for referral", blank=True)
    # Who may open this patient besides staff: a clinician sees only the patients assigned to them.
    clinicians = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="assigned_patients",
        help_text="Clinicians who may see this patient, start runs and export.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["label"]
        permissions = [
            ("assign_clinicians", "Can assign clinicians to a patient"),
            ("view_identifiers", "Can view a patient's identifiers"),
            ("change_identifiers", "Can record a patient's identifiers"),
            ("correct_facts", "Can correct facts read from a patient's reports"),
        ]
        constraints = [
            models.UniqueConstraint(
                Lower("label"),
                name="patient_label_unique_ci",
                violation_error_message="A patient with this label already exists (labels ignore case).",
            )
        ]

    def __str__(self) -> str:
        return self.label

    def save(self, *args, **kwargs) -> None:
        self.label_folded = fold(self.label)
        if kwargs.get("update_fields") is not None and "label" in kwargs["update_fields"]:
            kwargs["update_fields"] = {*kwargs["update_fields"], "label_folded"}
        super().save(*args, **kwargs)

    def clinical_context(self) -> dict[str, str]:
        """What the clinician entered about the patient, in words, for the council's prompts."""
        context = {
            "Age": str(self.age) if self.age is not None else "",
            "Sex": self.get_sex_display() if self.sex else "",
            "Handedness": self.get_handedness_display() if self.handedness else "",
            "Medications": self.medications.strip(),
            "Reason for referral": self.referral_reason.strip(),
        }
        return {key: value for key, value in context.items() if value}


# Each kind's stored original: its file name in the report folder, and the content type it is served with.
ORIGINAL_FILES = {
    "pdf": ("original.pdf", "application/pdf"),
    "text": ("original.txt", "text/plain"),
    "markdown": ("original.md", "text/markdown"),
}


class Report(models.Model):
    """An uploaded qEEG/ERP report. Its files live on disk under data/reports/<id>/, never in the database."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        PDF = "pdf", "PDF"
        TEXT = "text", "Plain text"
        MARKDOWN = "markdown", "Markdown"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="reports")
    original_name = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PDF)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    # The ingestion job that reads (or will read) it; a report "processing" whose job is dead goes back to
    # pending and is read again (jobs/).
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(null=True, blank=True)
    # While it is read (patients/services.py writes it at each step): pages done of total, what is being
    # done now and since when, and the slowest step so far; kept once it is read.
    progress = models.JSONField(default=dict, blank=True)
    # Model calls held for this report's vision pass while it runs (its uploader's allowance counts them, so
    # two uploads read at once cannot both spend the same calls); 0 once they are charged in the ledger.
    vision_calls_held = models.PositiveIntegerField(default=0, editable=False)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.patient})"

    FINISHED = (Status.READY, Status.FAILED)

    @property
    def folder(self) -> Path:
        return settings.DATA_DIR / "reports" / str(self.pk)

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def thumb_numbers(self) -> range:
        """Pages whose thumbnails the patient page shows (the first eight)."""
        return range(1, min(self.page_count or 0, 8) + 1)

    @property
    def original_path(self) -> Path:
        return self.folder / ORIGINAL_FILES[self.kind][0]

    @property
    def original_content_type(self) -> str:
        return ORIGINAL_FILES[self.kind][1]


class PatientIdentifier(models.Model):
    """Something that identifies the patient (a name, the date of birth, a record number …), recorded by
    staff so the council never sees it: it is used only to find and remove it before any model call, and
    to refuse a call that still carries it. Never sent, never logged."""

    class Kind(models.TextChoices):
        NAME = "name", "Name"
        BIRTH_DATE = "birth_date", "Date of birth"
        RECORD_NUMBER = "record_number", "Record or device number"
        OTHER = "other", "Other (address, school, phrase)"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="identifiers")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.CharField(
        max_length=200, help_text="A date of birth as YYYY-MM-DD; names as usually written (any order)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of patient {self.patient_id}"  # never the value: this is logged

    def clean(self) -> None:
        self.value = " ".join(self.value.split())
        if not self.value:
            raise ValidationError({"value": "Enter the identifier."})
        if self.kind == self.Kind.BIRTH_DATE:
            try:
                self.value = date.fromisoformat(self.value).isoformat()
            except ValueError:
                raise ValidationError({"value": "Enter the date of birth as YYYY-MM-DD."}) from None
        elif sum(ch.isalnum() for ch in self.value) < 2:
            raise ValidationError({"value": "An identifier needs at least two letters or digits."})

    @property
    def birth_date(self) -> date | None:
        return date.fromisoformat(self.value) if self.kind == self.Kind.BIRTH_DATE else None


class Redaction(models.Model):
    """A phrase a clinician wants removed from what the council sees: for one report, or (report empty) for
    every report of the patient. Applied like an identifier, and checked by the same guard."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="redactions")
    report = models.ForeignKey(
        Report, null=True, blank=True, on_delete=models.CASCADE, related_name="redactions"
    )
    phrase = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"redaction {self.pk} of patient {self.patient_id}"
