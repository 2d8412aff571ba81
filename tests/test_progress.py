"""Progress you can trust: retries said where they happen, a model's error as a sentence with the raw error
one click away, why a run's runner has not started yet (with a clock), and ingestion pages done of total with
the step under way, live."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import httpx
import pytest
import respx
from django.urls import reverse
from django.utils import timezone

from council.client import CLIProxyClient, RetryNotice, UpstreamError
from council.explain import explain
from jobs import selectors as job_selectors
from jobs.models import Job
from patients import ingest, services
from patients.models import Report
from runs import events, pipeline
from runs.models import Run, RunEvent
from tests.client_helpers import BASE, FakeTime, chat_body, error_body, make_client
from tests.run_helpers import add_artifact, make_patient, run_pipeline_here
from tests.synthetic_reports import make_qeeg_pdf

MESSAGES = [{"role": "user", "content": "hi"}]


# -- retries, where they happen --------------------------------------------------------------------------------


@respx.mock
async def test_each_retry_is_told_before_its_wait_with_the_attempt_that_comes_next():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(429, json=error_body("slow down", code="rate_limited", reset_seconds=12)),
            httpx.Response(503, json=error_body("overloaded", type_="server_error")),
            httpx.Response(200, json=chat_body("done")),
        ]
    )
    notices: list[RetryNotice] = []

    async def heard(notice: RetryNotice) -> None:
        notices.append(notice)

    fake_time = FakeTime()
    async with make_client(fake_time, on_retry=heard, max_attempts=5) as client:
        completion = await client.complete("gpt-5", MESSAGES)
    assert completion.attempts == 3
    first, second = notices
    assert first.sentence == "429 from the upstream, retrying in 12 s (the wait it asked for), attempt 2 of 5"
    assert (first.model, first.status, first.wait_seconds) == ("gpt-5", 429, 12)
    assert second.sentence.startswith("503 from the upstream, retrying in ") and second.attempt == 3
    assert second.wait_seconds == fake_time.sleeps[1]  # the wait told is the wait taken
    assert "overloaded" in second.message


@respx.mock
async def test_a_listener_that_fails_does_not_fail_the_call():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(502, json=error_body("bad gateway")),
            httpx.Response(200, json=chat_body()),
        ]
    )

    async def broken(notice: RetryNotice) -> None:
        raise RuntimeError("database busy")

    async with make_client(FakeTime(), on_retry=broken) as client:
        assert (await client.complete("gpt-5", MESSAGES)).attempts == 2


@pytest.mark.django_db(transaction=True)
def test_a_runs_retries_are_run_events_of_their_stage_and_model(run, fake_upstream, settings):
    settings.CLIPROXY_MAX_COOLDOWN_SECONDS = 0.2
    fake_upstream.script("gpt-5", failures=["429:0.1", "503"])
    with mock.patch.object(CLIProxyClient, "from_settings", wraps=CLIProxyClient.from_settings) as made:
        code, output = run_pipeline_here(run)
    assert code == 0, output
    assert made.call_args.kwargs["on_retry"] is pipeline.report_retry
    retries = list(RunEvent.objects.filter(run=run, kind=events.MODEL_RETRYING).order_by("id"))
    assert [(e.stage, e.model_id, e.data["attempt"], e.data["status"]) for e in retries] == [
        (1, "gpt-5", 2, 429),
        (1, "gpt-5", 3, 503),
    ]
    assert retries[0].data["sentence"].startswith("429 from the upstream, retrying in 0 s")
    assert retries[0].data["max_attempts"] == settings.CLIPROXY_MAX_ATTEMPTS
    assert run.artifacts.get(stage=1, model_id="gpt-5").attempts == 3


@pytest.mark.django_db
def test_the_live_page_shows_a_retry_while_the_call_waits_and_not_after(run, clinician_client):
    job = Job.objects.create(
        kind="runpipeline", target=str(run.pk), status=Job.Status.RUNNING, heartbeat_at=timezone.now()
    )
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, current_stage=1, started_at=timezone.now(), job=job
    )
    events.event_emit(run=run, kind=events.MODEL_STARTED, stage=1, model_id="gpt-5")
    sentence = "429 from the upstream, retrying in 12 s (the wait it asked for), attempt 3 of 5"
    events.event_emit(run=run, kind=events.MODEL_RETRYING, stage=1, model_id="gpt-5", sentence=sentence)
    live = reverse("runs:live", args=[run.pk])
    page = clinician_client.get(live).content.decode()
    assert sentence in page and 'class="small retrying"' in page
    body = clinician_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "sse:model_retrying" in body  # the fragment is fetched again when a retry is announced
    events.event_emit(run=run, kind=events.MODEL_FINISHED, stage=1, model_id="gpt-5")
    assert sentence not in clinician_client.get(live).content.decode()


# -- a model's error as a sentence ---------------------------------------------------------------------------


async def _error_from(fake_upstream, model: str, **script) -> str:
    fake_upstream.script(model, **script)
    client = CLIProxyClient(base_url=fake_upstream.base_url, max_attempts=2, backoff_base=0.01)
    async with client:
        try:
            await client.complete(model, MESSAGES)
        except UpstreamError as exc:
            return exc.message
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ({"failures": ["429", "429"]}, "refused more requests for now (rate limit) after 2 tries"),
        ({"failures": ["503", "503"]}, "had a server error (503) after 2 tries"),
        ({"failures": ["model_not_found"]}, "does not offer this model"),
        ({"failures": ["401"]}, "not signed in to this model's provider"),
        ({"always_empty": True}, "empty answer"),
    ],
)
async def test_errors_the_client_raises_read_as_sentences(fake_upstream, script, says):
    raw = await _error_from(fake_upstream, "gpt-5", **script)
    assert says in explain(raw)


def test_other_errors_read_as_sentences_and_unknown_ones_do_not_guess():
    assert "could not be reached" in explain(
        "CLIProxyAPI at http://127.0.0.1:9 refused the connection (is it running?). (gave up after 5 attempts)"
    )
    assert "longer than the time allowed" in explain(
        "CLIProxyAPI at http://x did not answer /v1/chat/completions in time for gpt-5."
    )
    assert "not in the required form after 3 tries" in explain(
        "invalid final review JSON after 3 attempt(s): vote: Input should be 'APPROVE' or 'REVISE'"
    )
    assert explain("something nobody wrote before") == (
        "The call did not succeed; the details below are the error as it was reported."
    )
    assert explain("") == ""


@pytest.mark.django_db
def test_a_failed_call_shows_the_sentence_with_the_raw_error_one_click_away(run, clinician_client):
    raw = "gpt-5: CLIProxyAPI answered 429: quota exhausted (gave up after 5 attempts)"
    add_artifact(run, stage=1, model_id="gpt-5", text=None, error=raw)
    for url in (reverse("runs:stage", args=[run.pk, 1]), reverse("runs:live", args=[run.pk])):
        page = clinician_client.get(url).content.decode()
        assert "refused more requests for now (rate limit) after 5 tries" in page
        details = page[page.index('<details class="raw-error small">') :]
        assert raw in details[: details.index("</details>")]


# -- why the runner has not started ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_queued_job_waits_for_a_slot_and_says_so(settings):
    settings.JOBS_MAX_RUNNING = 1
    Job.objects.create(kind="runpipeline", target="1", status=Job.Status.RUNNING, heartbeat_at=timezone.now())
    ahead = Job.objects.create(kind="runpipeline", target="2")
    waiting = Job.objects.create(kind="runpipeline", target="3")
    reason = job_selectors.wait_reason(waiting)
    assert "all 1 are in use (JOBS_MAX_RUNNING)" in reason and "1 queued job ahead of it" in reason
    settings.JOBS_MAX_RUNNING = 3
    assert job_selectors.wait_reason(ahead).startswith("Queued; a slot is free")


@pytest.mark.django_db
def test_a_slow_starting_process_is_said_to_be_slow():
    now = timezone.now()
    job = Job.objects.create(kind="runpipeline", target="1", status=Job.Status.STARTING, launched_at=now)
    assert "is starting (loading Python and Django)" in job_selectors.wait_reason(job)
    job.launched_at = now - dt.timedelta(seconds=25)
    assert (
        "launched 25 s ago and has not started yet; that is slower than usual"
        in job_selectors.wait_reason(job)
    )


@pytest.mark.django_db
def test_a_queued_run_shows_how_long_it_waited_and_why(run, clinician_client, settings):
    settings.JOBS_MAX_RUNNING = 1
    Job.objects.create(
        kind="ingestreport", target="9", status=Job.Status.RUNNING, heartbeat_at=timezone.now()
    )
    job = Job.objects.create(kind="runpipeline", target=str(run.pk))
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.QUEUED, job=job, queued_at=timezone.now() - dt.timedelta(seconds=15)
    )
    page = clinician_client.get(reverse("runs:live", args=[run.pk])).content.decode()
    waiting = page[page.index('id="run-waiting"') :]
    seconds = float(waiting.split('data-elapsed="')[1].split('"')[0])
    assert 15 <= seconds < 60 and "data-ticking" in waiting[:300]
    assert "all 1 are in use (JOBS_MAX_RUNNING)" in waiting
    assert 'hx-trigger="every 3s"' in page  # a wait has no run events: the fragment asks again


# -- ingestion, page by page ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ingestion_writes_each_step_as_it_starts(tmp_path, data_dir):
    patient = make_patient()
    pdf = tmp_path / "report.pdf"
    make_qeeg_pdf(pdf, pages=3, image_only_pages=(2,))
    from django.core.files.uploadedfile import SimpleUploadedFile

    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = services.report_upload(
            patient=patient, files=[SimpleUploadedFile("report.pdf", pdf.read_bytes())]
        )
    seen: list[dict] = []
    record = services._ProgressRecorder.__call__

    def watching(self, step):
        # The PDF is read in a limited child; each step it starts reaches this process as it starts, and
        # is on the report (so on the page) before the child goes on: what does the database say then?
        record(self, step)
        seen.append(Report.objects.get(pk=report.pk).progress)

    with mock.patch.object(services._ProgressRecorder, "__call__", watching):
        services.report_ingest(report_id=report.pk)
    [during] = [progress for progress in seen if progress["now"] == "OCR of page 2"]
    assert (during["done"], during["total"]) == (1, 3)
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    assert report.progress["now"] == "the fact table" and report.progress["done"] == 3
    assert report.progress["slowest"]["what"] == "OCR of page 2"  # OCR is the slow step of this report


def test_ingest_pdf_names_every_step(tmp_path):
    pdf = tmp_path / "report.pdf"
    make_qeeg_pdf(pdf, pages=2, image_only_pages=(2,))
    steps: list[ingest.Step] = []
    options = ingest.IngestOptions(
        max_pages=10, render_dpi=72, ocr_enabled=False, ocr_min_chars=200, ocr_image_area=0.5
    )
    out = tmp_path / "out"
    out.mkdir()
    ingest.ingest_pdf(pdf, out, name="report.pdf", options=options, on_step=steps.append)
    assert [(s.what, s.done, s.total) for s in steps] == [
        ("text layer and image of page 1", 0, 2),
        ("text layer and image of page 2", 1, 2),
        ("the fact table", 2, 2),
    ]


@pytest.mark.django_db
def test_the_report_page_shows_pages_done_the_step_under_way_and_the_slowest(clinician_client, tmp_path):
    patient = make_patient()
    job = Job.objects.create(
        kind="ingestreport", target="1", status=Job.Status.RUNNING, heartbeat_at=timezone.now()
    )
    report = Report.objects.create(
        patient=patient,
        original_name="r.pdf",
        sha256="0" * 64,
        status=Report.Status.PROCESSING,
        page_count=6,
        job=job,
    )
    report.progress = {
        "done": 3,
        "total": 6,
        "now": "OCR of page 4",
        "now_at": (timezone.now() - dt.timedelta(seconds=7)).isoformat(),
        "slowest": {"what": "OCR of page 2", "seconds": 8.1},
    }
    report.save()
    page = clinician_client.get(reverse("patients:report", args=[report.pk]), headers={"HX-Request": "true"})
    html = page.content.decode()
    assert page.status_code == 200
    progress = html[html.index('id="ingest-progress"') :]
    assert '<progress value="3" max="6">' in progress and "3 of 6 pages" in progress
    assert "now: OCR of page 4" in progress and "slowest so far: OCR of page 2, 8.1 s" in progress
    assert 'hx-trigger="every 2s"' in html  # the fragment keeps asking while it is read
    rows = clinician_client.get(reverse("patients:reports", args=[patient.pk])).content.decode()
    assert "3 of 6 pages" in rows and "OCR of page 4" in rows


@pytest.mark.django_db
def test_a_pending_report_says_why_it_waits(clinician_client, settings):
    settings.JOBS_MAX_RUNNING = 1
    patient = make_patient()
    Job.objects.create(kind="runpipeline", target="1", status=Job.Status.RUNNING, heartbeat_at=timezone.now())
    job = Job.objects.create(kind="ingestreport", target="5")
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64, job=job)
    html = clinician_client.get(reverse("patients:report", args=[report.pk])).content.decode()
    waiting = html[html.index('id="ingest-waiting"') :]
    assert "Waiting for a free job slot: all 1 are in use (JOBS_MAX_RUNNING)" in waiting


def test_the_limited_reader_needs_no_step_listener_and_passes_steps_to_one(tmp_path):
    """`sandbox.ingest_pdf_limited` defaults to no listener (None, not another module's private no-op):
    called with none it reads the PDF, called with one it hears every step the child took."""
    from patients import sandbox

    pdf = tmp_path / "report.pdf"
    make_qeeg_pdf(pdf, pages=1)
    options = ingest.IngestOptions(
        max_pages=10, render_dpi=72, ocr_enabled=False, ocr_min_chars=200, ocr_image_area=0.5
    )
    limits = sandbox.Limits(memory_mb=2048, seconds=120)
    quiet, heard = tmp_path / "quiet", tmp_path / "heard"
    quiet.mkdir()
    heard.mkdir()
    result = sandbox.ingest_pdf_limited(
        pdf, quiet, name="report.pdf", options=options, limits=limits, on_step=None
    )
    assert result.page_count == 1 and (quiet / "text.md").is_file()
    steps: list[ingest.Step] = []
    sandbox.ingest_pdf_limited(
        pdf, heard, name="report.pdf", options=options, limits=limits, on_step=steps.append
    )
    assert [s.what for s in steps] == ["text layer and image of page 1", "the fact table"]
