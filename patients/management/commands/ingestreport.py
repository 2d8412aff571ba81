from __future__ import annotations

import os
import signal

from django.core.management.base import BaseCommand, CommandError

from jobs.heartbeat import Heartbeat
from jobs.models import Job
from jobs.services import Beat, job_claim, job_finish
from patients import services
from patients.models import Report


class Command(BaseCommand):
    help = (
        "Ingest uploaded reports: text layer, page images and OCR. Claims each pending report "
        "(another process already on it is left alone); SIGTERM or a cancel puts the current one back to "
        "pending."
    )
    requires_system_checks: list[str] = []  # a worker the web server starts; checks are the server's business

    def add_arguments(self, parser) -> None:
        parser.add_argument("report_ids", nargs="+", type=int)

    def handle(self, *args, report_ids: list[int], **options) -> None:
        services.install_sigterm_handler()
        unknown = sorted(
            set(report_ids) - set(Report.objects.filter(pk__in=report_ids).values_list("pk", flat=True))
        )
        if unknown:
            raise CommandError(f"No report with id {', '.join(map(str, unknown))}.")
        job = job_claim(kind=services.INGEST, args=[str(pk) for pk in report_ids])
        if job is None:
            raise CommandError("Another runner is reading these reports right now.")
        # Cancelled, or judged dead and taken over: stop the way SIGTERM stops (the report goes back).
        beat = Heartbeat(job, on_stop=lambda why: os.kill(os.getpid(), signal.SIGTERM))
        try:
            with beat:
                for report_id in report_ids:
                    self._ingest(report_id, job)
        except services.Interrupted as stop:
            cancelled = beat.stopped is Beat.CANCEL
            job_finish(
                job=job, status=Job.Status.CANCELLED if cancelled else Job.Status.DONE, error="Stopped."
            )
            if isinstance(stop, services.Lost) or beat.stopped is Beat.LOST:
                self.stderr.write(
                    "stopped: this runner was judged dead (silent past RUN_STALE_SECONDS) and another "
                    "attempt has the report now; nothing more was sent"
                )
            else:
                self.stderr.write("interrupted: the current report is back to pending")
            raise SystemExit(1) from None
        except BaseException as exc:
            job_finish(job=job, error=f"The runner failed: {type(exc).__name__}: {exc}")
            raise
        job_finish(job=job)

    def _ingest(self, report_id: int, job: Job) -> None:
        report = services.report_ingest(report_id=report_id, job=job)
        if report is None:
            self.stdout.write(
                f"report {report_id}: not pending (another process has it, it is done, or it was deleted)"
            )
        elif report.status == Report.Status.READY:
            self.stdout.write(f"report {report_id}: ready, {report.page_count} page(s)")
        else:
            # The log names reports by id: a file name often carries the patient's name.
            reason = report.error.replace(report.original_name, "the file")
            self.stdout.write(f"report {report_id}: {report.status}: {reason}")
