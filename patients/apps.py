from __future__ import annotations

from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"

    def ready(self) -> None:
        from jobs.kinds import JobKind, register
        from ledger import calls as ledger
        from patients import selectors, services

        ledger.reserves(selectors.vision_calls_held)

        register(
            JobKind(
                name=services.INGEST,
                settle=services.reports_settle,
                resume=services.reports_resume_pending,
                settled_line="{n} report(s) whose ingestion stopped without a word are pending again.",
                resumed_line="Resumed ingestion of {n} report(s) left unfinished.",
            )
        )
