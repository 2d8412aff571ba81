"""Benchmark report ingestion: time, memory and OCR recall on synthetic qEEG reports.

    uv run python benchmarks/ingest_bench.py [--repeat 3]

Each case runs `patients.ingest.ingest_pdf` (text layer, page PNGs, thumbnails, OCR where the text layer is
thin) in a fresh child process, the way an `ingestreport` process meets a report, so OCR warm-up and peak
memory (ru_maxrss) belong to that case alone. Cases:

- text-20: 20 pages whose tables are in the text layer (no OCR);
- image-5: 5 pages whose tables exist only as images (OCR on every page);
- mixed-200: the page cap, 200 pages, every tenth page image-only.

OCR recall is the share of the numbers printed in image-only tables that come back, as tokens, in the OCR text
of the same page (the figure a clinician cares about: a number read from the wrong page is a miss).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    "text-20": {"pages": 20, "image_only_pages": ()},
    "image-5": {"pages": 5, "image_only_pages": (1, 2, 3, 4, 5)},
    "mixed-200": {"pages": 200, "image_only_pages": tuple(range(10, 201, 10))},
}


def run_case(name: str) -> dict:
    """One case, in this process: make the PDF, ingest it, measure."""
    from patients.ingest import OCR, IngestOptions, ingest_pdf
    from tests.synthetic_reports import make_qeeg_pdf, numbers_in

    case = CASES[name]
    with tempfile.TemporaryDirectory(prefix="qeeg-ingest-bench-") as tmp:
        source = Path(tmp) / "report.pdf"
        content = make_qeeg_pdf(source, pages=case["pages"], image_only_pages=case["image_only_pages"])
        out = Path(tmp) / "out"
        out.mkdir()
        options = IngestOptions(
            max_pages=200, render_dpi=110, ocr_enabled=True, ocr_min_chars=200, ocr_image_area=0.3
        )
        started = time.perf_counter()
        result = ingest_pdf(source, out, name=source.name, options=options)
        seconds = time.perf_counter() - started

    ocr_seconds = [page["ocr_seconds"] for page in result.pages if page["ocr_ran"]]
    wanted = found = 0
    for page, printed in zip(result.pages, content["pages"], strict=True):
        if printed["kind"] != "image":
            continue
        expected = set(printed["numbers"])
        wanted += len(expected)
        found += len(expected & numbers_in(page["sources"].get(OCR, "")))
    return {
        "case": name,
        "pages": result.page_count,
        "ocr_pages": len(ocr_seconds),
        "seconds": round(seconds, 2),
        "ms_per_text_page": (
            round(1000 * (seconds - sum(ocr_seconds)) / (result.page_count - len(ocr_seconds)))
            if result.page_count > len(ocr_seconds)
            else None
        ),
        "ocr_first_page_s": ocr_seconds[0] if ocr_seconds else None,
        "ocr_median_page_s": round(statistics.median(ocr_seconds), 2) if ocr_seconds else None,
        "ocr_recall": round(found / wanted, 4) if wanted else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is reported")
    parser.add_argument("--one", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one)))
        return

    print(
        f"{'case':<10} {'pages':>5} {'ocr':>4} {'total s':>8} {'ms/text pg':>10} {'ocr 1st s':>9} "
        f"{'ocr med s':>9} {'recall':>7} {'rss MB':>7}"
    )
    for name in CASES:
        runs = []
        for _ in range(args.repeat):
            child = subprocess.run(
                [sys.executable, __file__, "--one", name],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = min(runs, key=lambda row: row["seconds"])
        print(
            f"{r['case']:<10} {r['pages']:>5} {r['ocr_pages']:>4} {r['seconds']:>8} {r['ms_per_text_page'] or '-':>10} "
            f"{r['ocr_first_page_s'] or '-':>9} {r['ocr_median_page_s'] or '-':>9} "
            f"{r['ocr_recall'] if r['ocr_recall'] is not None else '-':>7} {r['peak_rss_mb']:>7}"
        )


if __name__ == "__main__":
    main()
