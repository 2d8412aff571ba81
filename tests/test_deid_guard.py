"""The guard in the CLIProxyAPI client: a payload carrying a known identifier, or a page image that is not
marked painted out, is refused before anything is sent, and the refusal names the kind, never the value."""

from __future__ import annotations

import base64
import io
import json
from datetime import date

import httpx
import pytest
import respx
from PIL import Image

from council.deid import (
    IdentifierGuard,
    IdentifierRefused,
    Identifiers,
    deidentify,
    is_painted_out,
    paint_out,
)
from tests.client_helpers import BASE, FakeTime, chat_body, make_client

ANNA = Identifiers(
    names=("Anna-Maria Müller-Lüdenscheidt",),
    birth_dates=(date(2016, 3, 14),),
    record_numbers=("00447192", "SYNTH-001"),
    phrases=("Lindenhof School",),
)
RAW = "Patient: MUELLER-LUDENSCHEIDT, Anna   DOB 14.03.2016   MRN 0044-7192   Lindenhof school"


def _png_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _page_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Seen: Müller-Lüdenscheidt.", "a name"),
        ("anna maria mueller luedenscheidt", "the patient's name"),
        ("born March 14, 2016", "the date of birth"),
        ("born 20160314", "the date of birth"),
        ("seen, DOB 14.03.16", "the date of birth"),
        ("file 3-14-16 attached", "the date of birth"),
        ("born 14 Mar '16", "the date of birth"),
        ("record 00447192", "a record number"),
        ("synth001", "a record number"),
        ("attends LINDENHOF-SCHOOL", "a redacted phrase"),
    ],
)
def test_the_guard_finds_each_kind_and_names_only_the_kind(text, kind):
    guard = IdentifierGuard(ANNA)
    assert guard.find(text) == kind
    with pytest.raises(IdentifierRefused) as refused:
        guard.check({"messages": [{"role": "user", "content": text}]}, where="the request to gpt-5")
    assert kind in refused.value.message and "gpt-5" in refused.value.message
    for value in ("Müller", "Lüdenscheidt", "2016", "00447192", "SYNTH", "Lindenhof"):
        assert value.lower() not in refused.value.message.lower()


def test_the_guard_passes_what_deidentify_made_of_the_same_text():
    guard = IdentifierGuard(ANNA)
    cleaned = deidentify(RAW, ANNA).text
    assert guard.find(RAW) is not None
    assert guard.find(cleaned) is None, cleaned


def test_images_must_be_marked_painted_out():
    guard = IdentifierGuard()
    plain = _png_url(_page_png())
    painted = _png_url(paint_out(_page_png(), []))
    assert not is_painted_out(plain) and is_painted_out(painted)
    assert not is_painted_out("https://example.org/page.png")
    assert not is_painted_out("data:image/png;base64,not-base64!")
    guard.check(
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": painted}}]}]}
    )
    for payload in (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": plain}}]}]},
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": plain}]}]},
    ):
        with pytest.raises(IdentifierRefused, match="not painted out"):
            guard.check(payload)


@respx.mock
async def test_the_client_refuses_an_identified_payload_and_sends_nothing():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(200, json=chat_body()))
    client = make_client(FakeTime(), guard=IdentifierGuard(ANNA))
    with pytest.raises(IdentifierRefused, match="date of birth"):
        await client.complete("gpt-5", [{"role": "user", "content": "Summary for DOB 2016-03-14"}])
    assert route.call_count == 0
    # The same request de-identified goes out.
    text = deidentify("Summary for DOB 2016-03-14", ANNA).text
    completion = await client.complete("gpt-5", [{"role": "user", "content": text}])
    assert completion.text == "hello" and route.call_count == 1
    assert "[DOB]" in json.loads(route.calls[0].request.content)["messages"][0]["content"]
    await client.aclose()


@respx.mock
async def test_the_client_checks_the_responses_fallback_payload_too():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(400, json={"error": {"message": "use /v1/responses", "code": "x"}})
    )
    responses = respx.post(f"{BASE}/v1/responses").mock(return_value=httpx.Response(200, json={}))
    client = make_client(FakeTime(), guard=IdentifierGuard(ANNA))
    client._responses_only.add("gpt-5")
    with pytest.raises(IdentifierRefused, match="name"):
        await client.complete("gpt-5", [{"role": "user", "content": "Müller-Lüdenscheidt, Anna"}])
    assert responses.call_count == 0
    await client.aclose()


@respx.mock
async def test_a_client_without_identifiers_still_refuses_unmarked_images():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(200, json=chat_body()))
    client = make_client(FakeTime())
    image = {"type": "image_url", "image_url": {"url": _png_url(_page_png())}}
    with pytest.raises(IdentifierRefused):
        await client.complete("gpt-5", [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}])
    assert route.call_count == 0
    await client.aclose()


def test_a_given_name_alone_is_refused_in_any_case():
    guard = IdentifierGuard(ANNA)
    for text in ("Anna tolerated the recording well.", "as ANNA said", "seen with anna", "Maria's sleep"):
        assert guard.find(text) == "a name", text
    # A hyphenated family name's first part alone too (only the last part was looked for before).
    assert guard.find("Müller reported headaches.") == "a name"


def test_each_word_of_the_patient_label_is_refused_alone_a_two_character_cjk_name_too():
    guard = IdentifierGuard(Identifiers(labels=("Zoë Σοφία Дмитрий 患者 #017",), names=("王芳",)))
    for text in ("Revised: ΣΟΦΙΑ showed", "дмитрий", "病历 患者 记录", "zoe", "Seen with 王芳 today"):
        assert guard.find(text) == "a name", text
    # Two Latin letters alone are too common to refuse; the label's number alone is not the label.
    assert IdentifierGuard(Identifiers(names=("Al Fox",))).find("al fine") is None
    assert guard.find("item 017 of 20") is None
    # A label's plain English words refuse only together: the prompts are English.
    plain = IdentifierGuard(Identifiers(labels=("SYNTH-BROWSER-CHANGES",)))
    assert plain.find("Required changes: none. Browser: n/a. Synth") is None
    assert plain.find("seen as browser changes") == "the patient's name"


MAY = Identifiers(names=("May Young",), birth_dates=(date(2016, 3, 14),))


@pytest.mark.parametrize(
    "text",
    [
        "May reflect drowsiness; this may also be medication.",
        "Frontal theta in a young adult.",
        "- May indicate an attention deficit.",
        "## May be relevant\n\nYoung children show more theta.",
        "Impression: May reflect drowsiness.",
        "| Young | 12.3 |",
        "The alpha peak may shift.\n\nMay 2: no change.",
    ],
)
def test_a_name_that_is_a_common_word_passes_where_it_is_a_word(text):
    """'May', 'Young' are words before they are names: lowercase, or capitalised where any word may be
    (a sentence's or a line's start, a table cell), they do not refuse the call."""
    assert IdentifierGuard(MAY).find(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "The recording was reviewed with May on day 23.",
        "as reported by Mr Young",
        "Seen: Dr. Young and M. Young.",
        "seen with A. May",
        "May Young",
        "young, may",
    ],
)
def test_a_name_that_is_a_common_word_is_refused_where_it_is_written_as_a_name(text):
    assert IdentifierGuard(MAY).find(text) in ("a name", "the patient's name"), text


def test_a_long_line_of_a_common_word_name_is_looked_through_at_once():
    """Each capitalised "May" had its whole line read back to its start: a model's 40 KB line of ". May"
    took the guard 14 s (a runner's event loop held with it); now what stands before it on its line within
    200 characters, as a title, an initial or a sentence's end does."""
    import time

    started = time.process_time()
    assert IdentifierGuard(MAY).find(". May" * 8000 + ".") is None  # each one starts a sentence: a word
    assert time.process_time() - started < 1.0
    assert IdentifierGuard(MAY).find("x" * 5000 + " reported by May.") == "a name"
    assert IdentifierGuard(MAY).find("x" * 5000 + ". May reflect drowsiness.") is None
