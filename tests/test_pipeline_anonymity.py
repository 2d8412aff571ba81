"""Stage 2 anonymity: no model id in any prompt of Stages 2 to 6 (as recorded at the fake upstream, even though
the fake signs its output with its model id), and no reviewer ever reviews itself."""

from __future__ import annotations

import json

import pytest

from council.anonymize import redactor
from runs import selectors
from tests.run_helpers import COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_no_model_id_in_any_later_prompt_and_no_self_review(fake_upstream, run):
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    # The fake does sign its work, so this test would catch a leak through pasted earlier output.
    assert "gpt-5" in run.artifacts.get(stage=1, model_id="gpt-5").path.read_text()
    later = [call for call in fake_upstream.calls if call.stage in (2, 3, 4, 5, 6)]
    assert len(later) == 13
    for call in later:
        prompt = json.dumps(call.body["messages"]).lower()
        for model in COUNCIL:
            assert model.lower() not in prompt, (call.stage, call.model, model)
    own = {model: label for label, model in run.label_map.items()}
    for call in fake_upstream.calls:
        if call.stage == 2:
            user = call.body["messages"][1]["content"]
            shown = {
                line.removeprefix("## Analysis ").strip()
                for line in user.splitlines()
                if line.startswith("## Analysis ")
            }
            assert shown == set(run.label_map) - {own[call.model]}
    for review in run.artifacts.filter(stage=2):
        labels = {r.analysis_label for r in selectors.artifact_parsed(review).reviews}
        assert own[review.model_id] not in labels and len(labels) == 2


def test_redactor_replaces_longest_ids_first_in_any_case():
    redact = redactor(["gpt-5", "gpt-5-mini"])
    assert redact("GPT-5-mini and gpt-5 agree") == "[council member] and [council member] agree"


def test_redactor_leaves_words_that_merely_contain_an_id():
    redact = redactor(["auto", "o3"])
    assert redact("automatic CO3 (o3) and Auto.") == "automatic CO3 ([council member]) and [council member]."
