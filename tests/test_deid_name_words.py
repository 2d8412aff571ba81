"""De-identification of a name part that is also a common word ("May", "Will", "Grace",
council/name_words.txt): removed where it is written as a name, or beside another part of the name, and left
where it is a word, as the guard reads it; the full name goes, and is refused, in any case and order."""

from __future__ import annotations

import pytest

from council.deid import IdentifierGuard, Identifiers, deidentify


def clean(text: str, identifiers: Identifiers) -> str:
    return deidentify(text, identifiers).text


MAY = Identifiers(names=("May Lindqvist",))
WILL = Identifiers(names=("Will Grace Young",))


@pytest.mark.parametrize(
    ("identifiers", "text"),
    [
        (MAY, "This may reflect drowsiness; results may vary by session."),
        (WILL, "The alpha peak will shift. It will, by God's grace; young children show more theta."),
    ],
)
def test_a_name_part_that_is_a_common_word_stays_where_it_is_a_word(identifiers, text):
    """A patient called May does not turn every "may" into [NAME]: lowercase, the word is left as written."""
    assert clean(text, identifiers) == text


@pytest.mark.parametrize(
    ("identifiers", "text", "expected"),
    [
        (MAY, "May tolerated the recording well.", "[NAME] tolerated the recording well."),
        (
            MAY,
            "May reflect drowsiness.\n## May be relevant",
            "[NAME] reflect drowsiness.\n## [NAME] be relevant",
        ),
        (WILL, "Grace period of two weeks.", "[NAME] period of two weeks."),
    ],
)
def test_at_a_sentence_start_a_capitalised_name_word_goes_a_word_too_many_rather_than_a_name(
    identifiers, text, expected
):
    """Where any word may start, a capital says nothing: the name goes, and a word with it."""
    assert clean(text, identifiers) == expected


@pytest.mark.parametrize(
    ("identifiers", "text", "expected"),
    [
        (
            MAY,
            "The recording was reviewed with May on day 23.",
            "The recording was reviewed with [NAME] on day 23.",
        ),
        (MAY, "as reported by Dr. May", "as reported by Dr. [NAME]"),
        (MAY, "Seen: M. May and A. May.", "Seen: [NAME] and A. [NAME]."),
        (MAY, "Lindqvist, May said so.", "[NAME] said so."),
        (MAY, "may lindqvist was seen; LINDQVIST MAY too", "[NAME] was seen; [NAME] too"),
        (MAY, "Patient: May", "Patient: [NAME]"),
        (WILL, "Asked Will about sleep.", "Asked [NAME] about sleep."),
        (WILL, "Grace Young came in with her mother.", "[NAME] came in with her mother."),
        (WILL, "Young, Grace: no change.", "[NAME]: no change."),
        (WILL, "will grace young", "[NAME]"),
    ],
)
def test_a_name_part_that_is_a_common_word_goes_where_it_is_written_as_a_name(identifiers, text, expected):
    """Written as a name (capitalised where a word would not be, after a title or an initial), or beside
    another part of the name, it goes; the full name goes in any case and order."""
    assert clean(text, identifiers) == expected


def test_the_guard_passes_what_deidentification_left_and_still_refuses_the_full_name():
    for identifiers, text in [
        (MAY, "This may reflect drowsiness. May reflect medication. Reviewed with May; Lindqvist, may."),
        (WILL, "Will the peak shift? Grace Young came in. It will, by grace. Asked Will."),
    ]:
        guard = IdentifierGuard(identifiers)
        sent = clean(text, identifiers)
        assert guard.find(sent) is None, sent
    assert IdentifierGuard(MAY).find("results for may lindqvist") == "the patient's name"
    assert IdentifierGuard(MAY).find("Results. May Lindqvist was seen.") == "the patient's name"
    assert IdentifierGuard(WILL).find("young, grace will") == "the patient's name"
