"""A report deleted while it is being read: no folder is left behind and the rest of the batch goes on."""

from __future__ import annotations

from django.core.management import call_command

from patients import ingest, services
from patients.models import Patient, Report


def stored_text_report(patient: Patient, name: str) -> Report:
    report = Report.objects.create(
        patient=patient, original_name=name, kind=Report.Kind.TEXT, sha256="0" * 64, page_count=1
    )
    report.folder.mkdir(parents=True)
    report.original_path.write_text(f"Synthetic report {name}\nFz 1.0\n", encoding="utf-8")
    return report


def test_a_report_deleted_mid_ingestion_leaves_no_folder_and_the_batch_goes_on(
    db, data_dir, monkeypatch, capsys
):
    patient = Patient.objects.create(label="SYNTH-DEL")
    doomed = stored_text_report(patient, "doomed.txt")
    kept = stored_text_report(patient, "kept.txt")
    real_ingest_text = ingest.ingest_text

    def deleted_while_reading(source, out_dir, **kwargs):
        if source.parent.name == str(doomed.pk):
            services.report_delete(report=Report.objects.get(pk=doomed.pk))  # the admin, meanwhile
        return real_ingest_text(source, out_dir, **kwargs)

    monkeypatch.setattr(ingest, "ingest_text", deleted_while_reading)
    call_command("ingestreport", str(doomed.pk), str(kept.pk))

    assert not Report.objects.filter(pk=doomed.pk).exists()
    assert not doomed.folder.exists()
    assert Report.objects.get(pk=kept.pk).status == Report.Status.READY
    assert (kept.folder / "text.md").exists()
    out = capsys.readouterr().out
    assert f"report {doomed.pk}: not pending" in out and f"report {kept.pk}: ready" in out
