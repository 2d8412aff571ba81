"""Every call of a stage is in flight at once by default; COUNCIL_CONCURRENCY caps them only when set."""

from __future__ import annotations

import itertools

import pytest

from runs import services
from tests.run_helpers import CONSOLIDATOR, make_patient, make_ready_report, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)

FIVE = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro", "extra-model-4", "extra-model-5"]


def _stage1_starts(fake_upstream) -> list[float]:
    return sorted(call.at for call in fake_upstream.calls if call.stage == 1)


@pytest.fixture
def five_model_run(fake_upstream, tmp_path):
    for model in FIVE:
        fake_upstream.script(model, failures=["sleep:0.4"])  # only each model's Stage 1 call is slow
    patient = make_patient()
    report = make_ready_report(patient, tmp_path)
    return services.run_create(patient=patient, report=report, council_models=FIVE, consolidator=CONSOLIDATOR)


def test_every_model_of_a_stage_is_in_flight_at_once_by_default(fake_upstream, five_model_run, settings):
    assert settings.COUNCIL_CONCURRENCY is None  # the default: no cap across models
    code, output = run_pipeline_here(five_model_run)
    assert code == 0, output
    starts = _stage1_starts(fake_upstream)
    assert len(starts) == 5
    assert starts[-1] - starts[0] < 0.3  # all five asked before the first (0.4 s) answered


@pytest.mark.parametrize("cap", [1, 2])
def test_an_operator_cap_limits_the_calls_in_flight(fake_upstream, five_model_run, settings, cap):
    settings.COUNCIL_CONCURRENCY = cap
    code, output = run_pipeline_here(five_model_run)
    assert code == 0, output
    starts = _stage1_starts(fake_upstream)
    assert len(starts) == 5
    # With `cap` slots, call i + cap starts only when call i has answered.
    assert min(b - a for a, b in zip(starts, starts[cap:], strict=False)) >= 0.35
    if cap > 1:
        assert max(b - a for a, b in itertools.pairwise(starts[:cap])) < 0.3
