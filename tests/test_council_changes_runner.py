"""Council changes with real `manage.py runpipeline` child processes: a stalled run goes on without the model
it waits on (its call abandoned at the runner's next heartbeat), and a model rejoining survives kill -9 of
its runner halfway through catching up."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from runs import services
from runs.models import Artifact, Run
from tests.run_helpers import run_pipeline_here, runner_process

pytestmark = pytest.mark.django_db(transaction=True)

GEMINI = "gemini-2.5-pro"


@pytest.fixture
def runner_env(fake_upstream_env) -> dict[str, str]:
    return {**fake_upstream_env, "RUN_HEARTBEAT_SECONDS": "0.2"}


def _wait(proc: subprocess.Popen, done, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"the runner never got to {what}"
        time.sleep(0.05)


def test_a_stalled_run_goes_on_without_the_model_it_waits_on(api, run, fake_upstream, runner_env):
    fake_upstream.script(GEMINI, failures=["sleep:60"])  # its Stage 1 answer would take a minute
    proc = runner_process(run.pk, runner_env)
    _wait(
        proc,
        lambda: (
            run.artifacts.filter(stage=1, status=Artifact.Status.OK).count() == 2
            and run.events.filter(kind="model_started", stage=1, model_id=GEMINI).exists()
        ),
        "Stage 1",
    )
    asked = time.monotonic()
    answer = api.post(
        f"/api/runs/{run.pk}/drop",
        {"model": GEMINI, "reason": "stuck for ten minutes"},
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["started"] is False and body["run"]["status"] == "running"
    assert "its call in flight is abandoned" in body["detail"]
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert time.monotonic() - asked < 30  # it did not wait out the minute
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETE and run.dropped == {GEMINI: 1}
    assert not run.artifacts.filter(model_id=GEMINI).exists()
    assert run.events.filter(kind="model_dropped", stage=1, model_id=GEMINI).count() == 1
    stage1 = api.get(f"/api/runs/{run.pk}").json()["stages"][0]
    assert stage1["summary"] == "2 of 3 models" and stage1["dropped"] == 1
    assert {m["model_id"]: m["status"] for m in stage1["models"]}[GEMINI] == "dropped"


def test_kill_9_while_a_model_catches_up_then_start_finishes_it(
    api, run, fake_upstream, runner_env, launched, settings
):
    fake_upstream.script(GEMINI, failures=["500"])
    assert run_pipeline_here(run)[0] == 0
    answer = api.post(f"/api/runs/{run.pk}/rejoin", {"model": GEMINI}, content_type="application/json")
    assert answer.status_code == 202, answer.content
    # Its Stage 1 answer comes at once; its Stage 2 review hangs until the runner is killed.
    fake_upstream.script(GEMINI, failures=["sleep:0", "sleep:30"])
    proc = runner_process(run.pk, runner_env)
    _wait(proc, lambda: run.events.filter(kind="model_started", stage=2, model_id=GEMINI).exists(), "Stage 2")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.catch_up == [GEMINI]
    assert run.artifacts.get(stage=1, model_id=GEMINI).status == Artifact.Status.OK
    settings.RUN_STALE_SECONDS = 0.5
    time.sleep(0.8)
    assert services.runs_mark_stale_interrupted() == 1

    fake_upstream.script(GEMINI, failures=[])
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert run.catch_up == []
    # Its Stage 1 answer (on disk before the kill) was not asked again: one 500, one answer.
    assert fake_upstream.count(model=GEMINI, stage=1) == 2
    gemini = run.artifacts.filter(model_id=GEMINI, status=Artifact.Status.OK)
    assert sorted(gemini.values_list("stage", flat=True)) == [1, 2, 3, 5, 6]
    for model in ("gpt-5", "claude-sonnet-4-5"):
        assert (
            fake_upstream.count(model=model, stage=1) == 1 and fake_upstream.count(model=model, stage=2) == 1
        )
