"""Every number in a draft checked against the fact table: pure text and plain dicts, no ORM, no HTTP.

`check(markdown, facts)` finds every measurement in a stage's markdown — its value, unit and context (the
10-20 site, band and session named nearest to it, the metric words of its clause, the page it cites as
`[p3]` or `(p. 3)`) — and matches it against the fact table rows (`patients.facts`, `facts.json`: value,
unit, site, band, session, page). Each number gets one status:

- `match`: a fact with this value agrees with everything the text says about it (and sits on the cited page);
- `wrong_page`: such a fact exists, but not on the page the text cites;
- `wrong_session`: the value belongs to the same measurement in another session;
- `wrong_site`: the value belongs to the same measurement at another site;
- `no_match`: no fact of the report carries this value for anything the text describes.

Derived numbers (a change between sessions: "a change of 32 ms", "rose by 32 ms", "+32 ms"; a percentage
change: "(+10 %)") are matched against pairs of facts of one measurement in two sessions. A range is
matched against the vendor target ranges printed on the pages; a number inside a fact's target or norm
text (a threshold such as "< 25 ms") counts as a reference. Not measurements, and skipped: page numbers in
citations, list and heading numbering, dates and years (and "day 120", a date de-identified), "Stage 4", "Session 2", "S2", "10-20 system",
electrode and band names ("Fp1", "Alpha 1"), names like "PHQ-9", counts ("3 sessions", "19 sites"), and
identifiers: record numbers and serials ("MRN 447192", "00447192"; `is_identifier`). A long unitless number
("4471920") is an identifier only when it is one of `named`, the numbers the caller knows name something
and the reader may see (the source report's own text: `named_numbers`; never the patient's recorded
identifiers, or a clinician could learn one by typing guesses and watching which goes unflagged); a made-up
one is checked like any other number, and matches nothing.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("match", "wrong_page", "wrong_session", "wrong_site", "no_match")
FLAGGED = frozenset(STATUSES) - {"match"}

ELECTRODES = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4", "T5", "P3", "Pz", "P4", "T6",
    "O1", "O2",
)  # fmt: skip
_SITE_NAMES = {name.lower(): name for name in ELECTRODES} | {
    "central-frontal average": "Central-frontal average",
    "cf avg": "Central-frontal average",
    "cf average": "Central-frontal average",
    "average": "Average",
    "avg": "Average",
}
_SITE = re.compile(
    r"(?<![\w-])(" + "|".join(sorted(map(re.escape, _SITE_NAMES), key=len, reverse=True)) + r")(?![\w-])",
    re.IGNORECASE,
)
_BANDS = ("high beta", "alpha 1", "alpha 2", "beta 1", "beta 2", "beta 3", "delta", "theta", "alpha", "beta")
_BAND = re.compile(r"(?<![\w/])(" + "|".join(b.replace(" ", r"\s?") for b in _BANDS) + r")(?![\w/])", re.I)
_ORDINALS = {"first": 1, "baseline": 1, "initial": 1, "second": 2, "third": 3, "fourth": 4}
_SESSION = re.compile(
    r"\bsession\s*#?\s*(\d+)\b|\bS(\d)\b|\b(first|baseline|initial|second|third|fourth)\s+(?:session|visit)\b",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\[p\.?\s*(\d+)\]|\(pp?\.\s*(\d+)(?:\s*[-\u2013,]\s*\d+)*\)", re.IGNORECASE)
_UNIT = re.compile(
    r"\s?(ms|\u00b5v|\u03bcv|uv|hz|sec|seconds|s|%|z|words|points|pts)(?![\w\u00b5\u03bc])", re.IGNORECASE
)
_UNIT_FOLD = {"\u03bcv": "\u00b5v", "uv": "\u00b5v", "seconds": "sec", "s": "sec", "pts": "", "points": ""}
_Z_BEFORE = re.compile(r"\b[zZ](?:[- ]?scores?)?\s*(?:=|of|:|was|is)?\s*$")
_NUMBER = re.compile(r"[-\u2212+]?\d+(?:\.\d+)?")
_RANGE = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)\s*(?:[-\u2013\u2014]|to)\s*(-?\d+(?:\.\d+)?)(?![\w.]*\d)")
_COUNT_AFTER = re.compile(
    r"\s*(?:sessions?|visits?|reviewers?|models?|pages?|stages?|electrodes?|sites?|bands?|months?|weeks?|"
    r"days?|years?|times|recordings?|channels?)\b",
    re.IGNORECASE,
)
_DERIVED_BEFORE = re.compile(
    r"(?:chang(?:e|ed)|increase[sd]?|decrease[sd]?|rose|fell|dropped|drop|rise|improved|improvement|"
    r"declined?|decline|difference|gain(?:ed)?|lost|shift(?:ed)?|reduc(?:ed|tion)|went (?:up|down))"
    r"(?:\s+\w+){0,2}?\s+(?:by|of)\s+(?:about\s+|roughly\s+|approximately\s+)?$|[\u0394\u2206]\s*=?\s*$",
    re.IGNORECASE,
)
_REFERENCE = re.compile(
    r"target|range|threshold|normal|reference|limit|cut-?off|norm|[<>\u2264\u2265]|above|below|exceed", re.I
)
# Spans that hold digits but are not measurements.
_IGNORE = [
    _CITATION,
    re.compile(r"^\s*(?:[-*+]\s+)?\d+[.)](?=\s)", re.MULTILINE),  # list numbering
    re.compile(r"^#+\s*[\d.]+", re.MULTILINE),  # heading numbering
    re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b\d{4}-\d{2}-\d{2}\b"),  # dates
    re.compile(r"\bdays?\s+[-+]?\d+\b", re.IGNORECASE),  # de-identified dates ("day 120", council/deid.py)
    re.compile(r"\b(?:19|20)\d{2}\b(?!\s?(?:ms|hz|\u00b5v|uv|%|sec)\b)", re.IGNORECASE),  # years
    re.compile(
        r"\b(?:stages?|steps?|reviewers?|responses?|models?|tables?|figures?|items?|versions?)\s+\d+", re.I
    ),
    re.compile(r"\b10[-\u2013/]20\b"),
    _SESSION,
    _BAND,
    _SITE,
]
# An identifier's label just before a number: "MRN 447192", "serial no. 2231", "Record #17", "ID: 9".
_ID_LABEL = re.compile(
    r"(?:\b(?:mrn|ids?|record|chart|accession|serial|s/?n|device|case|file)(?:\s*(?:no\.?|nr\.?|number|#))?"
    r"|\bno\.|#|(?-i:\[[A-Z]{2,}\]))\s*[:#/-]?\s*$",
    re.IGNORECASE,
)
_STOPWORDS = {"a", "b", "the", "of", "test", "rare", "z", "ratio", "score", "scores", "ec", "eo", "at", "in"}


@dataclass
class Mention:
    start: int  # offsets into the markdown
    end: int
    text: str
    number: float
    decimals: int
    unit: str  # folded: "ms", "µv", "hz", "sec", "%", "z", "words", "" (none printed)
    kind: str  # "value", "change", "percent_change", "range"
    site: str | None
    band: str | None
    session: int | None
    sessions: list[int]  # every session the sentence names (a change is between two of them)
    page: int | None  # cited page
    words: list[str]  # metric words of the clause
    high: float | None = None  # upper end of a range
    reference: bool = False  # the text calls it a target, range, threshold or norm ("< 25 ms", "above 1.96")
    best_overlap: int = 0  # the most metric words any fact shares with the clause (set when checked)

    @functools.cached_property
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)


@dataclass
class Check:
    mention: Mention
    status: str
    fact: dict[str, Any] | None  # the matched fact, or the nearest one for a flagged number
    facts: list[str] = field(default_factory=list)  # ids of the facts a derived number comes from
    note: str = ""

    @property
    def key(self) -> str:
        """Names the number within its artifact (for an acknowledgement): offset and text as written."""
        return f"{self.mention.start}:{self.mention.text}"

    @property
    def flagged(self) -> bool:
        return self.status in FLAGGED

    def as_dict(self) -> dict[str, Any]:
        nearest = self.fact
        return {
            **{k: v for k, v in asdict(self.mention).items() if k != "words"},
            "key": self.key,
            "status": self.status,
            "flagged": self.flagged,
            "fact": _fact_summary(nearest) if nearest else None,
            "facts": self.facts,
            "note": self.note,
            "title": self.title(),
        }

    def title(self) -> str:
        """One line for a tooltip: what is wrong and the nearest fact with its page."""
        label = {
            "match": "Matches",
            "wrong_page": "Cites the wrong page; the fact is",
            "wrong_session": "Wrong session; this value is",
            "wrong_site": "Wrong site; this value is",
            "no_match": "Matches no fact; nearest:",
        }[self.status]
        if self.fact is None:
            return f"{label} (no comparable fact in the table)" + (f" — {self.note}" if self.note else "")
        return f"{label} {describe(self.fact)}" + (f" — {self.note}" if self.note else "")


def describe(fact: dict[str, Any]) -> str:
    parts = [fact["metric"]]
    if fact.get("band"):
        parts.append(fact["band"])
    if fact.get("site"):
        parts.append(f"at {fact['site']}")
    if fact.get("session"):
        parts.append(f"session {fact['session']}")
    value = _fact_value(fact)
    unit = f" {fact['unit']}" if fact.get("unit") else ""
    return f"{' '.join(parts)} = {value}{unit} [p{fact['page']}]"


def _fact_summary(fact: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "page", "metric", "site", "band", "session", "unit")
    return {**{k: fact.get(k) for k in keys}, "value": _fact_value(fact)}


def _fact_value(fact: dict[str, Any]) -> str:
    correction = fact.get("correction")
    return correction["value"] if correction else fact["value"]


def _fact_number(fact: dict[str, Any]) -> float | None:
    correction = fact.get("correction")
    if correction:
        return correction.get("number")
    return fact.get("number")


def _fold_unit(unit: str) -> str:
    unit = unit.lower().replace("\u03bc", "\u00b5")
    return _UNIT_FOLD.get(unit, unit)


def _words(text: str, vocabulary: set[str] | None = None) -> set[str]:
    text = re.sub(r"\btest ([ab])\b", r"test_\1", text.lower())  # "Trail Making Test A" is not Test B
    words = {w for w in re.findall(r"[a-z][a-z0-9_]*", text) if w not in _STOPWORDS}
    return words & vocabulary if vocabulary is not None else words


def vocabulary(facts: list[dict[str, Any]]) -> set[str]:
    """The words fact metrics are named with: the only words of a sentence that say which metric."""
    words: set[str] = set()
    for fact in facts:
        words |= _words(fact["metric"] + " " + (fact.get("section") or ""))
    return words - {"session", "date"}


def _mask(text: str) -> str:
    """The text with citations blanked (same length), so "(p. 3)" does not end a sentence."""
    return _CITATION.sub(lambda m: "\u00a7" * len(m.group(0)), text)


def _spans(text: str, pattern: re.Pattern) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in pattern.finditer(text)]


def _scopes(text: str) -> list[tuple[int, int, dict[str, str]]]:
    """Sentence scopes (start, end, table context). A table cell's scope is its row, with its column
    header as extra context; elsewhere a sentence ends at . ! ? before a space, or at a line break."""
    scopes: list[tuple[int, int, dict[str, str]]] = []
    masked = _mask(text)
    offset = 0
    header: list[str] | None = None
    for line in masked.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("|") and stripped.count("|") >= 2:
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                pass
            elif header is None:
                header = cells
            else:
                position = offset + line.index("|") + 1
                for index, cell in enumerate(line.strip().strip("|").split("|")):
                    start = masked.index(cell, position) if cell else position
                    scopes.append(
                        (
                            start,
                            start + len(cell),
                            {
                                "column": header[index] if index < len(header) else "",
                                "row": cells[0] if cells else "",
                                "row_text": text[offset : offset + len(line)],
                            },
                        )
                    )
                    position = start + len(cell) + 1
        else:
            header = None
            start = offset
            for match in re.finditer(r"[.!?](?=\s)|$", line):
                end = offset + match.end()
                if end > start:
                    scopes.append((start, end, {}))
                start = end
        offset += len(line)
    return scopes


def _nearest(items: list[tuple[int, Any]], position: int) -> Any:
    """The item nearest before `position`, else the nearest after."""
    before = [item for item in items if item[0] <= position]
    if before:
        return before[-1][1]
    after = [item for item in items if item[0] > position]
    return after[0][1] if after else None


_CLAUSE_CUT = re.compile(r"[,;:()]|\band\b|\bto\b|\bversus\b|\bvs\.?|\bwhile\b|\bwhereas\b", re.IGNORECASE)
# How far from a number its clause and its sentence's sites may be: every number looked through its whole
# sentence, so a model's sentence of 2,000 numbers took 9 s to check (on every page showing the draft).
NEAR_CHARS = 240


def _clause_bounds(text: str, start: int, end: int, position: int) -> tuple[int, int]:
    start, end = max(start, position - NEAR_CHARS), min(end, position + NEAR_CHARS)
    left, right = start, end
    for match in _CLAUSE_CUT.finditer(text, start, end):
        if match.end() <= position:
            left = match.end()
        elif match.start() > position:
            right = match.start()
            break
    return left, right


def extract(
    text: str,
    sessions: dict[str, int] | None = None,
    words_known: set[str] | None = None,
    named: frozenset[str] = frozenset(),
) -> list[Mention]:
    """Every measurement in `text`. `sessions` maps session dates as printed ("03/12/2024") to indexes;
    `words_known` is the metric vocabulary (`vocabulary(facts)`), the words a clause names its metric by;
    `named` the long numbers that name something here (`is_identifier`)."""
    sessions = sessions or {}
    masked = _mask(text)  # "[p4]" is a citation, not the electrode P4
    ignored = [span for pattern in _IGNORE for span in _spans(text, pattern)]
    mentions: list[Mention] = []
    for start, end, table in _scopes(text):
        scope = text[start:end]
        if table:
            context = f"{table['row']} {table['column']}"
            cite_text = table["row_text"]
        else:
            context, cite_text = "", scope
        # What the sentence says whatever the number: read once for all its numbers.
        cited = _citations_in(cite_text)
        all_sessions = sorted({s for _, s in _session_items(masked, start, end, sessions)})
        scope_words: set[str] | None = None
        ranges = {}
        for match in _RANGE.finditer(scope):
            a, b = match.start() + start, match.end() + start
            if not any(s <= a < e for s, e in ignored):
                ranges[a] = (b, match)
        position = start
        for match in _NUMBER.finditer(scope):
            a, b = match.start() + start, match.end() + start
            if a < position:
                continue
            raw = match.group(0)
            if raw[0] in "-\u2212+":
                before = text[a - 1] if a > 0 else " "
                if before.isalnum() or before in ".-":
                    a += 1
                    raw = raw[1:]
            before = text[a - 1] if a > 0 else " "
            after = text[b] if b < len(text) else " "
            if (
                before.isalnum()
                or before in "._/\u00a7"
                or (before == "-" and a > 1 and text[a - 2].isalnum())
            ):
                continue
            if (after.isalpha() and not _UNIT.match(text, b)) or after == "/":
                continue
            if any(s <= a < e for s, e in ignored) or is_identifier(text, a, b, named):
                continue
            if _COUNT_AFTER.match(text, b):
                continue
            kind, high = "value", None
            if a in ranges:
                range_end, range_match = ranges[a]
                kind, high = "range", float(range_match.group(2).replace("\u2212", "-"))
                b = range_end
                position = range_end
            unit_match = _UNIT.match(text, b)
            unit = _fold_unit(unit_match.group(1)) if unit_match else ""
            stop = unit_match.end() if unit_match else b
            if not unit and _Z_BEFORE.search(text[max(start, a - 14) : a]):
                unit = "z"
            left, right = _clause_bounds(masked, start, end, a)
            lead = text[max(start, a - 40) : a]
            if kind == "value" and unit == "%":
                kind = "percent_change" if re.search(r"[+\u2212-]\s*$|\($", lead) or raw[0] in "+" else kind
                if _DERIVED_BEFORE.search(lead):
                    kind = "percent_change"
            elif kind == "value" and (raw[0] == "+" or _DERIVED_BEFORE.search(lead)):
                kind = "change"
            local = [(m.start(), m) for m in _SITE.finditer(masked, left, right)]
            near = max(start, a - NEAR_CHARS), min(end, b + NEAR_CHARS)
            wide = [(m.start(), m) for m in _SITE.finditer(masked, *near)]
            site_match = _nearest(local, a) or _nearest(wide, a)
            site = _SITE_NAMES[site_match.group(1).lower()] if site_match else None
            if site is None and context:
                found = _SITE.search(context)
                site = _SITE_NAMES[found.group(1).lower()] if found else None
            band_match = _nearest([(m.start(), m) for m in _BAND.finditer(masked, left, right)], a) or (
                _BAND.search(context) if context else None
            )
            band = re.sub(r"\s+", " ", band_match.group(1)).title() if band_match else None
            session_items = _session_items(masked, left, right, sessions)
            session = _nearest(session_items, a)
            if session is None and context:
                found = _session_items(context, 0, len(context), sessions)
                session = found[0][1] if found else None
            if session is None and len(all_sessions) == 1:
                session = all_sessions[0]
            page = _cited_page(cited, a - start if not table else None)
            words = _words(text[left:right] + " " + context, words_known)
            if not words:
                if scope_words is None:
                    scope_words = _words(scope + " " + context, words_known)
                words = scope_words
            value = float(raw.replace("\u2212", "-"))
            decimals = len(raw.split(".")[1]) if "." in raw else 0
            mentions.append(
                Mention(
                    start=a,
                    end=stop,
                    text=text[a:stop],
                    number=value,
                    decimals=decimals,
                    unit=unit,
                    kind=kind,
                    site=site,
                    band=band,
                    session=session,
                    sessions=all_sessions,
                    page=page,
                    words=sorted(words),
                    high=high,
                    reference=bool(_REFERENCE.search(lead)),
                )
            )
    return mentions


LONG_DIGITS = 7  # a run of this many digits or more, unitless: a number that may name something
_LONG = re.compile(rf"(?<![\d.])\d{{{LONG_DIGITS},}}(?![\d.])")


def named_numbers(*texts: str) -> frozenset[str]:
    """Every run of LONG_DIGITS digits or more in `texts` (the source report's text): the long numbers a draft
    may print as identifiers without being checked."""
    return frozenset(match.group(0) for text in texts for match in _LONG.finditer(text))


def long_numbers(text: str) -> bool:
    """Whether `text` has a run of LONG_DIGITS digits or more (a caller gathers `named` only then)."""
    return _LONG.search(text) is not None


def is_identifier(text: str, start: int, end: int, named: frozenset[str] = frozenset()) -> bool:
    """Whether the digits at text[start:end] name something rather than measure it: a record number, a
    device serial, an accession number. Such a token is not a measurement, so it is never checked (it would
    only ever "match nothing"). Identifiers are: digits after an identifier's label or a redaction
    placeholder ("MRN 447192", "S/N 2231-07", "#017", "[ID]-2"), a zero-padded run of three to six digits
    ("0447", "007"), and a run of LONG_DIGITS digits or more, zero-padded or not ("00447192"), that is one of
    `named` (the source report's text, never a recorded identifier); the last two only without a unit after
    them ("0.5 ms" and "1200000 µV" are measurements). Any other long number is checked: a model may make one up as easily as
    any value. De-identified dates ("day 23") are skipped elsewhere."""
    raw = text[start:end]
    signed = raw[:1] in ("-", "+", "\u2212")
    digits = raw[1:] if signed else raw
    if not digits.isdigit():
        return False  # a decimal point: a measurement's way of writing
    if _ID_LABEL.search(text[max(0, start - 24) : start + (1 if signed else 0)]):
        return True  # "[ID]-2": the dash joins the number to its label
    if signed:
        return False
    if _UNIT.match(text, end):
        return False
    if len(raw) >= LONG_DIGITS:
        return raw in named  # zero-padded or not: a long number may be made up as easily as any value
    return len(raw) >= 3 and raw[0] == "0"


def _session_items(text: str, left: int, right: int, dates: dict[str, int]) -> list[tuple[int, int]]:
    items = []
    for match in _SESSION.finditer(text, left, right):
        number, short, word = match.groups()
        items.append((match.start(), int(number or short) if (number or short) else _ORDINALS[word.lower()]))
    for printed, index in dates.items():
        for match in re.finditer(re.escape(printed), text[left:right]):
            items.append((match.start() + left, index))
    return sorted(items)


def citations(text: str) -> list[tuple[int, int, int]]:
    """Every page citation in `text`: (start, end, page)."""
    return [(m.start(), m.end(), int(m.group(1) or m.group(2))) for m in _CITATION.finditer(text)]


def _cited_page(scope: str | list[tuple[int, int]], position: int | None) -> int | None:
    """The first citation after the number in its sentence, else the last one before it (`scope`: the
    sentence, or its citations as `_citations_in` reads them)."""
    citations = _citations_in(scope) if isinstance(scope, str) else scope
    if not citations:
        return None
    if position is None:
        return citations[0][1]
    at = bisect.bisect_right(citations, (position, float("inf")))
    return citations[at][1] if at < len(citations) else citations[-1][1]


def _citations_in(scope: str) -> list[tuple[int, int]]:
    return [(m.start(), int(m.group(1) or m.group(2))) for m in _CITATION.finditer(scope)]


# --- matching -----------------------------------------------------------------------------------------------


def _same_value(mention_value: float, decimals: int, fact_value: float) -> bool:
    if abs(mention_value - fact_value) < 1e-9:
        return True
    # The draft may round a printed value (10.53 written as 10.5), never drop its decimals.
    return decimals >= 1 and abs(round(fact_value, decimals) - mention_value) < 1e-9


def _unit_ok(mention: Mention, fact: dict[str, Any]) -> bool:
    fact_unit = _fold_unit(fact.get("unit") or "")
    return not mention.unit or mention.unit == fact_unit or (fact_unit == "" and mention.unit in {"", "%"})


@functools.lru_cache(maxsize=4096)
def _metric_words(name: str) -> frozenset[str]:
    return frozenset(_words(name))


def _overlap(mention: Mention, fact: dict[str, Any]) -> int:
    return len(mention.word_set & _metric_words(fact["metric"] + " " + (fact.get("section") or "")))


def _agrees(mention: Mention, fact: dict[str, Any], *, site=True, session=True) -> bool:
    if mention.words and _overlap(mention, fact) < max(mention.best_overlap, 1):
        return False
    if mention.band and fact.get("band") and mention.band.lower() != fact["band"].lower():
        return False
    if site and mention.site and fact.get("site") != mention.site:
        return False
    return not (session and mention.session and fact.get("session") and fact["session"] != mention.session)


def _best(mention: Mention, facts: list[dict[str, Any]]) -> dict[str, Any]:
    return max(
        facts,
        key=lambda f: (
            f["page"] == mention.page,
            _overlap(mention, f),
            mention.site is not None and f.get("site") == mention.site,
            mention.session is not None and f.get("session") == mention.session,
            f.get("confidence") or 0,
        ),
    )


def _nearest_fact(mention: Mention, facts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fact the text most likely meant: agreeing context first, then the closest value."""
    comparable = [f for f in facts if _unit_ok(mention, f)] or facts
    if not comparable:
        return None

    def distance(f):
        number = _fact_number(f)
        return abs(number - mention.number) if number is not None else float("inf")

    return min(
        comparable,
        key=lambda f: (
            not _agrees(mention, f),
            -_overlap(mention, f),
            mention.site is not None and f.get("site") != mention.site,
            mention.session is not None and f.get("session") != mention.session,
            distance(f),
        ),
    )


def _numbers_in(text: str) -> list[float]:
    return [
        float(n.replace("\u2212", "-")) for n in re.findall(r"-?\d+(?:\.\d+)?", text.replace("\u2013", " "))
    ]


def check_mention(mention: Mention, facts: list[dict[str, Any]]) -> Check:
    numeric = [f for f in facts if _fact_number(f) is not None]
    mention.best_overlap = max((_overlap(mention, f) for f in numeric), default=0)
    if mention.kind == "range":
        for fact in facts:
            bounds = _numbers_in((fact.get("target") or "").replace("-", " "))
            if mention.number in bounds and mention.high in bounds and _unit_ok(mention, fact):
                return Check(mention, "match", fact, note="a vendor target range")
        return Check(mention, "no_match", _nearest_fact(mention, numeric), note="no target range like it")
    if mention.kind in ("change", "percent_change"):
        derived = _check_derived(mention, numeric)
        if derived is not None:
            return derived
    same = [
        f
        for f in numeric
        if _unit_ok(mention, f) and _same_value(mention.number, mention.decimals, _fact_number(f))
    ]
    agreeing = [f for f in same if _agrees(mention, f)]
    if agreeing:
        fact = _best(mention, agreeing)
        if mention.page is not None and fact["page"] != mention.page:
            return Check(mention, "wrong_page", fact, note=f"the text cites p{mention.page}")
        return Check(mention, "match", fact)
    if mention.session:
        other_session = [f for f in same if _agrees(mention, f, session=False)]
        if other_session:
            return Check(
                mention, "wrong_session", _best(mention, other_session), note=_expected(mention, numeric)
            )
    if mention.site:
        other_site = [f for f in same if _agrees(mention, f, site=False)]
        if other_site:
            return Check(mention, "wrong_site", _best(mention, other_site), note=_expected(mention, numeric))
    for fact in facts if mention.reference else []:  # thresholds printed beside the values ("< 25 ms")
        if any(abs(n - abs(mention.number)) < 1e-9 for n in _numbers_in(fact.get("target") or "")) and (
            _unit_ok(mention, fact) and (not mention.words or _overlap(mention, fact))
        ):
            return Check(mention, "match", fact, note="a vendor target or threshold")
    return Check(mention, "no_match", _nearest_fact(mention, numeric))


def _expected(mention: Mention, facts: list[dict[str, Any]]) -> str:
    fact = _nearest_fact(mention, [f for f in facts if _agrees(mention, f)])
    return f"the text's own context holds {describe(fact)}" if fact else ""


def _check_derived(mention: Mention, facts: list[dict[str, Any]]) -> Check | None:
    """A change or a percentage change: a pair of facts of one measurement in two sessions it comes from."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for fact in facts:
        if (
            fact.get("session")
            and _agrees(mention, fact, session=False)
            and _unit_ok(mention if mention.kind == "change" else _unitless(mention), fact)
        ):
            groups.setdefault((fact["page"], fact["metric"], fact.get("site"), fact.get("band")), []).append(
                fact
            )
    wanted = set(mention.sessions) if len(mention.sessions) >= 2 else None
    tolerance = 10**-mention.decimals
    for group in groups.values():
        group.sort(key=lambda f: f["session"])
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                if wanted and {first["session"], second["session"]} != wanted:
                    continue
                a, b = _fact_number(first), _fact_number(second)
                if mention.kind == "change":
                    ok = _same_value(abs(mention.number), mention.decimals, abs(b - a))
                else:
                    if a == 0:
                        continue
                    # The percentage as written, to its printed precision (rounded or cut).
                    ok = abs(abs(mention.number) - abs((b - a) / a * 100)) < tolerance
                if ok:
                    return Check(
                        mention,
                        "match",
                        second,
                        facts=[first["id"], second["id"]],
                        note=f"a change between sessions {first['session']} and {second['session']}",
                    )
    return None


def _unitless(mention: Mention) -> Mention:
    return Mention(**{**asdict(mention), "unit": ""})


def session_dates(facts: list[dict[str, Any]]) -> dict[str, int]:
    return {f["value"]: f["session"] for f in facts if f["metric"] == "Session date" and f.get("session")}


def check(text: str, facts: list[dict[str, Any]], named: frozenset[str] = frozenset()) -> list[Check]:
    """Every measurement of `text` checked against the fact rows `facts` (facts.json's `facts`); `named`: the
    long numbers known to name something here (`named_numbers`), left unchecked."""
    known = vocabulary(facts)
    return [check_mention(mention, facts) for mention in extract(text, session_dates(facts), known, named)]


def summary(checks: list[Check]) -> dict[str, Any]:
    counts = {status: 0 for status in STATUSES}
    for item in checks:
        counts[item.status] += 1
    return {"numbers": len(checks), "flagged": sum(counts[s] for s in FLAGGED), **counts}


STATUS_WORDS = {
    "match": "match",
    "wrong_page": "wrong page",
    "wrong_session": "wrong session",
    "wrong_site": "wrong site",
    "no_match": "match nothing",
}


def summary_line(checks: list[Check]) -> str:
    """ "41 numbers checked: 38 match, 3 flagged (1 wrong session, 2 match nothing)"."""
    counts = summary(checks)
    if not checks:
        return "No numbers to check."
    line = (
        f"{counts['numbers']} number{'s' if counts['numbers'] != 1 else ''} checked against the fact table: "
    )
    line += f"{counts['match']} match"
    if counts["flagged"]:
        parts = [f"{counts[s]} {STATUS_WORDS[s]}" for s in STATUSES if s in FLAGGED and counts[s]]
        line += f", {counts['flagged']} flagged ({', '.join(parts)})"
    return line
