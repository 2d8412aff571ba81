"""The vision reader's model calls during ingestion are the uploader's: each page sent is one `ModelCall` in the
ledger, counted against MODEL_CALLS_PER_USER_PER_DAY with every other call; with the day's calls used up no
page is sent, the report is ready with its layout facts and its page says why; the upload form says what a
report may cost and what is left."""

from __future__ import annotations

import json

import pypdfium2 as pdfium
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from council import deid
from jobs.models import Job
from ledger import calls as ledger
from ledger.models import ModelCall
from patients import facts, services
from patients.layout import read_text_layer
from patients.models import Patient, Report
from patients.readers import vision
from tests.synthetic_vendor import make_vendor_pdf

MODEL = "fake-vision"


@pytest.fixture
def vision_on(settings):
    settings.FACTS_VISION_MODEL = MODEL
    settings.DEID_PAGE_IMAGES = "paint"
    settings.FACTS_VISION_DPI = 100
    return settings


def _upload(staff_api, tmp_path, *, label: str) -> tuple[Report, dict]:
    """One image page whose two faint values the layout reader cannot read: the page is unsure."""
    patient = Patient.objects.create(label=label)
    pdf = tmp_path / "vendor.pdf"
    truth = make_vendor_pdf(pdf, pages=[("wavi_summary", "image")], seed=12, faint=2, label=label)
    response = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile("vendor.pdf", pdf.read_bytes())]}
    )
    assert response.status_code == 201, response.content
    return Report.objects.get(pk=response.json()[0]["id"]), truth


def _spend(user, calls: int) -> None:
    for _ in range(calls):
        ledger.call_made(user_id=user.pk, kind=ModelCall.Kind.STAGE, model_id="m1")


def test_an_uploader_at_quota_has_no_page_sent_and_the_report_page_says_why(
    vision_on, staff, staff_api, clinician_client, db, tmp_path, launched, fake_upstream
):
    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 3
    _spend(staff, 3)
    report, truth = _upload(staff_api, tmp_path, label="SYNTH-VQ1")

    report = services.report_ingest(report_id=report.pk)

    assert report.status == Report.Status.READY, report.error
    assert fake_upstream.count(model=MODEL) == 0  # nothing asked upstream
    assert ModelCall.objects.filter(user=staff).count() == 3  # and nothing charged
    table = facts.load_table(report.folder)
    assert table["vision"]["status"] == "over quota"
    assert "the uploader's model calls for today are used up" in table["vision"]["note"]
    assert "MODEL_CALLS_PER_USER_PER_DAY = 3: 3 made today" in table["vision"]["note"]
    (page,) = table["pages"]
    assert page["vision"]["status"] == "not sent" and "used up" in page["vision"]["note"]
    # The text/OCR facts still landed: all but the two faint values.
    assert len(table["facts"]) == len(truth["facts"]) - 2
    html = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert "Not fully read by the layout readers: page 1" in html
    assert "nothing sent: the uploader&#x27;s model calls for today are used up" in html
    assert ">not sent<" in html


def test_under_quota_each_page_sent_is_one_call_charged_to_the_uploader(
    vision_on, staff, staff_api, staff_client, db, tmp_path, launched, fake_upstream
):
    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 5
    _spend(staff, 3)
    report, truth = _upload(staff_api, tmp_path, label="SYNTH-VQ2")
    faint = truth["faint"]
    reply = {"page": 1, "facts": [{k: t[k] for k in ("metric", "site", "band", "session", "value", "unit")}
                                  for t in faint], "unreadable": []}  # fmt: skip
    # The first reply breaks the schema and is sent back: still one call, whatever retries it took.
    fake_upstream.script(MODEL, page_facts_replies=["a table of tests", json.dumps(reply)])

    report = services.report_ingest(report_id=report.pk)

    assert report.status == Report.Status.READY, report.error
    assert fake_upstream.count(model=MODEL) == 2
    table = facts.load_table(report.folder)
    assert table["vision"]["status"] == "done" and table["pages"][0]["vision"]["status"] == "read"
    (call,) = ModelCall.objects.filter(kind=ModelCall.Kind.VISION)
    assert (call.user_id, call.report_id, call.model_id, call.run_id) == (staff.pk, report.pk, MODEL, None)
    assert ledger.allowance(staff).used_today == 4 and ledger.allowance(staff).left == 1

    # The upload form shows what a report may cost and what is left of the day.
    html = staff_client.get(f"/patients/{report.patient_id}/").content.decode()
    assert 'id="vision-estimate"' in html
    assert "up to 6 model calls per report, charged to you" in html
    assert "You have 1 of today's 5 model calls left; past them, pages are not sent." in html


def test_the_pass_sends_no_more_pages_than_the_calls_left(tmp_path, fake_upstream):
    from tests.test_vision_reader import _config

    # Two text-layer pages, each with two values taken out of its layout: both unsure, one call left.
    pdf = tmp_path / "two.pdf"
    make_vendor_pdf(pdf, pages=[("generic_rows", "text"), ("generic_rows", "text")], seed=3)
    document = pdfium.PdfDocument(pdf)
    try:
        layouts = [read_text_layer(document[i], number=i + 1) for i in range(2)]
    finally:
        document.close()
    for layout in layouts:
        row = next(r for r in layout.rows() if r.text.startswith("Trail Making Test A"))
        for box in row.boxes[4:6]:
            layout.boxes.remove(box)
    table = facts.build_table(facts.read_layouts(layouts), page_count=2)
    assert vision.unsure_pages(table) == [1, 2]
    records = [
        {"page": n, "image": f"pages/page-000{n}.png", "image_coverage": 0.0, "ocr_ran": False}
        for n in (1, 2)
    ]
    fake_upstream.script(MODEL, page_facts_replies=[json.dumps({"page": 1, "facts": [], "unreadable": []})])
    note = "the uploader's model calls for today are used up"

    vision.read_unsure_pages(
        table,
        pdf_path=pdf,
        layouts=layouts,
        records=records,
        identifiers=deid.Identifiers(),
        date_order="mdy",
        config=_config(),
        calls_left=1,
        quota_note=note,
    )

    assert fake_upstream.count(model=MODEL) == 1
    assert [p["vision"]["status"] for p in table["pages"]] == ["read", "not sent"]
    assert table["pages"][1]["vision"]["note"] == note
    assert table["vision"]["note"].endswith(f"; 1 page(s) not sent: {note}")
    assert vision.calls_made(table) == 1


def test_calls_held_for_a_run_in_flight_count_before_a_vision_pass(staff, db, settings, tmp_path):
    from runs.models import Run
    from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report

    settings.MODEL_CALLS_PER_USER_PER_DAY = 20
    _spend(staff, 2)
    assert ledger.allowance(staff) == ledger.Allowance(limit=20, used_today=2, reserved=0)
    patient = make_patient()
    Run.objects.create(
        patient=patient,
        report=make_ready_report(patient, tmp_path),
        created_by=staff,
        started_by=staff,
        status=Run.Status.QUEUED,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
    )
    # The run's 16 calls to come are held for it (runs/limits.py registers them with the ledger).
    assert ledger.allowance(staff) == ledger.Allowance(limit=20, used_today=2, reserved=16)
    assert ledger.allowance(staff).left == 2


def test_two_uploads_read_at_once_cannot_both_spend_the_same_calls(
    vision_on, staff, staff_api, db, tmp_path, launched, fake_upstream, monkeypatch
):
    """While one report's vision pass runs, the calls it holds count against its uploader: a second report
    read at the same time sees them and sends nothing past the day's limit; the hold ends as they are charged."""
    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 3
    _spend(staff, 2)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, _ = _upload(staff_api, tmp_path / "a", label="SYNTH-VQ5")
    second, _ = _upload(staff_api, tmp_path / "b", label="SYNTH-VQ6")
    real, seen = vision.read_unsure_pages, {}

    def first_pass_under_way(*args, **kwargs):
        if not seen:  # inside the first pass, before its page goes upstream: the second upload is read now
            seen["held"] = Report.objects.get(pk=first.pk).vision_calls_held
            seen["allowance"] = ledger.allowance(staff)
            seen["second"] = services.report_ingest(report_id=second.pk)
        return real(*args, **kwargs)

    monkeypatch.setattr(vision, "read_unsure_pages", first_pass_under_way)
    fake_upstream.script(MODEL, page_facts_replies=[json.dumps({"page": 1, "facts": [], "unreadable": []})])
    first = services.report_ingest(report_id=first.pk)

    assert seen["held"] == 1 and seen["allowance"] == ledger.Allowance(limit=3, used_today=2, reserved=1)
    second = seen["second"]
    assert second.status == Report.Status.READY and first.status == Report.Status.READY
    assert facts.load_table(second.folder)["vision"]["status"] == "over quota"
    assert fake_upstream.count(model=MODEL) == 1  # the first report's page only
    assert ModelCall.objects.filter(kind=ModelCall.Kind.VISION).get().report_id == first.pk
    assert Report.objects.get(pk=first.pk).vision_calls_held == 0
    assert ledger.allowance(staff) == ledger.Allowance(limit=3, used_today=3, reserved=0)


def test_a_run_started_while_a_vision_pass_holds_calls_counts_them(staff, db, settings, tmp_path):
    from runs import limits
    from tests.run_helpers import make_patient, make_ready_report

    settings.MODEL_CALLS_PER_USER_PER_DAY = 20
    patient = make_patient()
    reading = make_ready_report(patient, tmp_path)
    Report.objects.filter(pk=reading.pk).update(
        status=Report.Status.PROCESSING, uploaded_by=staff, vision_calls_held=6
    )
    assert limits.quota(staff).reserved == 6 and limits.quota(staff).left == 14
    with pytest.raises(limits.LimitReached, match="6 still to come"):
        limits.check_start(user=staff, calls=16)
    Report.objects.filter(pk=reading.pk).update(status=Report.Status.READY)  # the pass ended
    limits.check_start(user=staff, calls=16)


def _stored_vision_report(patient: Patient, uploader, *, pages: int) -> Report:
    """A report as an upload leaves it (pending, its original on disk): `pages` image pages, each with two
    values too faint for the layout readers, so every page is unsure and goes to the vision reader."""
    report = Report.objects.create(
        patient=patient, original_name="vendor.pdf", sha256="0" * 64, uploaded_by=uploader
    )
    report.folder.mkdir(parents=True)
    make_vendor_pdf(report.original_path, pages=[("wavi_summary", "image")] * pages, seed=12, faint=2)
    return report


@pytest.mark.django_db(transaction=True)
def test_a_pass_killed_midway_has_every_call_it_made_charged_and_the_next_attempt_counts_them(
    vision_on, staff, fake_upstream, fake_upstream_env
):
    """A real `manage.py ingestreport` is killed (SIGKILL) while its second page's call is out. Both calls it
    made stay charged to the uploader; the next attempt reads the pages again from an allowance that counts
    them, so the day's limit holds and every call the upstream saw is charged exactly once."""
    import signal
    import subprocess
    import sys
    import time

    from django.conf import settings

    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 3
    vision_on.RUN_STALE_SECONDS = 1
    report = _stored_vision_report(Patient.objects.create(label="SYNTH-VQK"), staff, pages=2)
    fake_upstream.script(MODEL, failures=["sleep:0", "sleep:8"])  # the second page's call is slow to answer
    env = {
        **fake_upstream_env,
        "FACTS_VISION_MODEL": MODEL,
        "DEID_PAGE_IMAGES": "paint",
        "FACTS_VISION_DPI": "100",
        "MODEL_CALLS_PER_USER_PER_DAY": "3",
        "RUN_HEARTBEAT_SECONDS": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "ingestreport", str(report.pk)],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    charged = ModelCall.objects.filter(kind=ModelCall.Kind.VISION, report=report)
    try:
        deadline = time.monotonic() + 120
        # In flight: the fake has taken the second call's script (it pops one per request as it arrives), and
        # answered only the first.
        while fake_upstream.behaviour(MODEL).failures and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.02)
        assert not fake_upstream.behaviour(MODEL).failures, "the second page's call never went out"
        assert proc.poll() is None and fake_upstream.count(model=MODEL) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()

    assert charged.count() == 2  # the answered call and the one in flight, both charged to the uploader
    assert set(charged.values_list("user_id", flat=True)) == {staff.pk}
    report.refresh_from_db()
    assert report.status == Report.Status.PROCESSING  # nobody said anything: only the heartbeat can tell
    time.sleep(1.2)
    assert services.reports_settle() == 1
    assert ledger.allowance(staff) == ledger.Allowance(limit=3, used_today=2, reserved=0)

    report = services.report_ingest(report_id=report.pk)  # the next attempt, with one call left

    assert report.status == Report.Status.READY, report.error
    table = facts.load_table(report.folder)
    assert [page["vision"]["status"] for page in table["pages"]] == ["read", "not sent"]
    assert "the uploader's model calls for today are used up" in table["pages"][1]["vision"]["note"]
    assert "2 made today" in table["vision"]["note"]
    deadline = time.monotonic() + 15  # the killed call's answer, given to nobody, is counted as it goes out
    while fake_upstream.count(model=MODEL) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_upstream.count(model=MODEL) == charged.count() == 3  # no call uncharged, none charged twice
    assert Report.objects.get(pk=report.pk).vision_calls_held == 0
    assert ledger.allowance(staff) == ledger.Allowance(limit=3, used_today=3, reserved=0)


def test_a_report_whose_uploader_was_deleted_is_read_again_with_no_page_sent_and_says_why(
    vision_on, staff, staff_api, clinician_client, db, tmp_path, launched, fake_upstream
):
    """With a daily limit, a vision reading is paid from its uploader's calls; with the uploader gone, nobody's
    allowance can pay for it, so nothing is sent (never an unlimited reading charged to no one) and the
    report's page says why; the deterministic facts stand."""
    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 5
    report, truth = _upload(staff_api, tmp_path, label="SYNTH-VQ7")
    staff.delete()
    report.refresh_from_db()
    assert report.uploaded_by_id is None

    report = services.report_ingest(report_id=report.pk)

    assert report.status == Report.Status.READY, report.error
    assert fake_upstream.count(model=MODEL) == 0 and not ModelCall.objects.exists()
    table = facts.load_table(report.folder)
    assert table["vision"]["status"] == "over quota"
    assert table["vision"]["note"] == f"nothing sent: {services.UPLOADER_GONE}"
    assert table["pages"][0]["vision"] == {
        "model": MODEL,
        "status": "not sent",
        "note": services.UPLOADER_GONE,
    }
    assert len(table["facts"]) == len(truth["facts"]) - 2
    html = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert "nothing sent: the uploader&#x27;s account no longer exists" in html

    # With no daily limit there is no allowance to pay from: the pages are read, each call counted (to nobody).
    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 0
    assert services.report_reingest(report=report)
    report = services.report_ingest(report_id=report.pk)
    assert fake_upstream.count(model=MODEL) == 1
    assert list(ModelCall.objects.values_list("user_id", "kind")) == [(None, ModelCall.Kind.VISION)]


def _stored_text_vision_report(patient: Patient, uploader, *, pages: int) -> Report:
    """As `_stored_vision_report`, with text-layer pages (read in a second, no OCR) from each of which two
    printed values are left out (a blank cell of the export): every page is unsure, and sent."""
    import random

    from fpdf import FPDF

    from tests import synthetic_vendor as vendor

    report = Report.objects.create(
        patient=patient, original_name="vendor.pdf", sha256="0" * 64, uploaded_by=uploader
    )
    report.folder.mkdir(parents=True)
    rng = random.Random(12)
    sessions = vendor.make_sessions(rng)
    pdf = FPDF(unit="pt", format=vendor.A4)
    pdf.set_auto_page_break(auto=False)
    pdf.add_font("DejaVu", "", str(vendor.FONT))
    pdf.add_font("DejaVu", "B", str(vendor.FONT_BOLD))
    for _ in range(pages):
        page = vendor.PAGE_MAKERS["wavi_summary"](rng, sessions, label=patient.label)
        blank = {id(ink) for ink, _ in page.value_inks[:2]}
        page.inks = [ink for ink in page.inks if id(ink) not in blank]
        pdf.add_page()
        vendor._draw_text_layer(pdf, page)
    report.original_path.write_bytes(bytes(pdf.output()))
    return report


def _stopped_at_rest(proc) -> None:
    """SIGSTOP `proc` at a moment it holds no SQLite lock: its heartbeat thread writes every few tenths of a
    second, and a process stopped mid-write would keep every other writer waiting. (A PostgreSQL server
    finishes a statement without its client, so there nothing is held.)"""
    import signal
    import sqlite3
    import time

    from django.db import connection

    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        if connection.vendor != "sqlite":
            return
        probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.5)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the ingester never rested")


@pytest.mark.django_db(transaction=True)
def test_an_attempt_judged_dead_while_alive_leaves_the_next_attempts_hold_alone(
    vision_on, staff, fake_upstream, fake_upstream_env, launched
):
    """Two real `manage.py ingestreport` processes on one report at once: the first is stopped (SIGSTOP) while
    its first page's call is out, judged dead past RUN_STALE_SECONDS, the report settled and Try again pressed;
    the second (launched for the new job, as the launcher starts it) holds its 2 calls and charges its first.
    The first is then continued: it finds it lost the report and stops, sending nothing more and leaving the
    second attempt's hold as it is (it zeroed it before: the report's calls no longer counted while read)."""
    import signal
    import subprocess
    import sys
    import time

    from django.conf import settings

    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 10
    vision_on.RUN_STALE_SECONDS = 1
    report = _stored_text_vision_report(Patient.objects.create(label="SYNTH-VQR"), staff, pages=2)
    # The first attempt's first page is answered late enough to be stopped while it waits; the second's first
    # page is held long enough to look at its hold while it is out; a third request (none is expected before
    # the end) would take the last entry: the fake takes one as each request arrives.
    fake_upstream.script(MODEL, failures=["sleep:15", "sleep:40", "sleep:0"])

    def waiting() -> list[str]:
        return fake_upstream.behaviour(MODEL).failures

    env = {
        **fake_upstream_env,
        "FACTS_VISION_MODEL": MODEL,
        "DEID_PAGE_IMAGES": "paint",
        "FACTS_VISION_DPI": "100",
        "MODEL_CALLS_PER_USER_PER_DAY": "10",
        "RUN_HEARTBEAT_SECONDS": "0.2",
    }
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py"), "ingestreport", str(report.pk)]

    def start(**extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            manage,
            env={**env, **extra},
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for(condition, what: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    charged = ModelCall.objects.filter(kind=ModelCall.Kind.VISION, report=report)

    def held() -> int:
        return Report.objects.get(pk=report.pk).vision_calls_held

    first = start()
    second = None
    try:
        wait_for(lambda: len(waiting()) < 3 or first.poll() is not None,
                 "the first attempt's call never went out")  # fmt: skip
        assert first.poll() is None, first.stdout.read()
        _stopped_at_rest(first)
        assert held() == 1 and charged.count() == 1  # 2 held, 1 charged
        first_job = Report.objects.get(pk=report.pk).job_id
        time.sleep(1.3)  # silent past RUN_STALE_SECONDS: dead to everyone else
        assert services.reports_settle() == 1  # a page read: the report is pending again, its job lost
        assert Job.objects.get(pk=first_job).status == Job.Status.LOST
        report.refresh_from_db()
        assert services.report_reingest(report=report)  # Try again
        (new_job,) = Job.objects.filter(kind=services.INGEST, status=Job.Status.STARTING).values_list(
            "pk", flat=True
        )
        assert len(launched) == 1
        second = start(QEEG_JOB_ID=str(new_job))  # what the launcher starts for it
        wait_for(lambda: len(waiting()) < 2 or second.poll() is not None,
                 "the second attempt's call never went out")  # fmt: skip
        assert second.poll() is None, second.stdout.read()
        assert Report.objects.get(pk=report.pk).job_id == new_job
        assert held() == 1  # the second attempt: 2 held, 1 charged as its first page left
        assert charged.count() == 2 and waiting() == ["sleep:0"]  # a call of each attempt out, each charged

        first.send_signal(signal.SIGCONT)  # the first attempt wakes up, its page's call still out
        assert first.wait(timeout=60) == 1  # it stopped: the report is no longer its own
        assert "stopped: this runner was judged dead" in first.stdout.read()

        assert held() == 1  # the second attempt's hold is untouched
        assert charged.count() == 2 and waiting() == ["sleep:0"]  # the first sent nothing more
        assert ledger.allowance(staff) == ledger.Allowance(limit=10, used_today=2, reserved=1)
        assert second.poll() is None  # still reading
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
            if proc is not None:
                proc.stdout.close()


def _two_attempts(report: Report) -> tuple[Job, Job]:
    """The job of an attempt judged dead (lost) and the job of the attempt that took the report over."""
    target = str(report.pk)
    lost = Job.objects.create(kind=services.INGEST, target=target, args=[target], status=Job.Status.LOST)
    taking_over = Job.objects.create(
        kind=services.INGEST, target=target, args=[target], status=Job.Status.RUNNING
    )
    return lost, taking_over


def _taken_over(report: Report, by: Job, *, held: int = 0) -> None:
    """What a page read (settle) and Try again's new runner do meanwhile: pending, then claimed by `by`."""
    Report.objects.filter(pk=report.pk).update(status=Report.Status.PENDING)
    assert services.report_claim(report_id=report.pk, job=by)
    Report.objects.filter(pk=report.pk).update(vision_calls_held=held)


def test_an_attempt_that_lost_its_report_sends_no_page_and_leaves_the_holders_hold(
    vision_on, staff, db, fake_upstream, monkeypatch
):
    _lost_before_its_first_call(vision_on, staff, fake_upstream, monkeypatch)


def test_the_same_on_postgresql(django_db_setup, postgres_db, vision_on, staff, fake_upstream, monkeypatch):
    from django.db import connection

    assert connection.vendor == "postgresql"
    _lost_before_its_first_call(vision_on, staff, fake_upstream, monkeypatch)


def _lost_before_its_first_call(vision_on, staff, fake_upstream, monkeypatch) -> None:
    vision_on.MODEL_CALLS_PER_USER_PER_DAY = 10
    report = _stored_text_vision_report(Patient.objects.create(label="SYNTH-VQL"), staff, pages=2)
    lost, taking_over = _two_attempts(report)
    real = vision.read_unsure_pages

    def taken_over_before_the_first_call(*args, **kwargs):
        assert Report.objects.get(pk=report.pk).vision_calls_held == 2  # this attempt's hold, set
        _taken_over(report, taking_over, held=2)  # the new attempt holds its own 2
        return real(*args, **kwargs)

    monkeypatch.setattr(vision, "read_unsure_pages", taken_over_before_the_first_call)
    with pytest.raises(services.Lost):
        services.report_ingest(report_id=report.pk, job=lost)

    assert fake_upstream.count(model=MODEL) == 0 and not ModelCall.objects.exists()  # nothing sent or charged
    now = Report.objects.get(pk=report.pk)
    assert (now.status, now.job_id, now.vision_calls_held) == (Report.Status.PROCESSING, taking_over.pk, 2)
    assert ledger.allowance(staff) == ledger.Allowance(limit=10, used_today=0, reserved=2)


def test_an_attempt_that_lost_its_report_does_not_swap_its_folder_in(staff, db, monkeypatch):
    """Its reading is discarded: the folder is the attempt's that holds the report now, to write when it ends."""
    report = _stored_text_vision_report(Patient.objects.create(label="SYNTH-VQF"), staff, pages=1)
    (report.folder / "kept.txt").write_text("the holder's folder")
    lost, taking_over = _two_attempts(report)
    real = services._read_unsure_pages

    def taken_over_after_the_reading(report_, job, *args):
        real(report_, job, *args)
        _taken_over(report, taking_over)

    monkeypatch.setattr(services, "_read_unsure_pages", taken_over_after_the_reading)
    with pytest.raises(services.Lost):
        services.report_ingest(report_id=report.pk, job=lost)

    assert sorted(p.name for p in report.folder.iterdir()) == ["kept.txt", "original.pdf"]
    assert not list(report.folder.parent.glob(f".ingest-{report.pk}-*"))  # its work folder is gone
    now = Report.objects.get(pk=report.pk)
    assert (now.status, now.job_id) == (Report.Status.PROCESSING, taking_over.pk)
