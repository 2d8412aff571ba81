"""An unlabelled birthplace or town of residence goes (council/deid.py `_places`): a capitalised place after a
birth or residence phrase, in many wordings, is `[PLACE]`, and the same town anywhere else in the text too;
clinical text that follows such phrases ("born at term", "raised in Fz", "in the left hemisphere") stays as
printed. The preview, the pipeline's text and the painted page images read the one rule; the guard lets the
de-identified text through."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from council.deid import PLACE, IdentifierGuard, Identifiers, deidentify, identifying_boxes

NONE = Identifiers()


def clean(text: str) -> str:
    return deidentify(text, NONE).text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Born on 3 March 2016 in Sacramento, CA, she attends school.",
            "Born on [DOB] in [PLACE], she attends school.",
        ),
        ("She was born in Sacramento, CA 95814.", "She was born in [PLACE]."),
        ("born on 05/03/2016 at Kaiser in Roseville, CA.", "born on [DOB] at [PLACE] in [PLACE]."),
        ("He was born in March 2016 in Modesto.", "He was born in [DATE] in [PLACE]."),
        ("born at 38 weeks in Fresno", "born at 38 weeks in [PLACE]"),
        ("born at Sutter Memorial Hospital", "born at [PLACE]"),
        ("Place of birth: Fresno", "Place of birth: [PLACE]"),
        ("place of birth - Fresno, California", "place of birth - [PLACE]"),
        ("Birthplace Sacramento", "Birthplace [PLACE]"),
        ("Birth place: San Luis Obispo, California, USA.", "Birth place: [PLACE]."),
        ("POB: Chico", "POB: [PLACE]"),
        ("Hometown: Eureka", "Hometown: [PLACE]"),
        (
            "A native of Lagos, Nigeria; moved to Fresno in 2019.",
            "A native of [PLACE]; moved to [PLACE] in 2019.",
        ),
        ("She was raised in Stockton by her grandparents.", "She was raised in [PLACE] by her grandparents."),
        ("born and raised in the Bay Area", "born and raised in the [PLACE]"),
        ("grew up in Winston-Salem, NC.", "grew up in [PLACE]."),
        ("lives in Elk Grove with her mother", "lives in [PLACE] with her mother"),
        ("Patient lives in Rio de Janeiro.", "Patient lives in [PLACE]."),
        ("born in St. Louis, Missouri.", "born in [PLACE]."),
        ("originally from Guadalajara, Mexico.", "originally from [PLACE]."),
        ("resides in Davis. Theta was elevated at Fz.", "resides in [PLACE]. Theta was elevated at Fz."),
        ("resident of Folsom", "resident of [PLACE]"),
        ("BORN IN Zürich, lives in Köln.", "BORN IN [PLACE], lives in [PLACE]."),
    ],
)
def test_a_place_after_a_birth_or_residence_phrase_goes(text, expected):
    assert clean(text) == expected


def test_the_town_named_so_goes_wherever_else_the_text_names_it():
    text = "Sacramento clinic, visit 2.\nHistory: born in Sacramento, CA.\nReturning to Sacramento in June."
    assert clean(text) == "[PLACE] clinic, visit 2.\nHistory: born in [PLACE].\nReturning to [PLACE] in June."
    # Only as written there: a word that merely holds it stays.
    assert clean("born in Davis. Davison scale 4.") == "born in [PLACE]. Davison scale 4."


CLINICAL = [
    "Born at term after an uncomplicated pregnancy.",
    "born at 38 weeks in a community hospital; born by C-section.",
    "Theta is raised in Fz, Cz and Pz; alpha raised in Occipital regions.",
    "Beta raised in Frontal sites, in the left hemisphere more than the right.",
    "Excess theta in Fz and in the left hemisphere (Z = +2.1).",
    "Raised in EC, reduced in EO; grew up in Stage 2 sleep.",
    "Amplitude raised in T3, T4, Fp1 and AF7 (12.5 µV).",
    "He was born in May 2016 and lives in the countryside with his parents.",
    "Session moved to week 3; moved to Eyes Closed recording.",
    "The recording was done in Fz referenced montage. P300 latency 312 ms at Pz.",
]


@pytest.mark.parametrize("text", CLINICAL)
def test_clinical_text_after_such_phrases_stays_as_printed(text):
    assert PLACE not in clean(text), clean(text)
    if "May 2016" not in text:
        assert clean(text) == text


def test_the_guard_lets_the_deidentified_text_through_and_the_place_is_marked_for_the_preview():
    text = "History: born in Sacramento, CA; raised in Elk Grove."
    result = deidentify(text, NONE)
    assert result.replaced[PLACE] == 2
    assert [result.text[a:b] for a, b in result.marks] == [PLACE, PLACE]
    assert IdentifierGuard(NONE).find(result.text) is None


@dataclass(frozen=True)
class Box:
    text: str
    left: float
    top: float
    right: float
    bottom: float


def test_a_scanned_page_has_the_place_painted_out_by_the_same_rule():
    words = ["Born", "in", "Sacramento", ",", "CA", "at", "term", ";", "theta", "raised", "in", "Fz"]
    line = [Box(word, 10.0 * i, 0, 10.0 * i + 8, 10) for i, word in enumerate(words)]
    painted = {box.text for box in identifying_boxes([line], NONE)}
    assert {"Sacramento", "CA"} <= painted
    assert not painted & {"Born", "in", "term", "theta", "raised", "Fz"}
