"""Is a job's runner alive? Judged only by its heartbeat in the database, never by a pid, so a runner on
any host can be judged by any other. And why work that has not begun still waits, in words."""

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


# Past this, a launched process that has not claimed its job is slower than a runner starts on a quiet
# machine (0.5-2 s), and the page says so.
SLOW_START_SECONDS = 10


def wait_reason(job: Job | None) -> str:
    """Why work that has not begun is still waiting, in words, for the page that waits on it."""
    if job is None:
        return "No runner has been asked for it yet."
    now = timezone.now()
    if job.status == Job.Status.QUEUED:
        busy = in_flight()
        ahead = Job.objects.filter(status=Job.Status.QUEUED, created_at__lt=job.created_at).count()
        queue = f"; {ahead} queued job{'s' if ahead != 1 else ''} ahead of it" if ahead else ""
        if busy >= settings.JOBS_MAX_RUNNING:
            return (
                f"Waiting for a free job slot: all {settings.JOBS_MAX_RUNNING} are in use (JOBS_MAX_RUNNING)"
                f"{queue}. It starts as soon as one finishes."
            )
        return f"Queued; a slot is free, so its process is being launched{queue}."
    if job.status == Job.Status.STARTING:
        since = (now - job.launched_at).total_seconds() if job.launched_at else 0.0
        if since >= SLOW_START_SECONDS:
            return (
                f"Its process was launched {since:.0f} s ago and has not started yet; that is slower than "
                "usual, most likely because the machine is busy (the job's log says more)."
            )
        return "Its process was launched and is starting (loading Python and Django)."
    if job.status == Job.Status.RUNNING:
        return f"Its runner ({job.runner}) has started and is taking it on."
    return f"Its job is {job.get_status_display().lower()}."
