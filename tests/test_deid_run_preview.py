"""What the council will see, for a run: a run over several reports (and the reports ticked in the wizard,
before any run is made) shows every report as every stage gets it — the timeline, each report under its
header with its pages numbered on, the merged fact table — beside the originals, from the very function the
pipeline calls. Reached from the run page and the wizard, checked in runs/access.py, audited like the
per-report page. Reports: generated vendor exports of one patient's visits, read by the real ingestion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.utils.html import escape

from audit.models import AuditEvent
from patients import services as patient_services
from patients.models import Patient, PatientIdentifier, Report
from patients.selectors import report_facts
from runs import services, sources
from runs.models import Run
from tests.conftest import signed_in
from tests.run_helpers import CONSOLIDATOR, COUNCIL, upload_and_read
from tests.synthetic_vendor import Sessions, make_vendor_pdf, patient_history

pytestmark = pytest.mark.django_db

LABEL = "SYNTH-CV-01"
NAME = "Jane Okonkwo"
PAGES = [("wavi_summary", "text"), ("generic_rows", "text")]
VISITS = patient_history(seed=7, count=5)


def vendor_report(patient: Patient, folder: Path, *, visits, seed: int, name: str) -> Report:
    path = folder / name
    make_vendor_pdf(path, pages=PAGES, seed=seed, label=LABEL, sessions=Sessions(visits, history=5))
    return upload_and_read(patient, path, content_type="application/pdf")


@pytest.fixture
def two_exports(tmp_path, clinician):
    patient = Patient.objects.create(label=LABEL, age=52, medications="none since 03/01/2024")
    PatientIdentifier.objects.create(patient=patient, kind=PatientIdentifier.Kind.NAME, value=NAME)
    later = vendor_report(patient, tmp_path, visits=VISITS[2:5], seed=2, name="visits-3-5.pdf")
    earlier = vendor_report(patient, tmp_path, visits=VISITS[0:3], seed=1, name="visits-1-3.pdf")
    return patient, earlier, later


def _run(patient: Patient, *reports: Report) -> Run:
    return services.run_create(
        patient=patient,
        reports=reports,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        available=set(COUNCIL),
    )


def _sent_columns(html: str) -> str:
    """The "what the council sees" side of every pair, marks of replacements taken out."""
    columns = re.findall(r"what the council sees</h3><pre>(.*?)</pre>", html, re.DOTALL)
    return re.sub(r'</?mark(?: class="deid")?>', "", "\n".join(columns))


def _assert_shows_exactly(html: str, sent_text: str) -> None:
    """Every line the council is sent is on the page, on the sent side, in order (report headers are the
    page's own headings); the identifying name is only on the original side."""
    shown = _sent_columns(html)
    at = 0
    for line in sent_text.splitlines():
        if not line.strip() or line.startswith("=== REPORT "):
            continue
        found = shown.find(escape(line), at)
        assert found >= 0, f"not on the page (in order): {line!r}"
        at = found
    assert LABEL not in shown and NAME not in shown


def _original_columns(html: str) -> str:
    return "\n".join(
        re.findall(
            r'original <span class="small muted">stays here</span></h3><pre>(.*?)</pre>', html, re.DOTALL
        )
    )


def test_a_runs_page_leads_to_all_its_reports_as_the_council_gets_them(
    clinician_client, clinician, two_exports
):
    patient, earlier, later = two_exports
    run = _run(patient, later, earlier)
    run_page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/council-view/"' in run_page

    response = clinician_client.get(f"/runs/{run.pk}/council-view/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Every stage of run" in html and "2 reports on one timeline, in this order" in html
    assert html.index("visits-1-3.pdf</a>") < html.index("visits-3-5.pdf</a>")  # timeline order
    assert "Timeline: 2 reports of this patient, 5 sessions" in html
    assert re.search(r"Report 1 of 2: pages 1\u20132 of this run; its session 1 is timeline session 1", html)
    assert "Report 2 of 2: pages 3\u20134 of this run" in html and "Page 4 / 4" in html
    # The merged table, as the shared start of every prompt carries it (not in the report text).
    assert 'id="preview-facts"' in html and "the merged table of the 2 reports" in html
    table = sources.run_source(run, with_images=False).council_input.fact_table
    assert "### [p3]" in table and escape(table) in html
    source = sources.run_source(run, with_images=False)
    _assert_shows_exactly(html, source.council_input.report_text)
    assert LABEL in _original_columns(
        html
    )  # the originals stay on the page (this machine), beside what is sent
    assert "day 0 is" in html and "of the timeline" in html

    event = AuditEvent.objects.filter(action="deid.preview_viewed", user=clinician).latest("pk")
    assert (event.object_type, event.object_id, event.patient_id) == ("run", str(run.pk), patient.pk)
    assert event.detail == {"reports": [earlier.pk, later.pk]}


def test_the_wizard_shows_what_a_run_over_the_ticked_reports_would_be_given(clinician_client, two_exports):
    patient, earlier, later = two_exports
    panel = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert '<input type="submit" name="preview" value="What the council will see"' in panel
    response = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {
            "reports": [later.pk, earlier.pk],
            "preview": "1",
            "council_models": COUNCIL,
            "consolidator": CONSOLIDATOR,
        },
    )
    where = f"/runs/patients/{patient.pk}/council-view/?reports={later.pk}&reports={earlier.pk}"
    assert response.status_code == 302 and response["Location"] == where
    assert not Run.objects.exists()  # looking is not starting

    html = clinician_client.get(where).content.decode()
    assert "A run over 2 reports" in html and "Back to the run wizard" in html
    # The same text a run over them is given, whatever order they were ticked in.
    run = _run(patient, earlier, later)
    _assert_shows_exactly(html, sources.run_source(run, with_images=False).council_input.report_text)
    event = AuditEvent.objects.filter(action="deid.preview_viewed").latest("pk")
    assert (event.object_type, event.patient_id, event.detail) == (
        "patient",
        patient.pk,
        {"reports": [earlier.pk, later.pk]},
    )

    # Ticking nothing goes back to the wizard and says so.
    back = clinician_client.post(f"/runs/patients/{patient.pk}/start/", {"preview": "1"}, follow=True)
    assert "Tick the reports the run would read first." in back.content.decode()


def test_the_wizards_view_refuses_what_a_run_would_refuse_in_words(
    clinician_client, other_clinician, two_exports
):
    patient, earlier, _later = two_exports
    url = f"/runs/patients/{patient.pk}/council-view/"
    nothing = clinician_client.get(url)
    assert nothing.status_code == 422 and "Choose the reports" in nothing.content.decode()
    other = Patient.objects.create(label="SYNTH-CV-02")
    theirs = Report.objects.create(patient=other, original_name="x.pdf", sha256="2" * 64, status="ready")
    assert clinician_client.get(f"{url}?reports={earlier.pk}&reports={theirs.pk}").status_code == 404
    assert clinician_client.get(f"{url}?reports=abc").status_code == 404
    copy = Report.objects.create(
        patient=patient, original_name="again.pdf", sha256=earlier.sha256, status=Report.Status.READY
    )
    same = clinician_client.get(f"{url}?reports={earlier.pk}&reports={copy.pk}")
    assert same.status_code == 422 and "have the same content" in same.content.decode()
    assert signed_in(other_clinician).get(f"{url}?reports={earlier.pk}").status_code == 404
    run = _run(patient, earlier)
    assert signed_in(other_clinician).get(f"/runs/{run.pk}/council-view/").status_code == 404
    # A report of the run being read again has no text to show: not an empty page that says nothing is sent.
    Report.objects.filter(pk=earlier.pk).update(status=Report.Status.PROCESSING)
    assert clinician_client.get(f"/runs/{run.pk}/council-view/").status_code == 404
    assert clinician_client.get(f"{url}?reports={earlier.pk}").status_code == 422


def test_a_run_over_one_report_shows_the_fact_table_it_recorded(clinician_client, two_exports):
    """A correction after the run started changes the report's page, not what the run was given."""
    patient, earlier, _later = two_exports
    run = _run(patient, earlier)
    services.run_facts_record(run=run)
    table = report_facts(earlier)
    fact = next(
        f for f in table["facts"] if f.get("number") is not None and f.get("metric") != "Session date"
    )
    patient_services.fact_correct(report=earlier, fact_id=fact["id"], value="987654")
    run_view = clinician_client.get(f"/runs/{run.pk}/council-view/").content.decode()
    report_view = clinician_client.get(f"/runs/reports/{earlier.pk}/council-view/").content.decode()
    assert "This run keeps the table it started with; this is that table." in run_view
    assert "987654" in report_view and "987654" not in run_view
    assert f'href="/runs/{run.pk}/council-view/"' in clinician_client.get(f"/runs/{run.pk}/").content.decode()
