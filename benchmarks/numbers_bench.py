"""Benchmark number checking (council.numbers) on drafts written from generated fact tables.

    uv run python benchmarks/numbers_bench.py [--seeds 10]

For each seed, a synthetic vendor report's true facts (tests/synthetic_vendor.py, text pages, so no OCR
time) become a fact table; a correct draft (sentences, a table, changes and percentages between sessions,
dates, list numbering and names that hold digits) and planted errors of five kinds (a dropped decimal, a
swapped session, a wrong site, a value not in the report, a wrong page) are checked against it. Reports
the share of planted errors flagged with their kind, the share of correct numbers flagged, and the time
per 1,000 numbers checked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = [("wavi_summary", "text"), ("wavi_p300", "text"), ("neuroguide_z", "text"), ("generic_rows", "text")]
EXPECTED = {
    "dropped_decimal": "no_match",
    "swapped_session": "wrong_session",
    "wrong_site": "wrong_site",
    "not_in_report": "no_match",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    from council import numbers
    from tests.synthetic_drafts import correct_draft, fact_rows, planted_errors
    from tests.synthetic_vendor import make_vendor_pdf

    planted = flagged = kind_right = correct = false_flags = checked = 0
    by_kind: dict[str, list[int]] = {}
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="qeeg-numbers-bench-") as tmp:
        for seed in range(args.seeds):
            rows = fact_rows(make_vendor_pdf(Path(tmp) / "v.pdf", pages=PAGES, seed=seed)["facts"])
            started = time.perf_counter()
            checks = numbers.check(correct_draft(rows, seed=seed), rows)
            seconds += time.perf_counter() - started
            checked += len(checks)
            correct += len(checks)
            false_flags += sum(c.flagged for c in checks)
            for kind, text, wrong in planted_errors(rows, seed=seed, per_kind=25):
                started = time.perf_counter()
                result = [c for c in numbers.check(text, rows) if c.mention.text.split()[0] == wrong]
                seconds += time.perf_counter() - started
                checked += 1
                planted += 1
                hit = bool(result) and result[0].flagged
                flagged += hit
                kind_right += hit and result[0].status == EXPECTED.get(kind, "wrong_page")
                by_kind.setdefault(kind, [0, 0])
                by_kind[kind][0] += hit
                by_kind[kind][1] += 1
    print(f"seeds: {args.seeds}")
    print(
        f"planted errors flagged: {flagged}/{planted} = {flagged / planted:.1%} (right kind {kind_right / planted:.1%})"
    )
    for kind, (hit, total) in sorted(by_kind.items()):
        print(f"  {kind}: {hit}/{total}")
    print(f"correct numbers flagged: {false_flags}/{correct} = {false_flags / correct:.2%}")
    print(f"time: {seconds / checked * 1000 * 1000:.0f} ms per 1,000 numbers")


if __name__ == "__main__":
    main()
