"""Two runners can never work the same run: the claim is a compare-and-set update."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError

from jobs.models import Job
from jobs.services import Beat
from runs import services
from runs.models import Run
from tests.job_helpers import runner_job
from tests.run_helpers import run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_second_claim_loses(run):
    first, second = runner_job(pid=111), runner_job(pid=222)
    assert services.run_claim(run_id=run.pk, job=first) is not None
    assert services.run_claim(run_id=run.pk, job=second) is None
    run.refresh_from_db()
    assert run.job == first
    assert services.run_heartbeat(run_id=run.pk, job=second) is Beat.LOST
    assert services.run_heartbeat(run_id=run.pk, job=first) is Beat.HELD


def test_runpipeline_refuses_a_run_another_live_runner_holds(run):
    job = runner_job(target=str(run.pk), host="other-host", pid=99999)
    Run.objects.filter(pk=run.pk).update(status="running", job=job)
    with pytest.raises(CommandError, match="already being worked by other-host pid 99999"):
        run_pipeline_here(run)


def test_complete_runs_are_not_rerun_without_from_stage(run, fake_upstream):
    assert run_pipeline_here(run)[0] == 0
    jobs = list(Job.objects.filter(kind="runpipeline", target=str(run.pk)))
    with pytest.raises(CommandError, match="from-stage"):
        run_pipeline_here(run)
    # Refused before a job was made: a second start of a finished run leaves nothing behind.
    assert list(Job.objects.filter(kind="runpipeline", target=str(run.pk))) == jobs
    calls = len(fake_upstream.calls)
    services.run_select(run=run, artifact=run.artifacts.get(stage=6, model_id="gpt-5"))
    services.run_export(run=run)
    assert (run.exports_dir / "final.pdf").is_file()
    code, output = run_pipeline_here(run, "--from-stage", "5")
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert fake_upstream.count(stage=5) == 6 and fake_upstream.count(stage=6) == 6
    assert fake_upstream.count(stage=4) == 1 and len(fake_upstream.calls) == calls + 6
    assert "redoing from Stage 5" in output
    # The selected draft was redone, so the selection and its export are gone rather than stale.
    assert run.selected_artifact is None and not (run.exports_dir / "final.pdf").exists()


def test_two_runner_processes_started_together_do_the_work_once(run, fake_upstream, fake_upstream_env):
    command = [sys.executable, str(django_settings.BASE_DIR / "manage.py"), "runpipeline", str(run.pk)]
    procs = [
        subprocess.Popen(
            command,
            env=fake_upstream_env,
            cwd=django_settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=90)[0] for proc in procs]
    codes = sorted(proc.returncode for proc in procs)
    assert codes == [0, 1], outputs
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETE
    assert fake_upstream.count(stage=1) == 3 and fake_upstream.count(stage=6) == 3
    loser = outputs[[p.returncode for p in procs].index(1)]
    assert "already being worked" in loser or "nothing to do" in loser


def test_list_shows_runs_and_their_states(run, capsys):
    from django.core.management import call_command

    call_command("runpipeline", "--list")
    out = capsys.readouterr().out
    assert f"{run.pk:>5}  created" in out and "SYNTH-001" in out
