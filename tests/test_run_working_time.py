"""Elapsed time is working time: the seconds runners spent on a run, never the wait before a resume (run page,
API, export run card), nor the silence after a killed runner's last heartbeat."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from runs import services
from runs.exports import duration
from runs.models import Run
from tests.job_helpers import runner_job
from tests.run_helpers import CONSOLIDATOR, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_hour_waiting_before_a_resume_is_not_counted(api, clinician_client, run, fake_upstream):
    # Stages 1-3 each make one call of the consolidator; its Stage 4 call fails: the run fails.
    fake_upstream.script(CONSOLIDATOR, failures=["sleep:0", "sleep:0", "sleep:0", "model_not_found"])
    code, _ = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 1 and run.status == Run.Status.FAILED and run.working_since is None
    first = run.worked_seconds
    assert 0 < first < 60
    # The clinician comes back an hour later: the run's clock was stopped all that time.
    hour = timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(
        created_at=run.created_at - hour, started_at=run.started_at - hour, finished_at=run.finished_at - hour
    )
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert run.worked_seconds > first and run.worked_seconds < 120
    assert (run.finished_at - run.started_at) > hour  # what the clock used to show

    body = api.get(f"/api/runs/{run.pk}").json()
    assert body["elapsed_seconds"] == pytest.approx(run.worked_seconds, abs=0.1)
    page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    shown = re.search(r'data-elapsed="([0-9.]+)"', page)
    assert shown and float(shown.group(1)) == pytest.approx(run.worked_seconds, abs=0.1)

    artifact = run.artifacts.get(stage=6, model_id="gpt-5")
    api.post(f"/api/runs/{run.pk}/select", {"artifact_id": artifact.pk}, content_type="application/json")
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    final = (run.exports_dir / "final.md").read_text()
    assert f"working time {duration(run.elapsed_seconds())}" in final


def test_a_killed_runner_worked_until_its_last_heartbeat(run):
    now = timezone.now()
    job = runner_job(target=str(run.pk), heartbeat_at=now - timedelta(minutes=10))
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING,
        job=job,
        started_at=now - timedelta(minutes=12),
        working_since=now - timedelta(minutes=12),
        worked_seconds=30.0,
    )
    assert services.runs_mark_stale_interrupted() == 1
    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED and run.working_since is None
    # 30 s before, then two minutes until the runner went silent; the ten silent minutes are not work.
    assert run.worked_seconds == pytest.approx(150.0, abs=1.0)
    assert run.elapsed_seconds() == pytest.approx(150.0, abs=1.0)


def test_a_running_run_counts_its_current_runner_too(run):
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING,
        started_at=now - timedelta(hours=2),
        working_since=now - timedelta(seconds=5),
    )
    run.refresh_from_db()
    run.worked_seconds = 100.0
    assert run.elapsed_seconds(now) == pytest.approx(105.0, abs=0.1)


@pytest.mark.parametrize(
    ("seconds", "words"), [(4.4, "4 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"), (3725, "1 h 02 min")]
)
def test_durations_read_as_a_clinician_reads_them(seconds, words):
    assert duration(seconds) == words
