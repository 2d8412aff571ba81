"""Counting model calls against MODEL_CALLS_PER_USER_PER_DAY: `call_made` records one (the one way in), and
`allowance` says how many a person has left today before anything asks.

A call is charged to the person who set it going (None: an operator's own command line, counted and charged
to nobody). What a person's work in flight has still to make is held for it: each app whose work reserves
calls registers a function (`reserves`, user → calls still to come), so that this module needs to know
nothing of runs or reports (runs/limits.py registers the runs' and patient versions' counts,
patients/apps.py the vision reader's holds on reports being read)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from ledger.models import ModelCall

_RESERVED: list[Callable[[Any], int]] = []


def reserves(count: Callable[[Any], int]) -> Callable[[Any], int]:
    """Register `count(user)`: the calls that person's work in flight has still to make."""
    if count not in _RESERVED:
        _RESERVED.append(count)
    return count


def held_for(user: Any, *, besides: Callable[[Any], int] | None = None) -> int:
    """The calls `user`'s work in flight has still to make, by every registered count but `besides` (a
    caller that counts its own kind of work itself, as a run's start does, leaving that run out)."""
    return sum(count(user) for count in _RESERVED if count is not besides)


def call_made(
    *,
    user_id: int | None,
    kind: str,
    model_id: str,
    run_id: int | None = None,
    report_id: int | None = None,
    stage: int | None = None,
) -> ModelCall:
    """Count one model call against `user_id`. Called where each call's outcome is recorded."""
    return ModelCall.objects.create(
        user_id=user_id, kind=kind, model_id=model_id, run_id=run_id, report_id=report_id, stage=stage
    )


def used_today(user: Any) -> int:
    """Calls charged to `user` (a user or its id) since midnight (TIME_ZONE)."""
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return ModelCall.objects.filter(user=user, made_at__gte=midnight).count()


@dataclass(frozen=True)
class Allowance:
    limit: int  # model calls a day; 0: no limit
    used_today: int  # calls made since midnight (TIME_ZONE) charged to this person
    reserved: int  # calls their work in flight has still to make

    @property
    def left(self) -> int | None:
        return None if not self.limit else max(0, self.limit - self.used_today - self.reserved)

    def refusal(self, calls: int, doing: str) -> str | None:
        """Why `calls` more may not be made now (`doing`: what would make them), or None."""
        if self.left is None or calls <= self.left:
            return None
        return (
            f"{doing} about {calls} model call{'s' if calls != 1 else ''}, and you have {self.left} of today's "
            f"{self.limit} left (MODEL_CALLS_PER_USER_PER_DAY: {self.used_today} made today, {self.reserved} "
            "still to come in your work in flight)."
        )


def allowance(user: Any, *, reserved: int | None = None) -> Allowance:
    """Today's allowance of `user` (a user or its id). `reserved`: what their work in flight still has to
    make, when the caller has counted it (default: every registered `reserves`)."""
    if reserved is None:
        reserved = held_for(user) if settings.MODEL_CALLS_PER_USER_PER_DAY else 0
    return Allowance(
        limit=settings.MODEL_CALLS_PER_USER_PER_DAY, used_today=used_today(user), reserved=reserved
    )
