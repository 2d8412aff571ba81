"""Durable and restartable, with real `manage.py runpipeline` child processes: SIGKILL in Stage 3 and starting
again finishes the run with zero repeated Stage 1-2 calls; SIGTERM leaves the run interrupted; a stale
heartbeat is detected (and never shown as running), wherever the runner ran."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from runs import services
from runs.models import Artifact, Run
from tests.job_helpers import runner_job
from tests.run_helpers import CONSOLIDATOR, COUNCIL, run_pipeline_here, runner_process

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runner_env(fake_upstream_env) -> dict[str, str]:
    return {**fake_upstream_env, "RUN_HEARTBEAT_SECONDS": "0.2"}


def _wait_until_stage_3_is_in_flight(run: Run, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # The fake records a call only once it answers, so "in flight" is read from the run's own events.
        if run.events.filter(kind="model_started", stage=3).count() == 3:
            run.refresh_from_db()
            assert run.status == Run.Status.RUNNING and run.current_stage == 3
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError("the runner never reached Stage 3")


def _hang_in_stage_3(fake_upstream) -> None:
    # Each model's third call (its Stage 3 revision) takes long enough to be killed mid-flight.
    for model in COUNCIL:
        fake_upstream.script(model, failures=["sleep:0", "sleep:0", "sleep:5"])


def test_sigkill_in_stage_3_then_start_finishes_without_repeating_stages_1_2(
    api, run, fake_upstream, runner_env, monkeypatch, settings
):
    settings.RUN_STALE_SECONDS = 1
    _hang_in_stage_3(fake_upstream)
    proc = runner_process(run.pk, runner_env)
    _wait_until_stage_3_is_in_flight(run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING  # nobody said anything: only the heartbeat can tell
    time.sleep(1.2)
    # Reading it is enough to see the truth, and launches nothing.
    body = api.get(f"/api/runs/{run.pk}").json()
    assert body["status"] == "interrupted" and "went silent" in body["error"]
    assert api.get(f"/api/patients/{run.patient_id}/runs").json()[0]["status"] == "interrupted"

    relaunched: list[subprocess.Popen] = []
    monkeypatch.setattr(
        "jobs.launcher.launch_command",
        lambda name, *args, **kw: (
            relaunched.append(runner_process(int(args[0]), runner_env)) or relaunched[-1].pid
        ),
    )
    response = api.post(f"/api/runs/{run.pk}/start")
    assert response.status_code == 202 and response.json()["started"] is True
    output, _ = relaunched[0].communicate(timeout=60)
    run.refresh_from_db()
    assert relaunched[0].returncode == 0, output
    assert run.status == Run.Status.COMPLETE
    assert fake_upstream.count(stage=1) == 3 and fake_upstream.count(stage=2) == 3
    assert not run.artifacts.filter(stage=3).exclude(attempts=1).exists()  # asked again once each
    assert "resuming after Stage 2" in output
    assert run.artifacts.filter(status=Artifact.Status.OK).count() == 16
    assert not list((run.artifacts_dir).rglob("*.tmp"))


def test_sigterm_stops_cleanly_and_leaves_the_run_interrupted(run, fake_upstream, runner_env):
    _hang_in_stage_3(fake_upstream)
    proc = runner_process(run.pk, runner_env)
    _wait_until_stage_3_is_in_flight(run, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=20)
    run.refresh_from_db()
    assert proc.returncode == 1, output
    assert run.status == Run.Status.INTERRUPTED and run.job.status == Job.Status.DONE
    assert "Start the run again" in run.error and "SIGTERM received" in output
    assert run.stages_done == 2 and not run.artifacts.filter(stage=3).exists()
    code, output = run_pipeline_here(run)
    assert code == 0, output
    assert fake_upstream.count(stage=1) == 3 and fake_upstream.count(stage=2) == 3


def test_a_stale_heartbeat_marks_the_run_interrupted(run, settings):
    settings.RUN_STALE_SECONDS = 30
    # This very process as the runner, so a pid check would call it alive: only the heartbeat's age tells.
    silent = runner_job(target=str(run.pk), heartbeat_at=timezone.now() - timedelta(seconds=31))
    Run.objects.filter(pk=run.pk).update(status="running", job=silent)
    fresh = services.run_create(
        patient=run.patient, report=run.report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    Run.objects.filter(pk=fresh.pk).update(status="running", job=runner_job(target=str(fresh.pk)))
    assert services.runs_mark_stale_interrupted() == 1
    run.refresh_from_db()
    fresh.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED and "went silent" in run.error
    assert Job.objects.get(pk=silent.pk).status == Job.Status.LOST
    assert fresh.status == Run.Status.RUNNING
    assert run.events.filter(kind="status", data__status="interrupted").exists()


def test_server_start_recovery_marks_dead_runners(run):
    from qeeg_site.startup import recover

    # A runner on another machine that stopped beating: its pid is meaningless here, its silence is not.
    silent = runner_job(host="other-host", pid=1, heartbeat_at=timezone.now() - timedelta(minutes=5))
    Run.objects.filter(pk=run.pk).update(status="running", job=silent)
    lines = list(recover())
    assert any("1 run(s) interrupted" in line for line in lines)
    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED and "(other-host pid 1) went silent" in run.error


def test_a_queued_run_whose_runner_never_started_is_not_shown_queued_for_ever(api, run, launched, settings):
    settings.RUN_STALE_SECONDS = 1
    assert api.post(f"/api/runs/{run.pk}/start").json()["run"]["status"] == "queued"
    time.sleep(1.2)  # launched, but the process never claimed its job
    body = api.get(f"/api/runs/{run.pk}").json()
    assert body["status"] == "interrupted" and "never started" in body["error"]
    assert launched == [("runpipeline", str(run.pk))]
