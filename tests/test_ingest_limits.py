"""Hostile PDFs cost a failed (or coarser) report with its reason and a bounded amount of memory, never the
machine: a poster-sized page, decompression bombs in several spellings, and the memory and time limits of
the process that reads a PDF. Memory is measured as the peak resident size of the largest process in the
`manage.py ingestreport` tree (its ru_maxrss as seen by a wrapper process that only runs that command)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from patients import ingest
from patients.models import Patient, Report
from tests.synthetic_reports import (
    make_huge_page_pdf,
    make_image_bomb_pdf,
    make_inflation_bomb_pdf,
    make_object_stream_bomb_pdf,
    make_qeeg_pdf,
)

MANAGE = Path(__file__).resolve().parents[1] / "manage.py"
MB = 1024 * 1024

# Runs the command as its only child and prints the largest peak RSS (MB) among the processes it waited for.
_MEASURE = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(done.returncode)"
)


def _stored(path_maker, tmp_path: Path, **kwargs) -> Report:
    patient = Patient.objects.get_or_create(label="SYNTH-HOSTILE")[0]
    report = Report.objects.create(patient=patient, original_name="hostile.pdf", sha256="0" * 64)
    report.folder.mkdir(parents=True)
    path_maker(report.original_path, **kwargs)
    return report


def _ingest(report: Report, env: dict[str, str], **settings: str) -> tuple[Report, int, str]:
    """`manage.py ingestreport <id>` in its own process tree; the report after, the peak RSS in MB, stdout."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, str(MANAGE), "ingestreport", str(report.pk)],
        env=env | settings,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *output, peak = done.stdout.strip().splitlines()
    report.refresh_from_db()
    print(f"ingestreport of report {report.pk}: {report.status}, peak {peak} MB")  # shown with -s
    return report, int(peak), "\n".join(output)


@pytest.mark.django_db(transaction=True)
def test_a_poster_sized_page_is_rendered_coarser_within_the_pixel_cap(
    subprocess_env, tmp_path, clinician_client
):
    # 14400 x 14400 pt: at 110 dpi a 22000 x 22000 bitmap (1.9 GB), and 13.9 GB peak before the cap.
    report = _stored(make_huge_page_pdf, tmp_path)
    assert report.original_path.stat().st_size < 1024
    report, peak, _ = _ingest(report, subprocess_env)
    assert report.status == Report.Status.READY, report.error
    [page] = json.loads((report.folder / "pages.json").read_text())["pages"]
    assert "REPORT_MAX_PAGE_PIXELS" in page["render_note"] and "200 x 200 in" in page["render_note"]
    with Image.open(report.folder / page["image"]) as image:
        assert image.width * image.height <= 12_000_000
    assert page["ocr_ran"]  # the thin text layer is still OCR'd, from a render inside the cap too
    assert "Synthetic poster-sized page" in page["sources"]["text layer"]
    # The report page says why its image is coarse.
    assert "rendered at 17 dpi, not 110" in clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert peak < 1200, f"peak {peak} MB"  # OCR of a 12-megapixel render (measured 682 MB); 13.9 GB uncapped


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "variant",
    [
        {},  # 1 MB that inflates to 1 GiB of blanks
        {"layers": 2},  # deflated twice: 2.4 KB
        {"hex_wrapped": True},  # ASCIIHexDecode in front of FlateDecode
        {"flate_name": b"/Fl#61teDecode"},  # the same filter name, spelled with an escape
        {"flate_name": b"/Fl"},  # the abbreviation
    ],
    ids=["deflate", "twice", "hex", "escaped-name", "abbreviated"],
)
def test_an_inflation_bomb_is_refused_unread(subprocess_env, tmp_path, variant):
    report = _stored(make_inflation_bomb_pdf, tmp_path, **variant)
    subprocess_env["REPORT_OCR_ENABLED"] = "false"
    report, peak, output = _ingest(report, subprocess_env)
    assert report.status == Report.Status.FAILED
    assert "inflates to more than 256 MB (REPORT_MAX_STREAM_MB)" in report.error
    assert "REPORT_MAX_STREAM_MB" in output
    assert peak < 150, f"peak {peak} MB"  # 1.9 GB without the check


@pytest.mark.django_db(transaction=True)
def test_an_image_that_inflates_to_gigabytes_is_refused(subprocess_env, tmp_path):
    report = _stored(make_image_bomb_pdf, tmp_path, side=20000)  # 1.2 GB of pixels in 1.2 MB
    report, peak, _ = _ingest(report, subprocess_env, REPORT_OCR_ENABLED="false")
    assert report.status == Report.Status.FAILED and "REPORT_MAX_STREAM_MB" in report.error
    assert peak < 150, f"peak {peak} MB"


_UPLOAD_CHECK = (
    "import sys; from pathlib import Path; from patients import ingest\n"
    "try:\n"
    "    ingest.check_report_file(Path(sys.argv[1]), name='tree.pdf', kind='pdf', max_pages=200,"
    " max_stream_bytes=64 * 1024 * 1024)\n"
    "except ingest.UnreadableReport as exc:\n"
    "    print(exc.status, exc.message)\n"
)


def test_the_upload_check_refuses_a_page_tree_bomb_in_bounded_memory(tmp_path):
    """The check a web server makes at upload, alone in a process (measured as ingestion is, from a wrapper:
    a child forked from this big test process starts with its peak): a 1 MB file whose page tree sits in an
    object stream of 512 MiB (over 1 GB peak when PDFium counted its pages first) is refused unread."""
    path = make_object_stream_bomb_pdf(tmp_path / "tree.pdf", inflated_bytes=512 * MB)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-c", _UPLOAD_CHECK, str(path)],
        cwd=MANAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    refusal, peak = done.stdout.strip().splitlines()
    assert refusal.startswith("413 tree.pdf holds compressed content that inflates to more than 64 MB")
    assert int(peak) < 200, f"peak {peak} MB"


@pytest.mark.django_db(transaction=True)
def test_past_the_checks_the_memory_limit_stops_the_reader_and_the_report_fails(subprocess_env, tmp_path):
    """With the stream check out of the way (a cap above the bomb), PDFium itself meets INGEST_MAX_MEMORY_MB:
    it aborts, the child dies, and the ingester records why and carries on (no report left processing)."""
    report = _stored(make_inflation_bomb_pdf, tmp_path)
    report, peak, _ = _ingest(
        report,
        subprocess_env,
        REPORT_MAX_STREAM_MB="4096",
        INGEST_MAX_MEMORY_MB="600",
        REPORT_OCR_ENABLED="false",
    )
    assert report.status == Report.Status.FAILED
    assert "600 MB" in report.error and "INGEST_MAX_MEMORY_MB" in report.error, report.error
    assert peak < 650, f"peak {peak} MB"
    assert not list(report.folder.parent.glob(".ingest-*"))  # its work folder is gone too


@pytest.mark.django_db(transaction=True)
def test_the_time_limit_stops_a_long_read(subprocess_env, tmp_path):
    report = _stored(make_qeeg_pdf, tmp_path, pages=3, image_only_pages=(1, 2, 3))  # OCR: several seconds
    report, _, _ = _ingest(report, subprocess_env, INGEST_MAX_SECONDS="1")
    assert report.status == Report.Status.FAILED
    assert "longer than 1 s (INGEST_MAX_SECONDS)" in report.error


def test_a_real_report_passes_the_stream_check(tmp_path):
    path = tmp_path / "r.pdf"
    make_qeeg_pdf(path, pages=4, image_only_pages=(2, 3))  # fonts, images and content, all deflated
    ingest.check_streams(path, name="r.pdf", max_bytes=4 * MB)


def test_the_stream_check_counts_what_it_inflates(tmp_path):
    path = make_inflation_bomb_pdf(tmp_path / "b.pdf", inflated_bytes=5 * MB, layers=2)
    ingest.check_streams(path, name="b.pdf", max_bytes=5 * MB)  # exactly at the cap: fine
    with pytest.raises(ingest.UnreadableReport) as refused:
        ingest.check_streams(path, name="b.pdf", max_bytes=5 * MB - 1)
    assert refused.value.status == 413


def test_render_scale_keeps_ordinary_pages_and_shrinks_huge_ones():
    assert ingest.render_scale(595, 842, dpi=110, max_pixels=12_000_000) == (110 / 72, "")
    scale, note = ingest.render_scale(14400, 14400, dpi=110, max_pixels=12_000_000)
    assert (14400 * scale) ** 2 <= 12_000_000 * 1.0001
    assert note.startswith("rendered at 17 dpi, not 110")
