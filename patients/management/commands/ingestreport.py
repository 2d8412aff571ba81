from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from patients import services
from patients.models import Report


class Command(BaseCommand):
    help = (
        "Ingest uploaded reports: text layer, page images and OCR. Claims each pending report "
        "(another process already on it is left alone); SIGTERM puts the current one back to pending."
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
        for report_id in report_ids:
            try:
                report = services.report_ingest(report_id=report_id)
            except services.Interrupted:
                self.stderr.write(f"report {report_id}: interrupted, back to pending")
                raise SystemExit(1) from None
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
