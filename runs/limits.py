"""Per-person limits on model calls: how many runs may be in flight at once (RUNS_MAX_IN_FLIGHT_PER_USER) and
how many model calls a day (MODEL_CALLS_PER_USER_PER_DAY), and the estimate shown before anything asks.

A model call is one answer asked of a model, whatever retries it took: a stage's (stage, model) output, or
a patient version (ingestion's vision reader counts its own: patients/services.py). Every call made is one
`ModelCall` row in the ledger (ledger/calls.py: `call_made`, the one way in), charged to the person who set it
going: whoever last started the run or changed its council (`Run.started_by`), or asked
for the patient version. The rows stay when the answer does not (asked again, replaced, `--from-stage`), so
what was spent stays spent. Before anything asks, `check_start` refuses it when today's calls, plus what the
person's work in flight still has to make, plus its estimate, pass the day's quota:

- a run's start: one call per taker of every step still to run (council/stages: who takes part), less the
  answers it keeps, plus the missing answers of models catching up (`calls_to_come`);
- a council change: the same count over the run as the change leaves it (`change_calls`);
- a patient version: one call (`PATIENT_VERSION_CALLS`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from council.stages import STEPS
from ledger import calls as ledger
from runs.models import Artifact, PatientVersionRequest, Run

if TYPE_CHECKING:
    from runs.services import ChangePlan

IN_FLIGHT = (Run.Status.QUEUED, Run.Status.RUNNING)
PATIENT_VERSION_CALLS = 1  # one model writes it, in one call


class LimitReached(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def planned_calls(
    *, council: list[str], consolidator: str, after_stage: int = 0, dropped: dict[str, int] | None = None
) -> int:
    """Model calls a run makes in the steps after `after_stage`: one per taker of each step (a step with
    fewer takers than it needs, such as peer review for a council of one, is skipped); a council member
    left out (`dropped`: model → from which stage) is not asked from its stage on."""
    dropped = dropped or {}
    total = 0
    for step in STEPS:
        if step.number <= after_stage:
            continue
        takers = [
            m
            for m in step.takers.everyone(council, consolidator)
            if step.by_consolidator or dropped.get(m, step.number + 1) > step.number
        ]
        if len(takers) >= step.takers.at_least:
            total += len(takers)
    return total


def run_estimate(run: Run) -> int:
    """The calls a whole run makes."""
    return planned_calls(council=run.council_models, consolidator=run.consolidator, dropped=run.dropped)


def calls_to_come(run: Run, artifacts: Iterable[Artifact] | None = None) -> int:
    """The calls a run has still to make: the steps after `stages_done`, less the answers it keeps there (a
    failed one is asked again), plus the answers the models catching up have still to give in the stages
    done. `artifacts`: the run's answers (default: as stored)."""
    if artifacts is None:
        artifacts = run.artifacts.only("stage", "model_id", "status")
    answered = {(a.stage, a.model_id) for a in artifacts if a.status == Artifact.Status.OK}
    planned = planned_calls(
        council=run.council_models,
        consolidator=run.consolidator,
        after_stage=run.stages_done,
        dropped=run.dropped,
    )
    kept = sum(1 for stage, _ in answered if stage > run.stages_done)
    catch_up = sum(
        1
        for model in run.catch_up
        for step in STEPS
        if not step.by_consolidator
        and step.number <= run.stages_done
        and (step.number, model) not in answered
    )
    return max(0, planned - kept) + catch_up


def change_calls(run: Run, artifacts: Sequence[Artifact], plan: ChangePlan) -> int:
    """The calls `run` has to make once the council change `plan` is made: its answers less the discarded
    ones, its membership as the change leaves it (a copy; nothing is saved)."""
    after = copy.copy(run)
    for name, value in plan.fields.items():
        setattr(after, name, value)
    discarded = {a.pk for a in plan.discard}
    return calls_to_come(after, [a for a in artifacts if a.pk not in discarded])


def charged_for(run_id: int) -> int | None:
    """Who a run's calls are charged to: whoever last started it or changed its council, else its creator."""
    started_by, created_by = Run.objects.values_list("started_by_id", "created_by_id").get(pk=run_id)
    return started_by or created_by


@dataclass(frozen=True)
class Quota(ledger.Allowance):
    in_flight: int  # runs queued or running
    max_in_flight: int  # 0: no limit


def _in_flight(user: Any, leaving_out: Run | None = None) -> tuple[list[Run], int]:
    """`user`'s runs in flight and the calls their work in flight (runs, patient versions) has still to make."""
    flying = Run.objects.filter(started_by=user, status__in=IN_FLIGHT)
    if leaving_out is not None:
        flying = flying.exclude(pk=leaving_out.pk)
    flying = list(flying)
    writing = PatientVersionRequest.objects.filter(requested_by=user, status__in=PatientVersionRequest.ACTIVE)
    return flying, sum(calls_to_come(run) for run in flying) + PATIENT_VERSION_CALLS * writing.count()


def reserved_calls(user: Any) -> int:
    """What the ledger holds for `user`'s runs and patient versions in flight (registered in runs/apps.py)."""
    return _in_flight(user)[1]


def quota(user: Any, *, leaving_out: Run | None = None) -> Quota:
    flying, reserved = _in_flight(user, leaving_out)
    if settings.MODEL_CALLS_PER_USER_PER_DAY:  # other apps' work in flight too (a vision pass under way)
        reserved += ledger.held_for(user, besides=reserved_calls)
    return Quota(
        limit=settings.MODEL_CALLS_PER_USER_PER_DAY,
        used_today=ledger.used_today(user),
        reserved=reserved,
        in_flight=len(flying),
        max_in_flight=settings.RUNS_MAX_IN_FLIGHT_PER_USER,
    )


def check_start(
    *, user: Any, calls: int, leaving_out: Run | None = None, doing: str = "This run makes", starts_run=True
) -> None:
    """LimitReached with the reason if `user` may not set `calls` model calls going now. `doing` names
    what asks ("This change makes"); `starts_run`: it puts a run in flight (the in-flight cap applies)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return  # an operator's own command line: no per-person limit
    mine = quota(user, leaving_out=leaving_out)
    if starts_run and mine.max_in_flight and mine.in_flight >= mine.max_in_flight:
        raise LimitReached(
            f"You have {mine.in_flight} run{'s' if mine.in_flight != 1 else ''} in flight, the most one person "
            f"may have at once (RUNS_MAX_IN_FLIGHT_PER_USER = {mine.max_in_flight}). Start this one when one "
            "of them has finished."
        )
    if refusal := mine.refusal(calls, doing):
        raise LimitReached(f"{refusal} Ask for less, or again tomorrow.")
