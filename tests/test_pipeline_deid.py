"""A run over a report with a planted name, date of birth, MRN, phone and email: every call the fake upstream
receives is free of all of them (and of the patient label); a payload that still carries one is refused by the
client's guard, and the run says which stage and why, never the identifier; no identifier reaches the logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from council import deid
from council.deid import IdentifierGuard, fold
from patients.models import Patient, PatientIdentifier, Report
from patients.selectors import report_text
from patients.services import report_ingest, report_upload
from runs import services, sources
from runs.models import Run
from tests.deid_samples import PLANTED, make_identified_report
from tests.run_helpers import CONSOLIDATOR, COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def _identified_run(tmp_path: Path) -> Run:
    patient = Patient.objects.create(
        label="SYNTH-001",
        age=9,
        sex="female",
        medications="methylphenidate since 2024-02-20",
        referral_reason="Anna-Maria was referred by Dr. Okafor; mother Mrs Mueller, phone 555-201-7788",
    )
    for kind, value in [
        (PatientIdentifier.Kind.NAME, PLANTED["name"]),
        (PatientIdentifier.Kind.BIRTH_DATE, PLANTED["birth_date"].isoformat()),
        (PatientIdentifier.Kind.RECORD_NUMBER, PLANTED["mrn"]),
    ]:
        PatientIdentifier.objects.create(patient=patient, kind=kind, value=value)
    make_identified_report(tmp_path / "anna-report.txt")
    data = (tmp_path / "anna-report.txt").read_bytes()
    upload = SimpleUploadedFile("anna-report.txt", data, content_type="text/plain")
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY, report.error
    return services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )


def _leaks(text: str) -> list[str]:
    folded = fold(text)
    return [s for s in [*PLANTED["spellings"], "SYNTH-001", "synth 001"] if fold(s) in folded]


def test_a_run_over_a_planted_report_sends_no_identifier_in_any_call(fake_upstream, tmp_path):
    run = _identified_run(tmp_path)
    code, output = run_pipeline_here(run)
    assert code == 0, output
    calls = [call for call in fake_upstream.calls if call.stage is not None]
    assert len(calls) == 16  # 3 + 3 + 3 + 1 + 3 + 3
    guard = sources.guard_for(run.patient, run.report)
    leaking = [(call.stage, call.model, _leaks(json.dumps(call.body, ensure_ascii=False))) for call in calls]
    assert [leak for leak in leaking if leak[2]] == []
    assert all(guard.find(json.dumps(call.body, ensure_ascii=False)) is None for call in calls)
    # What was removed is replaced by tokens the models can reason about, and every measurement is there.
    stage1 = json.dumps(calls[0].body, ensure_ascii=False)
    for token in ("[NAME]", "[DOB]", "[ID]", "[PHONE]", "[EMAIL]", "[ADDRESS]", "Session 2 (day 23)"):
        assert token in stage1
    for line in PLANTED["measurements"]:
        assert json.dumps(line, ensure_ascii=False)[1:-1] in stage1
    # The clinical context is de-identified with the report's day 0 (2024-03-01).
    assert "methylphenidate since day -10" in stage1 and "Dr. Okafor" in stage1


def test_a_payload_that_is_not_deidentified_is_refused_and_the_run_says_where(fake_upstream, tmp_path):
    run = _identified_run(tmp_path)
    # De-identification "forgets" to run: the guard in the client is what stands between the text and out.
    with mock.patch("council.deid.deidentify", side_effect=_identity):
        code, output = run_pipeline_here(run)
    assert code == 1, output
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error.startswith("Stage 1 (Analysis): Refused to send the request to ")
    assert "patient's name" in run.error or "a name" in run.error or "record number" in run.error
    assert _leaks(run.error) == []
    assert fake_upstream.count(stage=1) == 0 and [c for c in fake_upstream.calls if c.stage] == []
    assert run.artifacts.count() == 0  # nothing to resume from: every call is asked again once fixed


def _identity(text, identifiers, *, anchor=None, order="mdy"):
    from council.deid import Deidentified

    return Deidentified(text=text, anchor=anchor)


def test_the_guard_refuses_the_planted_report_as_it_was_uploaded(fake_upstream, tmp_path):
    run = _identified_run(tmp_path)
    raw = (run.report.folder / "text.md").read_text(encoding="utf-8")
    guard: IdentifierGuard = sources.guard_for(run.patient, run.report)
    assert guard.find(raw) is not None
    assert (
        guard.find(sources.council_source(patient=run.patient, report=run.report).council_input.report_text)
        is None
    )


def test_runpipeline_log_names_no_patient(fake_upstream, tmp_path, subprocess_env):
    """The runner's terminal output is what the launcher writes to data/logs/runpipeline-N.log."""
    run = _identified_run(tmp_path)
    log_path = settings.DATA_DIR / "logs" / f"runpipeline-{run.pk}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**subprocess_env, "CLIPROXY_BASE_URL": fake_upstream.base_url, "LOG_LEVEL": "DEBUG"}
    with open(log_path, "wb") as out:
        done = subprocess.run(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "runpipeline", str(run.pk)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=settings.BASE_DIR,
            timeout=120,
        )
    log = log_path.read_text(encoding="utf-8")
    assert done.returncode == 0, log
    assert f"Run {run.pk} for patient {run.patient_id}" in log
    assert _leaks(log) == [] and "anna-report" not in log


def test_a_run_start_reads_its_report_once_and_sends_what_reading_it_each_time_would(fake_upstream, tmp_path):
    run = _identified_run(tmp_path)
    original = report_text(run.report)
    deid._found_kept.cache_clear()
    with mock.patch("council.deid._spans", wraps=deid._spans) as spans:
        source = sources.run_source(run)
    # Its `day 0` (for the text, again for the fact table) and its replacements: one reading of the text.
    assert [call.args[0] for call in spans.call_args_list].count(original) == 1
    with mock.patch("council.deid._found_kept", deid._found_kept.__wrapped__):
        unkept = sources.run_source(run)
    assert source.council_input == unkept.council_input and source.report == unkept.report
    assert "[NAME]" in source.council_input.report_text and "day 23" in source.council_input.report_text
