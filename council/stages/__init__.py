"""The council's steps, in run order. This list is the registry: the pipeline, the pages, the API, the
export and `runpipeline` read `STEPS`, never stage numbers of their own. Each step is one module
(`stage<n>_<name>.py`) whose `STEP` entry at its end says what the step is (council/stages/registry.py);
adding a step is adding its module, its prompt file in council/prompts/, and one line here."""

from __future__ import annotations

from council.stages import (
    stage1_analysis,
    stage2_peer_review,
    stage3_revision,
    stage4_consolidation,
    stage5_final_review,
    stage6_final_draft,
)
from council.stages.registry import Registry, Step

STEPS = Registry(
    [
        stage1_analysis.STEP,
        stage2_peer_review.STEP,
        stage3_revision.STEP,
        stage4_consolidation.STEP,
        stage5_final_review.STEP,
        stage6_final_draft.STEP,
    ]
)

__all__ = ["STEPS", "Step"]
