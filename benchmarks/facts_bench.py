"""Benchmark fact reading: accuracy and speed on synthetic vendor pages (tests/synthetic_vendor.py).

    uv run python benchmarks/facts_bench.py [--seeds 3] [--dpi 150,200,300] [--at-once 2]

For each seed, one report with every vendor page as an image-only page (WAVi summary, WAVi P300 Rare
Comparison, WAVi typed per-site tables, NeuroGuide Z table) and as a text-layer page, read the way ingestion reads them
(`patients.layout.read_ocr` / `read_text_layer`, then `patients.readers`, then `patients.facts`), in a
child process pinned to one core, so OCR warm-up and memory belong to the case alone.

Accuracy: the share of printed facts recovered with the right value, site, band, session and page, with the
deterministic readers alone. Speed: seconds per image page for rendering, detection, layout (components,
words, colours) and recognition, as wall time, plus the CPU time of the whole read (the machine is shared;
CPU time is what one core spends). `--dpi` also reads the image pages at other resolutions, to show which
one the dashes and decimal points need. `--at-once N` reads N reports in N processes at the same time (each
pinned to a core of its own while there are cores enough), as N uploads ingest side by side: wall time then
shows what one ingestion loses to the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("wavi_summary", "wavi_p300", "wavi_sites", "neuroguide_z")


def run_case(seed: int, dpi: int, core: int = 0) -> dict:
    import pypdfium2 as pdfium

    from patients import facts
    from patients.ingest import ocr_engine
    from patients.layout import read_ocr, read_text_layer
    from tests.synthetic_vendor import make_vendor_pdf
    from tests.test_fact_reading import recovered

    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[core % len(cores)]})
    pages = (
        [(kind, "image") for kind in KINDS] + [(kind, "text") for kind in KINDS] + [("generic_rows", "text")]
    )
    engine = ocr_engine()
    with tempfile.TemporaryDirectory(prefix="qeeg-facts-bench-") as tmp:
        path = Path(tmp) / "vendor.pdf"
        truth = make_vendor_pdf(path, pages=pages, seed=seed)
        document = pdfium.PdfDocument(path)
        layouts, per_page = [], []
        for index, (kind, mode) in enumerate(pages):
            page = document[index]
            cpu, wall = time.process_time(), time.perf_counter()
            if mode == "image":
                layout = read_ocr(page, number=index + 1, engine=engine, read_dpi=dpi)
            else:
                layout = read_text_layer(page, number=index + 1)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            page.close()
            layouts.append(layout)
            per_page.append({"kind": kind, "mode": mode, "cpu": cpu, "wall": wall, **layout.seconds})
        document.close()
    started = time.process_time()
    table = facts.build_table(facts.read_layouts(layouts), page_count=len(pages))
    readers_cpu = time.process_time() - started
    for entry, quality in zip(per_page, table["pages"], strict=True):
        number = quality["page"]
        share, _ = recovered(
            [f for f in table["facts"] if f["page"] == number],
            [t for t in truth["facts"] if t["page"] == number],
        )
        entry.update(recovered=share, facts=sum(1 for t in truth["facts"] if t["page"] == number))
        entry.update(fully_read=quality["fully_read"], merged=quality["merged_tokens"])
    return {
        "seed": seed,
        "dpi": dpi,
        "pages": per_page,
        "readers_cpu": readers_cpu,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def read_at_once(seeds, dpi: int) -> list[dict]:
    """Read one report per seed, all at the same time, each in a fresh process on a core of its own (cores
    taken in turn: two reports on a 2-core machine get one each)."""
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--one", str(seed), str(dpi), str(core)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for core, seed in enumerate(seeds)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=900)
        if child.returncode != 0:
            raise RuntimeError(f"a fact-reading child failed:\n{err[-3000:]}")
        results.append({**json.loads(out.strip().splitlines()[-1]), "at_once": len(children)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="reports per resolution (each a fresh process)")
    parser.add_argument("--dpi", default="300", help="comma-separated read resolutions, e.g. 150,200,300")
    parser.add_argument(
        "--at-once", type=int, default=1, help="reports read at the same time, each in its own process"
    )
    parser.add_argument("--one", nargs="+", type=int, help=argparse.SUPPRESS)  # seed dpi [core]
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(*args.one)))
        return
    for dpi in [int(d) for d in args.dpi.split(",")]:
        runs = []
        for first in range(101, 101 + args.seeds, args.at_once):
            runs.extend(read_at_once(range(first, min(first + args.at_once, 101 + args.seeds)), dpi))
        together = f", {args.at_once} at once" if args.at_once > 1 else ", one core"
        print(f"\nread at {dpi} dpi, {args.seeds} report(s){together}")
        print(
            f"{'page':<22} {'facts':>6} {'recovered':>9} {'render':>7} {'detect':>7} {'layout':>7} "
            f"{'read':>7} {'wall':>7} {'cpu':>7}"
        )
        total = found = 0
        for kind in (*KINDS, "generic_rows"):
            for mode in ("image", "text"):
                rows = [p for r in runs for p in r["pages"] if p["kind"] == kind and p["mode"] == mode]
                if not rows:
                    continue
                facts_n = sum(p["facts"] for p in rows)
                hit = sum(p["recovered"] * p["facts"] for p in rows)
                total += facts_n
                found += hit

                def median(key: str, rows=rows) -> str:
                    values = [p[key] for p in rows if key in p]
                    return f"{statistics.median(values):.2f}" if values else "-"

                print(
                    f"{kind + ' (' + mode + ')':<22} {facts_n:>6} {hit / facts_n:>9.1%} {median('render'):>7} "
                    f"{median('detect'):>7} {median('layout'):>7} {median('read'):>7} {median('wall'):>7} "
                    f"{median('cpu'):>7}"
                )
        print(
            f"{'all':<22} {total:>6} {found / total:>9.2%}   peak RSS {max(r['peak_rss_mb'] for r in runs)} MB"
        )


if __name__ == "__main__":
    main()
