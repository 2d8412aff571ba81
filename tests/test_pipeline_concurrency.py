"""All calls of a stage are in flight together, up to COUNCIL_CONCURRENCY at once."""

from __future__ import annotations

import itertools

import pytest

from tests.run_helpers import COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def _stage1_starts(fake_upstream) -> list[float]:
    return sorted(call.at for call in fake_upstream.calls if call.stage == 1)


@pytest.mark.parametrize(("concurrency", "together"), [(3, True), (1, False)])
def test_stage_calls_overlap_up_to_the_limit(fake_upstream, run, settings, concurrency, together):
    settings.COUNCIL_CONCURRENCY = concurrency
    for model in COUNCIL:
        fake_upstream.script(model, failures=["sleep:0.4"])  # only each model's Stage 1 call is slow
    code, output = run_pipeline_here(run)
    assert code == 0, output
    starts = _stage1_starts(fake_upstream)
    assert len(starts) == 3
    if together:
        assert starts[-1] - starts[0] < 0.3
    else:
        assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.35
