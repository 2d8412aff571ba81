"""A run whose draft's numbers the check has something to say about, for the number-check tests."""

from __future__ import annotations

from pathlib import Path

from django.utils import timezone

from patients import facts
from patients.models import Patient, Report
from runs.models import Run
from tests.synthetic_drafts import fact_rows
from tests.synthetic_vendor import make_vendor_pdf
from tests.test_export_run import add_artifact

PAGES = [("wavi_summary", "text"), ("wavi_p300", "text"), ("neuroguide_z", "text"), ("generic_rows", "text")]


def make_checked_run(tmp_path: Path, *, label: str = "SYNTH-NUM", more: str = ""):
    """A complete run whose selected final draft cites two reaction times of a synthetic vendor report's
    fact table: session 1 right, session 2 given another session's value (flagged wrong_session). Returns
    (run, artifact, reaction times by session, the wrong value). `more`: a paragraph added to the draft."""
    patient = Patient.objects.create(label=label)
    report = Report.objects.create(
        patient=patient, original_name="v.pdf", sha256="1" * 64, page_count=4, status=Report.Status.READY
    )
    rows = fact_rows(make_vendor_pdf(tmp_path / "v.pdf", pages=PAGES, seed=4)["facts"])
    report.folder.mkdir(parents=True, exist_ok=True)
    facts.write_table(report.folder, {"schema": 1, "facts": rows, "pages": [], "missing": [], "lock": None})
    rt = {r["session"]: r for r in rows if r["metric"] == "Reaction Time"}
    wrong = next(v["value"] for s, v in rt.items() if s != 2 and v["value"] != rt[2]["value"])
    draft = (
        "# Final draft\n\n"
        f"Reaction time in session 1 was {rt[1]['value']} ms [p1].\n\n"
        f"Reaction time in session 2 was {wrong} ms (p. 1).\n\n"
        'A model wrote <mark class="number-flag no_match" title="fine">this</mark> itself.\n'
        + (f"\n{more}\n" if more else "")
    )
    run = Run.objects.create(
        patient=patient,
        report=report,
        council_models=["gpt-5"],
        consolidator="gpt-5",
        status=Run.Status.COMPLETE,
        finished_at=timezone.now(),
    )
    artifact = add_artifact(run, stage=6, model_id="gpt-5", text=draft)
    run.selected_artifact = artifact
    run.save()
    return run, artifact, rt, wrong
