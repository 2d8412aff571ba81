"""The six stages of a council run, one module each. Each builds its messages from versioned prompt
templates (council/prompts/) and applies the stage's reply rule (council/stages/base.py)."""

from __future__ import annotations

from council.stages import (
    stage1_analysis,
    stage2_peer_review,
    stage3_revision,
    stage4_consolidation,
    stage5_final_review,
    stage6_final_draft,
)

MODULES = {
    1: stage1_analysis,
    2: stage2_peer_review,
    3: stage3_revision,
    4: stage4_consolidation,
    5: stage5_final_review,
    6: stage6_final_draft,
}
NAMES = {number: module.NAME for number, module in MODULES.items()}
KINDS = {number: module.KIND for number, module in MODULES.items()}
