"""The vision reader: a page the deterministic readers are unsure of goes, painted out, through the council's
client to a vision model; its schema-checked facts join the table beside the deterministic ones, with every
disagreement kept and shown, and nothing it does can fail the ingestion."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pypdfium2 as pdfium
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from council import deid
from patients import facts, services
from patients.layout import read_text_layer
from patients.models import Patient, Report
from patients.readers import vision
from tests.synthetic_vendor import A4, make_vendor_pdf, text_width

MODEL = "fake-vision"


def _reply_fact(truth: dict, **changes) -> dict:
    fact = {key: truth[key] for key in ("metric", "site", "band", "session", "value", "unit")}
    return {**fact, **changes}


def _upload(staff_api, tmp_path, *, label: str, pages, faint: int = 0, seed: int = 12):
    patient = Patient.objects.create(label=label)
    pdf = tmp_path / "vendor.pdf"
    truth = make_vendor_pdf(pdf, pages=pages, seed=seed, faint=faint, label=label)
    response = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile("vendor.pdf", pdf.read_bytes())]}
    )
    assert response.status_code == 201, response.content
    return response.json()[0]["id"], truth


def _image_of(call) -> tuple[str, Image.Image]:
    (part,) = [p for p in call.body["messages"][1]["content"] if p["type"] == "image_url"]
    url = part["image_url"]["url"]
    return url, Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))


def test_an_unsure_image_page_is_read_by_the_vision_model_painted_out_and_merged_with_disagreement_shown(
    staff_api, clinician_client, db, tmp_path, launched, fake_upstream, settings
):
    settings.FACTS_VISION_MODEL = MODEL
    settings.DEID_PAGE_IMAGES = "paint"
    settings.FACTS_VISION_DPI = 150
    label = "SYNTH-VIS7"
    report_id, truth = _upload(staff_api, tmp_path, label=label, pages=[("wavi_summary", "image")], faint=2)
    faint = truth["faint"]
    assert len(faint) == 2
    plain = [
        t
        for t in truth["facts"]
        if t not in faint and t["metric"] != "Session date" and t["value"][0].isdigit()
    ]
    agree, disagree = plain[0], plain[1]
    reply = {
        "page": 1,
        "facts": [_reply_fact(t) for t in faint] + [_reply_fact(agree), _reply_fact(disagree, value="999")],
        "unreadable": [],
    }
    fake_upstream.script(MODEL, page_facts_replies=[json.dumps(reply)])

    report = services.report_ingest(report_id=report_id)
    assert report is not None and report.status == Report.Status.READY, report and report.error

    (call,) = [c for c in fake_upstream.calls if c.model == MODEL]
    assert label not in json.dumps(call.body["messages"][0]) + json.dumps(
        call.body["messages"][1]["content"][0]
    )
    url, image = _image_of(call)
    assert deid.is_painted_out(url)
    # The patient ID printed top right is black in what was sent.
    scale = 150 / 72
    right = (A4[0] - 36) * scale
    left = right - text_width(label, 7) * scale
    region = image.convert("L").crop((int(left) + 2, int(31 * scale), int(right) - 2, int(36 * scale)))
    dark = float((np.asarray(region) < 40).mean())
    assert dark > 0.9, dark
    assert abs(image.width - A4[0] * scale) <= 1  # rendered for reading, finer than the stored page image

    table = staff_api.get(f"/api/reports/{report.pk}/facts").json()
    assert table["vision"]["status"] == "done" and table["vision"]["model"] == MODEL
    page = table["pages"][0]
    assert not page["fully_read"] and "2 of" in page["unsure"][0]
    assert page["vision"]["status"] == "read"
    assert (page["vision"]["added"], page["vision"]["agreed"], page["vision"]["disagreed"]) == (2, 1, 1)
    assert page["vision"]["painted"] >= 1
    reader = f"vision:{MODEL}"
    for t in faint:
        (row,) = [f for f in table["facts"] if f["metric"] == t["metric"] and f["session"] == t["session"]]
        assert row["value"] == t["value"] and row["reader"] == reader and row["source"] == "page image"
    assert table["missing"] == [] and page["missing"] == 0
    (agreed,) = [
        f for f in table["facts"] if f["metric"] == agree["metric"] and f["session"] == agree["session"]
    ]
    assert agreed["reader"] == "wavi-summary" and agreed["confirmed_by"] == [f"{reader} [page image]"]
    both = [
        f for f in table["facts"] if f["metric"] == disagree["metric"] and f["session"] == disagree["session"]
    ]
    assert sorted(f["value"] for f in both) == sorted([disagree["value"], "999"])
    assert all(f["disagreement"] for f in both) and table["disagreements"] == 1
    # Its 999 is printed nowhere on the page: no box, and a confidence that says it is the model's alone;
    # the fact it confirmed is its own cell's reading.
    (alone,) = [f for f in both if f["value"] == "999"]
    assert alone["box"] == [] and alone["confidence"] == vision.UNSEEN
    viewer = clinician_client.get(
        f"/reports/{report.pk}/facts/view/", {"fact": alone["id"]}, headers={"HX-Request": "true"}
    ).content.decode()
    assert 'id="fact-basis"' in viewer and "the vision model&#x27;s reading alone" in viewer
    assert table["facts"].index(both[1]) == table["facts"].index(both[0]) + 1  # shown side by side

    html = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert "1 disagreement between readers" in html
    assert "Readers disagree" in html and ">999<" in html and reader in html


def _text_layer(pdf):
    document = pdfium.PdfDocument(pdf)
    try:
        return read_text_layer(document[0], number=1)
    finally:
        document.close()


def _text_page_table(tmp_path, *, kind="generic_rows", drop=2):
    """A text-layer page with `drop` values taken out of its layout: a reader that knows the layout finds
    them missing, so the page is unsure and goes to the vision reader (cheap: no OCR)."""
    pdf = tmp_path / "page.pdf"
    truth = make_vendor_pdf(pdf, pages=[(kind, "text")], seed=3)
    layout = _text_layer(pdf)
    row = next(r for r in layout.rows() if r.text.startswith("Trail Making Test A"))
    dropped = row.boxes[4 : 4 + drop]  # "Trail Making Test A" then session 1's value and unit
    for box in dropped:
        layout.boxes.remove(box)
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    assert not table["pages"][0]["fully_read"]
    records = [{"page": 1, "image": "pages/page-0001.png", "image_coverage": 0.0, "ocr_ran": False}]
    return pdf, truth, layout, table, records


def _config(**changes) -> vision.VisionConfig:
    base = {
        "model": MODEL,
        "max_pages": 6,
        "timeout_seconds": 30.0,
        "dpi": 72,
        "json_retries": 1,
        "max_tokens": 4000,
        "images_allowed": True,
    }
    return vision.VisionConfig(**{**base, **changes})


def _read(table, pdf, layout, records, config):
    return vision.read_unsure_pages(
        table,
        pdf_path=pdf,
        layouts=[layout],
        records=records,
        identifiers=deid.Identifiers(record_numbers=("SYNTH-V01",)),
        date_order="mdy",
        config=config,
    )


def test_a_reply_that_breaks_the_schema_is_sent_back_then_given_up_and_reported(tmp_path, fake_upstream):
    pdf, _, layout, table, records = _text_page_table(tmp_path)
    before = json.dumps(table["facts"])
    bad_value = json.dumps(
        {"page": 1, "facts": [{"metric": "Trail Making Test A", "session": 1, "value": "41 sec"}]}
    )
    fake_upstream.script(MODEL, page_facts_replies=["I see a table of tests.", bad_value])
    _read(table, pdf, layout, records, _config(json_retries=1))
    state = table["pages"][0]["vision"]
    assert (
        state["status"] == "invalid" and "after 2 attempt(s)" in state["note"] and "41 sec" in state["note"]
    )
    calls = [c for c in fake_upstream.calls if c.model == MODEL]
    assert len(calls) == 2
    resent = calls[1].body["messages"]
    assert resent[-1]["content"].startswith("Your reply was not valid page facts JSON")
    assert json.dumps(table["facts"]) == before and table["missing"]  # the deterministic facts stand alone
    assert table["vision"]["status"] == "failed" and "0 of 1" in table["vision"]["note"]


def test_a_corrected_reply_after_a_schema_error_is_merged(tmp_path, fake_upstream):
    pdf, truth, layout, table, records = _text_page_table(tmp_path)
    (missing,) = table["missing"]
    true = next(
        t for t in truth["facts"] if t["metric"] == missing["metric"] and t["session"] == missing["session"]
    )
    good = {"page": 1, "facts": [_reply_fact(true)], "unreadable": []}
    fake_upstream.script(MODEL, page_facts_replies=[json.dumps({**good, "page": 7}), json.dumps(good)])
    _read(table, pdf, layout, records, _config())
    state = table["pages"][0]["vision"]
    assert state["status"] == "read" and state["calls"] == 2 and state["added"] == 1
    assert table["missing"] == [] and table["vision"]["status"] == "done"


def test_a_slow_upstream_is_given_up_within_the_budget(tmp_path, fake_upstream):
    pdf, _, layout, table, records = _text_page_table(tmp_path)
    fake_upstream.script(MODEL, latency=4.0)
    started = time.monotonic()
    _read(table, pdf, layout, records, _config(timeout_seconds=1.0))
    assert time.monotonic() - started < 3.5
    state = table["pages"][0]["vision"]
    assert state["status"] == "failed" and "1 s" in state["note"]
    assert table["missing"]


def test_an_unreachable_upstream_is_a_note_not_an_error(tmp_path, fake_upstream, settings):
    settings.CLIPROXY_MAX_ATTEMPTS = 1
    pdf, _, layout, table, records = _text_page_table(tmp_path)
    fake_upstream.stop()
    _read(table, pdf, layout, records, _config())
    state = table["pages"][0]["vision"]
    assert state["status"] == "failed" and "refused the connection" in state["note"]


def test_without_a_model_or_with_page_images_off_nothing_is_sent_and_the_unread_pages_are_listed(
    tmp_path, fake_upstream
):
    pdf, _, layout, table, records = _text_page_table(tmp_path)
    _read(table, pdf, layout, records, _config(model=""))
    assert table["vision"]["status"] == "off"
    assert table["vision"]["pages"] == [1]
    assert table["vision"]["note"] == "no vision reader is configured (FACTS_VISION_MODEL)"
    _read(table, pdf, layout, records, _config(images_allowed=False))
    assert "DEID_PAGE_IMAGES is off" in table["vision"]["note"]
    assert fake_upstream.count(model=MODEL) == 0 and table["pages"][0]["vision"] is None


def test_a_page_whose_bitmaps_were_not_ocrd_is_not_sent(tmp_path, fake_upstream):
    pdf, _, layout, table, _ = _text_page_table(tmp_path)
    records = [{"page": 1, "image": "pages/page-0001.png", "image_coverage": 0.2, "ocr_ran": False}]
    _read(table, pdf, layout, records, _config())
    assert table["pages"][0]["vision"]["status"] == "not sent"
    assert "cannot be painted out" in table["pages"][0]["vision"]["note"]
    assert fake_upstream.count(model=MODEL) == 0


@pytest.mark.parametrize(
    "reply, error",
    [
        ({"page": 1, "facts": [{"metric": "X", "value": "12 ms"}]}, "not a number as printed"),
        ({"page": 1, "facts": [{"metric": "X", "value": "1", "colour": "red"}]}, "Extra inputs"),
        ({"page": 2, "facts": []}, "page must be 1"),
        (
            {
                "page": 1,
                "facts": [
                    {"metric": "X", "session": 1, "value": "1"},
                    {"metric": "x", "session": 1, "value": "2"},
                ],
            },
            "two values for",
        ),
    ],
)
def test_the_reply_schema_is_strict(reply, error):
    from council.schemas import InvalidReply

    with pytest.raises(InvalidReply, match=error):
        vision.parse_page_facts(json.dumps(reply), page=1)
    ok = vision.parse_page_facts(json.dumps({"page": 1, "facts": [{"metric": "X", "value": "N/A"}]}), page=1)
    assert ok.facts[0].value == "N/A"


def test_ingestion_is_ready_with_the_deterministic_facts_when_the_vision_pass_breaks(
    staff_api, db, tmp_path, launched, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(vision, "read_unsure_pages", broken)
    report_id, truth = _upload(staff_api, tmp_path, label="SYNTH-VIS8", pages=[("generic_rows", "text")])
    report = services.report_ingest(report_id=report_id)
    assert report.status == Report.Status.READY
    table = facts.load_table(report.folder)
    assert len(table["facts"]) == len(truth["facts"])
    assert table["vision"]["status"] == "failed" and "RuntimeError" in table["vision"]["note"]


def test_the_report_page_says_which_pages_were_not_fully_read_without_a_vision_model(
    staff_api, clinician_client, db, tmp_path, launched
):
    report_id, _ = _upload(staff_api, tmp_path, label="SYNTH-VIS9", pages=[("generic_rows", "text")])
    report = services.report_ingest(report_id=report_id)
    table = facts.load_table(report.folder)
    assert table["vision"]["status"] == "not needed"
    # The same report, had a value been unreadable: the page is unsure and no model is configured.
    pdf, _, layout, unsure, records = _text_page_table(tmp_path)
    _read(unsure, pdf, layout, records, _config(model=""))
    facts.write_table(report.folder, unsure)
    html = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert "Not fully read by the layout readers: page 1" in html
    assert "no vision reader is configured (FACTS_VISION_MODEL)" in html


def test_a_text_layer_page_no_reader_knows_is_not_sent(tmp_path, fake_upstream):
    pdf, _, layout, _, records = _text_page_table(tmp_path)
    layout.boxes = [b for b in layout.boxes if b.text != "Session"]  # no table header: no reader matches
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    assert table["pages"][0]["reader"] is None
    _read(table, pdf, layout, records, _config())
    assert table["pages"][0]["vision"]["status"] == "not sent"
    assert table["vision"]["status"] == "nothing sent" and fake_upstream.count(model=MODEL) == 0


def _place_of(table, metric, session):
    return next(f for f in table["facts"] if f["metric"] == metric and f["session"] == session)


def test_a_vision_reading_gets_the_box_printing_its_value_and_a_confidence_that_says_why(tmp_path):
    # The layout reader sees the page without Trail Making Test A's session-1 cell, so it misses that fact;
    # the vision model reads it. The page's text (the whole layout) prints it: that box is its place.
    pdf, truth, seen, table, _ = _text_page_table(tmp_path)
    whole = _text_layer(pdf)
    row = next(r for r in whole.rows() if r.text.startswith("Trail Making Test A"))
    dropped = row.boxes[4]
    assert dropped.as_list() not in [box.as_list() for box in seen.boxes]
    (missing,) = table["missing"]
    metric = missing["metric"]
    true = next(t for t in truth["facts"] if t["metric"] == metric and t["session"] == missing["session"])
    agree = _place_of(table, metric, 2)
    other = next(f for f in table["facts"] if f["metric"] != metric and f["session"] == 1 and f["number"])
    reply = vision.PageFactsReply(
        page=1,
        facts=[
            _reply_fact(true),  # missed by the layout reader, printed at its place
            _reply_fact(agree, unit=agree["unit"]),  # read alike: its own cell
            _reply_fact(other, value="999"),  # printed nowhere on the page
        ],
    )
    got = {
        f["metric"] + str(f["session"]): f
        for f in vision.to_facts(reply, table, 1, model=MODEL, layouts=[whole])
    }
    found = got[metric + str(missing["session"])]
    assert found["box"] == dropped.as_list() and found["confidence"] == vision.AT_PLACE
    confirmed = got[metric + "2"]
    x0, y0, x1, y1 = confirmed["box"]
    cell = agree["box"]  # its value and unit
    assert cell[0] <= x0 < x1 <= cell[2] and cell[1] <= y0 < y1 <= cell[3] and x1 < cell[2]
    assert confirmed["confidence"] == vision.AT_PLACE
    alone = got[other["metric"] + "1"]
    assert alone["box"] == [] and alone["confidence"] == vision.UNSEEN < 0.6  # the prompts' "unsure reading"
    assert "reading alone" in vision.confidence_basis(alone)
    assert vision.confidence_basis(other) == ""  # a layout reader's confidence is its recogniser's


def _box(text, x0, y0, w=20.0, h=8.0):
    from patients.layout import Box

    return Box(text=text, x0=x0, y0=y0, x1=x0 + w, y1=y0 + h, score=0.9)


def test_where_the_measurement_is_not_known_a_value_printed_once_is_placed_and_twice_is_not():
    table = {"facts": [], "missing": []}
    boxes = [_box("Fz", 10, 10), _box("352", 100, 10), _box("41", 10, 300), _box("41", 200, 300)]
    place = {"metric": "Latency", "site": None, "band": None, "session": 1, "table": table, "number": 1}
    assert vision.locate("352", boxes=boxes, **place) == (boxes[1].as_list(), vision.ON_PAGE)
    assert vision.locate("41", boxes=boxes, **place) == ([], vision.UNSEEN)
    # A site's label marks where its panel is: the nearest box printing the value there is it.
    at_fz = {**place, "site": "Fz"}
    assert vision.locate("352", boxes=boxes, **at_fz) == (boxes[1].as_list(), vision.AT_PLACE)
    assert vision.locate("41", boxes=boxes, **at_fz) == ([], vision.UNSEEN)  # 36 print heights away
    # A cell the OCR could not split still shows the value, less surely.
    merged = [_box("Fz", 10, 10), _box("11.5352", 40, 20, w=30)]
    assert vision.locate("11.5", boxes=merged, **at_fz) == (merged[1].as_list(), vision.IN_MERGED)


def test_a_vision_reading_unlike_the_cell_a_layout_reader_read_is_not_placed_beside_it():
    cell = _box("352", 100, 10)
    table = {
        "facts": [
            {"page": 1, "metric": "Latency", "site": "Fz", "band": None, "session": 1, "box": cell.as_list(),
             "source": "OCR"},
        ],
        "missing": [],
    }  # fmt: skip
    boxes = [_box("Fz", 10, 10), cell, _box("362", 125, 10)]  # session 2's value, right beside it
    place = {"metric": "Latency", "site": "Fz", "band": None, "session": 1, "table": table, "number": 1}
    assert vision.locate("352", boxes=boxes, **place) == (cell.as_list(), vision.AT_PLACE)
    assert vision.locate("362", boxes=boxes, **place) == ([], vision.UNSEEN)
