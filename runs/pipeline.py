"""The orchestrator: runs a claimed run's stages in order, each stage's calls concurrently.

Durability: each stage starts by reading what is already on disk and in the database, so a resumed run (after
SIGTERM, kill -9, a 401 or a failure) keeps every finished (stage, model) artifact and never asks for it again.
Each artifact is written the moment its call finishes. Database writes are short and run in Django's sync
thread (`sync_to_async`); no transaction is ever open while a model is thinking.

council/ does the talking (prompts, reply rules); this module decides who is asked what, and records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings

from council.client import NeedsAuth, RetryNotice, UpstreamError
from council.deid import IdentifierRefused
from council.stages import STEPS
from council.stages.base import CallLimits, CompletionClient, CouncilInput, ModelFailed
from council.stages.registry import Call, Step, StepCannotStart
from jobs.models import Job
from jobs.services import Beat
from runs import selectors, services, sources
from runs.models import Artifact, Run

log = logging.getLogger(__name__)


class StageFailed(Exception):
    """A stage's requirement does not hold (e.g. no analysis at all, no consolidation): the run fails."""


class ClaimLost(Exception):
    """Another process took the run from this runner (it was judged dead); stop without touching it."""


class CancelRequested(Exception):
    """Someone asked this run to stop (POST /api/runs/{id}/cancel); it ends cancelled, resumable."""


@dataclass
class StageTally:
    stage: int
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)  # finished before this runner started: not re-requested
    dropped: list[str] = field(default_factory=list)  # left out while being asked: its call was abandoned


@dataclass
class Flight:
    """The calls in flight, so a model the clinician goes on without (runs/services.council_change, drop)
    has its call abandoned at the runner's next heartbeat instead of holding up the stage."""

    calls: dict[tuple[int, str], asyncio.Task] = field(default_factory=dict)
    abandoned: set[tuple[int, str]] = field(default_factory=set)

    def abandon(self, dropped: dict[str, int]) -> None:
        for (stage, model), task in list(self.calls.items()):
            if model in dropped and dropped[model] <= stage and not task.done():
                self.abandoned.add((stage, model))
                task.cancel()


@dataclass
class Progress:
    """Hooks for a live display (runpipeline's terminal); all optional."""

    on_stage: Callable[[int, list[str]], None] = lambda stage, models: None
    on_model: Callable[[int, str, str, Artifact | None], None] = lambda stage, model, status, a: None


# -- database helpers, each a short autocommitted step in Django's sync thread ---------------------------


@sync_to_async
def _load(run_id: int) -> tuple[Run, CouncilInput]:
    """The run and what every stage is given: the report, its fact table (as recorded when the run first
    started) and the context, de-identified (runs.sources)."""
    run = Run.objects.select_related("patient", "report").get(pk=run_id)
    services.run_facts_record(run=run)
    source = sources.run_source(run)
    if not source.council_input.report_text.strip():
        raise StageFailed(f"Report {run.report_id} has no text to give the council (is it ready?).")
    return run, source.council_input


@sync_to_async
def _artifacts(run_id: int) -> list[Artifact]:
    return list(Artifact.objects.filter(run_id=run_id))


@sync_to_async
def _membership(run: Run) -> Run:
    """The run's council as it is now (a council change may land while it runs)."""
    run.refresh_from_db(fields=["council_models", "consolidator", "label_map", "dropped", "catch_up"])
    return run


@sync_to_async
def _dropped(run_id: int) -> dict[str, int]:
    return Run.objects.values_list("dropped", flat=True).get(pk=run_id)


@sync_to_async
def _outputs(artifacts: list[Artifact], step: Step) -> dict[int, dict[str, str]]:
    """Stage number → model id → stored text of the OK outputs of the steps `step` reads (as stored: the
    registry redacts them before any prompt sees them)."""
    outputs: dict[int, dict[str, str]] = {}
    for declared in step.inputs:
        earlier = STEPS[declared.step]
        texts = outputs.setdefault(earlier.number, {})
        for artifact in _ok(artifacts, earlier.number):
            try:
                texts[artifact.model_id] = selectors.artifact_text(artifact)
            except OSError:
                if earlier.schema is None:
                    raise
                log.warning(
                    "run %s: stored artifact %s cannot be read; left out", artifact.run_id, artifact.pk
                )
    return outputs


async def _record(*, run_id: int, stage: int, model_id: str, outcome: services.Outcome) -> Artifact:
    """The answer's file from a thread of its own (the answers of a stage are fsync'd side by side), then its
    row and events in Django's sync thread, one short transaction."""
    stored = None
    if outcome.text is not None:
        stored = await asyncio.to_thread(
            services.artifact_store_text, run_id=run_id, stage=stage, model_id=model_id, text=outcome.text
        )
    return await sync_to_async(services.artifact_record)(
        run_id=run_id, stage=stage, model_id=model_id, outcome=outcome, stored=stored
    )


_stage_begin = sync_to_async(services.stage_begin)
_stage_end = sync_to_async(services.stage_end)
_model_started = sync_to_async(services.model_started)
_heartbeat = sync_to_async(services.run_heartbeat)
_retrying = sync_to_async(services.model_retrying)

# (run id, stage, model id) of the call the current task makes: set where the call starts, so the client's
# retry notices (council.client.RetryNotice) land on the run, stage and model they belong to.
_CALL: contextvars.ContextVar[tuple[int, int, str] | None] = contextvars.ContextVar(
    "council_call", default=None
)


async def report_retry(notice: RetryNotice) -> None:
    """The client's `on_retry`: a `model_retrying` event on the live run ("429 from the upstream, retrying
    in 12 s, attempt 3 of 5"). Calls made outside a run's stage (a health check) are not reported."""
    call = _CALL.get()
    if call is None:
        return
    run_id, stage, model = call
    await _retrying(run_id=run_id, stage=stage, model_id=model, notice=notice)


_finish = sync_to_async(services.run_finish)
_model_dropped = sync_to_async(services.model_dropped)
_caught_up = sync_to_async(services.run_caught_up)


def _ok(artifacts: list[Artifact], stage: int) -> list[Artifact]:
    return [a for a in artifacts if a.stage == stage and a.status == Artifact.Status.OK]


# -- the run ----------------------------------------------------------------------------------------------


def limits_from_settings() -> CallLimits:
    return CallLimits(
        max_tokens=settings.COUNCIL_MAX_TOKENS or None,
        max_continuations=settings.COUNCIL_MAX_CONTINUATIONS,
        json_retries=settings.COUNCIL_JSON_RETRIES,
    )


async def drive(run_id: int, *, job: Job, client: CompletionClient, progress: Progress | None = None) -> str:
    """Run a run this process has claimed (with `job`) to its end; returns the final status. Heartbeats
    meanwhile. Cancelling the task (SIGTERM) leaves the run interrupted, a cancel request cancelled; both
    resumable."""
    progress = progress or Progress()
    flight = Flight()
    work = asyncio.create_task(execute(run_id, client=client, progress=progress, flight=flight))
    beat = asyncio.create_task(_heartbeat_loop(run_id, job=job, work=work, flight=flight))
    try:
        status = await work
        await _finish(run_id=run_id, status=status, job=job)
        return status
    except asyncio.CancelledError:
        stopped_by = beat.exception() if beat.done() and not beat.cancelled() else None
        if isinstance(stopped_by, ClaimLost):
            log.error("run %s: this runner lost its claim; stopping without touching the run", run_id)
            return "lost"
        if isinstance(stopped_by, CancelRequested):
            log.warning("run %s: cancelled on request", run_id)
            await _finish(run_id=run_id, status=Run.Status.CANCELLED, error=services.CANCELLED, job=job)
            return Run.Status.CANCELLED
        await _finish(
            run_id=run_id,
            status=Run.Status.INTERRUPTED,
            error="Stopped before it finished (the runner was told to stop). Start the run again to resume.",
            job=job,
        )
        return Run.Status.INTERRUPTED
    except _Stop as stop:
        level = logging.WARNING if stop.status == Run.Status.NEEDS_AUTH else logging.ERROR
        log.log(level, "run %s: %s: %s", run_id, stop.status, stop.message)
        await _finish(run_id=run_id, status=stop.status, error=stop.message, job=job)
        return stop.status
    except Exception as exc:
        log.exception("run %s: the runner failed", run_id)
        await _finish(run_id=run_id, status=Run.Status.FAILED, error=f"Internal error: {exc}", job=job)
        return Run.Status.FAILED
    finally:
        beat.cancel()
        if not work.done():
            work.cancel()


async def _heartbeat_loop(run_id: int, *, job: Job, work: asyncio.Task, flight: Flight | None = None) -> None:
    while True:
        await asyncio.sleep(settings.RUN_HEARTBEAT_SECONDS)
        try:
            beat = await _heartbeat(run_id=run_id, job=job)
            if flight is not None and flight.calls:
                flight.abandon(await _dropped(run_id))
        except Exception:
            # A busy database now and then must not silence the runner for good; the next beat may pass.
            log.warning("run %s: heartbeat failed; trying again", run_id, exc_info=True)
            continue
        if beat is Beat.LOST:
            work.cancel()
            raise ClaimLost(run_id)
        if beat is Beat.CANCEL:
            work.cancel()
            raise CancelRequested(run_id)


class _Stop(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def execute(
    run_id: int, *, client: CompletionClient, progress: Progress, flight: Flight | None = None
) -> str:
    """Models that (re)joined answer what they missed first; then the stages after `stages_done`, in order.
    Raises _Stop for failed / needs_auth."""
    flight = flight or Flight()
    try:
        run, source = await _load(run_id)
    except StageFailed as exc:
        raise _Stop(Run.Status.FAILED, str(exc)) from exc
    limits = limits_from_settings()
    if run.catch_up:
        await _catch_up(run, source, limits, client, progress, flight)
    for step in STEPS.after(run.stages_done):
        artifacts = await _artifacts(run_id)
        run = await _membership(run)
        labels = selectors.labels_by_model(run)
        where = f"Stage {step.number} ({step.name})"
        try:
            calls = await _stage_calls(step, run, source, limits, client, artifacts, labels)
        except StageFailed as exc:
            raise _Stop(Run.Status.FAILED, f"{where}: {exc}") from exc
        tally = await _run_stage(run_id, step, calls, artifacts, progress, flight)
        # A model left out while it was being asked no longer counts towards the stage's requirement.
        ok, total = len(tally.ok) + len(tally.kept), len(calls) - len(tally.dropped)
        if not step.satisfied(ok=ok, total=total):
            reasons = "; ".join(f"{model}: {reason}" for model, reason in tally.failed.items())
            if ok == 0:
                raise _Stop(Run.Status.FAILED, f"{where}: every model failed — {reasons}")
            raise _Stop(Run.Status.FAILED, f"{where}: only {ok} of {total} calls succeeded — {reasons}")
    return Run.Status.COMPLETE


async def _catch_up(
    run: Run,
    source: CouncilInput,
    limits: CallLimits,
    client: CompletionClient,
    progress: Progress,
    flight: Flight,
) -> None:
    """A model that rejoined (or came in as a replacement) is asked, stage by stage, what it missed in the
    stages already done, with what the others left there; the others' answers are kept as they are. Killed
    halfway, the next runner does the rest: what it answered is on disk, and `catch_up` is cleared only at
    the end."""
    joining = list(run.catch_up)
    for step in STEPS:
        if step.number > run.stages_done:
            break
        artifacts = await _artifacts(run.pk)
        run = await _membership(run)
        try:
            calls = await _stage_calls(
                step, run, source, limits, client, artifacts, selectors.labels_by_model(run)
            )
        except StageFailed as exc:
            log.warning("run %s: Stage %s cannot be caught up: %s", run.pk, step.number, exc)
            continue
        answered = {a.model_id for a in _ok(artifacts, step.number)}
        missing = {m: call for m, call in calls.items() if m in joining and m not in answered}
        if missing:
            await _run_stage(run.pk, step, missing, artifacts, progress, flight, catching_up=True)
    await _caught_up(run_id=run.pk, models=joining)


async def _stage_calls(
    step: Step,
    run: Run,
    source: CouncilInput,
    limits: CallLimits,
    client: CompletionClient,
    artifacts: list[Artifact],
    labels: dict[str, str],
) -> dict[str, Call]:
    """model id → the call it makes in this step, built by the step from what earlier steps left on disk."""
    try:
        context, unreadable = STEPS.context(
            step,
            source=source,
            client=client,
            limits=limits,
            members=selectors.stage_participants(run, artifacts, step.number),
            labels=labels,
            model_ids=[*run.council_models, run.consolidator],
            outputs=await _outputs(artifacts, step),
        )
    except StepCannotStart as exc:
        raise StageFailed(str(exc)) from exc
    for gone in unreadable:
        log.warning(
            "run %s: stored %s artifact of %s no longer parses; left out: %s",
            run.pk,
            gone.step,
            gone.model_id,
            gone.error,
        )
    return step.calls(context)


async def _run_stage(
    run_id: int,
    step: Step,
    calls: dict[str, Call],
    artifacts: list[Artifact],
    progress: Progress,
    flight: Flight | None = None,
    *,
    catching_up: bool = False,
) -> StageTally:
    """Every call of a stage at once. `catching_up`: only the missing answers of a stage already done (a
    model that rejoined), which leaves the run's progress (`stages_done`) alone."""
    flight = flight or Flight()
    stage = step.number
    tally = StageTally(stage=stage)
    done_before = {a.model_id for a in _ok(artifacts, stage)}
    tally.kept = [m for m in calls if m in done_before]
    todo = {m: call for m, call in calls.items() if m not in done_before}
    await _stage_begin(run_id=run_id, stage=stage, models=list(calls))
    progress.on_stage(stage, list(calls))
    # Every call of the stage at once, unless an operator capped them (the client still limits each model).
    cap = settings.COUNCIL_CONCURRENCY
    gate = asyncio.Semaphore(cap) if cap else contextlib.nullcontext()

    async def one(model: str, call: Call) -> None:
        async with gate:
            # The request goes out first; the database hears of it while the model thinks, so the last
            # model of a stage does not wait for every other model's event to be written. The call's task
            # copies this context, so its retries are reported against this run, stage and model.
            _CALL.set((run_id, stage, model))
            answer = asyncio.ensure_future(call())
            try:
                await _model_started(run_id=run_id, stage=stage, model_id=model)
            except BaseException:
                answer.cancel()
                raise
            progress.on_model(stage, model, "started", None)
            try:
                output = await answer
            except asyncio.CancelledError:
                if (stage, model) not in flight.abandoned:
                    raise
                # The clinician went on without this model: nothing is recorded for it, the stage goes on.
                tally.dropped.append(model)
                await _model_dropped(run_id=run_id, stage=stage, model_id=model)
                progress.on_model(stage, model, "dropped", None)
                return
            except (NeedsAuth, IdentifierRefused):
                raise  # not this model's fault: the whole run stops (sign in again / fix the identifiers)
            except (ModelFailed, UpstreamError) as exc:
                usage = exc.usage if isinstance(exc, ModelFailed) else None
                outcome = services.Outcome(text=None, usage=usage, error=exc.message)
            else:
                outcome = services.Outcome(
                    text=output.text, usage=output.usage, error=output.note, details=output.details
                )
        artifact = await _record(run_id=run_id, stage=stage, model_id=model, outcome=outcome)
        if artifact.status == Artifact.Status.OK:
            tally.ok.append(model)
        else:
            tally.failed[model] = artifact.error
        progress.on_model(stage, model, artifact.status, artifact)

    tasks = {model: asyncio.ensure_future(one(model, call)) for model, call in todo.items()}
    flight.calls.update({(stage, model): task for model, task in tasks.items()})
    try:
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    finally:
        for model in tasks:
            flight.calls.pop((stage, model), None)
    # A call abandoned before it was under way ends as cancelled: it is a drop, not a failure of the run.
    results = [
        None if isinstance(r, asyncio.CancelledError) and (stage, m) in flight.abandoned else r
        for m, r in zip(tasks, results, strict=True)
    ]
    for model in tasks:
        if (stage, model) in flight.abandoned and model not in tally.dropped:
            tally.dropped.append(model)  # abandoned before its call was under way
            await _model_dropped(run_id=run_id, stage=stage, model_id=model)
    needs_auth = next((r for r in results if isinstance(r, NeedsAuth)), None)
    refused = next((r for r in results if isinstance(r, IdentifierRefused)), None)
    unexpected = next(
        (
            r
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, NeedsAuth | IdentifierRefused)
        ),
        None,
    )
    ok = len(tally.ok) + len(tally.kept)
    total = len(calls) - len(tally.dropped)
    satisfied = step.satisfied(ok=ok, total=total)
    await _stage_end(
        run_id=run_id,
        stage=stage,
        ok=ok,
        failed=len(tally.failed),
        total=total,
        dropped=len(tally.dropped),
        done=not catching_up and satisfied and needs_auth is None and refused is None and unexpected is None,
    )
    if refused is not None:
        # Says which stage and what kind of identifier, never the identifier itself.
        raise _Stop(Run.Status.FAILED, f"Stage {stage} ({step.name}): {refused.message}")
    if needs_auth is not None:
        raise _Stop(
            Run.Status.NEEDS_AUTH,
            f"CLIProxyAPI needs you to sign in again: {needs_auth.message} "
            "Sign in with the provider, then start the run again; finished work is kept.",
        )
    if unexpected is not None:
        raise unexpected
    return tally


def elapsed_since(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60}:{seconds % 60:02d}"
