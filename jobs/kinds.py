"""The kinds of long work, registered by the apps that own them (in their AppConfig.ready). Adding a kind of
job is one entry: the `manage.py` command that does it, and what its own rows become when a runner dies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _nothing() -> int:
    return 0


@dataclass(frozen=True)
class JobKind:
    name: str  # the manage.py command that does the work; also Job.kind
    # Mark the app's rows whose job is no longer alive (a run → interrupted, a report → pending). Called from
    # reads too, so it writes with compare-and-set only and never launches anything. Returns how many.
    settle: Callable[[], int]
    # Submit work left waiting with no live job (reports pending after their runner died). Only called
    # where launching is allowed: server start, an upload, a start, a finishing runner.
    resume: Callable[[], int] = _nothing
    # What a warm runner (jobs/warm.py) loads once before it forks this kind's processes, beyond the command's
    # own imports: what every job of the kind would otherwise load anew.
    prepare: Callable[[], object] = _nothing
    settled_line: str = "{n} {name} job(s) stopped without a word."
    resumed_line: str = "Resumed {n} {name} job(s)."


_registry: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    _registry[kind.name] = kind
    return kind


def get(name: str) -> JobKind:
    try:
        return _registry[name]
    except KeyError:
        raise LookupError(f"No job kind {name!r} is registered (known: {', '.join(_registry)}).") from None


def registered() -> list[JobKind]:
    return list(_registry.values())
