from __future__ import annotations

from django.db import models
from django.db.models import Q


class Job(models.Model):
    """One piece of long work done by one `manage.py <kind>` process: who holds it (host and pid), whether
    it is alive (its heartbeat), and whether someone asked it to stop. The work's own rows (a run, a report)
    keep their own status and point here; see jobs/services.py for the life of a job."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"  # waiting for a free slot (JOBS_MAX_RUNNING)
        STARTING = "starting", "Starting"  # its process was launched and has not claimed it yet
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Lost"  # its runner went silent (killed, out of memory, its host gone)

    ACTIVE = (Status.QUEUED, Status.STARTING, Status.RUNNING)
    IN_FLIGHT = (Status.STARTING, Status.RUNNING)

    kind = models.CharField(max_length=40, help_text="The manage.py command that does the work.")
    target = models.CharField(max_length=200, help_text="What it works on, e.g. a run id.")
    args = models.JSONField(default=list, blank=True, help_text="The command's arguments.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    host = models.CharField(max_length=200, blank=True, help_text="QEEG_HOST_ID of the runner.")
    pid = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    log_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    # Where the person who asked for the work asked from (audit.services.Origin): the audit rows a job writes
    # on their behalf say so, as the rows of their own requests do.
    asked_from = models.GenericIPAddressField(null=True, blank=True)
    asked_user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]
        constraints = [
            # Two hosts starting the same work at once: the database lets exactly one job exist for it.
            models.UniqueConstraint(
                fields=["kind", "target"],
                condition=Q(status__in=["queued", "starting", "running"]),
                name="job_one_active_per_target",
            )
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} {self.kind} {self.target} ({self.status})"

    @property
    def origin(self) -> tuple[str, str]:
        """(address, User-Agent) of the request that asked for this job, for audit.record(origin=…)."""
        return self.asked_from or "", self.asked_user_agent

    @property
    def runner(self) -> str:
        """`host pid 123`, as operators read it."""
        return f"{self.host} pid {self.pid}" if self.pid else self.host or "no runner"
