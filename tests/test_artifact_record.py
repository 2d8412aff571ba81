"""Storing an answer: its file is written off Django's one sync thread (a stage's answers are fsync'd side by
side, not one after another), and its row and events are one transaction (a failure leaves neither)."""

from __future__ import annotations

import threading
import time

import pytest

from runs import events, services
from runs.models import Artifact, Run, RunEvent
from tests.run_helpers import run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_row_and_its_events_are_written_together_or_not_at_all(run, monkeypatch):
    real_emit = events.event_emit

    def emit(**kwargs):
        if kwargs["kind"] == events.MODEL_FINISHED:
            raise RuntimeError("the database went away")
        return real_emit(**kwargs)

    monkeypatch.setattr(events, "event_emit", emit)
    with pytest.raises(RuntimeError):
        services.artifact_record(
            run_id=run.pk, stage=1, model_id="gpt-5", outcome=services.Outcome(text="# Analysis\n")
        )
    # No row (so a resumed run asks the model again) and no half of the events.
    assert not Artifact.objects.filter(run=run).exists()
    assert not RunEvent.objects.filter(run=run, kind=events.ARTIFACT_WRITTEN).exists()

    monkeypatch.setattr(events, "event_emit", real_emit)
    artifact = services.artifact_record(
        run_id=run.pk, stage=1, model_id="gpt-5", outcome=services.Outcome(text="# Analysis\n")
    )
    assert artifact.status == Artifact.Status.OK
    kinds = list(RunEvent.objects.filter(run=run, stage=1).values_list("kind", flat=True))
    assert kinds == [events.ARTIFACT_WRITTEN, events.MODEL_FINISHED]


def test_a_stages_answer_files_are_written_side_by_side_off_the_sync_thread(run, monkeypatch):
    real_store, real_record = services.artifact_store_text, services.artifact_record
    store_threads: set[str] = set()
    row_threads: set[str] = set()
    lock = threading.Lock()
    in_flight = most_at_once = 0

    def store(**kwargs):
        nonlocal in_flight, most_at_once
        with lock:
            store_threads.add(threading.current_thread().name)
            in_flight += 1
            most_at_once = max(most_at_once, in_flight)
        try:
            time.sleep(0.5)  # a slow disk: each answer's fsync takes this long
            return real_store(**kwargs)
        finally:
            with lock:
                in_flight -= 1

    def record(**kwargs):
        row_threads.add(threading.current_thread().name)
        return real_record(**kwargs)

    monkeypatch.setattr(services, "artifact_store_text", store)
    monkeypatch.setattr(services, "artifact_record", record)
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    # The three answers of a stage were on disk at once (one after another in the sync thread: never more
    # than one), and never written by the thread that writes rows.
    assert most_at_once >= 2
    assert row_threads and not (store_threads & row_threads)
    for artifact in Artifact.objects.filter(run=run, status=Artifact.Status.OK):
        assert artifact.file_path and artifact.sha256
        assert services.selectors.artifact_text(artifact)


def test_a_launched_job_may_write_the_projects_bytecode(monkeypatch, tmp_path):
    """Where PYTHONDONTWRITEBYTECODE is set, every job compiled the project's modules anew; a job the
    launcher starts writes them once, and the next one loads them."""
    from jobs import launcher

    seen: list[dict[str, str]] = []

    class Started:
        pid = 4321

        def __init__(self, args, **kwargs):
            seen.append(kwargs["env"])

        def wait(self):
            return 0

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(launcher.subprocess, "Popen", Started)
    assert launcher.launch_command("runpipeline", "7", log_path=tmp_path / "x.log", env={"A": "b"}) == 4321
    assert "PYTHONDONTWRITEBYTECODE" not in seen[0] and seen[0]["A"] == "b"
