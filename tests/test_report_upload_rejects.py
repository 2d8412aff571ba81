"""Every bad file gets a clear 4xx and leaves no row and no files behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import Patient, Report
from tests import synthetic_reports as synth


@pytest.fixture
def patient(db) -> Patient:
    return Patient.objects.create(label="SYNTH-002")


def assert_nothing_left(data_dir: Path) -> None:
    assert not Report.objects.exists()
    reports = data_dir / "reports"
    left = sorted(p.name for p in reports.iterdir()) if reports.exists() else []
    assert left == [], f"stray files in data/reports: {left}"


@pytest.mark.parametrize(
    ("maker", "name", "status", "words"),
    [
        (synth.make_encrypted_pdf, "locked.pdf", 422, "password-protected"),
        (synth.make_corrupt_pdf, "broken.pdf", 422, "damaged or not a valid PDF"),
        (synth.make_zero_page_pdf, "empty-tree.pdf", 422, "has no pages"),
        (synth.make_png_named_pdf, "scan.pdf", 415, "PNG image"),
        (lambda p: synth.make_long_pdf(p, pages=6), "long.pdf", 413, "6 pages; the limit is 5"),
        (lambda p: synth.make_padded_pdf(p, size_bytes=30_000), "big.pdf", 413, "the limit is"),
        (lambda p: p.write_bytes(b""), "nothing.txt", 422, "is empty"),
        (lambda p: p.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00"), "setup.exe", 415, "only PDF"),
        (lambda p: p.write_bytes(b"abc\x00\x01\x02"), "binary.txt", 415, "binary data"),
    ],
)
def test_bad_file_gets_clear_answer_and_leaves_nothing(
    staff_api, patient, tmp_path, data_dir, settings, launched, maker, name, status, words
):
    settings.REPORT_MAX_PAGES = 5
    settings.REPORT_MAX_BYTES = 20_000
    path = tmp_path / name
    maker(path)
    response = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile(name, path.read_bytes())]}
    )
    assert response.status_code == status, response.content
    detail = response.json()["detail"]
    assert words in detail
    assert name in detail
    assert_nothing_left(data_dir)
    assert launched == []


@pytest.mark.parametrize(
    "variant", [{}, {"layers": 2}, {"hidden_filter": True}, {"hidden_filter": True, "layers": 3}]
)
def test_a_bomb_in_the_page_tree_is_refused_at_upload_unread(
    staff_api, patient, tmp_path, data_dir, settings, launched, variant
):
    """Counting the pages at upload (in the web server's process) makes PDFium inflate the object stream
    that holds the page tree: the streams are checked before, as ingestion checks them, by what their bytes
    are when the dictionary hides its filters."""
    settings.REPORT_MAX_STREAM_MB = 4
    path = synth.make_object_stream_bomb_pdf(
        tmp_path / "tree.pdf", inflated_bytes=16 * 1024 * 1024, **variant
    )
    response = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile("tree.pdf", path.read_bytes())]}
    )
    assert response.status_code == 413, response.content
    assert response.json()["detail"] == (
        "tree.pdf holds compressed content that inflates to more than 4 MB (REPORT_MAX_STREAM_MB); "
        "it is refused unread."
    )
    assert_nothing_left(data_dir)
    assert launched == []


def test_one_bad_file_in_a_batch_keeps_none_of_them(staff_api, patient, tmp_path, data_dir, launched):
    good = tmp_path / "good.pdf"
    synth.make_long_pdf(good, pages=1)
    bad = tmp_path / "locked.pdf"
    synth.make_encrypted_pdf(bad)
    files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in (good, bad)]
    response = staff_api.post(f"/api/patients/{patient.pk}/reports", {"files": files})
    assert response.status_code == 422
    assert "locked.pdf" in response.json()["detail"]
    assert_nothing_left(data_dir)


def test_a_crash_while_storing_leaves_no_row_and_no_files(
    staff_api, patient, tmp_path, data_dir, monkeypatch
):
    def explode(*args, **kwargs):
        raise RuntimeError("disk vanished")

    # Fails after the row is inserted and the folder renamed, inside the transaction.
    monkeypatch.setattr("django.db.transaction.on_commit", explode)
    good = tmp_path / "good.pdf"
    synth.make_long_pdf(good, pages=1)
    with pytest.raises(RuntimeError):
        from patients import services

        services.report_upload(patient=patient, files=[SimpleUploadedFile("good.pdf", good.read_bytes())])
    assert_nothing_left(data_dir)


def test_upload_without_files_is_refused(staff_api, patient):
    response = staff_api.post(f"/api/patients/{patient.pk}/reports", {})
    assert response.status_code == 422
    assert "files" in response.json()["detail"]


def test_upload_to_unknown_patient_is_404(staff_api, db, tmp_path, data_dir):
    path = tmp_path / "r.pdf"
    synth.make_long_pdf(path, pages=1)
    response = staff_api.post(
        "/api/patients/999/reports", {"files": [SimpleUploadedFile("r.pdf", path.read_bytes())]}
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "No patient with id 999."}
    assert_nothing_left(data_dir)


def test_a_file_over_the_cap_is_not_written_to_disk_past_it(
    staff_api, patient, tmp_path, data_dir, settings, launched, monkeypatch
):
    """Django would spool the whole upload to a temporary file before the view could refuse it."""
    from django.core.files import uploadedfile

    settings.REPORT_MAX_BYTES = 200_000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10_000  # so the body goes through the temporary-file handler
    written: list[int] = []
    real_init = uploadedfile.TemporaryUploadedFile.__init__

    def counting_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        real_write = self.file.write
        self.file.write = lambda data: written.append(len(data)) or real_write(data)

    monkeypatch.setattr(uploadedfile.TemporaryUploadedFile, "__init__", counting_init)
    big = synth.make_padded_pdf(tmp_path / "huge.pdf", size_bytes=3_000_000)
    small = synth.make_long_pdf(tmp_path / "fine.pdf", pages=1)
    files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in (small, big)]
    response = staff_api.post(f"/api/patients/{patient.pk}/reports", {"files": files})
    assert response.status_code == 413, response.content
    assert response.json()["detail"] == "huge.pdf is 2.9 MB; the limit is 0.2 MB (REPORT_MAX_BYTES)."
    assert sum(written) <= 200_000 + small.stat().st_size
    assert_nothing_left(data_dir)
    assert launched == []


def test_the_patient_page_says_why_an_upload_over_the_cap_was_refused(
    staff_client, patient, tmp_path, data_dir, settings, launched
):
    settings.REPORT_MAX_BYTES = 200_000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10_000
    big = synth.make_padded_pdf(tmp_path / "huge.pdf", size_bytes=600_000)
    response = staff_client.post(
        f"/patients/{patient.pk}/reports/upload/",
        {"files": [SimpleUploadedFile("huge.pdf", big.read_bytes())]},
        follow=True,
    )
    assert "Nothing was uploaded: huge.pdf is 0.6 MB; the limit is 0.2 MB" in response.content.decode()
    assert_nothing_left(data_dir)
