"""Per-person limits on council runs: how many may be in flight at once (RUNS_MAX_IN_FLIGHT_PER_USER) and
how many model calls a day (MODEL_CALLS_PER_USER_PER_DAY), and the estimate of calls shown before a start.

A model call is one (stage, model) output, an artifact, whatever retries it took. The estimate is one call
per taker of every step still to run (council/stages: who takes part), so it is what the quota counts. A
start is refused when today's calls in the person's runs, plus what their runs in flight still have to make,
plus this run's estimate, pass the day's quota; the check and the queueing share one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from council.stages import STEPS
from runs.models import Artifact, Run

IN_FLIGHT = (Run.Status.QUEUED, Run.Status.RUNNING)


class LimitReached(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def planned_calls(*, council: list[str], consolidator: str, after_stage: int = 0) -> int:
    """Model calls a run makes in the steps after `after_stage`: one per taker of each step (a step with
    fewer takers than it needs, such as peer review for a council of one, is skipped)."""
    total = 0
    for step in STEPS:
        if step.number <= after_stage:
            continue
        takers = step.takers.everyone(council, consolidator)
        if len(takers) >= step.takers.at_least:
            total += len(takers)
    return total


def run_estimate(run: Run) -> int:
    """The calls a whole run makes."""
    return planned_calls(council=run.council_models, consolidator=run.consolidator)


def calls_to_come(run: Run) -> int:
    """The calls a run has still to make (it resumes after `stages_done`, keeping what it has)."""
    planned = planned_calls(
        council=run.council_models, consolidator=run.consolidator, after_stage=run.stages_done
    )
    made = run.artifacts.filter(stage__gt=run.stages_done).count()
    return max(0, planned - made)


@dataclass(frozen=True)
class Quota:
    limit: int  # model calls a day; 0: no limit
    used_today: int  # calls made since midnight (TIME_ZONE) in this person's runs
    reserved: int  # calls their runs in flight have still to make
    in_flight: int
    max_in_flight: int  # 0: no limit

    @property
    def left(self) -> int | None:
        return None if not self.limit else max(0, self.limit - self.used_today - self.reserved)


def quota(user: Any, *, leaving_out: Run | None = None) -> Quota:
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    flying = Run.objects.filter(created_by=user, status__in=IN_FLIGHT)
    if leaving_out is not None:
        flying = flying.exclude(pk=leaving_out.pk)
    flying = list(flying)
    return Quota(
        limit=settings.MODEL_CALLS_PER_USER_PER_DAY,
        used_today=Artifact.objects.filter(run__created_by=user, created_at__gte=midnight).count(),
        reserved=sum(calls_to_come(run) for run in flying),
        in_flight=len(flying),
        max_in_flight=settings.RUNS_MAX_IN_FLIGHT_PER_USER,
    )


def check_start(*, user: Any, calls: int, leaving_out: Run | None = None) -> None:
    """LimitReached with the reason if `user` may not start a run that makes `calls` model calls now."""
    if user is None or not getattr(user, "is_authenticated", False):
        return  # an operator's own command line: no per-person limit
    mine = quota(user, leaving_out=leaving_out)
    if mine.max_in_flight and mine.in_flight >= mine.max_in_flight:
        raise LimitReached(
            f"You have {mine.in_flight} run{'s' if mine.in_flight != 1 else ''} in flight, the most one person "
            f"may have at once (RUNS_MAX_IN_FLIGHT_PER_USER = {mine.max_in_flight}). Start this one when one "
            "of them has finished."
        )
    if mine.left is not None and calls > mine.left:
        raise LimitReached(
            f"This run makes about {calls} model calls, and you have {mine.left} of today's "
            f"{mine.limit} left (MODEL_CALLS_PER_USER_PER_DAY: {mine.used_today} made today, {mine.reserved} "
            "still to come in your runs in flight). Choose a smaller council, or start it tomorrow."
        )
