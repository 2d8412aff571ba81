from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ModelCall(models.Model):
    """One model call made, charged to a person: what MODEL_CALLS_PER_USER_PER_DAY counts (ledger/calls.py,
    `call_made`). A stage's call is also an Artifact, but an answer asked again or redone is deleted and its
    call was made all the same; a patient version's call and a vision reading's are no artifact at all.
    Nothing here is shown. Moved from runs/ with its table (`runs_modelcall`) and rows."""

    class Kind(models.TextChoices):
        STAGE = "stage", "Stage answer"
        PATIENT_VERSION = "patient_version", "Patient version"
        VISION = "vision", "Vision reading of a report page"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    report = models.ForeignKey(
        "patients.Report", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    stage = models.PositiveSmallIntegerField(null=True, blank=True)
    model_id = models.CharField(max_length=200)
    made_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "runs_modelcall"
        indexes = [models.Index(fields=["user", "made_at"], name="modelcall_user_day")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.model_id} at {self.made_at:%Y-%m-%d %H:%M}"
