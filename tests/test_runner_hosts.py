"""Runners on several hosts sharing one PostgreSQL (each with its own QEEG_HOST_ID): a runner killed with
SIGKILL is judged dead by its silence alone and the run resumes from the other host without repeating a
finished call; two hosts starting the same run at once get exactly one runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client

from jobs.models import Job
from qeeg_site.models import ApiToken
from runs import services
from runs.models import Artifact, Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT, STALE = "0.2", "1.5"


@pytest.fixture
def shared(postgres_db, fake_upstream, settings, tmp_path):
    """A run on the shared database, and the environment of a runner on any host."""
    settings.RUN_HEARTBEAT_SECONDS, settings.RUN_STALE_SECONDS = float(HEARTBEAT), float(STALE)
    patient = make_patient()
    report = make_ready_report(patient, tmp_path)
    run = services.run_create(
        patient=patient,
        report=report,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        available=set(COUNCIL),
    )
    env = postgres_db.child_env(
        CLIPROXY_BASE_URL=fake_upstream.base_url,
        CLIPROXY_API_KEY="",
        RUN_HEARTBEAT_SECONDS=HEARTBEAT,
        RUN_STALE_SECONDS=STALE,
        LOG_LEVEL="WARNING",
    )
    env.pop("QEEG_JOB_ID", None)
    return run, env


def runner(run: Run, env: dict[str, str], host: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runpipeline", str(run.pk)],
        env={**env, "QEEG_HOST_ID": host},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, *, seconds: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the runner exited while waiting for {what}:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_runner_killed_on_one_host_is_resumed_from_another_without_repeating_a_call(
    shared, fake_upstream, settings, monkeypatch
):
    run, env = shared
    for model in COUNCIL:
        fake_upstream.script(model, failures=["sleep:0", "sleep:0", "sleep:5"])  # Stage 3 hangs
    first = runner(run, env, "host-a")
    wait_for(
        lambda: run.events.filter(kind="model_started", stage=3).count() == 3,
        seconds=60,
        what="Stage 3 in flight on host-a",
        proc=first,
    )
    job_a = Run.objects.select_related("job").get(pk=run.pk).job
    assert (job_a.host, job_a.pid) == ("host-a", first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    # The web server of host B: its start request sees the silence, marks host-a's job lost and launches a
    # runner here (the real launcher: the child inherits this environment, with host B's identity).
    for name, value in {**env, "QEEG_HOST_ID": "host-b"}.items():
        monkeypatch.setenv(name, value)
    settings.QEEG_HOST_ID = "host-b"
    user = run.created_by or _user()
    _, token = ApiToken.issue(user=user, name="host-b")
    api = Client(headers={"Authorization": f"Bearer {token}"})
    time.sleep(float(STALE) + 0.3)
    assert api.get(f"/api/runs/{run.pk}").json()["status"] == "interrupted"  # seen, not relaunched
    assert not Job.objects.filter(kind="runpipeline", status__in=Job.ACTIVE).exists()
    response = api.post(f"/api/runs/{run.pk}/start")
    assert response.status_code == 202 and response.json()["started"] is True, response.json()

    wait_for(
        lambda: Run.objects.get(pk=run.pk).status in Run.FINISHED, seconds=90, what="host-b to finish the run"
    )
    run.refresh_from_db()
    job_b = run.job
    # The runner finishes the run, then its job: under load the test can read between the two.
    wait_for(
        lambda: Job.objects.get(pk=job_b.pk).status not in Job.ACTIVE,
        seconds=30,
        what="host-b's runner to end its job",
    )
    job_b.refresh_from_db()
    log = Path(job_b.log_path).read_text()
    assert run.status == Run.Status.COMPLETE, log
    assert job_b.host == "host-b" and job_b.pid != first.pid and job_b.status == Job.Status.DONE
    assert "resuming after Stage 2" in log
    job_a.refresh_from_db()
    assert job_a.status == Job.Status.LOST and f"(host-a pid {first.pid}) went silent" in job_a.error
    # Counted at the fake upstream: the finished Stage 1 and 2 calls were never asked again.
    assert fake_upstream.count(stage=1) == 3 and fake_upstream.count(stage=2) == 3
    assert not run.artifacts.filter(stage__lte=3).exclude(attempts=1).exists()
    assert run.artifacts.filter(status=Artifact.Status.OK).count() == 16


def test_two_hosts_starting_the_same_run_at_once_get_one_runner(shared, fake_upstream):
    run, env = shared
    procs = {host: runner(run, env, host) for host in ("host-a", "host-b")}
    outputs = {host: proc.communicate(timeout=120)[0] for host, proc in procs.items()}
    codes = {host: proc.returncode for host, proc in procs.items()}
    assert sorted(codes.values()) == [0, 1], outputs
    winner = next(host for host, code in codes.items() if code == 0)
    loser = next(host for host, code in codes.items() if code == 1)
    assert "already being worked by" in outputs[loser] or "nothing to do" in outputs[loser], outputs[loser]
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETE and run.job.host == winner
    # One job worked the run. A loser that started only after the winner had finished may have made a job
    # of its own in the instant between reading the run and claiming; it did nothing and says so.
    jobs = Job.objects.filter(kind="runpipeline", target=str(run.pk))
    assert [job.host for job in jobs if not job.error] == [winner], [(j.host, j.error) for j in jobs]
    assert all(job.error.startswith("Nothing to do") for job in jobs if job.error)
    # Every call made once: three council members in Stages 1-3, 5, 6 and the consolidator in Stage 4.
    assert [fake_upstream.count(stage=n) for n in range(1, 7)] == [3, 3, 3, 1, 3, 3]


def _user():
    from django.contrib.auth import get_user_model

    # An administrator: host B's operator reaches every patient (the roles are tested elsewhere).
    return get_user_model().objects.create_superuser(
        username=f"host-b-{os.getpid()}", password="x-pass-12345"
    )
