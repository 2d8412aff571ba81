"""Run events: the append-only record of what happened in a run, and the only bus between the `runpipeline`
process that writes them and the web server's live stream that reads them (on PostgreSQL each committed event
is also announced with NOTIFY, so web processes on any host hear of it without polling).

Kinds (the SSE event names), with what each carries besides `stage` and `model_id`:

| kind             | stage | model | data                                                        |
|------------------|-------|-------|-------------------------------------------------------------|
| status           |       |       | status, error (run status changed: queued, running, needs_auth, interrupted, complete, failed) |
| stage_started    | n     |       | models: [model ids taking part]                             |
| model_started    | n     | id    | attempt                                                     |
| model_retrying   | n     | id    | status, wait_seconds, attempt (next), max_attempts, sentence, error |
| artifact_written | n     | id    | artifact_id, artifact_kind (md/json), tokens, latency_ms     |
| model_finished   | n     | id    | artifact_id, prompt_tokens, completion_tokens, latency_ms, attempts |
| model_failed     | n     | id    | error                                                       |
| stage_finished   | n     |       | ok, failed, total                                           |
| model_dropped    | n     | id    | (the runner abandoned its call: the council goes on without it) |
| council_changed  | n     | id    | change (drop, reask, replace, rejoin): runs/services.council_change |
| selected         |       |       | artifact_id                                                 |
| exported         |       |       | artifact_id                                                 |
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction

from runs.models import Run, RunEvent

STATUS = "status"
STAGE_STARTED = "stage_started"
STAGE_FINISHED = "stage_finished"
MODEL_STARTED = "model_started"
MODEL_RETRYING = "model_retrying"
MODEL_FINISHED = "model_finished"
MODEL_FAILED = "model_failed"
ARTIFACT_WRITTEN = "artifact_written"
MODEL_DROPPED = "model_dropped"
COUNCIL_CHANGED = "council_changed"
SELECTED = "selected"
EXPORTED = "exported"

# PostgreSQL: every committed event is announced on this channel as "<run_id>:<event_id>" (runs/feed.py).
NOTIFY_CHANNEL = "qeeg_run_events"
ADVISORY_LOCK_CLASS = 8117  # first key of the per-run advisory lock; the second is the run id

KINDS = (
    STATUS,
    STAGE_STARTED,
    STAGE_FINISHED,
    MODEL_STARTED,
    MODEL_RETRYING,
    MODEL_FINISHED,
    MODEL_FAILED,
    ARTIFACT_WRITTEN,
    MODEL_DROPPED,
    COUNCIL_CHANGED,
    SELECTED,
    EXPORTED,
)


def event_emit(
    *, run: Run | int, kind: str, stage: int | None = None, model_id: str = "", **data: Any
) -> RunEvent:
    """Append one event. Short and autocommitted: never called inside a transaction held across a model call."""
    if kind not in KINDS:
        raise ValueError(f"unknown run event kind {kind!r}")
    run_id = run if isinstance(run, int) else run.pk
    if connection.vendor != "postgresql":
        # SQLite has one writer at a time, so ids are committed in id order; the stream polls for them.
        return RunEvent.objects.create(run_id=run_id, kind=kind, stage=stage, model_id=model_id, data=data)
    with transaction.atomic(), connection.cursor() as cursor:
        # PostgreSQL hands out ids before commit, so two writers could commit a run's events out of id order and
        # a stream that has sent the later one would never send the earlier. One writer per run at a time
        # (lock held to commit) makes a run's ids commit in order; other runs are not held up.
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_CLASS, run_id & 0x7FFFFFFF])
        event = RunEvent.objects.create(run_id=run_id, kind=kind, stage=stage, model_id=model_id, data=data)
        # Delivered to every listening web process when (and only if) this transaction commits.
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, f"{run_id}:{event.pk}"])
    return event
