"""The runner heartbeats while it works, and a runner whose run was taken from it (judged dead, marked
interrupted) stops without touching the run again."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from council.client import CLIProxyClient
from jobs.models import Job
from jobs.services import job_claim
from runs import pipeline, services
from runs.models import Run
from tests.run_helpers import COUNCIL

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def claimed_run(fake_upstream, run, settings) -> Run:
    settings.RUN_HEARTBEAT_SECONDS = 0.05
    for model in COUNCIL:
        fake_upstream.script(model, failures=["sleep:1.5"])  # a slow Stage 1
    job = job_claim(kind="runpipeline", args=[str(run.pk)])
    return services.run_claim(run_id=run.pk, job=job)


async def test_heartbeat_advances_while_a_stage_is_thinking(claimed_run):
    job = await Job.objects.aget(pk=claimed_run.job_id)
    async with CLIProxyClient.from_settings() as client:
        task = asyncio.create_task(pipeline.drive(claimed_run.pk, job=job, client=client))
        await asyncio.sleep(0.6)
        run = await Run.objects.select_related("job").aget(pk=claimed_run.pk)
        assert run.status == Run.Status.RUNNING and run.job.heartbeat_at > job.heartbeat_at
        assert await task == Run.Status.COMPLETE


async def test_a_runner_that_lost_its_claim_stops_and_leaves_the_run_alone(claimed_run):
    job = await Job.objects.aget(pk=claimed_run.job_id)
    async with CLIProxyClient.from_settings() as client:
        task = asyncio.create_task(pipeline.drive(claimed_run.pk, job=job, client=client))
        await asyncio.sleep(0.3)
        # What runs_mark_stale_interrupted does to a runner it judged dead.
        await Run.objects.filter(pk=claimed_run.pk).aupdate(status="interrupted", error="judged dead")
        assert await asyncio.wait_for(task, timeout=5) == "lost"
    run = await Run.objects.aget(pk=claimed_run.pk)
    assert run.status == Run.Status.INTERRUPTED and run.error == "judged dead"
    assert not await sync_to_async(run.artifacts.exists)()
