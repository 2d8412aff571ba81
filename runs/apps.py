from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        from council.client import prepare as client_prepare
        from jobs.kinds import JobKind, register
        from runs import patient_version, services

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
