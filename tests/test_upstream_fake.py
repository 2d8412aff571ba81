"""The fake CLIProxyAPI speaks the proxy's shapes, is scriptable per model and records every call."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.fake_upstream import END_MARKER, FAKE_MARK, FakeUpstream


def post(fake: FakeUpstream, path: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(f"{fake.base_url}{path}", json=body, headers=headers, timeout=10)


def chat(fake: FakeUpstream, model: str, messages: list[dict], **extra) -> httpx.Response:
    return post(fake, "/v1/chat/completions", {"model": model, "messages": messages, **extra})


def stage_messages(n: int, name: str, user: str = "report text") -> list[dict]:
    return [
        {"role": "system", "content": f"qEEG Council — Stage {n}: {name}\nYou are a council member."},
        {"role": "user", "content": user},
    ]


def test_models_lists_the_default_council_and_special_models(fake_upstream):
    body = httpx.get(f"{fake_upstream.base_url}/v1/models").json()
    assert body["object"] == "list"
    ids = {item["id"] for item in body["data"]}
    assert {"gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro", "fake-responses-only", "fake-image-only"} <= ids
    claude = next(item for item in body["data"] if item["id"] == "claude-sonnet-4-5")
    assert "created" not in claude


def test_markdown_stage_reply_is_plainly_fake_and_ends_with_marker(fake_upstream):
    reply = chat(fake_upstream, "gpt-5", stage_messages(1, "Analysis", "=== PAGE 1 / 2 ===\n[text layer]\nx"))
    assert reply.status_code == 200
    choice = reply.json()["choices"][0]
    text = choice["message"]["content"]
    assert text.startswith(FAKE_MARK)
    assert "|---|" in text
    assert "\n- " in text
    assert text.rstrip().endswith(END_MARKER)
    assert choice["finish_reason"] == "stop"
    assert reply.json()["usage"]["completion_tokens"] > 0


def test_stage2_review_is_keyed_to_the_labels_in_the_prompt(fake_upstream):
    user = "## Analysis A\n\nfirst\n\n## Analysis C\n\nsecond\n"
    reply = chat(fake_upstream, "gpt-5", stage_messages(2, "Peer review", user))
    review = json.loads(reply.json()["choices"][0]["message"]["content"])
    assert [r["analysis_label"] for r in review["reviews"]] == ["A", "C"]
    assert sorted(review["ranking_best_to_worst"]) == ["A", "C"]
    for item in review["reviews"]:
        assert {
            "strengths",
            "weaknesses",
            "missing_or_unclear",
            "accuracy_issues",
            "risk_of_overreach",
        } <= set(item)


def test_stage5_vote_is_scriptable(fake_upstream):
    approve = json.loads(
        chat(fake_upstream, "gpt-5", stage_messages(5, "Final review")).json()["choices"][0]["message"][
            "content"
        ]
    )
    assert approve["vote"] == "APPROVE" and approve["required_changes"] == []
    fake_upstream.script("gpt-5", vote="REVISE")
    revise = json.loads(
        chat(fake_upstream, "gpt-5", stage_messages(5, "Final review")).json()["choices"][0]["message"][
            "content"
        ]
    )
    assert revise["vote"] == "REVISE" and revise["required_changes"]
    assert 1 <= revise["quality_score_1to10"] <= 10


def test_invalid_json_then_valid_after_the_retry_message(fake_upstream):
    fake_upstream.script("gpt-5", invalid_json_times=1)
    messages = stage_messages(5, "Final review")
    first = chat(fake_upstream, "gpt-5", messages).json()["choices"][0]["message"]["content"]
    with pytest.raises(ValueError):
        json.loads(first)
    messages += [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Your reply was not valid: Expecting value. Reply with one JSON object."},
    ]
    second = chat(fake_upstream, "gpt-5", messages).json()["choices"][0]["message"]["content"]
    assert json.loads(second)["vote"] == "APPROVE"


def test_truncated_reply_then_continuation_completes(fake_upstream):
    messages = stage_messages(3, "Revision")
    first = chat(fake_upstream, "fake-truncated", messages).json()["choices"][0]
    assert first["finish_reason"] == "length"
    assert END_MARKER not in first["message"]["content"]
    messages += [
        {"role": "assistant", "content": first["message"]["content"]},
        {"role": "user", "content": "Continue exactly where you stopped."},
    ]
    second = chat(fake_upstream, "fake-truncated", messages).json()["choices"][0]
    assert second["finish_reason"] == "stop"
    assert second["message"]["content"].rstrip().endswith(END_MARKER)


def test_api_key_check_uses_string_error_bodies(fake_upstream):
    fake_upstream.set_api_keys(["right"])
    missing = httpx.get(f"{fake_upstream.base_url}/v1/models")
    wrong = httpx.get(f"{fake_upstream.base_url}/v1/models", headers={"Authorization": "Bearer nope"})
    ok = httpx.get(f"{fake_upstream.base_url}/v1/models", headers={"Authorization": "Bearer right"})
    assert (missing.status_code, missing.json()) == (401, {"error": "Missing API key"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "Invalid API key"})
    assert ok.status_code == 200


def test_failure_sequence_then_success_and_calls_recorded(fake_upstream):
    fake_upstream.script("gpt-5", failures=["429:7", "502", "auth_unavailable"])
    statuses = [chat(fake_upstream, "gpt-5", stage_messages(1, "Analysis")) for _ in range(4)]
    assert [r.status_code for r in statuses] == [429, 502, 503, 200]
    cooldown = statuses[0].json()["error"]
    assert cooldown["code"] == "model_cooldown" and cooldown["reset_seconds"] == 7
    assert statuses[2].json()["error"]["message"].startswith("auth_unavailable")
    assert fake_upstream.count(model="gpt-5", stage=1, endpoint="chat/completions") == 4
    assert fake_upstream.count(model="gpt-5", status=200) == 1


def test_401_is_followed_by_auth_unavailable_for_a_while(fake_upstream):
    fake_upstream.script("gpt-5", needs_auth=True, auth_unavailable_seconds=0.3)
    first = chat(fake_upstream, "gpt-5", stage_messages(1, "Analysis"))
    during = chat(fake_upstream, "gpt-5", stage_messages(1, "Analysis"))
    time.sleep(0.35)
    after = chat(fake_upstream, "gpt-5", stage_messages(1, "Analysis"))
    assert [first.status_code, during.status_code, after.status_code] == [401, 503, 401]
    assert during.json()["error"]["message"].startswith("auth_unavailable")


def test_unknown_model_both_shapes():
    with FakeUpstream() as fake:
        reply = chat(fake, "gpt-9", stage_messages(1, "Analysis"))
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "model_not_found"
    with FakeUpstream(legacy_unknown_provider=True) as fake:
        reply = chat(fake, "gpt-9", stage_messages(1, "Analysis"))
        assert (
            reply.status_code == 502
            and "unknown provider for model gpt-9" in reply.json()["error"]["message"]
        )


def test_responses_only_and_image_only_models(fake_upstream):
    rejected = chat(fake_upstream, "fake-responses-only", stage_messages(1, "Analysis"))
    assert rejected.status_code == 400
    answered = post(
        fake_upstream,
        "/v1/responses",
        {"model": "fake-responses-only", "input": stage_messages(1, "Analysis"), "max_output_tokens": 8000},
    ).json()
    assert answered["status"] == "completed"
    assert "output_text" not in answered
    message = next(item for item in answered["output"] if item["type"] == "message")
    assert message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"].startswith(FAKE_MARK)
    assert chat(fake_upstream, "fake-image-only", stage_messages(1, "Analysis")).status_code == 400
    assert (
        post(fake_upstream, "/v1/responses", {"model": "fake-image-only", "input": "hi"}).status_code == 400
    )


def test_malformed_and_empty_replies(fake_upstream):
    malformed = chat(fake_upstream, "fake-malformed", stage_messages(1, "Analysis"))
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    empty = chat(fake_upstream, "fake-empty", stage_messages(1, "Analysis"))
    assert empty.json()["choices"][0]["message"]["content"] == ""


def test_serves_many_slow_requests_concurrently(fake_upstream):
    fake_upstream.script("gpt-5", latency=0.5)
    results: list[int] = []

    def one() -> None:
        results.append(chat(fake_upstream, "gpt-5", stage_messages(1, "Analysis")).status_code)

    threads = [threading.Thread(target=one) for _ in range(12)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 12
    assert time.monotonic() - started < 3.0


def test_stop_refuses_connections_and_restart_keeps_the_port():
    fake = FakeUpstream().start()
    port = fake.port
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    fake.start()
    try:
        assert fake.port == port
        assert httpx.get(f"{fake.base_url}/v1/models").status_code == 200
    finally:
        fake.stop()


def test_stop_also_closes_kept_alive_connections():
    fake = FakeUpstream().start()
    with httpx.Client(base_url=fake.base_url, timeout=2) as client:
        assert client.get("/v1/models").status_code == 200
        fake.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/v1/models")
