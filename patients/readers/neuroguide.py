"""NeuroGuide-style site x band Z-score tables: a header of bands, one row per 10-20 site.

Values are right-aligned under their band, so each takes the band whose header ends nearest its own right
edge; the site is the row's first word, repaired from the 10-20 vocabulary (`01` is `O1`). The metric comes
from the table's title ("Absolute Power Z Scores" -> "Absolute Power Z").
"""

from __future__ import annotations

import itertools
import re

from patients.layout import PageLayout
from patients.readers.base import (
    ELECTRODES,
    Reading,
    fold,
    joined,
    make_fact,
    phrases,
    repair_electrode,
    text_of,
)

NAME = "neuroguide-z"
BANDS = {
    "delta", "theta", "alpha", "beta", "high beta", "hibeta", "gamma", "alpha 1", "alpha 2", "beta 1",
    "beta 2", "beta 3", "alpha1", "alpha2", "beta1", "beta2", "beta3",
}  # fmt: skip
NORM = "Z-score against the age-matched norm (0 = norm, 1 = one standard deviation)"


def _header(layout: PageLayout):
    for index, row in enumerate(layout.rows()):
        cells = [c for c in phrases(row, gap=1.0) if fold(joined(c)).lower() in BANDS]
        if len(cells) >= 4:
            return index, cells
    return None, []


def matches(layout: PageLayout) -> bool:
    return re.search(r"z[\s-]?scores?", text_of(layout)) is not None and _header(layout)[0] is not None


def _metric(layout: PageLayout) -> str:
    text = fold(" ".join(b.text for b in layout.boxes))
    match = re.search(
        r"((?:absolute|relative)\s+(?:band\s+)?power|coherence|phase|amplitude asymmetry)[,\s]+z", text, re.I
    )
    return f"{match.group(1).title()} Z" if match else "Z-score"


def read(layout: PageLayout) -> Reading:
    reading = Reading(reader=NAME)
    index, header = _header(layout)
    if index is None:
        return reading
    bands = [(fold(joined(cell)).title().replace("Hibeta", "High Beta"), cell[-1].x1) for cell in header]
    metric = _metric(layout)
    recorded = re.search(
        r"recorded\s+(\d{1,2}/\d{1,2}/\d{4})", fold(" ".join(b.text for b in layout.boxes)), re.I
    )
    session_date = recorded.group(1) if recorded else None
    # A NeuroGuide table lists all 19 sites; another vendor's Z table is expected to be whole in the rows
    # it prints.
    full = "neuroguide" in text_of(layout)
    step = min((b[1] - a[1] for a, b in itertools.pairwise(bands)), default=40.0)
    rows = layout.rows()
    seen: set[str] = set()
    for row in rows[index + 1 :]:
        site = repair_electrode(row.boxes[0].text)
        if site is None:
            if seen:
                break
            continue
        if site in seen:
            continue
        seen.add(site)
        for band, box in reading.labelled_row(row, bands, step=step):
            reading.cell(
                make_fact(
                    layout,
                    reader=NAME,
                    metric=metric,
                    boxes=[box],
                    unit="Z",
                    site=site,
                    band=band,
                    session=1,
                    session_date=session_date,
                    norm=NORM,
                )
            )
    sites = ELECTRODES if full else sorted(seen)
    reading.labels_expected = len(sites)
    reading.expected = [(metric, site, band, 1) for site in sites for band, _ in bands]
    return reading
