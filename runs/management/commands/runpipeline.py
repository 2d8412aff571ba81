"""`manage.py runpipeline <run_id>`: run (or resume) one council run in this process.

The web app launches this for POST /api/runs/{id}/start (as a job, jobs/); operators may run it by hand. It
claims the run's job and then the run with compare-and-set updates (two runners never work the same run, on
one host or several), heartbeats, stops cleanly on SIGTERM (the run becomes interrupted) or on a cancel
request (cancelled) and, run again, resumes where the run stopped without re-asking any finished call.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand, CommandError, CommandParser

from council.stages import STEPS
from jobs.models import Job
from jobs.services import job_claim, job_finish
from runs import pipeline, selectors, services, sources
from runs.models import Artifact, Run


class Command(BaseCommand):
    help = "Run or resume one council run (every stage) in this process; --list shows runs and their states."
    # A worker the web server starts: the checks are the web server's business, and cost it 0.2 s each start.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", nargs="?", type=int)
        parser.add_argument(
            "--from-stage",
            type=int,
            choices=STEPS.numbers,
            metavar="N",
            help=(
                f"Redo stages N..{STEPS.last.number} on purpose: their artifacts are deleted and requested again "
                "(refused when that would discard a draft with saved or signed versions)."
            ),
        )
        parser.add_argument(
            "--list", action="store_true", dest="list_runs", help="List runs and their states, then exit."
        )

    def handle(
        self, *args: Any, run_id: int | None, from_stage: int | None, list_runs: bool, **options: Any
    ) -> None:
        if list_runs:
            self._list()
            return
        if run_id is None:
            raise CommandError("Give a run id (see `runpipeline --list`).")
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"There is no run {run_id}.")
        if run.status == Run.Status.COMPLETE and from_stage is None:
            # Said before a job is made, so a second start of a finished run leaves no job behind.
            raise CommandError(
                f"Run {run_id} is complete; nothing to do (use --from-stage N to redo stages of a complete run)."
            )
        if from_stage is not None:
            # Refused before a job is made: redoing must never discard a draft the clinician edited or signed.
            try:
                services.run_reset_check(run=run, stage=from_stage)
            except services.RunRefused as exc:
                raise CommandError(exc.message) from exc
        # The job first (a runner that died without a word is judged by its heartbeat and set aside), then the
        # run: each a compare-and-set, so of two runners started at once, on any hosts, one goes on.
        job = job_claim(kind=services.RUNPIPELINE, args=[str(run_id)])
        if job is None:
            run.refresh_from_db()
            if run.job and run.job.status == Job.Status.RUNNING:
                raise CommandError(f"Run {run_id} is already being worked by {run.job.runner}.")
            raise CommandError(
                f"Run {run_id}: nothing to do (its job was cancelled or another runner took it)."
            )
        services.runs_mark_stale_interrupted()  # the run of a runner just set aside becomes resumable
        claimed = services.run_claim(run_id=run_id, job=job, reopen_complete=from_stage is not None)
        if claimed is None:
            run.refresh_from_db()
            job_finish(job=job, error=f"Nothing to do: the run is {run.status}.")
            raise CommandError(
                f"Run {run_id} is {run.get_status_display().lower()}; nothing to do "
                "(use --from-stage N to redo stages of a complete run)."
            )
        if from_stage is not None:
            try:
                dropped = services.run_reset_from_stage(run=claimed, stage=from_stage)
            except services.RunRefused as exc:  # a version was saved since the check above: as it was
                services.run_finish(run_id=run_id, status=run.status, error=run.error, job=job)
                job_finish(job=job, error=exc.message)
                raise CommandError(exc.message) from exc
            self.stdout.write(
                f"Run {run_id}: redoing from Stage {from_stage} ({dropped} artifact(s) dropped)."
            )
        elif claimed.stages_done:
            self.stdout.write(
                f"Run {run_id}: resuming after Stage {claimed.stages_done}; finished calls are kept."
            )
        self.stdout.write(
            f"Run {run_id} for patient {claimed.patient_id} · report {claimed.report_id} · council "
            f"{', '.join(claimed.council_models)} · consolidator {claimed.consolidator}"
        )
        started = time.monotonic()
        status = Run.Status.FAILED
        try:
            status = asyncio.run(self._drive(run_id, job=job, started=started))
        finally:
            # Whatever happened, the slot is free now; the next queued job is launched from here.
            job_finish(
                job=job, status=Job.Status.CANCELLED if status == Run.Status.CANCELLED else Job.Status.DONE
            )
        self._summary(run_id, started)
        if status != Run.Status.COMPLETE:
            sys.exit(1)

    async def _drive(self, run_id: int, *, job: Job, started: float) -> str:
        from council.client import CLIProxyClient

        def on_stage(stage: int, models: list[str]) -> None:
            self.stdout.write(
                f"[{pipeline.elapsed_since(started)}] Stage {stage} {STEPS.name_of(stage)}: {len(models)} call(s)"
            )

        in_flight: dict[str, float] = {}

        def on_model(stage: int, model: str, status: str, artifact: Artifact | None) -> None:
            if status == "started":
                in_flight[f"{model} (stage {stage})"] = time.monotonic()
            else:
                in_flight.pop(f"{model} (stage {stage})", None)
            line = f"[{pipeline.elapsed_since(started)}]   stage {stage} · {model} · {status}"
            if artifact is not None and artifact.status == Artifact.Status.OK:
                line += (
                    f" · {artifact.prompt_tokens or 0}→{artifact.completion_tokens or 0} tokens"
                    f" · {(artifact.latency_ms or 0) / 1000:.1f}s"
                )
            elif artifact is not None:
                line += f" · {artifact.error}"
            self.stdout.write(line)
            self.stdout.flush()

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(name: str) -> None:
            self.stderr.write(f"Run {run_id}: {name} received, stopping; the run will be interrupted.")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        # The client refuses any call that still carries one of this patient's identifiers.
        guard = await sync_to_async(sources.guard_for_run)(run_id)
        async with CLIProxyClient.from_settings(guard=guard, on_retry=pipeline.report_retry) as client:
            drive = asyncio.create_task(
                pipeline.drive(run_id, job=job, client=client, progress=pipeline.Progress(on_stage, on_model))
            )
            waiter = asyncio.create_task(stop.wait())
            ticker = asyncio.create_task(self._tick(in_flight, started))
            await asyncio.wait({drive, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not drive.done():
                drive.cancel()
            waiter.cancel()
            ticker.cancel()
            return await drive

    async def _tick(self, in_flight: dict[str, float], started: float, every: float = 15.0) -> None:
        """Real models think for minutes: say who is still being waited on, and for how long."""
        while True:
            await asyncio.sleep(every)
            if in_flight:
                waiting = ", ".join(f"{name} {pipeline.elapsed_since(t)}" for name, t in in_flight.items())
                self.stdout.write(f"[{pipeline.elapsed_since(started)}]   waiting on {waiting}")
                self.stdout.flush()

    def _summary(self, run_id: int, started: float) -> None:
        run = Run.objects.get(pk=run_id)
        progress = selectors.run_progress(run)
        self.stdout.write("")
        self.stdout.write(
            f"Run {run_id}: {run.get_status_display()} after {pipeline.elapsed_since(started)} · "
            f"{progress['council_summary']}"
        )
        if run.error:
            self.stdout.write(f"  {run.error}")
        artifacts = {(a.stage, a.model_id): a for a in run.artifacts.all()}
        header = f"{'stage':<20} {'model':<28} {'status':<8} {'tokens in→out':>15} {'secs':>7} {'tries':>5}"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for stage in progress["stages"]:
            for model in stage["models"]:
                artifact = artifacts.get((stage["stage"], model["model_id"]))
                tokens = secs = tries = ""
                if artifact is not None and artifact.status == Artifact.Status.OK:
                    tokens = f"{artifact.prompt_tokens or 0}→{artifact.completion_tokens or 0}"
                    secs = f"{(artifact.latency_ms or 0) / 1000:.1f}"
                    tries = str(artifact.attempts)
                name = f"{stage['stage']} {stage['name']}"
                self.stdout.write(
                    f"{name:<20} {model['model_id'][:28]:<28} {model['status']:<8} {tokens:>15} {secs:>7} {tries:>5}"
                )
                if model["status"] == Artifact.Status.FAILED:
                    self.stdout.write(f"{'':<20}   ↳ {model['error']}")

    def _list(self) -> None:
        services.runs_mark_stale_interrupted()
        runs = Run.objects.select_related("patient", "job").prefetch_related("artifacts")[:100]
        header = (
            f"{'id':>5}  {'status':<12} {'stage':>5}  {'patient':<20} {'council':<40} {'created':<16} runner"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for run in runs:
            self.stdout.write(
                f"{run.pk:>5}  {run.status:<12} {run.stages_done:>3}/{STEPS.last.number}  {str(run.patient)[:20]:<20} "
                f"{selectors.council_summary(run)[:40]:<40} {run.created_at:%Y-%m-%d %H:%M} "
                f"{run.job.runner if run.job and run.status == Run.Status.RUNNING else ''}"
            )
            if run.error:
                self.stdout.write(f"{'':>7}{run.error[:150]}")
