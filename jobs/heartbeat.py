"""A heartbeat for runners whose work blocks (ingestion renders and OCRs in the main thread): a thread
beats every RUN_HEARTBEAT_SECONDS and, when the job was cancelled or taken from this runner, calls `on_stop`
once (e.g. to raise the runner's own SIGTERM handling). Asynchronous runners call job_heartbeat directly."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from django.conf import settings
from django.db import connection

from jobs.models import Job
from jobs.services import Beat, job_heartbeat

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, job: Job, *, on_stop: Callable[[Beat], None]) -> None:
        self.job = job
        self.on_stop = on_stop
        self.stopped: Beat | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-job-{job.pk}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        try:
            while not self._done.wait(settings.RUN_HEARTBEAT_SECONDS):
                try:
                    beat = job_heartbeat(job=self.job)
                except Exception:
                    # A busy database now and then must not silence the runner for good.
                    log.warning("job %s: heartbeat failed; trying again", self.job.pk, exc_info=True)
                    continue
                if beat is not Beat.HELD:
                    self.stopped = beat
                    self.on_stop(beat)
                    return
        finally:
            connection.close()  # this thread's own connection
