"""The patient page shows each measurement across the patient's sessions: every ready report on one
timeline, a small server-drawn SVG per measurement (matplotlib, no script, served from this site so the
strict CSP holds), and each change judged against the vendor's test/retest threshold where the report prints
one. Reports: generated vendor exports of one patient's visits (tests.synthetic_vendor), the second
repeating the first's last visit."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.utils.html import escape

from council import timeline
from documents import charts
from patients import facts
from patients.models import Patient, Report
from patients.selectors import patient_history
from tests.synthetic_drafts import fact_rows
from tests.synthetic_vendor import Sessions, make_vendor_pdf
from tests.synthetic_vendor import patient_history as visits

PAGES = [("wavi_summary", "text"), ("wavi_p300", "text")]
HISTORY = visits(seed=5, count=5)

pytestmark = pytest.mark.django_db


def ready_report(patient: Patient, tmp_path: Path, dates, *, seed: int, name: str) -> Report:
    """A ready report whose fact table is what the generated export printed (as the readers give it)."""
    truth = make_vendor_pdf(tmp_path / name, pages=PAGES, seed=seed, sessions=Sessions(dates, history=5))
    report = Report.objects.create(
        patient=patient, original_name=name, sha256=str(seed) * 64, page_count=len(PAGES),
        status=Report.Status.READY,
    )  # fmt: skip
    report.folder.mkdir(parents=True, exist_ok=True)
    table = {"schema": 1, "facts": fact_rows(truth["facts"]), "pages": [], "missing": [], "lock": None}
    facts.write_table(report.folder, table)
    return report


@pytest.fixture
def patient(tmp_path, clinician):
    patient = Patient.objects.create(label="SYNTH-TREND-01")
    ready_report(patient, tmp_path, HISTORY[0:3], seed=1, name="visits-1-3.pdf")
    ready_report(patient, tmp_path, HISTORY[2:5], seed=2, name="visits-3-5.pdf")
    return patient


def _latency(patient):
    history = patient_history(patient)
    return history, next(s for s in timeline.series(history.facts) if s.title == "P300 Latency")


def test_the_patient_page_charts_each_measurement_across_the_timeline(patient, clinician_client):
    _history, latency = _latency(patient)
    html = clinician_client.get(f"/patients/{patient.pk}/").content.decode()
    assert "Trends across sessions" in html
    # The timeline: five visits, the third printed by both reports.
    assert html.count('<tr class="timeline-session">') == 5
    assert "visits-1-3.pdf</a> session 3 = <a" in html and "visits-3-5.pdf</a> session 1" in html
    # P300 latency's chart, served from this site, and every change against the 25 ms test/retest threshold.
    src = f"/patients/{patient.pk}/trend.svg?" + urlencode({"metric": "P300 Latency", "site": "", "band": ""})
    assert f'src="{src.replace("&", "&amp;")}"' in html
    for change in latency.changes():
        assert escape(change.text("ms", 25.0)) in html
    beyond = [c for c in latency.changes() if c.beyond_threshold]
    within = [c for c in latency.changes() if c.beyond_threshold is False]
    assert beyond or within
    assert html.count('<li class="beyond">') >= len(beyond)
    # A measurement the report gives no threshold for says so.
    assert "No test/retest threshold printed for this measurement." in html
    # Site-wise measurements are grouped, one chart per site, folded away.
    assert "<summary>P300 Rare latency" in html and "(21 sites" in html


def test_the_chart_is_an_svg_with_no_script(patient, clinician_client):
    _history, latency = _latency(patient)
    query = urlencode({"metric": "P300 Latency", "site": "", "band": ""})
    response = clinician_client.get(f"/patients/{patient.pk}/trend.svg?{query}")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    body = response.content.decode()
    assert body.lstrip().startswith("<?xml") and "<svg" in body
    assert "<script" not in body and 'href="http' not in body
    assert "P300 Latency" in body and "S5" in body  # title and the fifth timeline session
    assert f"day {(HISTORY[4] - HISTORY[0]).days}" in body
    # The changes beyond the threshold are drawn in red, one segment each.
    beyond = sum(bool(c.beyond_threshold) for c in latency.changes())
    assert body.count(f"stroke: {charts.BEYOND}") >= 2 * beyond
    # The same chart is the same bytes.
    assert clinician_client.get(f"/patients/{patient.pk}/trend.svg?{query}").content == response.content


def test_a_label_read_from_a_crafted_report_is_drawn_as_written():
    """A metric is a row label read off the page: "$...$" in it was TeX to matplotlib, and an unknown command
    or an open brace made every chart of the patient a 500."""
    trend = charts.Trend(
        title="Score $\\undefined$ at <Fz>",
        unit="$x^{$",
        x_labels=("S1 (day 0)", "S2 $\\bad$"),
        points=((0, 1.0), (1, 2.0)),
    )
    body = charts.svg(trend).decode()
    assert "Score $\\undefined$ at &lt;Fz&gt;" in body and "$x^{$" in body and "S2 $\\bad$" in body
    assert "<script" not in body


def test_an_unknown_measurement_is_422_and_someone_elses_patient_404(
    patient, clinician_client, other_clinician
):
    query = urlencode({"metric": "No Such Thing", "site": "", "band": ""})
    unknown = clinician_client.get(f"/patients/{patient.pk}/trend.svg?{query}")
    assert unknown.status_code == 422 and "no measurement 'No Such Thing'" in unknown.content.decode()
    from tests.conftest import signed_in

    good = urlencode({"metric": "P300 Latency", "site": "", "band": ""})
    assert signed_in(other_clinician).get(f"/patients/{patient.pk}/trend.svg?{good}").status_code == 404


def test_a_patient_with_one_session_has_no_charts_yet(tmp_path, clinician_client):
    patient = Patient.objects.create(label="SYNTH-TREND-02")
    html = clinician_client.get(f"/patients/{patient.pk}/").content.decode()
    assert "Trends across sessions" in html and "No session dates or measurements" in html


def test_charts_drawn_at_once_in_several_threads_keep_their_own_style():
    """The web server draws each request's chart in its own thread; matplotlib's settings are global."""
    from concurrent.futures import ThreadPoolExecutor

    trends = [
        charts.Trend(
            f"Thread chart {i}", "ms", ("S1", "S2", "S3"), ((0, 1.0), (1, 2.0 + i), (2, 1.5)), (True, None)
        )
        for i in range(12)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        drawn = list(pool.map(charts.svg, trends))
    for trend, body in zip(trends, drawn, strict=True):
        title = body.decode().split(f">{trend.title}<")[0].rsplit("<text", 1)[1]
        assert "font-size: 7.5px" in title, title


def test_a_change_keeps_the_decimals_the_report_prints():
    change = timeline.Change(before=1, after=2, delta=6.0, beyond_threshold=True, digits=1)
    assert change.text("\u00b5V", 3.0) == (
        "Session 1 \u2192 2: +6.0 \u00b5V, beyond the vendor's test/retest threshold of 3 \u00b5V"
    )


def test_the_timeline_is_read_once_for_the_page_and_all_its_charts(patient, clinician_client, monkeypatch):
    """Every chart is a request of its own; none of them reads a fact table the page already read, until a
    table changes (a correction rewrites it), and then each is read once more and the chart shows the change."""
    import re
    from html import unescape

    from patients import selectors, services

    selectors.HISTORIES.clear()
    reads: list[Path] = []
    real = facts.load_table
    monkeypatch.setattr(facts, "load_table", lambda folder: reads.append(folder) or real(folder))
    worked_out: list[int] = []  # each measurement's series over the timeline (O(facts²) work)
    real_series = timeline.series
    monkeypatch.setattr(timeline, "series", lambda rows: worked_out.append(len(rows)) or real_series(rows))
    html = clinician_client.get(f"/patients/{patient.pk}/").content.decode()
    sources = [unescape(src) for src in re.findall(r'src="(/patients/\d+/trend\.svg\?[^"]+)"', html)]
    assert len(sources) >= 20
    assert len(reads) == 2  # the page: each of the two reports' facts.json once
    for src in sources:
        assert clinician_client.get(src).status_code == 200
    assert len(reads) == 2, "a chart request read the fact tables again"
    assert len(worked_out) == 1, "a chart request worked the series out again"

    query = urlencode({"metric": "P300 Latency", "site": "", "band": ""})
    before = clinician_client.get(f"/patients/{patient.pk}/trend.svg?{query}").content
    last = _latency(patient)[1].points[-1]
    report = Report.objects.get(pk=last.report_id)
    services.fact_correct(report=report, fact_id=last.fact_id.split(":", 1)[1], value="999")
    corrected = len(reads)  # the correction read the table it rewrote
    after = clinician_client.get(f"/patients/{patient.pk}/trend.svg?{query}").content
    assert len(reads) == corrected + 2 and after != before  # each table once more; the chart shows it
    assert _latency(patient)[1].points[-1].number == 999.0
    for src in sources[:5]:
        assert clinician_client.get(src).status_code == 200
    assert len(reads) == corrected + 2
