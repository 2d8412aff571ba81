"""Every call of a run, in every stage, sends the same text first (the shared start: the council's rules, the
clinical context, the report), so a provider's prompt cache can serve it; what differs comes after it."""

from __future__ import annotations

import pytest

from tests.fake_upstream.replies import message_text
from tests.run_helpers import run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_call_of_a_run_begins_with_the_same_report_prefix(fake_upstream, run):
    code, output = run_pipeline_here(run)
    assert code == 0, output
    calls = [c for c in fake_upstream.calls if c.endpoint == "chat/completions"]
    assert {c.stage for c in calls} == {1, 2, 3, 4, 5, 6}
    systems = {message_text(c.body["messages"][0]) for c in calls}
    assert len(systems) == 1  # one system message for the whole run
    users = [message_text(c.body["messages"][1]) for c in calls]
    report_end = users[0].index("## Source report")
    for user in users:
        # The same text up to the stage's own part, which starts with a rule after the report.
        start = user[: user.index("\n\n---\n\n", report_end)]
        assert start == users[0][: users[0].index("\n\n---\n\n", report_end)]
        assert "=== PAGE" in start or "[text file]" in start or "Synthetic qEEG report" in start
