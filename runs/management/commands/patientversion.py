"""`manage.py patientversion <request_id>`: write one patient version (runs/patient_version.py) in this
process. The web app launches it as a job (jobs/) when a clinician asks for a patient version; it claims its
job and its request by compare-and-set, heartbeats, and sends the signed write-up, de-identified, through
the council client with the patient's identifier guard."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.models import Job
from jobs.services import job_claim, job_finish
from runs import patient_version, sources
from runs.models import PatientVersionRequest


class Command(BaseCommand):
    help = "Write the patient version of one request: a plain-language summary of the signed write-up."
    requires_system_checks: list[str] = []  # a worker the web server starts

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("request_id", type=int)

    def handle(self, *args: Any, request_id: int, **options: Any) -> None:
        if not PatientVersionRequest.objects.filter(pk=request_id).exists():
            raise CommandError(f"There is no patient version request {request_id}.")
        job = job_claim(kind=patient_version.PATIENT_VERSION, args=[str(request_id)])
        if job is None:
            raise CommandError(f"Request {request_id} is being written by another runner.")
        patient_version.requests_settle()
        request = patient_version.request_claim(request_id=request_id, job=job)
        if request is None:
            status = PatientVersionRequest.objects.get(pk=request_id).get_status_display().lower()
            job_finish(job=job, error=f"Nothing to do: the request is {status}.")
            raise CommandError(f"Request {request_id} is {status}; nothing to do.")
        status = PatientVersionRequest.Status.FAILED
        try:
            status = asyncio.run(self._write(request, job))
        finally:
            job_finish(job=job, status=Job.Status.DONE)
        request.refresh_from_db()
        if status != PatientVersionRequest.Status.DONE:
            self.stderr.write(f"request {request_id}: failed: {request.error}")
            sys.exit(1)
        self.stdout.write(
            f"request {request_id}: patient version {request.version.number} written by {request.model_id}"
        )

    async def _write(self, request: PatientVersionRequest, job: Job) -> str:
        from council.client import CLIProxyClient

        # The client refuses any call that still carries one of this patient's identifiers.
        guard = await sync_to_async(sources.guard_for)(request.run.patient, request.run.report)
        async with CLIProxyClient.from_settings(guard=guard) as client:
            return await patient_version.write(request, job=job, client=client)
