"""Is a job's runner alive? Judged only by its heartbeat in the database, never by a pid, so a runner on
any host can be judged by any other."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job


def stale_before() -> datetime:
    """A runner silent since before this is dead (RUN_STALE_SECONDS)."""
    return timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS)


def job_alive(job: Job | None) -> bool:
    """Queued for a slot, or launched/running with a fresh heartbeat."""
    if job is None:
        return False
    if job.status == Job.Status.QUEUED:
        return True
    return job.status in Job.IN_FLIGHT and job.heartbeat_at is not None and job.heartbeat_at >= stale_before()


def dead_q(field: str = "job") -> Q:
    """Rows whose job (the foreign key `field`) is missing, finished, or silent too long."""
    cutoff = stale_before()
    return (
        Q(**{f"{field}__isnull": True})
        | Q(**{f"{field}__status__in": [Job.Status.DONE, Job.Status.CANCELLED, Job.Status.LOST]})
        | Q(**{f"{field}__status__in": Job.IN_FLIGHT, f"{field}__heartbeat_at__lt": cutoff})
        | Q(**{f"{field}__status__in": Job.IN_FLIGHT, f"{field}__heartbeat_at__isnull": True})
    )


def stale_jobs() -> list[Job]:
    return list(
        Job.objects.filter(status__in=Job.IN_FLIGHT).filter(
            Q(heartbeat_at__lt=stale_before()) | Q(heartbeat_at__isnull=True)
        )
    )


def in_flight() -> int:
    """Jobs holding a slot: launched or running, and alive."""
    return Job.objects.filter(status__in=Job.IN_FLIGHT, heartbeat_at__gte=stale_before()).count()


def active_job(*, kind: str, target: str) -> Job | None:
    return Job.objects.filter(kind=kind, target=target, status__in=Job.ACTIVE).first()
