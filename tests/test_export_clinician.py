"""The export a clinician would send: the clinical context they entered, the (signed) text, the report's values
with their pages as an appendix, the run card; fonts for Latin, Greek, Cyrillic and CJK, and a clear refusal
of anything still unprintable instead of a silent gap."""

from __future__ import annotations

import pytest

from documents.markdown_pdf import Unprintable, render_markdown_pdf
from patients import facts
from patients.models import Patient, Report
from runs.exports import ExportError, export_run
from runs.models import Run
from tests.export_samples import pdf_pages_text
from tests.run_helpers import add_artifact

pytestmark = pytest.mark.django_db

LABEL = "Zoë Müller-Ødegård 患者 #017"
GREEK = "Θήτα υπεροχή στο Fz· ήπια αύξηση β."
CYRILLIC = "Повышение тета-ритма в лобных отведениях."
DRAFT = f"# Interpretation\n\nTheta excess at Fz, Z = +2.6.\n\n{GREEK}\n\n{CYRILLIC}\n\n中文注释睡眠不足。\n"


def _fact(page: int, metric: str, site: str, value: str, **extra) -> dict:
    return {
        "id": f"{page}-{metric}-{site}",
        "page": page,
        "metric": metric,
        "section": "",
        "site": site,
        "band": "theta",
        "session": 1,
        "session_date": "2026-11-20",
        "value": value,
        "read_as": "",
        "number": float(value),
        "placeholder": False,
        "unit": "µV²",
        "target": "",
        "norm": "",
        "reader": "wavi",
        "source": "text layer",
        "confidence": 0.98,
        "box": [0, 0, 1, 1],
        "disagreement": False,
        "disagrees_with": None,
        "correction": None,
        **extra,
    }


@pytest.fixture
def run(data_dir) -> Run:
    patient = Patient.objects.create(
        label=LABEL,
        age=34,
        sex="female",
        medications="sertraline 50 mg; melatonin",
        referral_reason="attention | sleep",
    )
    report = Report.objects.create(
        patient=patient, original_name="wavi.pdf", sha256="2" * 64, page_count=6, status=Report.Status.READY
    )
    run = Run.objects.create(
        patient=patient, report=report, council_models=["gpt-5"], consolidator="gpt-5", status="complete"
    )
    draft = add_artifact(run, stage=6, model_id="gpt-5", text=DRAFT)
    Run.objects.filter(pk=run.pk).update(selected_artifact=draft)
    run.refresh_from_db()
    return run


def _table(*rows: dict) -> dict:
    return {"schema": 1, "generated_at": "", "pages": [], "facts": list(rows), "missing": [], "disagreements": 0,
            "lock": None}  # fmt: skip


def test_latin_greek_cyrillic_and_cjk_all_print(run):
    paths = export_run(run=run, artifact=run.selected_artifact)
    text = "\n".join(pdf_pages_text(paths.pdf_path.read_bytes()))
    assert LABEL in text  # the title block, the context table and the run card
    assert text.count("患者") >= 3
    for line in (GREEK, CYRILLIC, "中文注释睡眠不足。"):
        assert line in text.replace("\r\n", " ").replace("\n", " ")


def test_the_export_carries_the_clinical_context_and_the_values_with_their_pages(run):
    facts.write_table(
        run.report.folder,
        _table(
            _fact(4, "Absolute power", "Fz", "31.7"),
            _fact(2, "Z-score", "Cz", "2.6", correction={"value": "2.8", "by": "clinician"}),
        ),
    )
    paths = export_run(run=run, artifact=run.selected_artifact)
    md = paths.md_path.read_text()
    context = md[md.index("## Clinical context") : md.index("# Interpretation")]
    assert f"| Patient | {LABEL} |" in context and "| Age | 34 |" in context and "| Sex | Female |" in context
    assert "| Medications | sertraline 50 mg; melatonin |" in context
    assert "| Reason for referral | attention \\| sleep |" in context  # a | in what was typed stays text
    appendix = md[md.index("## Appendix: values read from the report") : md.index("## Run card")]
    assert "2 values as read" in appendix
    rows = [line for line in appendix.splitlines() if line.startswith("| 2 ") or line.startswith("| 4 ")]
    assert rows == [
        "| 2 | Z-score | Cz | theta | 1 (2026-11-20) | 2.8 (read as 2.6) | µV² |",
        "| 4 | Absolute power | Fz | theta | 1 (2026-11-20) | 31.7 | µV² |",
    ]
    pdf = "\n".join(pdf_pages_text(paths.pdf_path.read_bytes()))
    assert "Clinical context" in pdf and "sertraline 50 mg" in pdf and "Absolute power" in pdf
    assert (
        pdf.index("Clinical context")
        < pdf.index("Interpretation")
        < pdf.index("Appendix")
        < pdf.index("Run card")
    )


def test_without_a_fact_table_the_appendix_says_so(run):
    md = export_run(run=run, artifact=run.selected_artifact).md_path.read_text()
    assert "No table of values was read from this report" in md


def test_an_unprintable_character_is_refused_by_name_and_nothing_is_written(run):
    first = export_run(run=run, artifact=run.selected_artifact)
    before = first.pdf_path.read_bytes(), first.md_path.read_bytes()
    run.selected_artifact.path.write_text(DRAFT + "\nBrain 🧠 and देवनागरी.\n", encoding="utf-8")
    with pytest.raises(ExportError) as refused:
        export_run(run=run, artifact=run.selected_artifact)
    message = str(refused.value)
    assert "cannot print" in message and "U+1F9E0" in message and "brain" in message
    assert "U+0926" in message and "Nothing was exported" in message
    assert (first.pdf_path.read_bytes(), first.md_path.read_bytes()) == before


def test_an_unprintable_patient_label_is_refused_too(run):
    Patient.objects.filter(pk=run.patient_id).update(label="Patient 𓀀")  # Egyptian hieroglyph
    run.refresh_from_db()
    with pytest.raises(ExportError, match="U\\+13000"):
        export_run(run=run, artifact=run.selected_artifact)


def test_the_renderer_itself_refuses_rather_than_drops():
    with pytest.raises(Unprintable) as refused:
        render_markdown_pdf("Plain text then ꦲꦏ꧀ꦱꦫ.", title="Javanese")
    assert any(c.startswith("U+A9B2") for c in refused.value.characters)
    assert render_markdown_pdf(f"{GREEK} {CYRILLIC} 한국어 カタカナ 患者", title=LABEL).startswith(b"%PDF")


def test_the_api_answers_a_refusal_with_the_reason(run, api):
    Patient.objects.filter(pk=run.patient_id).update(label="Patient 𓀀")
    response = api.post(f"/api/runs/{run.pk}/export")
    assert response.status_code == 422 and "U+13000" in response.json()["detail"]
    assert not run.export_path(Run.EXPORT_PDF).exists() and not run.export_path(Run.EXPORT_MARKDOWN).exists()
