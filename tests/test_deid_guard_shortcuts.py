"""The guard's shortcuts refuse exactly what reading every text in full refuses: a pattern is skipped only in a
text that lacks the run of plain characters each of its matches holds (`council.deid._needle`), and dates
of birth are looked for only in a text that prints one of their years. Checked against the full reading
over thousands of generated prompts (planted identifiers in every spelling the guard knows, across line
starts, CJK name parts, the common-word names, every date format) and prompt pairs that share a long clean
start, as a run's calls do."""

from __future__ import annotations

import random
import re
from datetime import date
from unittest import mock

import pytest

from council import deid
from council.deid import IdentifierGuard, Identifiers, deidentify, fold

ANNA = Identifiers(
    names=("Anna-Maria Müller-Lüdenscheidt",),
    birth_dates=(date(2016, 3, 14),),
    record_numbers=("00447192", "WAVI-88213-X"),
    phrases=("Lindenhof School",),
    labels=("SYNTH-001",),
)
# A name of common words, a CJK name, and a label in several scripts.
GRACE = Identifiers(
    names=("Grace May Young", "王芳"),
    birth_dates=(date(1998, 11, 2), date(2001, 1, 5)),
    record_numbers=("MRN-5521",),
    labels=("Zoë Σοφία 患者 #017",),
)
SHORT = Identifiers(names=("Li Wu", "Jo O'Neil"), birth_dates=(date(2010, 7, 4),))
PEOPLE = [ANNA, GRACE, SHORT, Identifiers(), Identifiers(birth_dates=(date(2016, 3, 14),))]


def _full_reading(guard: IdentifierGuard, text: str) -> str | None:
    """What the guard found before its shortcuts: every pattern over the whole folded text, every date."""
    matcher, folded = guard._matcher, deid._Folded.of(text)
    groups = [
        (matcher.records, "a record number"),
        (matcher.phrases, "a redacted phrase"),
        (matcher.full_names, "the patient's name"),
        (matcher.single_names, "a name"),
        (matcher.word_names, "a name"),
    ]
    for patterns, kind in groups:
        for pattern in patterns:
            for match in re.finditer(pattern, folded.text):
                if match.end() > match.start():
                    start, _ = folded.original(match.start(), match.end())
                    if patterns is matcher.word_names and not deid._as_a_name(text, start):
                        continue
                    return kind
    births = set(guard.identifiers.birth_dates)
    if births:
        for hit in deid._find_dates(text, deid._order(text, guard.order)):
            if hit.value in births or hit.alternative in births:
                return "the date of birth"
        if any(m.group() in matcher.dob_compact for m in deid._COMPACT_DATE.finditer(text)):
            return "the date of birth"
    return None


# --- generated prompts ------------------------------------------------------------------------------------

PROSE = (
    "The recording shows elevated frontal theta (Fz Z = +2.10, Cz Z = -1.23) and a peak alpha frequency of 9.8 "
    "Hz; this may reflect drowsiness. Session 2 (day 23) P300 latency 253-364 ms, amplitude 11.5 µV. "
    "Theta/beta ratio 2.41 in 2016 norms; young adults differ. It will be reviewed. Grace period: none."
)
FILLER = [
    *PROSE.split(),
    "| Site | Delta | Theta |\n",
    "| O1 | 0.92 | 1.4 |\n",
    "## Review\n",
    "- one\n",
    "> q\n",
]


def _spellings(identifiers: Identifiers) -> list[str]:
    """What a prompt may carry of these identifiers: names in case, order, spacing and transliteration
    variants, parts alone, CJK parts; record numbers grouped and joined; dates of birth in every format."""
    out: list[str] = []
    for name in identifiers.names:
        parts = deid._name_tokens(name)
        out += [name, name.upper(), name.lower(), " ".join(reversed(parts)), ", ".join(reversed(parts))]
        out += ["  ".join(parts), "\n".join(parts), "-\n".join(parts), "".join(parts[:2])]
        out += [fold(name), name.replace("ü", "ue").replace("Ü", "UE"), name.replace("ü", "u")]
        out += ["Mu\u0308ller", "A. M. Müller", "Müller, A."] if "Müller" in name else []
        for part in parts:
            out += [part, part.upper(), part.lower(), part.capitalize(), f"Dr. {part}", f"reported by {part}"]
            out += [f"{part}'s", f"\n{part} tolerated it.", f". {part} came", f"| {part} |", part[:-1]]
    for label in identifiers.labels:
        out += [label, label.replace(" ", ""), *label.split(), label.lower()]
    for value in identifiers.record_numbers:
        digits = re.sub(r"\W", "", value)
        out += [value, value.lower(), digits, " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))]
        out += [value.replace("-", "\n"), value.replace("-", " / "), digits[:-1]]
    for day in identifiers.birth_dates:
        out += [
            day.isoformat(),
            day.strftime("%m/%d/%Y"),
            day.strftime("%d/%m/%Y"),
            day.strftime("%d.%m.%Y"),
            day.strftime("%d/%m/%y"),
            day.strftime("%m/%d/%y"),
            day.strftime("%Y%m%d"),
            day.strftime("%d%m%Y"),
            day.strftime("%d %B %Y"),
            day.strftime("%B %d, %Y"),
            day.strftime("%d\n%B\n%Y"),
            day.strftime("%b. %d %Y"),
            day.strftime("%B %Y"),
            f"{day.year}",
            f"/{day.year % 100:02d}",
        ]
    return out


def _prompt(rng: random.Random, spellings: list[str], *, words: int) -> str:
    pieces = [rng.choice(FILLER) for _ in range(words)]
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        if spellings:
            pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(spellings))
    glue = [" ", " ", " ", "\n", ", ", ". ", "-", ""]
    return "".join(piece + rng.choice(glue) for piece in pieces)


@pytest.mark.parametrize("identifiers", PEOPLE, ids=["anna", "grace", "short", "nobody", "birth-only"])
def test_the_guard_refuses_exactly_what_the_full_reading_refuses(identifiers):
    rng = random.Random(13)
    every = [s for people in PEOPLE for s in _spellings(people)]  # other people's too: they must pass
    guard = IdentifierGuard(identifiers)
    refused = passed = 0
    for _ in range(1500):
        text = _prompt(rng, every, words=rng.choice([3, 12, 60]))
        expected = _full_reading(guard, text)
        assert guard._find(text) == expected, text
        refused += expected is not None
        passed += expected is None
    assert passed > 300
    assert refused > 50 or not identifiers


def test_prompts_that_share_a_long_clean_start_are_each_read_as_a_whole():
    rng = random.Random(29)
    report = deidentify(_prompt(random.Random(1), [], words=3000), ANNA).text  # ~20,000 characters, clean
    guard = IdentifierGuard(ANNA)
    assert guard.find(report) is None
    spellings = _spellings(ANNA)
    for _ in range(50):
        # A run's calls: the same instructions and report, then what differs (another model's analysis).
        cut = rng.randrange(len(report) - 200, len(report))
        tail = _prompt(rng, spellings, words=rng.choice([2, 40]))
        for text in (report + tail, report[:cut] + tail, report[:cut] + "\n" + tail, tail + report):
            assert guard.find(text) == _full_reading(guard, text), text[-300:]
    # An identifier written across the point where the two texts part, and one just after it.
    for planted in ("Müller-\nLüdenscheidt", "0044\n7192", "14 March\n2016", "Anna"):
        for at in (len(report) - len(planted) // 2, len(report)):
            text = report[:at] + f" {planted} " + report[at:]
            assert guard.find(text) == _full_reading(guard, text) is not None


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?<![\w'])mue?ller[\s,.]*anna(?!\w)",
        r"(?:(?<![\w'])[am]\.\s?)*(?<![\w'])(?P<part>grace)(?!\w)(?:\s?,\s?[am]\.)?",
        r"(?<![\w'])0[\s/]?0[\s/]?4[^\w\n]{0,3}x(?![\w])",
        r"(?i:anna)mar",
        r"(?i)annamaria",
        r"ab|cd",
        r"王芳(?!\w)",
    ],
)
def test_every_match_of_a_pattern_holds_its_needle(pattern):
    needle = deid._needle(pattern)
    samples = [
        "mueller, anna",
        "muller anna",
        "a. grace, m.",
        "grace",
        "00 4-x",
        "004x",
        "ANNAmar",
        "annamar",
    ]
    samples += ["ANNAMARIA", "cd", "ab", "王芳", "x王芳"]
    found = [m.group() for s in samples for m in re.finditer(pattern, s)]
    assert found  # the samples reach the pattern
    assert all(needle in match for match in found)
    assert {
        r"(?i:anna)mar": "mar",
        r"(?i)annamaria": "",
        r"ab|cd": "",
        r"(?<![\w'])mue?ller[\s,.]*anna(?!\w)": "ller",
    }.get(pattern, needle) == needle


def test_a_text_without_a_birth_year_is_not_read_for_dates():
    guard = IdentifierGuard(ANNA)
    with mock.patch("council.deid._find_dates", wraps=deid._find_dates) as dates:
        assert guard.find("Seen on day 23 and day 61, norms of 2015 and 1998.") is None
        assert dates.call_count == 0
        assert guard.find("Seen on day 23, born 14/03/16.") == "the date of birth"
        assert dates.call_count == 1


def test_a_text_folds_as_a_whole_when_the_folding_of_a_text_it_starts_like_is_kept():
    rng = random.Random(7)
    # Runs of spaces and hyphens (one space when folded), marks that fold away, letters that fold to several.
    alphabet = [
        *"aZ09.,:'-_ \n\t",
        "\u2019",
        "  ",
        " -\n",
        "\u00a0",
        "\u2011",
        "ü",
        "u\u0308",
        "ß",
        "ﬃ",
        "王",
        "Σ",
        "İ",
    ]
    for _ in range(3000):
        start = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        earlier = start + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        text = start + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        assert deid._Folded.sharing(text, earlier, deid._Folded.of(earlier)) == deid._Folded.of(text), (
            earlier,
            text,
        )
