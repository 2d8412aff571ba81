from __future__ import annotations

from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from patients.models import Patient, Report


def elapsed_seconds(
    *,
    status: str,
    started_at: datetime | None,
    worked_seconds: float,
    working_since: datetime | None,
    now: datetime | None = None,
) -> float | None:
    """A run's working time from its columns (lists read them as plain values): what its runners spent on it,
    the current one's included, never the wait before a resume; None if it never started."""
    if started_at is None and not worked_seconds:
        return None
    current = 0.0
    if working_since is not None and status == Run.Status.RUNNING:
        current = max(0.0, ((now or timezone.now()) - working_since).total_seconds())
    return round(worked_seconds + current, 1)


class Run(models.Model):
    """One council deliberation over one report. Model output lives on disk; see Artifact."""

    class Status(models.TextChoices):
        CREATED = "created", "Created"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"
        NEEDS_AUTH = "needs_auth", "Needs sign-in"
        INTERRUPTED = "interrupted", "Interrupted"
        CANCELLED = "cancelled", "Cancelled"

    # The exported files of the selected artifact: name in data/exports/<run_id>/ → (what it is, content type).
    EXPORT_MARKDOWN = "final.md"
    EXPORT_PDF = "final.pdf"
    # The patient version's own export (runs/exports.py export_patient_version).
    EXPORT_PATIENT_MARKDOWN = "patient.md"
    EXPORT_PATIENT_PDF = "patient.pdf"
    EXPORTS = {
        EXPORT_MARKDOWN: ("Markdown", "text/markdown; charset=utf-8"),
        EXPORT_PDF: ("PDF", "application/pdf"),
        EXPORT_PATIENT_MARKDOWN: ("patient version Markdown", "text/markdown; charset=utf-8"),
        EXPORT_PATIENT_PDF: ("patient version PDF", "application/pdf"),
    }
    WRITE_UP_EXPORTS = (EXPORT_MARKDOWN, EXPORT_PDF)
    PATIENT_EXPORTS = (EXPORT_PATIENT_MARKDOWN, EXPORT_PATIENT_PDF)

    FINISHED = (Status.COMPLETE, Status.FAILED, Status.NEEDS_AUTH, Status.INTERRUPTED, Status.CANCELLED)
    RESUMABLE = (Status.CREATED, Status.FAILED, Status.NEEDS_AUTH, Status.INTERRUPTED, Status.CANCELLED)

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="runs")
    # The first of the run's reports on the timeline; `reports` (RunReport rows) lists them all, in order.
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="runs")
    reports = models.ManyToManyField(Report, through="RunReport", related_name="council_runs", blank=True)
    council_models = models.JSONField(help_text="Upstream model ids, as discovered.")
    consolidator = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED, db_index=True)
    current_stage = models.PositiveSmallIntegerField(default=0)
    # The last stage whose calls have all been made: a resumed run starts after it and keeps its artifacts.
    stages_done = models.PositiveSmallIntegerField(default=0)
    # A/B/C… → model id for Stage 2 anonymity. Never shown to the models; revealed only in the UI. A label
    # is never reused: a model that joins later (a replacement) gets the next letter.
    label_map = models.JSONField(default=dict, blank=True)
    # Council changes (CouncilChange): model id → the stage from which it is no longer asked, and the models
    # that (re)joined and must first answer what they missed in stages already done.
    dropped = models.JSONField(default=dict, blank=True)
    catch_up = models.JSONField(default=list, blank=True)
    prompt_versions = models.JSONField(default=dict, blank=True)
    # The fact table the council was given, recorded when the run first started (runs.services.
    # run_facts_record): {"at", "lock" ({by, at} or None), "facts", "corrected"}; {} until then, or
    # {"at", "none": True} for a report without one. The table itself is a file beside the artifacts.
    facts_given = models.JSONField(default=dict, blank=True)
    selected_artifact = models.ForeignKey(
        "Artifact", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    # The job that runs (or will run) it: its runner's host, pid and heartbeat (jobs/).
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who last started it or changed its council: its model calls count against their day (runs/limits.py).
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Working time: the seconds runners spent on it before now, and since when the current runner works on it
    # (None while no runner does). The wait before a resume is never counted.
    worked_seconds = models.FloatField(default=0.0)
    working_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.get_status_display()})"

    def elapsed_seconds(self, now: datetime | None = None) -> float | None:
        """Working time so far: every runner's time on it, the current one's included; None if never started."""
        return elapsed_seconds(
            status=self.status,
            started_at=self.started_at,
            worked_seconds=self.worked_seconds,
            working_since=self.working_since,
            now=now,
        )

    @property
    def artifacts_dir(self) -> Path:
        return settings.DATA_DIR / "artifacts" / str(self.pk)

    @property
    def facts_given_path(self) -> Path:
        """The fact table as the run was given it (copied from the report's when the run first started)."""
        return self.artifacts_dir / "facts-given.json"

    @property
    def exports_dir(self) -> Path:
        return settings.DATA_DIR / "exports" / str(self.pk)

    def report_list(self) -> list[Report]:
        """The run's reports in timeline order (a run saved without RunReport rows, or not saved, has just
        `report`)."""
        if self.pk is None:
            return [self.report]
        links = self.report_links.all()  # ordered by position; prefetch "report_links__report" for lists
        return [link.report for link in links] or [self.report]

    def export_path(self, name: str) -> Path:
        """The path of one export file (`name` one of EXPORTS)."""
        if name not in self.EXPORTS:
            raise ValueError(f"Exports are {' and '.join(self.EXPORTS)}.")
        return self.exports_dir / name

    def exported_names(self, names: tuple[str, ...] | None = None) -> list[str]:
        """The export files on disk now (of `names`, default all), in EXPORTS order."""
        return [name for name in names or self.EXPORTS if self.export_path(name).is_file()]


class RunReport(models.Model):
    """One of the reports a run reads, and its place among them: by the first session it prints, then upload
    (patients.selectors.reports_history), so the run's pages and sessions read in time order."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="report_links")
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="run_links")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "report"], name="run_report_once"),
            models.UniqueConstraint(fields=["run", "position"], name="run_report_position_once"),
        ]

    def __str__(self) -> str:
        return f"Run {self.run_id} report {self.report_id} (#{self.position + 1})"


class Artifact(models.Model):
    """The outcome of one (stage, model) call. Its text is on disk at data/artifacts/<run>/stage-<n>/<file>."""

    class Kind(models.TextChoices):
        MARKDOWN = "md", "Markdown"
        JSON = "json", "JSON"

    class Status(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    stage = models.PositiveSmallIntegerField()
    model_id = models.CharField(
        max_length=200, help_text="The real upstream id; the file name is a safe form."
    )
    kind = models.CharField(max_length=4, choices=Kind.choices)
    file_path = models.CharField(max_length=500, blank=True, help_text="Relative to the data folder.")
    sha256 = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    endpoint = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OK)
    error = models.TextField(blank=True)
    # What the step read from the reply besides its text (Stage 6: which required changes the draft says it
    # applied, council/disagreement.py); {} for most steps.
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["stage", "model_id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "stage", "model_id"], name="artifact_one_per_stage_model")
        ]

    def __str__(self) -> str:
        return f"Run {self.run_id} stage {self.stage} {self.model_id}"

    @property
    def path(self) -> Path:
        return settings.DATA_DIR / self.file_path


class RunEvent(models.Model):
    """Append-only: what happened in a run, in order. The live page and the SSE stream read this table; the
    event id is the SSE `id:`. The runner process writes it, so the database is the bus."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=40)
    stage = models.PositiveSmallIntegerField(null=True, blank=True)
    model_id = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "id"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} (run {self.run_id})"


class DraftVersion(models.Model):
    """One saved version of a text the clinician signs: the write-up (kind "clinician", edited from the
    selected model draft, `base`) or the patient version (kind "patient", written by a model from a signed
    write-up, `source`, then edited). Its text is on disk under data/versions/<run>/ and never rewritten: a
    signed version stays as signed, and a later change is a new version. The signer's name and credentials
    are copied at signing, so a later profile edit does not change what was signed."""

    class Kind(models.TextChoices):
        CLINICIAN = "clinician", "Write-up"
        PATIENT = "patient", "Patient version"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="versions")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CLINICIAN)
    number = models.PositiveIntegerField()
    # RESTRICT, not PROTECT: the draft cannot go while versions of it stand, but the run (and with it both)
    # can be deleted.
    base = models.ForeignKey(
        Artifact, on_delete=models.RESTRICT, related_name="versions", help_text="The model draft edited."
    )
    source = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A patient version: the signed write-up it was written from.",
    )
    model_id = models.CharField(
        max_length=200, blank=True, help_text="Written by this model (a patient version's first text)."
    )
    file_path = models.CharField(max_length=500, help_text="Relative to the data folder.")
    sha256 = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    signer_name = models.CharField(max_length=120, blank=True)
    signer_credentials = models.CharField(max_length=120, blank=True)
    signed_at = models.DateTimeField(null=True, blank=True)
    # What the number check said of this text when it was saved (council.numbers.summary); None: nothing to
    # check against. Pages check again on read.
    numbers = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["run", "kind", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "kind", "number"], name="version_one_per_kind_number")
        ]

    def __str__(self) -> str:
        what = "version" if self.kind == self.Kind.CLINICIAN else "patient version"
        return f"Run {self.run_id} {what} {self.number}{' (signed)' if self.signed_at else ''}"

    def written_by(self) -> str:
        """Who wrote this version: the model (a patient version's first text), else its author's username."""
        if self.model_id:
            return f"the model {self.model_id}"
        return self.author.get_username() if self.author else "a removed user"

    @property
    def path(self) -> Path:
        return settings.DATA_DIR / self.file_path

    @property
    def signed(self) -> bool:
        return self.signed_at is not None

    def signature_line(self) -> str:
        if not self.signed_at:
            return ""
        who = (
            f"{self.signer_name}, {self.signer_credentials}" if self.signer_credentials else self.signer_name
        )
        return f"{who}, {timezone.localtime(self.signed_at):%Y-%m-%d %H:%M %Z}"


class NumberAcknowledgement(models.Model):
    """A clinician's acknowledgement of one flagged number of an artifact (council/numbers.py), so the
    artifact can be exported with it: who, when, and which number (its key: offset and text as written)."""

    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="acknowledgements")
    # Which text of the artifact's the number is in: the write-up edited from it, or its patient version.
    kind = models.CharField(
        max_length=10, choices=DraftVersion.Kind.choices, default=DraftVersion.Kind.CLINICIAN
    )
    key = models.CharField(max_length=200)
    status = models.CharField(max_length=20)
    title = models.TextField(blank=True, help_text="What the check said when it was acknowledged.")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["artifact", "at"]
        constraints = [
            models.UniqueConstraint(
                fields=["artifact", "kind", "key"], name="acknowledgement_one_per_kind_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} of artifact {self.artifact_id}"


class CouncilChange(models.Model):
    """One change of who takes part in a run, as a clinician asked for it (runs/services.council_change):
    going on without a model, asking one answer again, putting another model in a model's place, or letting
    a model rejoin. Kept for the run page and the export's run card: which model, at which stage, by whom,
    when, why, and what it cost (the later answers discarded to be asked again)."""

    class Kind(models.TextChoices):
        DROP = "drop", "Continue without"
        REASK = "reask", "Ask again"
        REPLACE = "replace", "Replace"
        REJOIN = "rejoin", "Rejoin"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="council_changes")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    stage = models.PositiveSmallIntegerField(help_text="The stage it applies from.")
    model_id = models.CharField(max_length=200)
    replacement = models.CharField(max_length=200, blank=True)
    reason = models.TextField(blank=True)
    summary = models.TextField(help_text="What it did, in words, as the clinician confirmed it.")
    discarded = models.PositiveIntegerField(default=0, help_text="Answers discarded to be asked again.")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    by_name = models.CharField(max_length=150, blank=True, help_text="Who, as they were named then.")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "at", "pk"]

    def __str__(self) -> str:
        return f"Run {self.run_id}: {self.get_kind_display().lower()} {self.model_id} (Stage {self.stage})"

    def line(self) -> str:
        """ "Stage 2: continued without gemini-2.5-pro — by Dr. Roe, 2026-12-01 11:40 UTC: its provider…" """
        when = timezone.localtime(self.at).strftime("%Y-%m-%d %H:%M %Z")
        why = f": {self.reason}" if self.reason else ""
        return f"{self.summary} — by {self.by_name or 'a removed user'}, {when}{why}"


class PatientVersionRequest(models.Model):
    """A model asked to write the patient version from a signed write-up (runs/patient_version.py): which
    model, from which version, the job that does it (jobs/), and what came of it — the patient version it
    wrote, or why not. At most one per run is being written at a time."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Writing"
        DONE = "done", "Written"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="patient_requests")
    source = models.ForeignKey(
        DraftVersion, on_delete=models.CASCADE, related_name="+", help_text="The signed write-up."
    )
    model_id = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    version = models.OneToOneField(
        DraftVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="request"
    )
    prompt_version = models.CharField(max_length=60)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["run"],
                condition=models.Q(status__in=["queued", "running"]),
                name="patient_request_one_active_per_run",
            )
        ]

    def __str__(self) -> str:
        return f"Run {self.run_id} patient version by {self.model_id} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE
