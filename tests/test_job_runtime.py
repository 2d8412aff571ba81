"""The one job runtime (jobs/): claim by compare-and-set, liveness by heartbeat only (any host), a log per
job, a cap on jobs in flight with the rest queued and started as slots free, and cancel."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import services
from jobs.models import Job
from jobs.services import Beat
from tests.job_helpers import runner_job

pytestmark = pytest.mark.django_db(transaction=True)

KIND = "ingestreport"  # any registered kind; these tests never run its command


def test_one_process_claims_a_launched_job_and_stamps_its_host(settings, launched):
    settings.QEEG_HOST_ID = "host-a"
    job = services.job_submit(kind=KIND, args=["7"])
    assert launched == [(KIND, "7")]
    claimed = services.job_claim(kind=KIND, args=["7"])
    assert claimed.pk == job.pk and claimed.status == Job.Status.RUNNING
    assert (claimed.host, claimed.pid) == ("host-a", os.getpid())
    # A second process (here: the same one again) finds it held by a live runner.
    assert services.job_claim(kind=KIND, args=["7"]) is None


def test_a_hand_started_runner_creates_its_own_job():
    job = services.job_claim(kind=KIND, args=["8"])
    assert job.status == Job.Status.RUNNING and job.target == "8" and job.args == ["8"]


def test_the_database_allows_one_active_job_per_target():
    runner_job(kind=KIND, target="9")
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(kind=KIND, target="9", status=Job.Status.QUEUED)
    # Once it has ended, the same work may be queued again.
    Job.objects.filter(target="9").update(status=Job.Status.DONE)
    Job.objects.create(kind=KIND, target="9", status=Job.Status.QUEUED)


def test_a_silent_runner_on_another_host_is_taken_over(settings):
    settings.RUN_STALE_SECONDS = 30
    # pid 1 exists on every Linux machine: a pid check would call this runner alive. Its heartbeat does not.
    silent = runner_job(
        kind=KIND, target="10", host="host-b", pid=1, heartbeat_at=timezone.now() - timedelta(seconds=31)
    )
    mine = services.job_claim(kind=KIND, args=["10"])
    assert mine is not None and mine.pk != silent.pk
    silent.refresh_from_db()
    assert silent.status == Job.Status.LOST and "(host-b pid 1) went silent" in silent.error
    # The old runner, if it comes back, learns it lost the job.
    assert services.job_heartbeat(job=silent) is Beat.LOST
    assert services.job_heartbeat(job=mine) is Beat.HELD


def test_a_live_runner_on_another_host_is_left_alone():
    runner_job(kind=KIND, target="11", host="host-b", pid=2**22 + 9)  # no such pid here; beating anyway
    assert services.job_claim(kind=KIND, args=["11"]) is None


def test_over_the_cap_jobs_wait_queued_and_the_finishing_runner_starts_the_next(settings, launched):
    settings.JOBS_MAX_RUNNING = 2
    first = services.job_submit(kind=KIND, args=["1"])
    second = services.job_submit(kind=KIND, args=["2"])
    third = services.job_submit(kind=KIND, args=["3"])
    assert launched == [(KIND, "1"), (KIND, "2")]
    assert Job.objects.get(pk=third.pk).status == Job.Status.QUEUED

    claimed = services.job_claim(kind=KIND, args=["1"])
    assert claimed.pk == first.pk
    services.job_claim(kind=KIND, args=["2"])
    assert services.job_finish(job=claimed)
    assert launched[-1] == (KIND, "3")
    assert Job.objects.get(pk=third.pk).status == Job.Status.STARTING
    assert Job.objects.get(pk=second.pk).status == Job.Status.RUNNING


def test_a_silent_runner_holds_no_slot(settings, launched):
    settings.JOBS_MAX_RUNNING = 1
    runner_job(kind=KIND, target="20", heartbeat_at=timezone.now() - timedelta(minutes=5))
    services.job_submit(kind=KIND, args=["21"])
    assert launched == [(KIND, "21")]  # the silent job holds no slot


def test_each_job_has_its_own_log(settings, launched, data_dir):
    first = services.job_submit(kind=KIND, args=["30"])
    services.job_claim(kind=KIND, args=["30"])
    services.job_finish(job=Job.objects.get(pk=first.pk))
    second = services.job_submit(kind=KIND, args=["30"])
    paths = [Job.objects.get(pk=pk).log_path for pk in (first.pk, second.pk)]
    assert paths[0] != paths[1]
    assert all(path.startswith(str(data_dir / "logs")) and path.endswith(".log") for path in paths)
    assert f"job{second.pk}" in paths[1]


def test_a_failed_launch_marks_the_job_lost_with_the_reason(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no processes left")

    monkeypatch.setattr("jobs.launcher.launch_command", refuse)
    job = services.job_submit(kind=KIND, args=["40"])
    job.refresh_from_db()
    assert job.status == Job.Status.LOST and job.error == "Could not start the runner: no processes left"


def test_cancel_stops_a_queued_job_at_once_and_asks_a_running_one(settings, launched):
    settings.JOBS_MAX_RUNNING = 0  # nothing launches: the job stays queued
    queued = services.job_submit(kind=KIND, args=["50"])
    assert services.job_cancel(job=queued)
    assert Job.objects.get(pk=queued.pk).status == Job.Status.CANCELLED
    assert services.job_claim(kind=KIND, args=["50"]).pk != queued.pk  # nothing left to claim: a new one

    running = services.job_claim(kind=KIND, args=["51"])
    assert services.job_heartbeat(job=running) is Beat.HELD
    assert services.job_cancel(job=running)
    assert services.job_heartbeat(job=running) is Beat.CANCEL
    assert services.job_finish(job=running, status=Job.Status.CANCELLED)
    assert not services.job_cancel(job=running)  # already ended
