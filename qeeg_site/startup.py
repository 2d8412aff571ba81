"""What the web server does once when it starts: pick up work a crash or restart left behind."""

from __future__ import annotations

from collections.abc import Iterator


def recover() -> Iterator[str]:
    """Yield one line per thing recovered, for the operator's terminal."""
    from patients.services import reports_resume_pending
    from runs.services import runs_mark_stale_interrupted

    if resumed := reports_resume_pending():
        yield f"Resumed ingestion of {resumed} report(s) left unfinished."
    if interrupted := runs_mark_stale_interrupted():
        yield f"Marked {interrupted} run(s) interrupted: their runner stopped without a word."
