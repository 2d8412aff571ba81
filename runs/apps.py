from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        from council.client import prepare as client_prepare
        from jobs.kinds import JobKind, register
        from ledger import calls as ledger
        from runs import limits, patient_version, services

        ledger.reserves(limits.reserved_calls)  # a vision pass counts what runs have still to make

        register(
            JobKind(
                name=services.RUNPIPELINE,
                settle=services.runs_mark_stale_interrupted,
                prepare=client_prepare,
                settled_line="Marked {n} run(s) interrupted: their runner stopped without a word.",
            )
        )
        register(
            JobKind(
                name=patient_version.PATIENT_VERSION,
                settle=patient_version.requests_settle,
                prepare=client_prepare,
                settled_line="{n} patient version(s) whose writer stopped without a word failed; ask again.",
            )
        )
