"""Jobs as a runner would leave them, for tests that need a run or report held by a live (or dead) runner."""

from __future__ import annotations

import itertools
import os
from datetime import datetime

from django.utils import timezone

from jobs.models import Job

_targets = itertools.count(1)


def runner_job(
    *,
    kind: str = "runpipeline",
    target: str | None = None,
    heartbeat_at: datetime | None = None,
    host: str = "test-host",
    pid: int | None = None,
    status: str = Job.Status.RUNNING,
) -> Job:
    """A job claimed by a runner on `host` whose last heartbeat was `heartbeat_at` (default: now, alive)."""
    now = timezone.now()
    return Job.objects.create(
        kind=kind,
        target=target or f"t{next(_targets)}",
        status=status,
        host=host,
        pid=pid or os.getpid(),
        heartbeat_at=heartbeat_at or now,
        started_at=now,
    )
