"""What the web server does once when it starts: pick up work a crash or restart left behind."""

from __future__ import annotations

from collections.abc import Iterator


def recover() -> Iterator[str]:
    """Yield one line per thing recovered, for the operator's terminal."""
    from jobs.services import jobs_recover
    from patients.services import reports_sweep_files

    reports_sweep_files()
    yield from jobs_recover()
