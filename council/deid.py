"""De-identification: report text in, text with no patient identifier out; and the check on what leaves.

Pure text (and, for page images, pixels): no ORM, no HTTP. The caller hands over what the clinic knows about
the patient (`Identifiers`: names, dates of birth, record numbers, other phrases, the patient label, the
clinicians' redactions) and gets back text with:

- those identifiers in any spelling: case, spacing, hyphens, diacritics (NFKD, marks dropped, casefolded;
  ä/ö/ü also match ae/oe/ue), any name order ("Last, First", "First Middle Last"), a part of a name on its
  own, and initials written with a period next to a name part ("A. Müller", "Müller, A."). Bare initials
  ("AM") are left alone: they collide with electrode names, units and words far more often than they name
  anyone. A part that is also a common word ("May", "Will", "Grace": `NAME_WORDS`) goes only where it is
  capitalised (at a sentence start too: "May tolerated the recording") or beside another part of the name,
  so "may reflect" stays; the full name goes in any case. → `[NAME]`, `[DOB]`, `[ID]`, `[REDACTED]`;
- dates of birth in any of the date formats below, and as 8-digit runs (19840301, 01031984) → `[DOB]`; the
  recorded one also with a two-digit year in any shape (05.03.84, 3-5-84, 5 Mar 84), and any such date after a
  birth label ("DOB: 3.5.84");
- emails, phone numbers, street addresses, labelled record and device numbers (MRN, ID, Serial, S/N …) →
  `[EMAIL]`, `[PHONE]`, `[ADDRESS]`, `[ID]`;
- a place named after a birth or residence phrase ("born … in Sacramento", "place of birth: Fresno", "native
  of", "raised in", "lives in") and that town wherever else the text names it → `[PLACE]`;
- every other absolute date → `day N`, days after the anchor: the earliest such date in the report, which
  in a qEEG report is the first session, so `Session 2 (2024-03-24)` becomes `Session 2 (day 23)` and the
  longitudinal order survives. Month-and-year alone ("March 2024") → `[DATE]`. Bare years stay.

Measurements are never touched: every pattern needs a label, a separator shape or a length that numbers
printed as values (µV, ms, Hz, Z-scores, ranges such as 253-364 ms or 0.9-2.2) do not have.

`IdentifierGuard` is the last check before a payload leaves (council/client.py): it looks for the known
identifiers only (full names in any order, each part of a name alone, dates of birth, record numbers,
phrases) and for page images that are not marked as painted out, and says which kind it found, never the
value. A part of a name that is also a common English word (`NAME_WORDS`: "May", "Will", "Young", "Rose")
refuses a payload only where it is written as a name: capitalised and not at the start of a sentence or
line ("reported by May", "Mr Young"), so "may reflect", "young adult" and a sentence that begins "Will"
still go. Parts shorter than three letters (two for CJK) are only looked for inside the full name.

The patient label is matched whole like a record number, and its words like a name: two or more in a row, or
one alone when it is not plain ASCII (`Identifiers.labels`; an ASCII word alone may be any English word).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import io
import re
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol, TypeVar

NAME = "[NAME]"
DOB = "[DOB]"
ID = "[ID]"
EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
ADDRESS = "[ADDRESS]"
REDACTED = "[REDACTED]"
DATE = "[DATE]"
PLACE = "[PLACE]"

# What a painted-out page image carries (a PNG text chunk); the guard refuses any image without it.
PAINTED_KEY = "qeeg-deid"
PAINTED_VALUE = "painted-out"


@dataclass(frozen=True)
class Identifiers:
    """What the clinic knows identifies this patient. Kept locally; used only to find and remove."""

    names: tuple[str, ...] = ()
    birth_dates: tuple[date, ...] = ()
    record_numbers: tuple[str, ...] = ()  # MRN, device serials …
    phrases: tuple[str, ...] = ()  # anything else: addresses, a school, the clinicians' redactions
    # The patient's label as staff typed it ("Zoë Σοφία Дмитрий 患者 #017"): whole, like a record number; two
    # or more of its words in a row, and alone each word that no English text holds (outside ASCII), like a
    # name (a vendor may print only some of them, or drop a script its font lacks); and its numbers where
    # they stand next to a word of it ("[NAME] #017" leaves nothing).
    labels: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names or self.birth_dates or self.record_numbers or self.phrases or self.labels)


@dataclass(frozen=True)
class Deidentified:
    text: str
    anchor: date | None  # the date `day 0` stands for (None when the text has no date)
    replaced: Counter[str] = field(default_factory=Counter)  # token → how many times it was put in
    marks: tuple[tuple[int, int], ...] = ()  # where in `text` each replacement stands (for the preview)


class IdentifierRefused(Exception):
    """An outgoing payload carried a known identifier or an image not painted out; nothing was sent.
    `kind` says what was found ("name", "date of birth", …); the value itself is never kept here."""

    def __init__(self, kind: str, *, where: str = "the request", hint: str = "") -> None:
        self.kind = kind
        hint = hint or (
            "De-identification missed it: record it on the patient as an identifier (or add a redaction) "
            "and start the run again."
        )
        self.message = f"Refused to send {where}: it contained {kind}. Nothing was sent. {hint}"
        super().__init__(self.message)


# --- folding: matching that ignores case, diacritics, spacing and hyphen styles ------------------------------

_SEPARATORS = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2015\u2212_")
_APOSTROPHES = frozenset("'\u2019\u2018`\u00b4\u02bc")


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# What `_Folded.of` must look at one character at a time: a gap of two or more, or any non-ASCII character.
# Between them the text is ASCII, where folding is lower() and a one-character gap becomes a space, so a
# whole run is folded at C speed (a report of 80,000 characters: 10 ms instead of 35, every model call).
_GAP_CLASS = "\\s" + re.escape("".join(sorted(_SEPARATORS)))
_ONE_BY_ONE = re.compile(f"[{_GAP_CLASS}]{{2,}}|[^\\x00-\\x7f]")
_ASCII_FOLD = str.maketrans(
    {chr(c): " " for c in range(128) if chr(c).isspace() or chr(c) in _SEPARATORS}
    | {c: "'" for c in _APOSTROPHES if c.isascii()}
)


@dataclass
class _Folded:
    """The text casefolded, marks dropped, runs of spaces/hyphens as one space, with a map back."""

    text: str
    index: list[int]  # folded position → original position

    @classmethod
    def of(cls, text: str, start: int = 0) -> _Folded:
        """`start`: fold `text[start:]` only (positions still into `text`); `text[start - 1]` must not be a
        space or hyphen, so that no run of them is cut."""
        chars: list[str] = []
        index: list[int] = []
        done = start
        for match in _ONE_BY_ONE.finditer(text, start):
            start = match.start()
            if start > done:
                chars.append(text[done:start].lower().translate(_ASCII_FOLD))
                index.extend(range(done, start))
            ch = match.group()
            if len(ch) > 1 or ch.isspace() or ch in _SEPARATORS:
                chars.append(" ")  # a run of spaces/hyphens is one space (a run is always one match)
                index.append(start)
            else:
                folded = "'" if ch in _APOSTROPHES else _fold_char(ch)
                chars.append(folded)
                index.extend([start] * len(folded))
            done = match.end()
        if done < len(text):
            chars.append(text[done:].lower().translate(_ASCII_FOLD))
            index.extend(range(done, len(text)))
        return cls("".join(chars), index)

    def original(self, start: int, end: int) -> tuple[int, int]:
        return self.index[start], self.index[end - 1] + 1

    @classmethod
    def sharing(cls, text: str, earlier: str, folded: _Folded) -> _Folded:
        """`of(text)`, with the folding of `earlier` (`folded`) kept over the start the two texts share: a
        character folds on its own, except in a run of spaces and hyphens (one space), so up to the last
        shared character outside such a run `text` folds exactly as `earlier` did, and only the rest is
        folded. (A run's calls share their long start: instructions, report, fact table.)"""
        cut = shared_start(text, earlier)
        while cut and _GAP.match(text, cut - 1):
            cut -= 1
        kept = bisect.bisect_left(folded.index, cut)
        rest = cls.of(text, cut)
        return cls(folded.text[:kept] + rest.text, folded.index[:kept] + rest.index)


_GAP = re.compile(f"[{_GAP_CLASS}]")


def shared_start(a: str, b: str) -> int:
    """How many leading characters `a` and `b` share (halving over slices, which compare at C speed)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def fold(text: str) -> str:
    return _Folded.of(text).text


# German transliteration: Müller is also written Mueller, and either may be entered or printed.
_UMLAUT_BASE = {"ä": "a", "ö": "o", "ü": "u"}
_W = r"(?<![\w'])"  # word start in folded text
_WE = r"(?!\w)"  # word end (a name may be followed by 's)


def _token_pattern(token: str) -> str:
    """A regex for one name part, from its original spelling, to run over folded text."""
    out: list[str] = []
    chars = list(token)
    i = 0
    while i < len(chars):
        ch = chars[i].lower()
        nxt = chars[i + 1].lower() if i + 1 < len(chars) else ""
        if ch in _UMLAUT_BASE:
            out.append(_UMLAUT_BASE[ch] + "e?")
        elif ch in "aou" and nxt == "e" and i + 2 < len(chars) and chars[i + 2].isalpha():
            out.append(ch + "e?")
            i += 1
        elif ch in _APOSTROPHES:
            out.append("'?")
        else:
            out.append(re.escape(_fold_char(ch)))
        i += 1
    return "".join(out)


def _name_tokens(name: str) -> list[str]:
    """Parts of a name as entered: split on spaces, hyphens and commas ("Müller-Lüdenscheidt, Anna")."""
    return [
        t
        for t in re.split(r"[\s,\-\u2010\u2011\u2012\u2013\u2014\u2015\u2212_.]+", name.strip())
        if len(t.strip("'\u2019")) >= 2
    ]


def _distinct_alone(token: str) -> bool:
    """Whether a name part alone tells the patient apart (the guard looks for it on its own): three letters
    or more, or two of a script whose every character is a syllable or a word (CJK: "王芳")."""
    letters = token.strip("'\u2019")
    return len(letters) >= 3 or (
        len(letters) == 2 and all(unicodedata.east_asian_width(ch) in "WF" for ch in letters)
    )


# Words a label is often made of that name nobody ("Patient 017", "Case 12 test"): not taken as name parts.
_LABEL_GENERIC = frozenset(
    {"patient", "client", "subject", "case", "test", "demo", "record", "file", "pt", "id", "no", "nr"}
    | {"number", "mrn", "synthetic", "sample"}
)


def _label_words(label: str) -> list[str]:
    """The words of a patient label (parts with a letter), generic ones left out."""
    return [
        word
        for word in _name_tokens(label)
        if any(ch.isalpha() for ch in word) and fold(word).strip("#") not in _LABEL_GENERIC
    ]


def _compact(value: str) -> list[str]:
    """A record number's runs of letters and digits, folded: "MRN-00 4471a" → ["mrn", "00", "4471", "a"]."""
    return re.findall(r"[^\W\d_]+|\d+", fold(value))


def _compact_pattern(value: str) -> str | None:
    runs = _compact(value)
    joined = "".join(runs)
    if len(joined) < 3 or (joined.isdigit() and len(joined) < 4):
        return None  # too short to tell apart from a measurement or a word
    # Between runs a separator is optional, and may be a few marks as entered (SYNTH-001, SYNTH 001,
    # SYNTH001, synth_001, SYNTH/001, "患者 #017"); a long number may also be printed in groups (0044 7192,
    # 004-471-92), a short one only as entered.
    inner = r"[\s/]?" if len(joined) >= 6 else ""
    between = r"[^\w\n]{0,3}"
    return _W + between.join(inner.join(re.escape(ch) for ch in run) for run in runs) + r"(?![\w])"


# --- dates -------------------------------------------------------------------------------------------------

_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
}  # fmt: skip
_MONTH_ALIASES = {**_MONTHS, **{name[:3]: n for name, n in _MONTHS.items()}, "sept": 9}
_MONTH = r"(?P<{g}>" + "|".join(sorted(_MONTH_ALIASES, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<{g}>[0-3]?\d)(?:st|nd|rd|th)?"

_ISO = re.compile(
    r"(?<![\d.])(?P<y>(?:19|20)\d\d)(?P<s>[-/.])(?P<m>[01]?\d)(?P=s)(?P<d>[0-3]?\d)(?![\d]|\.\d)"
)
# Day and month in either order; "." is day-first by convention, "/" and "-" follow the text (see _order).
# A 2-digit year only with "/" (01.03.24 and 1-3-24 are too close to measurements and ranges).
_NUMERIC = re.compile(
    r"(?<![\d.,/\-])(?P<a>[0-3]?\d)(?P<s>[/.\-])(?P<b>[0-3]?\d)(?P=s)"
    r"(?P<y>(?:19|20)\d\d|(?<=/)\d\d)(?![\d]|[/\-]\d|\.\d)"
)
_TEXTUAL = re.compile(
    r"(?<![\w])(?:"
    + _DAY.format(g="d1")
    + r"(?:\s+of)?[\s\-]+"
    + _MONTH.format(g="m1")
    + r",?[\s\-]+(?P<y1>(?:19|20)\d\d)"
    + r"|"
    + _MONTH.format(g="m2")
    + r"\s+"
    + _DAY.format(g="d2")
    + r",?\s+(?P<y2>(?:19|20)\d\d)"
    + r")(?!\w)",
    re.IGNORECASE,
)
_MONTH_YEAR = re.compile(
    r"(?<![\w])" + _MONTH.format(g="m") + r",?\s+(?P<y>(?:19|20)\d\d)(?!\w)", re.IGNORECASE
)
# A date printed as a date of birth is one, recorded or not ("DOB: 03/14/2016", "born 14 March 2016").
_BIRTH_LABEL = re.compile(
    r"(?:\bD\.?O\.?B\.?|\bdate\s+of\s+birth|\bbirth\s*date|\bborn(?:\s+on)?|\bgeb(?:oren|\.))\s*[:.\-]?\s*(?:on\s+)?$",
    re.IGNORECASE,
)
_COMPACT_DATE = re.compile(r"(?<![\w.])\d{8}(?!\w|\.\d)")
# A two-digit-year date right after a birth label is a date of birth, recorded or not ("DOB: 3.5.84",
# "born 05 03 84", "Date of birth: 5 Mar 84"); elsewhere such shapes stay (too close to measurements).
_SHORT_YEAR_DATES = (
    re.compile(r"(?<![\d.,/\-])[0-3]?\d(?P<s>[.\- ])[0-3]?\d(?P=s)\d\d(?![\d]|[./\-]\d)"),
    re.compile(
        r"(?<!\w)(?:"
        + _DAY.format(g="d1")
        + r"(?:\s+of)?[\s\-]+"
        + _MONTH.format(g="m1")
        + r"|"
        + _MONTH.format(g="m2")
        + r"[\s\-]+"
        + _DAY.format(g="d2")
        + r"),?[\s\-]+['\u2019]?\d\d(?!\w)",
        re.IGNORECASE,
    ),
)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:
        year += 2000 if year <= date.today().year % 100 else 1900
    return year


def _order(text: str, default: str) -> str:
    """ "dmy" or "mdy" for slash/dash dates: a first field over 12 proves day-first, a second one
    month-first; a text that shows neither (or both) gets the default."""
    day_first = month_first = False
    for match in _NUMERIC.finditer(text):
        if match["s"] == ".":
            continue
        a, b = int(match["a"]), int(match["b"])
        day_first |= a > 12 >= b
        month_first |= b > 12 >= a
    if day_first != month_first:
        return "dmy" if day_first else "mdy"
    return default


def date_order(text: str, default: str = "mdy") -> str:
    """How `text` writes its numeric dates ("dmy" or "mdy"), as de-identification reads them."""
    return _order(text, default)


@dataclass(frozen=True)
class _DateHit:
    start: int
    end: int
    value: date | None  # None for month-year only
    alternative: date | None = None  # the other reading of an ambiguous numeric date


def _find_dates(text: str, order: str) -> list[_DateHit]:
    hits: list[_DateHit] = []
    for match in _ISO.finditer(text):
        if value := _safe_date(int(match["y"]), int(match["m"]), int(match["d"])):
            hits.append(_DateHit(match.start(), match.end(), value))
    for match in _NUMERIC.finditer(text):
        a, b, year = int(match["a"]), int(match["b"]), _year(match["y"])
        day_first = match["s"] == "." or order == "dmy"
        value = _safe_date(year, b, a) if day_first else _safe_date(year, a, b)
        other = _safe_date(year, a, b) if day_first else _safe_date(year, b, a)
        if value or other:
            hits.append(_DateHit(match.start(), match.end(), value or other, other if value else None))
    for match in _TEXTUAL.finditer(text):
        day, month, year = (match["d1"], match["m1"], match["y1"]) if match["d1"] else (
            match["d2"], match["m2"], match["y2"]
        )  # fmt: skip
        if value := _safe_date(int(year), _MONTH_ALIASES[month.lower()], int(day)):
            hits.append(_DateHit(match.start(), match.end(), value))
    for match in _MONTH_YEAR.finditer(text):
        hits.append(_DateHit(match.start(), match.end(), None))
    return hits


def parse_date(value: str, *, order: str = "mdy") -> date | None:
    """One date as a person would enter it (2024-03-01, 03/01/2024, 1 March 2024, 01.03.2024 …)."""
    value = value.strip()
    for hit in _find_dates(value, order):
        if hit.value is not None and hit.start == 0 and hit.end == len(value):
            return hit.value
    return None


def _compact_forms(day: date) -> set[str]:
    return {day.strftime("%Y%m%d"), day.strftime("%d%m%Y"), day.strftime("%m%d%Y")}


def _short_year_patterns(day: date) -> tuple[str, list[re.Pattern[str]]]:
    """A recorded date of birth written with a two-digit year in the forms the general date patterns leave
    alone as too close to measurements (05.03.84, 3-5-84, 84-03-05, 5 Mar 84, March 5th, '84): only these
    digits, so no measurement is taken for it. Over the original text (a hyphen is not folded to a space: a
    table row "5 3 84" is no date). Returns the year's two digits, which every match holds, and the patterns."""
    yy = f"{day.year % 100:02d}"
    d, m = (f"0?{n}" if n < 10 else str(n) for n in (day.day, day.month))
    before, after = r"(?<![\w.,/\-])", r"(?![\w]|[./\-]\d)"
    numeric = [
        re.compile(before + rf"{first}(?P<s>[.\-]){second}(?P=s){yy}" + after)
        for first, second in ((d, m), (m, d))
    ]
    numeric.append(re.compile(before + rf"{yy}(?P<s>[.\-]){m}(?P=s){d}" + after))
    months = "|".join(sorted((a for a, n in _MONTH_ALIASES.items() if n == day.month), key=len, reverse=True))
    ordinal = rf"{d}(?:st|nd|rd|th)?"
    textual = re.compile(
        rf"(?<!\w)(?:{ordinal}(?:\s+of)?[\s\-]+(?:{months})\.?|(?:{months})\.?[\s\-]+{ordinal}),?[\s\-]+['\u2019]?{yy}"
        r"(?!\w)",
        re.IGNORECASE,
    )
    return yy, [*numeric, textual]


# --- generic patterns ------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# What follows an email label is one even when OCR misread its @ ("jose.obrien+qeegcMail.Example.COM").
_EMAIL_LABELLED = re.compile(r"(?i)(?<!\w)e-?mail\s*:\s*(?P<v>[\w.+\-]*[@.][\w.+\-@]*\w)")
_PHONE_LABELLED = re.compile(
    r"(?<!\w)(?:phone|tel(?:ephone)?|mobile|cell|fax|ph|home|work|office|contact|call)\.?(?:\s*(?:no\.?|number|#))?"
    r"\s*[:.]?\s*"
    r"(?P<v>\+?\(?\d[\d()\s.\-]{5,}\d)",
    re.IGNORECASE,
)
_PHONE_PATTERNS = [
    # +CC then groups split by single spaces or hyphens, 8 to 15 digits (a "+1.23" Z-score never matches).
    re.compile(r"(?<![\w+.])\+\d{1,3}(?:[ \-]\(?\d{1,4}\)?)(?:[ \-]\d{2,4}){1,4}(?![\w]|\.\d)"),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567.
    re.compile(r"(?<![\w.\-])(?:\(\d{3}\)\s?|\d{3}[\-.])\d{3}[\-.]\d{4}(?![\w]|[.\-]\d)"),
    # Trunk-prefixed national numbers: 020 7946 0958, 07700 900123.
    re.compile(r"(?<![\w.\-])0\d{2,4} \d{3,4} ?\d{3,4}(?![\w]|[.\-]\d)"),
    # Ten digits run together, as a North American number is stored: no measurement is printed so.
    re.compile(r"(?<![\w.,+\-])[2-9]\d{9}(?![\w]|[.,]\d)"),
]
_STREET_TYPES = (
    r"Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Close|"
    r"Crescent|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Row|Mews|Gardens"
)
_ADDRESS_PATTERNS = [
    re.compile(
        r"(?im)(?<!\w)(?:address|addr\.|residence|home address|mailing(?: address)?|postal address)\s*:[ \t]*"
        r"(?P<v>\S[^\n]*)"
    ),
    # A post-office box, with its town and ZIP code when they follow.
    re.compile(
        r"(?<!\w)(?i:P\.?\s?O\.?\s?Box)\s+\d+(?:,\s*[A-Z][a-z'.\-]+(?:\s[A-Z][a-z'.\-]+){0,2}){0,2}"
        r"(?:,?\s+(?:[A-Z]{2}\s+)?\d{5}(?:-\d{4})?)?"
    ),
    re.compile(
        r"(?<![\w.])\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][\w'.\-]*\s+){1,4}(?:" + _STREET_TYPES + r")\b\.?"
        r"(?:,?\s*(?:Apt|Apartment|Suite|Unit|Flat|#)\.?\s*\w+)?"
        r"(?:,\s*[A-Z][a-z'.\-]+(?:\s[A-Z][a-z'.\-]+){0,2}){0,2}"  # town, county
        r"(?:,?\s+(?:[A-Z]{2}\s+)?\d{5}(?:-\d{4})?|,?\s+[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2})?"  # ZIP, postcode
    ),
    re.compile(
        r"(?<!\w)[A-ZÄÖÜ][\wäöüß\-]*(?:straße|strasse|str\.|weg|gasse|allee|platz)\s+\d{1,4}[a-z]?\b"
        r"(?:,\s*\d{4,5}\s+[A-ZÄÖÜ][\wäöüß\-]*)?"
    ),
]
# A name printed after a name label is one, recorded or not: "Patient: MÜLLER, Anna", "Name: A. Müller".
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][\w'\u2019\-.]*"
_NAME_LABELLED = re.compile(
    r"(?<![\w])(?i:patient(?:'s)?(?:\s+name)?|(?:full\s+|client\s+|first\s+|last\s+|family\s+)?name|client)"
    r"\s*:[ \t]*(?P<v>" + _NAME_WORD + r"(?:,?[ \t]" + _NAME_WORD + r"){0,3})"
)
_RECORD_LABEL = (
    r"MRN|MR\s?#|medical\s+record(?:\s+(?:number|no\.?|#))?|record\s+(?:number|no\.?|#)|"
    r"patient\s+(?:id|number|no\.?|#)|chart\s+(?:number|no\.?|#)|account\s+(?:number|no\.?|#)|acct\.?|"
    r"serial(?:\s+(?:number|no\.?|#))?|s/n|sn|device\s+(?:id|serial)|accession(?:\s+(?:number|no\.?|#))?|"
    r"nhs\s+(?:number|no\.?)|ssn|social\s+security\s+(?:number|no\.?)|insurance\s+(?:id|number|no\.?)|id"
)
# A place named after a birth or residence phrase ("born on … in Sacramento", "place of birth: Fresno",
# "birthplace Sacramento, CA", "native of Lagos", "raised in …", "lives in …"): capitalised words, with
# "de"/"of"/"upon"… inside and a state or country after a comma. Hand-written like the rest (no NER model):
# it needs one of these phrases, so a town named anywhere else in a report goes only once one of them named
# it (`_places`). What follows such a phrase and is clinical (an electrode, a region, a band, a month, "the
# left hemisphere") stays: see `_PLACE_STOP`.
_PLACE_WORD = r"(?:(?:St|Mt|Ft)\.|[A-ZÀ-ÖØ-Þ][\w'\u2019]*(?:-[A-ZÀ-ÖØ-Þ][\w'\u2019]*)*)"
_PLACE_NAME = (
    _PLACE_WORD
    + r"(?:[ \t]+(?:(?:de|da|do|del|della|la|le|los|las|of|on|upon|am|an|sur|en)[ \t]+)?"
    + _PLACE_WORD
    + r"){0,4}"
)
# Capitalised words after such a phrase that name no place in a qEEG report: electrodes (Fz, Fp1, T3, AF7),
# regions, sides, bands, states of the recording, months and the like. The place ends before the first.
_ELECTRODE = re.compile(r"[A-Z]{1,2}[a-z]?(?:\d{1,2}|z)")
_PLACE_STOP = frozenset(
    {"left", "right", "both", "frontal", "prefrontal", "occipital", "parietal", "temporal", "central"}
    | {"midline", "anterior", "posterior", "lateral", "medial", "bilateral", "hemisphere", "region", "lobe"}
    | {"delta", "theta", "alpha", "beta", "gamma", "smr", "hz", "eyes", "open", "closed", "ec", "eo", "stage"}
    | {"session", "sessions", "baseline", "week", "weeks", "term", "preterm", "utero"}
    | {"and", "or", "with", "where", "while", "but", "then", "since", "after", "before", "during", "at"}
    | {"the", "a", "an", "this", "that", "her", "his", "their", "our", "is", "was", "he", "she", "they"}
    | {"i", "we", "it", "in", "on", "to", "from", "by", "for", "of", "no", "not", "patient", "client"}
    | set(_MONTH_ALIASES)
    | {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
)
# The first word may not be one of them: then a later "in" of the sentence is tried ("born in March 2016
# in Modesto").
_PLACE_FIRST = (
    r"(?!(?i:" + "|".join(sorted(_PLACE_STOP, key=len, reverse=True)) + r")(?![\w'\u2019]))"
    r"(?!" + _ELECTRODE.pattern + r"(?!\w))"
)
_PLACE_AFTER = re.compile(
    r"(?:"
    r"(?i:\b(?:place|city|town|country|state)[ \t]+of[ \t]+birth)"
    r"|(?i:\bbirth[ \t]*place)|\bPOB\b|(?i:\bhome[ \t]*town)"
    r"|(?i:\bnative[ \t]+of)|(?i:\b(?:raised|grew[ \t]+up|brought[ \t]+up)[ \t]+in)"
    r"|(?i:\b(?:lives|living|lived|resides|residing|resided|resident|settled)[ \t]+(?:in|of|at))"
    r"|(?i:\b(?:originally|hails)[ \t]+from)"
    r"|(?i:\b(?:moved|relocated|emigrated|immigrated)[ \t]+(?:here[ \t]+|back[ \t]+)?(?:from|to))"
    r")(?!\w)[ \t]*[:\-]?[ \t]*(?:(?i:the)[ \t]+)?"
    r"(?P<v>"
    + _PLACE_FIRST
    + _PLACE_NAME
    + r"(?:[ \t]*,[ \t]*"
    + _PLACE_NAME
    + r"){0,2}(?:,?[ \t]+\d{5}(?:-\d{4})?)?)"
)


# After "born", each "in" or "at" before the sentence ends: "born on 5 March 2016 at Kaiser in Roseville",
# "born and raised in …", "born at 38 weeks in Fresno" ("at term", "at 38 weeks" have no capital).
_BORN = re.compile(r"(?i:\bborn\b)(?:[^\n;.]|\.(?![ \t]+[A-Z])){0,80}")
_BORN_IN = re.compile(
    r"(?<!\w)(?i:in|at)[ \t]+(?:(?i:the)[ \t]+)?(?P<v>"
    + _PLACE_FIRST
    + _PLACE_NAME
    + r"(?:[ \t]*,[ \t]*"
    + _PLACE_NAME
    + r"){0,2}(?:,?[ \t]+\d{5}(?:-\d{4})?)?)"
)


def _place_end(text: str, start: int, end: int) -> int:
    """Where the place at `text[start:end]` ends: before its first word that names no place (its start when
    the first one is such a word), trailing separators left out."""
    for word in re.finditer(r"[^\s,.\-]+(?:\.(?=\S))?", text[start:end]):
        if _ELECTRODE.fullmatch(word.group()) or fold(word.group()).strip(".") in _PLACE_STOP:
            end = start + word.start()
            break
    while end > start and text[end - 1] in " \t,-":
        end -= 1
    return end


def _places(text: str) -> list[tuple[int, int]]:
    """Places named after a birth or residence phrase, and the same town (its first part, "Sacramento" of
    "Sacramento, CA") wherever else the text names it, capitalised as there."""
    found: list[tuple[int, int]] = []
    matches = [*_PLACE_AFTER.finditer(text)]
    for born in _BORN.finditer(text):
        matches += [
            m for m in _BORN_IN.finditer(text, born.start(), born.end() + 60) if m.start() < born.end()
        ]
    for match in matches:
        start = match.start("v")
        end = _place_end(text, start, match.end("v"))
        if end > start:
            found.append((start, end))
    towns = {re.split(r",", text[start:end])[0].strip() for start, end in found}
    for town in sorted(towns, key=len, reverse=True):
        for match in re.finditer(rf"(?<![\w'\u2019]){re.escape(town)}(?![\w'\u2019])", text):
            found.append((match.start(), match.end()))
    return found


_RECORD_LABELLED = re.compile(
    r"(?<![\w])(?:" + _RECORD_LABEL + r")\s*(?:number|no\.?|#)?\s*[:#=]?\s*"
    r"(?P<v>(?=[\w\-/.]*\d)[A-Za-z0-9][A-Za-z0-9\-/.]{2,}[A-Za-z0-9])",
    re.IGNORECASE,
)


# --- finding and replacing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    token: str
    priority: int
    value: date | None = None  # dates become offsets once the anchor is known


# Given and family names that are also common English words (and the qEEG band names), from
# council/name_words.txt: alone, the guard refuses one of them only where it is written as a name (see
# `_as_a_name`); de-identification replaces it wherever capitalised (a sentence's start too) and beside
# another part of the name (`_Matcher._word_parts`), so a patient called May does not turn every lowercase
# "may" of a report into [NAME]. The full name goes anywhere.
NAME_WORDS = frozenset(
    word
    for line in (Path(__file__).with_name("name_words.txt")).read_text(encoding="utf-8").splitlines()
    if not line.startswith("#")
    for word in line.split()
)
# Where a capital letter says nothing: a line's start (after a list, heading or quote mark), after a
# sentence's end, a colon or a table cell's bar, and after an opening bracket or quote there.
_SENTENCE_START = re.compile(r"(?:^\s*(?:[#>*+\-]+|\d+[.)])?|[.!?:;|])[\s\"'(\[*_]*$")
# What makes the next word a name wherever it stands: an initial ("A. May") or a title ("Dr. Young").
_NAME_BEFORE = re.compile(r"(?:(?<![\w.])[A-Z]\.|\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof))\.?\s*$")


def _as_a_name(text: str, start: int) -> bool:
    """Whether the word at `start` of `text` is written as a name: capitalised, and not where any word may
    be (a sentence's or a line's start), unless an initial or a title stands before it."""
    if not text[start : start + 1].isupper():
        return False
    # What stands before it on its line, the last _LOOK_BACK characters of it: read whole at every match, a
    # long line of ". May" (40 KB) took the guard 14 s, with a runner's event loop held. A longer line is
    # cut with a letter in front, so its cut is no line start.
    low = max(0, start - _LOOK_BACK)
    newline = text.rfind("\n", low, start)
    if newline >= 0:
        line = text[newline + 1 : start]
    elif low == 0:
        line = text[:start]
    else:
        line = "x" + text[low:start]
    return bool(_NAME_BEFORE.search(line)) or not _SENTENCE_START.search(line)


_LOOK_BACK = 200


_BESIDE = re.compile(r"[ \t,\-\u2010\u2011\u2013]{1,3}")


def _beside(text: str, span: tuple[int, int], other: tuple[int, int]) -> bool:
    """Whether two spans of `text` are neighbouring words of one name: apart by a space, comma or hyphen
    only (no sentence end, no line break)."""
    gap = text[span[1] : other[0]] if span[1] <= other[0] else text[other[1] : span[0]]
    return (span[1] <= other[0] or other[1] <= span[0]) and bool(_BESIDE.fullmatch(gap))


@functools.lru_cache(maxsize=1024)
def _needle(pattern: re.Pattern[str] | str) -> str:
    """The longest run of plain characters that every match of `pattern` holds, read from the pattern's own
    parse: its top-level items in order, groups opened (a group without an alternative or a flag matches
    its items one after another), a run broken by anything that is not one plain character (a class, a
    repeat, an alternative, an assertion). A text without it holds no match, so the guard skips the pattern
    there. '' (found in every text) where the pattern ignores case or cannot be read."""
    compiled = re.compile(pattern)
    if compiled.flags & re.IGNORECASE:
        return ""
    try:
        from re import _constants, _parser

        items = _parser.parse(compiled.pattern, compiled.flags).data
    except Exception:  # another Python's private parser: no skipping, every pattern runs
        return ""
    runs = [""]

    def walk(items: list) -> None:
        for op, value in items:
            if op == _constants.LITERAL:
                runs[-1] += chr(value)
            elif op == _constants.SUBPATTERN and not value[1] and not value[2]:
                walk(value[3].data)
            else:
                runs.append("")

    walk(items)
    return max(runs, key=len)


class _Matcher:
    """The known identifiers compiled to patterns over folded text."""

    def __init__(self, identifiers: Identifiers) -> None:
        self.identifiers = identifiers
        self.name_parts: list[re.Pattern[str]] = []
        self.full_names: list[re.Pattern[str]] = []
        # Each part of a name alone (three letters or more), for the guard; those that are also words apart.
        self.single_names: list[re.Pattern[str]] = []
        self.word_names: list[re.Pattern[str]] = []
        # De-identification's patterns of the parts that are also words: kept only where written as a name.
        self.word_parts: list[re.Pattern[str]] = []
        for name in identifiers.names:
            tokens = _name_tokens(name)
            if not tokens:
                continue
            parts = [_token_pattern(t) for t in tokens]
            initials = "".join(sorted({re.escape(fold(t)[0]) for t in tokens}))
            initial = rf"(?:{_W}[{initials}]\.\s?)"
            for i, (token, part) in enumerate(zip(tokens, parts, strict=True)):
                # A part alone, with initials of the name written before it ("A. M. Müller") or after it
                # ("Müller, A."); and two adjacent parts run together ("AnnaMaria"). Up to four initials: an
                # unbounded run backtracked at every initial of a page of them ("A. A. A. …", 12 KB: 4 s).
                alone_or_initialled = re.compile(
                    rf"{initial}{{0,4}}{_W}(?P<part>{part}){_WE}"
                    rf"(?:\s?,\s?[{initials}]\.(?:\s?[{initials}]\.){{0,3}})?"
                )
                (self.word_parts if fold(token) in NAME_WORDS else self.name_parts).append(
                    alone_or_initialled
                )
                if i + 1 < len(parts):
                    self.name_parts.append(re.compile(rf"{_W}{part}{parts[i + 1]}{_WE}"))
            if len(parts) > 1:
                for k in range(len(parts)):
                    # Every rotation: "anna maria muller", "muller, anna maria", "maria muller anna"…
                    rotated = parts[k:] + parts[:k]
                    self.full_names.append(re.compile(_W + r"[\s,.]*".join(rotated) + _WE))
                self.full_names.append(re.compile(_W + r"[\s,.]*".join(reversed(parts)) + _WE))
            for token, part in zip(tokens, parts, strict=True):
                if _distinct_alone(token):
                    alone = re.compile(_W + part + _WE)
                    (self.word_names if fold(token) in NAME_WORDS else self.single_names).append(alone)
        for label in identifiers.labels:
            words = _label_words(label)
            for word in words:
                # A word of the label alone only where it cannot be an English word of the prompts: a label
                # "SYNTH-BROWSER-CHANGES" must not refuse every text with "changes" in it.
                if not word.isascii() and _distinct_alone(word):
                    alone = re.compile(_W + _token_pattern(word) + _WE)
                    self.name_parts.append(alone)
                    self.single_names.append(alone)
            # Two or more of its words in a row, as in the label, whatever they are.
            parts = [_token_pattern(word) for word in words]
            self.full_names.extend(
                re.compile(_W + r"[\s,.]*".join(parts[i:j]) + _WE)
                for i in range(len(parts))
                for j in range(i + 2, len(parts) + 1)
            )
        self.records = [
            p for v in (*identifiers.record_numbers, *identifiers.labels) if (p := _compact_pattern(v))
        ]
        self.label_numbers = frozenset(n for label in identifiers.labels for n in re.findall(r"\d+", label))
        self.phrases = [p for v in identifiers.phrases if (p := _compact_pattern(v))]
        self.dob_compact = {form for day in identifiers.birth_dates for form in _compact_forms(day)}
        self.dob_short = [_short_year_patterns(day) for day in identifiers.birth_dates]

    def known(self, folded: _Folded, *, strict: bool, text: str = "") -> Iterator[tuple[int, int, str, str]]:
        """(start, end, token, kind) in original positions. strict: what the guard looks for in `text`
        (the original of `folded`)."""
        groups: list[tuple[Iterable[re.Pattern[str] | str], str, str]] = [
            (self.records, ID, "a record number"),
            (self.phrases, REDACTED, "a redacted phrase"),
        ]
        if strict:
            groups += [
                (self.full_names, NAME, "the patient's name"),
                (self.single_names, NAME, "a name"),
                (self.word_names, NAME, "a name"),
            ]
        else:
            groups += [(self.full_names, NAME, "the patient's name"), (self.name_parts, NAME, "a name")]
        named: list[tuple[int, int]] = []
        for patterns, token, kind in groups:
            as_written = strict and patterns is self.word_names
            for pattern in patterns:
                if strict and _needle(pattern) not in folded.text:
                    continue  # it cannot match here: each of its matches holds that text
                for match in re.finditer(pattern, folded.text):
                    if match.end() > match.start():
                        start, end = folded.original(match.start(), match.end())
                        if as_written and not _as_a_name(text, start):
                            continue
                        if token == NAME:
                            named.append((start, end))
                        yield start, end, token, kind
        for year, patterns in self.dob_short:
            if year in text:
                for pattern in patterns:
                    for match in pattern.finditer(text):
                        yield match.start(), match.end(), DOB, "the date of birth"
        if not strict:
            yield from self._word_parts(folded, text, named)

    def _word_parts(
        self, folded: _Folded, text: str, named: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int, str, str]]:
        """The parts of a name that are also words ("May", "Will", "Grace"), where they may be a name:
        capitalised (a sentence's start included), with an initial of the name beside it ("May, A."), or
        next to another part of the name found as one ("Smith, may"; "grace may"). Lowercase elsewhere
        they are words ("may reflect", "it will") and stay."""
        found: list[tuple[int, int, bool]] = []
        for pattern in self.word_parts:
            for match in re.finditer(pattern, folded.text):
                start, end = folded.original(match.start(), match.end())
                initialled = match.start("part") > match.start() or match.end("part") < match.end()
                word_start = folded.original(match.start("part"), match.end("part"))[0]
                # Capitalised even where any word may start: "May tolerated the recording." must not go,
                # and "May reflect drowsiness." losing a word is the smaller harm (the guard, which fails a
                # run, reads the sentence start as a word: `_as_a_name`).
                found.append((start, end, initialled or text[word_start : word_start + 1].isupper()))
        kept = [(start, end) for start, end, as_name in found if as_name]
        waiting = [(start, end) for start, end, as_name in found if not as_name]
        grew = True
        while grew:  # a part beside a kept one is a name too ("Grace May" when May is written as one)
            grew = False
            for span in list(waiting):
                if any(_beside(text, span, other) for other in (*named, *kept)):
                    waiting.remove(span)
                    kept.append(span)
                    grew = True
        for start, end in kept:
            yield start, end, NAME, "a name"


_EDGES = " \t\n,;:.-\u2010\u2011\u2013\u2014"


def _resolve(text: str, spans: list[_Span]) -> list[_Span]:
    """Keep the strongest span where spans overlap (priority, then length), in text order. What a weaker
    span holds beyond a stronger one goes too, as its own span ("Address: [a recorded street], Apt 4B,
    Springfield 62704" loses the flat and the town as well); a date only goes whole."""
    kept: list[_Span] = []
    starts: list[int] = []
    for span in sorted(spans, key=lambda s: (-s.priority, -(s.end - s.start), s.start)):
        i = bisect.bisect_left(starts, span.start)
        j = i - 1 if i > 0 and kept[i - 1].end > span.start else i
        stronger = []
        while j < len(kept) and kept[j].start < span.end:
            stronger.append(kept[j])
            j += 1
        if not stronger:
            kept.insert(i, span)
            starts.insert(i, span.start)
            continue
        if span.value is not None or span.token == DATE:
            continue
        at = span.start
        for edge in (*stronger, None):
            gap_start, gap_end = at, min(edge.start, span.end) if edge else span.end
            piece = text[gap_start:gap_end]
            start = gap_start + len(piece) - len(piece.lstrip(_EDGES))
            end = gap_end - (len(piece) - len(piece.rstrip(_EDGES)))
            if any(ch.isalnum() for ch in text[start:end]):
                k = bisect.bisect_left(starts, start)
                kept.insert(k, _Span(start, end, span.token, span.priority))
                starts.insert(k, start)
            if edge is not None:
                at = max(at, edge.end)
    return kept


def _merge_names(text: str, spans: list[_Span]) -> list[_Span]:
    """ "[NAME], [NAME]" and "[NAME] [NAME]" are one name: the parts of "Müller, Anna" are found apart."""
    merged: list[_Span] = []
    for span in spans:
        if (
            merged
            and span.token == NAME
            and merged[-1].token == NAME
            and re.fullmatch(r"[\s,.\-\u2010\u2011\u2013\u2014]*", text[merged[-1].end : span.start])
        ):
            merged[-1] = _Span(merged[-1].start, span.end, NAME, merged[-1].priority)
        else:
            merged.append(span)
    return merged


def _spans(text: str, matcher: _Matcher, order: str) -> list[_Span]:
    folded = _Folded.of(text)
    spans = [_Span(m.start(), m.end(), EMAIL, 90) for m in _EMAIL.finditer(text)]
    spans += [_Span(m.start("v"), m.end("v"), EMAIL, 90) for m in _EMAIL_LABELLED.finditer(text)]
    for start, end, token, _ in matcher.known(folded, strict=False, text=text):
        spans.append(_Span(start, end, token, 80 if token != NAME else 75))
    dobs = set(matcher.identifiers.birth_dates)
    for hit in _find_dates(text, order):
        if hit.value is None:
            spans.append(_Span(hit.start, hit.end, DATE, 30))
        elif (
            hit.value in dobs
            or hit.alternative in dobs
            or _BIRTH_LABEL.search(text, max(0, hit.start - 40), hit.start)
        ):
            spans.append(_Span(hit.start, hit.end, DOB, 85))
        else:
            spans.append(_Span(hit.start, hit.end, "day", 30, hit.value))
    for match in _COMPACT_DATE.finditer(text):
        if match.group() in matcher.dob_compact:
            spans.append(_Span(match.start(), match.end(), DOB, 85))
    for pattern in _SHORT_YEAR_DATES:
        for match in pattern.finditer(text):
            if _BIRTH_LABEL.search(text, max(0, match.start() - 40), match.start()):
                spans.append(_Span(match.start(), match.end(), DOB, 85))
    for match in _NAME_LABELLED.finditer(text):
        # The label is case-blind, the name is not: capitals only ("patient: stable" is no name).
        spans.append(_Span(match.start("v"), match.end("v"), NAME, 58))
    for match in _RECORD_LABELLED.finditer(text):
        spans.append(_Span(match.start("v"), match.end("v"), ID, 60))
    for match in _PHONE_LABELLED.finditer(text):
        spans.append(_Span(match.start("v"), match.end("v"), PHONE, 55))
    for pattern in _PHONE_PATTERNS:
        spans.extend(_Span(m.start(), m.end(), PHONE, 50) for m in pattern.finditer(text))
    for pattern in _ADDRESS_PATTERNS:
        for match in pattern.finditer(text):
            group = "v" if "v" in pattern.groupindex else 0
            spans.append(_Span(match.start(group), match.end(group), ADDRESS, 40))
    spans.extend(_Span(start, end, PLACE, 35) for start, end in _places(text))
    return _with_label_numbers(text, _merge_names(text, _resolve(text, spans)), matcher.label_numbers)


_NUMBER_AFTER = re.compile(r"[^\w\n]{0,3}(\d+)(?!\w|[.,]\d)")
_NUMBER_BEFORE = re.compile(r"(?<![\w.,])(\d+)[^\w\n]{0,3}$")


def _with_label_numbers(text: str, spans: list[_Span], numbers: frozenset[str]) -> list[_Span]:
    """A name span takes in a number of the patient's label written right after or before it: once its
    words are out, "[NAME] #017" would still say whose report it is."""
    if not numbers:
        return spans
    out: list[_Span] = []
    for i, span in enumerate(spans):
        if span.token == NAME:
            limit = spans[i + 1].start if i + 1 < len(spans) else len(text)
            after = _NUMBER_AFTER.match(text, span.end, limit)
            floor = out[-1].end if out else 0
            before = _NUMBER_BEFORE.search(text, max(floor, span.start - 12), span.start)
            start = before.start() if before and before.group(1) in numbers else span.start
            end = after.end() if after and after.group(1) in numbers else span.end
            span = _Span(start, end, NAME, span.priority)
        out.append(span)
    return out


def _found(text: str, identifiers: Identifiers, order: str) -> tuple[_Span, ...]:
    """What de-identification replaces in `text`, read once for the last few texts: a run's start reads its
    report for `day 0` (`first_date`, for the text and again for the fact table) and then replaces what it
    found (`deidentify`), three passes over the same text with the same identifiers and order. The key is
    the text itself, the identifiers and the order as given, and today's year (a two-digit year is read
    against it, `_year`), so a hit is exactly what reading again would find."""
    return _found_kept(text, identifiers, order, date.today().year)


@functools.lru_cache(maxsize=16)
def _found_kept(text: str, identifiers: Identifiers, order: str, year: int) -> tuple[_Span, ...]:
    return tuple(_spans(text, _Matcher(identifiers), _order(text, order)))


def first_date(text: str, identifiers: Identifiers = Identifiers(), *, order: str = "mdy") -> date | None:
    """The anchor `day 0` stands for: the earliest full date in the text that is not a date of birth."""
    spans = _found(text, identifiers, order)
    dates = [s.value for s in spans if s.value is not None]
    return min(dates) if dates else None


def deidentify(
    text: str, identifiers: Identifiers, *, anchor: date | None = None, order: str = "mdy"
) -> Deidentified:
    """The text with every identifier replaced by its token and dates as `day N` after `anchor` (by
    default the text's own first date; pass the report's anchor for text that goes with the report, such
    as the clinical context). `order` is "mdy" or "dmy", for 03/04/2024 in a text that does not say."""
    spans = _found(text, identifiers, order)
    dates = [s.value for s in spans if s.value is not None]
    if anchor is None and dates:
        anchor = min(dates)
    out: list[str] = []
    replaced: Counter[str] = Counter()
    marks: list[tuple[int, int]] = []
    at = length = 0
    for span in spans:
        out.append(text[at : span.start])
        length += span.start - at
        if span.value is not None and anchor is not None:
            token = f"day {(span.value - anchor).days}"
            replaced["day N"] += 1
        else:
            token = span.token
            replaced[token] += 1
        out.append(token)
        marks.append((length, length + len(token)))
        length += len(token)
        at = span.end
    out.append(text[at:])
    return Deidentified(text="".join(out), anchor=anchor, replaced=replaced, marks=tuple(marks))


# --- page images ------------------------------------------------------------------------------------------


class TextBox(Protocol):
    """Text found on a page image and where: pixel coordinates of the image it will be painted on."""

    @property
    def text(self) -> str: ...
    @property
    def left(self) -> float: ...
    @property
    def top(self) -> float: ...
    @property
    def right(self) -> float: ...
    @property
    def bottom(self) -> float: ...


B = TypeVar("B", bound=TextBox)


def identifying_boxes(lines: list[list[B]], identifiers: Identifiers, *, order: str = "mdy") -> list[B]:
    """The boxes whose text is part of an identifier or a generic pattern (email, phone, address, ID, any
    date). The page's boxes are joined into its text (boxes of a line by spaces, lines by newlines), so an
    identifier split over boxes or lines ("Anna" | "Müller", "12 Oak Street" / "Springfield") is found
    whole, and every box it touches is returned."""
    text_parts: list[str] = []
    placed: list[tuple[int, int, B]] = []
    at = 0
    for line in lines:
        for i, box in enumerate(line):
            if i:
                text_parts.append(" ")
                at += 1
            text_parts.append(box.text)
            placed.append((at, at + len(box.text), box))
            at += len(box.text)
        text_parts.append("\n")
        at += 1
    text = "".join(text_parts)
    spans = _spans(text, _Matcher(identifiers), _order(text, order))
    starts = [s.start for s in spans]
    found = []
    for start, end, box in placed:
        i = bisect.bisect_left(starts, end) - 1  # spans do not overlap: the last one starting before the box
        if i >= 0 and spans[i].end > start:  # ends is the only one that can touch it
            found.append(box)
    return found


def paint_out(png: bytes, boxes: Iterable[TextBox], *, margin: float = 2.0) -> bytes:
    """The page PNG with each box filled black, marked as painted out (the guard lets only those go)."""
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    with Image.open(io.BytesIO(png)) as source:
        image = source.convert("RGB")
    draw = ImageDraw.Draw(image)
    for box in boxes:
        draw.rectangle(
            (box.left - margin, box.top - margin, box.right + margin, box.bottom + margin), fill="black"
        )
    info = PngInfo()
    info.add_text(PAINTED_KEY, PAINTED_VALUE)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def is_painted_out(data_url: str) -> bool:
    """Whether an image (a data: URL) carries the painted-out mark. Remote URLs never do."""
    from PIL import Image, UnidentifiedImageError

    head, _, payload = data_url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        return False
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            return image.info.get(PAINTED_KEY) == PAINTED_VALUE
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        return False


# --- the guard ---------------------------------------------------------------------------------------------


class IdentifierGuard:
    """Looks at an outgoing payload (chat messages or /v1/responses input) and raises IdentifierRefused
    when any text in it holds a known identifier, or any image is not marked painted out.

    It refuses exactly what reading every pattern over the whole text would (tests/test_deid_guard_shortcuts.py
    checks it against that reading), faster: a pattern is run only over a text that holds its `_needle`, the
    dates only over a text that prints a year of birth, and a text is folded only past the start it shares
    with the last clean one (`_Folded.sharing`). 16-53 ms a distinct prompt became 1.2-1.9 ms (a patient
    with a name, a date of birth and a record number; an 8-model run's 16 distinct prompts)."""

    def __init__(self, identifiers: Identifiers = Identifiers(), *, order: str = "mdy") -> None:
        self.identifiers = identifiers
        self.order = order
        self._matcher = _Matcher(identifiers)
        # Texts already found clean: every call of a run resends the same report text, and one guard
        # serves a whole run, so each distinct text is looked through once.
        self._clean: OrderedDict[str, None] = OrderedDict()
        self._last: tuple[str, _Folded] | None = None  # the last text found clean, and its folding
        # Every date of birth a text can hold prints its year: four digits, or two right after a slash.
        self._birth_years = frozenset(
            year for day in identifiers.birth_dates for year in (f"{day.year}", f"/{day.year % 100:02d}")
        )

    def find(self, text: str) -> str | None:
        """The kind of identifier in `text` ("a name", "the date of birth", …), or None."""
        if text in self._clean:
            self._clean.move_to_end(text)
            return None
        folded = _Folded.sharing(text, *self._last) if self._last else _Folded.of(text)
        found = self._find(text, folded)
        if found is None:
            self._clean[text] = None
            if len(self._clean) > 64:
                self._clean.popitem(last=False)
            self._last = (text, folded)
        return found

    def _find(self, text: str, folded: _Folded | None = None) -> str | None:
        for _, _, _, kind in self._matcher.known(folded or _Folded.of(text), strict=True, text=text):
            return kind
        births = set(self.identifiers.birth_dates)
        if births and any(year in text for year in self._birth_years):
            for hit in _find_dates(text, _order(text, self.order)):
                if hit.value in births or hit.alternative in births:
                    return "the date of birth"
            if any(m.group() in self._matcher.dob_compact for m in _COMPACT_DATE.finditer(text)):
                return "the date of birth"
        return None

    def check(self, payload: object, *, where: str = "the request") -> None:
        for kind, value in _walk(payload):
            if kind == "image":
                if not is_painted_out(value):
                    raise IdentifierRefused(
                        "a page image that is not painted out",
                        where=where,
                        hint="Page images leave only with identifying regions painted out (DEID_PAGE_IMAGES).",
                    )
            elif found := self.find(value):
                raise IdentifierRefused(found, where=where)


def _walk(node: object, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a payload, as ("image", url) for image parts and ("text", s) for the rest."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "image_url":
                url = v.get("url") if isinstance(v, dict) else v
                if isinstance(url, str):
                    yield "image", url
                continue
            yield from _walk(v, k)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _walk(item, key)
    elif isinstance(node, str) and key not in ("model", "role", "type"):
        yield "text", node
