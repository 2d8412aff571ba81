"""The warm runner (jobs/warm.py): `serve` starts it, the launcher asks it to fork each job's process with
Django already set up, and with none answering the launcher starts the process cold, as before."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from jobs import launcher, warm
from jobs.models import Job
from runs import services
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def warm_runner(fake_upstream_env):
    proc = warm.start(env=fake_upstream_env, stdout=subprocess.PIPE)
    assert proc is not None, "the warm runner did not come up"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(10)


def stop(proc: subprocess.Popen) -> str:
    """Close its lifeline (as `serve` does when it ends); what it printed."""
    proc.stdin.close()
    said = proc.stdout.read()
    assert proc.wait(10) == 0
    return said


def test_a_run_is_forked_by_the_warm_runner_and_completes(run, warm_runner):
    services.run_start(run=run)
    run.refresh_from_db()
    job = Job.objects.get(pk=run.job_id)
    # Until the runner is gone: it ends the run, then its job, then prints its summary, then exits.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status not in (Job.Status.QUEUED, *Job.IN_FLIGHT) and not launcher.pid_alive(job.pid):
            break
        time.sleep(0.1)
    run.refresh_from_db()
    log_text = Path(job.log_path).read_text(encoding="utf-8")
    assert run.status == Run.Status.COMPLETE, (run.error, log_text[-2000:])
    assert job.status == Job.Status.DONE
    assert f"Run {run.pk}: Complete" in log_text  # the command's own summary, in the job's log
    said = stop(warm_runner)
    # The warm runner forked it (the pid that claimed the job is the one it reported), exactly once.
    assert "Warm runner ready" in said and "runpipeline" in said
    assert said.count(f"runpipeline {run.pk}: pid ") == 1
    assert f"runpipeline {run.pk}: pid {job.pid}\n" in said


def test_only_job_kinds_are_forked(warm_runner, tmp_path):
    for name, args in (("migrate", []), ("shell", ["-c", "print(1)"])):
        assert warm.launch(name, args, log_path=tmp_path / "x.log", env={}) is None
    assert not (tmp_path / "x.log").exists()
    said = stop(warm_runner)
    assert ": pid " not in said  # nothing was forked


def test_with_no_warm_runner_the_launcher_starts_the_process_cold(warm_runner, monkeypatch, tmp_path):
    assert warm.ready()
    stop(warm_runner)  # the server ended: it takes its socket with it
    assert not warm.socket_path().exists() and not warm.ready()
    started = []

    class Cold:
        pid = 4321

        def __init__(self, args, **kwargs):
            started.append(args)

        def wait(self):
            return 0

    monkeypatch.setattr(launcher.subprocess, "Popen", Cold)
    assert launcher.launch_command("runpipeline", "7", log_path=tmp_path / "x.log") == 4321
    assert started and started[0][-2:] == ["runpipeline", "7"]


def test_a_stale_socket_is_no_warm_runner(tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening: what a killed runner leaves
        dead.bind(str(warm.socket_path()))
    assert warm.socket_path().exists()
    assert warm.launch("runpipeline", ["7"], log_path=tmp_path / "x.log", env={}) is None


def test_an_upload_is_read_by_a_forked_ingester(warm_runner, tmp_path):
    """Ingestion reads each PDF in a spawned child of its own (patients/sandbox.py): from a forked job too."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from patients.models import Report
    from patients.services import report_upload
    from tests.run_helpers import make_patient
    from tests.synthetic_reports import make_qeeg_pdf

    path = tmp_path / "report.pdf"
    make_qeeg_pdf(path, image_only_pages=())
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/pdf")
    [report] = report_upload(patient=make_patient(), files=[upload])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report.refresh_from_db()
        if report.status not in (Report.Status.PENDING, Report.Status.PROCESSING):
            break
        time.sleep(0.2)
    assert report.status == Report.Status.READY, report.error
    said = stop(warm_runner)
    assert f"ingestreport {report.pk}: pid {report.job.pid}\n" in said


def test_ctrl_c_stops_it_quietly_and_takes_its_socket_along(warm_runner):
    import signal

    warm_runner.send_signal(signal.SIGINT)  # what the terminal sends serve's whole group on Ctrl-C
    assert warm_runner.wait(10) == 0
    assert not warm.socket_path().exists()
