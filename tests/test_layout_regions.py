"""Each glyph goes to the detected region holding it whose middle line is nearest (the first on a tie)."""

from __future__ import annotations

import numpy as np

from patients.layout import _region_owners


def owners_one_by_one(centroids, glyph, regions):
    owner = []
    for i, (x, y) in enumerate(centroids):
        best, found = np.inf, -1
        for r, (x0, y0, x1, y1) in enumerate(regions):
            pad = 0.15 * (y1 - y0)
            inside = x0 - pad <= x <= x1 + pad and y0 - pad <= y <= y1 + pad
            if glyph[i] and inside and abs(y - (y0 + y1) / 2) < best:
                best, found = abs(y - (y0 + y1) / 2), r
        owner.append(found)
    return owner


def test_overlapping_regions_give_each_glyph_the_nearest_middle():
    rng = np.random.default_rng(11)
    # Lines 30 px apart whose detected regions overlap their neighbours, as the detector draws them.
    regions = [(x, y - 22, x + 400, y + 22) for y in range(40, 2000, 30) for x in (0, 350)]
    centroids = np.column_stack([rng.uniform(-20, 780, 3000), rng.uniform(0, 2040, 3000)])
    glyph = rng.random(3000) > 0.2
    got = _region_owners(centroids, glyph, regions)
    assert got.tolist() == owners_one_by_one(centroids, glyph, regions)
    assert (got[~glyph] == -1).all() and (got >= 0).sum() > 2000


def test_a_tie_goes_to_the_first_region_and_no_regions_own_nothing():
    centroids = np.array([[50.0, 50.0]])
    regions = [(0, 40, 100, 60), (0, 40, 100, 60)]
    assert _region_owners(centroids, np.array([True]), regions).tolist() == [0]
    assert _region_owners(centroids, np.array([True]), []).tolist() == [-1]
