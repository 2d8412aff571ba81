"""The one job runtime: every long piece of work (report ingestion, council runs, and what comes next) is a
Job done by one `manage.py <kind> <args>` process. No daemon:

- `job_submit` queues a job; `jobs_fill_slots` launches queued jobs while fewer than JOBS_MAX_RUNNING are in
  flight. It runs after a submit, when a runner finishes (so the runner that frees a slot starts the next
  job), and in `jobs_recover` (server start, uploads, starts).
- The process claims its job with a compare-and-set update, stamping it with its host (QEEG_HOST_ID) and pid;
  a hand-started process with no job waiting creates one. At most one job per (kind, target) is active: the
  database refuses a second, so two hosts starting the same work get one runner.
- The runner heartbeats (`job_heartbeat`); a job silent for RUN_STALE_SECONDS is dead wherever it ran.
  `jobs_mark_lost` marks such jobs lost and lets each kind settle its own rows (never launching: reads call
  it); `jobs_recover` also resumes waiting work and fills free slots.
- `job_cancel` asks a runner to stop; it notices at its next heartbeat and ends its work cleanly.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from jobs import kinds, launcher, selectors
from jobs.models import Job

log = logging.getLogger(__name__)
M = TypeVar("M", bound=models.Model)

# Any fixed number: the PostgreSQL advisory lock that makes "count in flight, then launch" one step.
_SLOTS_LOCK = 7_202_601
# Set in the environment of a process the runtime launched: the one job it may claim.
JOB_ID_ENV = "QEEG_JOB_ID"


class Beat(enum.Enum):
    HELD = "held"  # carry on
    CANCEL = "cancel"  # someone asked this runner to stop: end the work cleanly
    LOST = "lost"  # the job is no longer this runner's (judged dead, cancelled before it began)


def host_id() -> str:
    return settings.QEEG_HOST_ID


def target_of(args: Sequence[str]) -> str:
    """The job's target from its command arguments: `12`, `3-4`, or a cut, hashed form for long batches."""
    return launcher.log_stem(*args) if args else "-"


# -- submitting and launching ------------------------------------------------------------------------------


def job_submit(*, kind: str, args: Sequence[str], origin: tuple[str, str] | None = None) -> Job:
    """Queue `manage.py kind args…`; it is launched once the transaction commits if a slot is free. If a job
    for the same work is already active (and alive), that one is returned instead. `origin`: where the
    request asking for it came from (audit.origin_of), for the audit rows the job writes (Job.origin)."""
    kinds.get(kind)  # an unknown kind is a programming error; say so now, not in a child process
    args = [str(arg) for arg in args]
    target = target_of(args)
    for _ in range(2):
        try:
            with transaction.atomic():
                ip, user_agent = origin or ("", "")
                job = Job.objects.create(
                    kind=kind,
                    target=target,
                    args=args,
                    asked_from=ip or None,
                    asked_user_agent=user_agent[:300],
                )
        except IntegrityError:
            existing = selectors.active_job(kind=kind, target=target)
            if existing is not None and (selectors.job_alive(existing) or not _mark_lost(existing)):
                return existing
            continue  # it was dead (now marked lost) or just finished: try again
        transaction.on_commit(jobs_fill_slots)
        return job
    raise RuntimeError(f"could not queue {kind} {target}: another job keeps appearing for it")


def _lock_slots() -> None:
    # SQLite: the IMMEDIATE transaction already holds the database's write lock. PostgreSQL: take a lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SLOTS_LOCK])


def jobs_fill_slots() -> list[Job]:
    """Launch the oldest queued jobs while fewer than JOBS_MAX_RUNNING are in flight; returns those launched."""
    with transaction.atomic():
        _lock_slots()
        free = settings.JOBS_MAX_RUNNING - selectors.in_flight()
        if free <= 0:
            return []
        now = timezone.now()
        picked = []
        for job in Job.objects.filter(status=Job.Status.QUEUED).order_by("created_at", "pk")[:free]:
            log_path = launcher.log_dir() / f"{launcher.log_stem(job.kind, job.target)}-job{job.pk}.log"
            # A launched job counts as in flight (and must claim within RUN_STALE_SECONDS) from now on.
            if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
                status=Job.Status.STARTING, launched_at=now, heartbeat_at=now, log_path=str(log_path)
            ):
                picked.append(job)
    for job in picked:
        _launch(job)
    return picked


def _launch(job: Job) -> None:
    job.refresh_from_db()
    try:
        launcher.launch_command(
            job.kind, *job.args, log_path=Path(job.log_path), env={JOB_ID_ENV: str(job.pk)}
        )
    except OSError as exc:
        log.exception("job %s (%s %s): could not launch its process", job.pk, job.kind, job.target)
        Job.objects.filter(pk=job.pk, status=Job.Status.STARTING).update(
            status=Job.Status.LOST, error=f"Could not start the runner: {exc}", finished_at=timezone.now()
        )
        kinds.get(job.kind).settle()


# -- the runner's side -------------------------------------------------------------------------------------


def job_claim(*, kind: str, args: Sequence[str]) -> Job | None:
    """Take the job for this work as this process (host + pid). A process the runtime launched takes the
    job it was launched for, or nothing (it was cancelled, or another runner took it meanwhile). One started
    by hand takes the job queued for this work, or makes a new one. None when a live runner already holds
    it; a dead holder (silent too long) is marked lost first."""
    args = [str(arg) for arg in args]
    target = target_of(args)
    me = {"host": host_id(), "pid": os.getpid()}
    if launched_for := os.environ.get(JOB_ID_ENV, "").strip():
        now = timezone.now()
        taken = Job.objects.filter(
            pk=int(launched_for) if launched_for.isdigit() else 0,
            kind=kind,
            target=target,
            status__in=(Job.Status.QUEUED, Job.Status.STARTING),
            cancel_requested=False,
        ).update(status=Job.Status.RUNNING, heartbeat_at=now, started_at=now, **me)
        return Job.objects.get(pk=launched_for) if taken else None
    for _ in range(3):
        now = timezone.now()
        running = {"status": Job.Status.RUNNING, "heartbeat_at": now, "started_at": now, **me}
        job = selectors.active_job(kind=kind, target=target)
        if job is None:
            try:
                with transaction.atomic():
                    return Job.objects.create(kind=kind, target=target, args=args, **running)
            except IntegrityError:
                continue  # another process made one this instant; look again
        if job.status in (Job.Status.QUEUED, Job.Status.STARTING):
            # Compare-and-set: of the processes that see this job waiting, exactly one takes it.
            if Job.objects.filter(pk=job.pk, status=job.status, cancel_requested=False).update(**running):
                job.refresh_from_db()
                return job
            continue
        if selectors.job_alive(job):
            return None
        _mark_lost(job)
    return None


def job_heartbeat(*, job: Job) -> Beat:
    """Say this runner is alive, and learn whether it should go on."""
    mine = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, host=job.host, pid=job.pid)
    if not mine.update(heartbeat_at=timezone.now()):
        return Beat.LOST
    return Beat.CANCEL if mine.filter(cancel_requested=True).exists() else Beat.HELD


def job_finish(*, job: Job, status: str = Job.Status.DONE, error: str = "") -> bool:
    """End this runner's job, then launch whatever waits for the slot it frees."""
    ended = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, host=job.host, pid=job.pid).update(
        status=status, error=error, finished_at=timezone.now()
    )
    try:
        jobs_fill_slots()
    except Exception:
        log.exception("job %s: could not start the next queued job", job.pk)
    return ended == 1


def job_cancel(*, job: Job) -> bool:
    """Ask the job to stop. One that has not begun is cancelled at once (its process, if launched, finds
    nothing to claim); a running one stops at its next heartbeat. False if it had already ended."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status__in=(Job.Status.QUEUED, Job.Status.STARTING)).update(
        status=Job.Status.CANCELLED, cancel_requested=True, finished_at=now
    ):
        return True
    return bool(Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True))


# -- dead runners ------------------------------------------------------------------------------------------


def lost_reason(job: Job | None) -> str:
    """Why the work of a dead job stopped, in words (before it is marked lost)."""
    if job is None:
        return "It has no runner."
    if job.error:
        return job.error if job.error.endswith(".") else f"{job.error}."
    if job.status == Job.Status.STARTING:
        return "Its runner never started."
    if job.status in (Job.Status.RUNNING, Job.Status.LOST):
        return f"Its runner ({job.runner}) went silent."
    return "Its runner ended without finishing it."


def dead_rows(rows: QuerySet[M]) -> Iterator[tuple[M, str]]:
    """The rows of `rows` (a model with a `job` foreign key) whose job is dead, each with the reason. A stale
    job is marked lost first, by compare-and-set: one whose runner beat meanwhile keeps its row. The caller
    settles each row with its own compare-and-set (on `job_id`); nothing here launches anything."""
    for row in rows.filter(selectors.dead_q("job")).select_related("job"):
        job = row.job
        reason = lost_reason(job)
        if job is not None and job.status in Job.IN_FLIGHT and not _mark_lost(job):
            continue
        yield row, reason


def _mark_lost(job: Job) -> bool:
    """Compare-and-set on the heartbeat we judged, so a runner that beat meanwhile keeps its job."""
    reason = lost_reason(job)
    marked = Job.objects.filter(pk=job.pk, status=job.status, heartbeat_at=job.heartbeat_at).update(
        status=Job.Status.LOST, error=job.error or reason, finished_at=timezone.now()
    )
    if marked:
        log.warning("job %s (%s %s) lost: %s", job.pk, job.kind, job.target, reason)
    return bool(marked)


def jobs_mark_lost() -> int:
    """Mark jobs whose runner is silent as lost and let every kind settle its rows. Launches nothing, so
    pages and the API may call it to show honest state. Returns how many rows were settled."""
    for job in selectors.stale_jobs():
        _mark_lost(job)
    return sum(kind.settle() for kind in kinds.registered())


def jobs_recover() -> list[str]:
    """Where launching is allowed (server start, an upload, starting a run): settle dead work, resume what
    waits, fill free slots. One line per thing done, for the operator."""
    for job in selectors.stale_jobs():
        _mark_lost(job)
    lines = []
    for kind in kinds.registered():
        if settled := kind.settle():
            lines.append(kind.settled_line.format(n=settled, name=kind.name))
        if resumed := kind.resume():
            lines.append(kind.resumed_line.format(n=resumed, name=kind.name))
    transaction.on_commit(jobs_fill_slots)
    return lines
