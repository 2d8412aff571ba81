"""Several reports of one patient as one history: each report's sessions placed on one timeline by date.

Pure dicts and dates, no ORM, no HTTP (like council/numbers.py, it reads fact-table rows: patients/facts.py).
Vendors export each visit as a new report that numbers its sessions from 1 again, and a later export often
repeats earlier sessions. `build(reports)` maps every (report, session index) to a timeline session:

- A session's date is what its report prints for it: the "Session date" facts, else the `session_date` of
  its facts, read in the report's own date order (a day over 12 in any of its dates settles 03/04 vs 04/03;
  else the configured order). Two readings of one session's date that differ: the most frequent wins (the
  first printed on a tie) and the timeline notes the disagreement.
- Two sessions of different reports are the same session when they have the same date and their common
  measurements (same metric, site and band, both numbers) agree: equal at the precision the coarser of the
  two prints. A few disagreements (up to `MAX_DISAGREEING`, e.g. one misread cell) still merge, the
  differing facts both kept and marked; more than that is a different recording on the same day, and stays
  a session of its own (noted). Placeholders ("-", "N/A") agree with anything: a "Test/Retest" cell is "-" in
  the first session of every export, whatever came before.
- A report never merges two of its own sessions, and a session joins at most one session of another report.
- A session without a date follows its report's session before it on the timeline (or precedes the one after
  it); a report without any date goes after every dated session, in report order. Undated sessions never
  merge.
- Timeline sessions are numbered 1… in date order; `day` is days after the first dated session, the anchor of
  the whole history (council/deid.py turns every absolute date into `day N` from it).

`merge_facts` then rewrites every fact onto the timeline (session → timeline index, page → the run's page,
numbered on across reports), dropping a later report's copy of a fact an earlier one already gave for the
same session, so the same session in two exports is counted once. `series` and `retest_threshold` read the
merged table for trend charts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from council import deid

SESSION_DATE = "Session date"
# Share of common measurements that may disagree while two same-day sessions still count as one.
MAX_DISAGREEING = 0.2
_RETEST = re.compile(r"\s*(?:test\s*[/-]\s*retest|retest)\s*$", re.IGNORECASE)
_THRESHOLD = re.compile(r"^\s*(?:<|\u2264|<=|under|below)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class ReportFacts:
    """One report as the timeline needs it: its id, its fact-table rows, the date order its text uses."""

    report_id: int
    facts: list[dict[str, Any]]
    order: str = "mdy"
    pages: int = 0  # its page count: the run numbers pages on across reports


@dataclass(frozen=True)
class TimelineSession:
    index: int  # 1-based, in date order
    date: date | None
    day: int | None  # days after the timeline's first dated session
    members: tuple[tuple[int, int], ...]  # (report id, session index in that report), in report order
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timeline:
    sessions: tuple[TimelineSession, ...]
    anchor: date | None  # the first dated session: `day 0`
    notes: tuple[str, ...] = ()
    _index: dict[tuple[int, int], int] = field(default_factory=dict, repr=False, compare=False)

    def index_of(self, report_id: int, session: int | None) -> int | None:
        """The timeline session of a report's session (None for a fact not tied to a session)."""
        if session is None:
            return None
        return self._index.get((report_id, session))

    def label(self, index: int) -> str:
        """ "Session 3 (day 120)", as the council sees a timeline session."""
        session = self.sessions[index - 1]
        return f"Session {index}" + (f" (day {session.day})" if session.day is not None else " (undated)")


@dataclass
class _Session:
    report_id: int
    position: int  # the report's place in the input
    index: int
    date: date | None
    facts: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def session_dates(report: ReportFacts) -> tuple[dict[int, date], list[str]]:
    """Session index → date as the report prints it, and notes on dates that disagree or cannot be read."""
    printed: dict[int, list[str]] = {}
    for fact in report.facts:
        session = fact.get("session")
        if not session:
            continue
        if fact.get("metric") == SESSION_DATE and fact.get("value"):
            printed.setdefault(session, []).append(str(_value(fact)))
        elif fact.get("session_date"):
            printed.setdefault(session, []).append(str(fact["session_date"]))
    order = deid.date_order(" ".join(v for values in printed.values() for v in values), report.order)
    dates: dict[int, date] = {}
    notes: list[str] = []
    for session, values in sorted(printed.items()):
        parsed = [d for v in values if (d := deid.parse_date(v, order=order)) is not None]
        if not parsed:
            notes.append(f"report {report.report_id} session {session}: date {values[0]!r} cannot be read")
            continue
        counts = Counter(parsed)
        best = max(counts, key=lambda d: (counts[d], -parsed.index(d)))
        if len(counts) > 1:
            others = ", ".join(sorted(d.isoformat() for d in counts if d != best))
            notes.append(
                f"report {report.report_id} session {session}: its pages print different dates; "
                f"{best.isoformat()} taken ({counts[best]} of {len(parsed)}), also printed {others}"
            )
        dates[session] = best
    return dates, notes


def _value(fact: dict[str, Any]) -> Any:
    """A fact's value with its correction applied (a clinician's correction wins over the reading)."""
    correction = fact.get("correction")
    return correction.get("value", fact.get("value")) if correction else fact.get("value")


def _number(fact: dict[str, Any]) -> float | None:
    correction = fact.get("correction")
    if correction and "number" in correction:
        return correction["number"]
    return fact.get("number")


def measurement_key(fact: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """What a fact measures, whatever report and session it comes from: metric (spacing and case folded),
    site, band."""
    return (" ".join(str(fact.get("metric", "")).split()).casefold(), fact.get("site"), fact.get("band"))


def _decimals(fact: dict[str, Any]) -> int:
    text = str(_value(fact))
    match = re.search(r"\.(\d+)", text)
    return len(match.group(1)) if match else 0


def values_agree(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two readings of one measurement agree: equal at the coarser precision printed; None when
    either is no number (a placeholder agrees with anything)."""
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return None
    digits = min(_decimals(a), _decimals(b))
    return round(x, digits) == round(y, digits)


def _agreement(a: _Session, b: _Session) -> tuple[int, list[tuple[dict, dict]]]:
    """(measurements compared, the pairs that disagree) between two sessions."""
    by_key: dict[tuple, list[dict]] = {}
    for fact in a.facts:
        if fact.get("metric") != SESSION_DATE:
            by_key.setdefault(measurement_key(fact), []).append(fact)
    compared = 0
    disagreeing: list[tuple[dict, dict]] = []
    for fact in b.facts:
        for other in by_key.get(measurement_key(fact), [])[:1]:
            verdict = values_agree(other, fact)
            if verdict is None:
                continue
            compared += 1
            if not verdict:
                disagreeing.append((other, fact))
    return compared, disagreeing


def build(reports: Iterable[ReportFacts]) -> Timeline:
    """Every report's sessions on one timeline (the rules are in the module's docstring)."""
    reports = list(reports)
    notes: list[str] = []
    sessions: list[_Session] = []
    for position, report in enumerate(reports):
        dates, date_notes = session_dates(report)
        notes.extend(date_notes)
        by_session: dict[int, list[dict[str, Any]]] = {}
        for fact in report.facts:
            if fact.get("session"):
                by_session.setdefault(fact["session"], []).append(fact)
        for index in sorted(set(by_session) | set(dates)):
            sessions.append(
                _Session(report.report_id, position, index, dates.get(index), by_session.get(index, []))
            )

    # Same-day sessions of different reports become one, earliest report first.
    groups: list[list[_Session]] = []
    for session in sorted((s for s in sessions if s.date), key=lambda s: (s.date, s.position, s.index)):
        for group in groups:
            if group[0].date != session.date or any(m.report_id == session.report_id for m in group):
                continue
            compared, disagreeing = _agreement(group[0], session)
            if compared and len(disagreeing) > MAX_DISAGREEING * compared:
                session.notes.append(
                    f"report {session.report_id} session {session.index} has the date of report "
                    f"{group[0].report_id} session {group[0].index} but {len(disagreeing)} of {compared} "
                    "common measurements differ: a different recording, kept apart"
                )
                continue
            if disagreeing:
                session.notes.append(
                    f"report {session.report_id} session {session.index} is report {group[0].report_id} "
                    f"session {group[0].index}; {len(disagreeing)} of {compared} common measurements "
                    "differ (both readings kept, marked)"
                )
            group.append(session)
            break
        else:
            groups.append([session])

    # Undated sessions follow their report's previous session (or precede its next); wholly undated
    # reports go last.
    def sort_key(group: list[_Session]) -> tuple:
        first = group[0]
        if first.date is not None:
            return (0, first.date, 0, first.position, first.index)
        own = sorted((s for s in sessions if s.report_id == first.report_id), key=lambda s: s.index)
        before = [s for s in own if s.index < first.index and s.date]
        after = [s for s in own if s.index > first.index and s.date]
        if before:
            return (0, before[-1].date, 1, first.position, first.index)
        if after:
            return (0, after[0].date, -1, first.position, first.index)
        return (1, date.max, 0, first.position, first.index)

    groups += [[s] for s in sessions if s.date is None]
    for group in groups:
        if group[0].date is None:
            group[0].notes.append(
                f"report {group[0].report_id} session {group[0].index} prints no date: placed after its "
                "report's session before it"
            )
    groups.sort(key=sort_key)
    anchor = min((s.date for s in sessions if s.date), default=None)
    index: dict[tuple[int, int], int] = {}
    placed = []
    for number, group in enumerate(groups, start=1):
        group.sort(key=lambda s: s.position)
        for member in group:
            index[(member.report_id, member.index)] = number
        when = group[0].date
        placed.append(
            TimelineSession(
                index=number,
                date=when,
                day=(when - anchor).days if when and anchor else None,
                members=tuple((m.report_id, m.index) for m in group),
                notes=tuple(note for m in group for note in m.notes),
            )
        )
    return Timeline(sessions=tuple(placed), anchor=anchor, notes=tuple(notes), _index=index)


def page_offsets(reports: Iterable[ReportFacts]) -> dict[int, int]:
    """Report id → how many run pages come before its page 1 (pages numbered on, in the given order)."""
    offsets: dict[int, int] = {}
    at = 0
    for report in reports:
        offsets[report.report_id] = at
        at += report.pages
    return offsets


def merge_facts(timeline: Timeline, reports: Iterable[ReportFacts]) -> list[dict[str, Any]]:
    """Every fact of every report on the timeline, in report order: `session` is the timeline session,
    `page` the run's page (`report_id`, `report_page`, `report_session` keep where it was read). A fact a
    report before it already gave for the same timeline session (same measurement, same value) is left
    out and that earlier row lists it in `also_in`; a differing reading of a merged session is kept, both
    marked `disagreement` (never silently resolved)."""
    reports = list(reports)
    offsets = page_offsets(reports)
    merged: list[dict[str, Any]] = []
    seen: dict[tuple, dict[str, Any]] = {}
    for report in reports:
        for fact in report.facts:
            session = timeline.index_of(report.report_id, fact.get("session"))
            row = {
                **fact,
                "id": f"r{report.report_id}:{fact.get('id', len(merged))}",
                "session": session,
                "page": offsets[report.report_id] + int(fact.get("page") or 0),
                "report_id": report.report_id,
                "report_page": fact.get("page"),
                "report_session": fact.get("session"),
                "disagrees_with": [f"r{report.report_id}:{d}" for d in fact.get("disagrees_with") or []],
            }
            if session is None:
                merged.append(row)
                continue
            key = (session, *measurement_key(fact))
            first = seen.get(key)
            if first is None:
                seen[key] = row
                merged.append(row)
            elif first["report_id"] == report.report_id:
                merged.append(row)  # the report's own two readings (text layer and OCR): as it keeps them
            elif str(_value(first)) == str(_value(row)):
                first.setdefault("also_in", []).append(
                    {"report_id": report.report_id, "page": fact.get("page")}
                )
            elif values_agree(first, row) is False:
                first["disagreement"] = row["disagreement"] = True
                first["disagrees_with"] = [*first.get("disagrees_with", []), row["id"]]
                row["disagrees_with"] = [*row["disagrees_with"], first["id"]]
                merged.append(row)
            else:
                # Same value printed differently ("12" / "12.0"), or a placeholder beside a number: kept.
                merged.append(row)
    return merged


# -- trends --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    session: int  # timeline index
    number: float
    value: str  # as printed
    fact_id: str
    report_id: int | None
    page: int | None


@dataclass(frozen=True)
class Series:
    metric: str
    site: str | None
    band: str | None
    unit: str
    target: str
    points: tuple[Point, ...]
    threshold: float | None = None  # the vendor's test/retest threshold for a change, where it prints one

    @property
    def title(self) -> str:
        return " · ".join(part for part in (self.metric, self.site, self.band) if part)

    def changes(self) -> list[Change]:
        """The change between each pair of consecutive sessions, judged against the threshold."""
        out = []
        for a, b in zip(self.points, self.points[1:], strict=False):
            delta = b.number - a.number
            digits = max(_decimals({"value": a.value}), _decimals({"value": b.value}))
            beyond = None if self.threshold is None else abs(round(delta, digits)) > self.threshold
            out.append(Change(a.session, b.session, round(delta, digits), beyond, digits))
        return out


@dataclass(frozen=True)
class Change:
    before: int
    after: int
    delta: float
    beyond_threshold: bool | None  # None: the report gives no threshold
    digits: int = 0  # decimals printed: the finer of the two values'

    def text(self, unit: str, threshold: float | None) -> str:
        sign = "+" if self.delta > 0 else ("\u2212" if self.delta < 0 else "\u00b1")
        amount = f"{sign}{abs(self.delta):.{self.digits}f}{' ' + unit if unit else ''}"
        line = f"Session {self.before} \u2192 {self.after}: {amount}"
        if threshold is None or self.beyond_threshold is None:
            return line
        relation = "beyond" if self.beyond_threshold else "within"
        return f"{line}, {relation} the vendor's test/retest threshold of {_plain(threshold)}{' ' + unit if unit else ''}"


def _plain(number: float) -> str:
    return f"{number:g}" if abs(number) < 1e6 else f"{number:.0f}"


def retest_threshold(facts: Iterable[dict[str, Any]], metric: str) -> float | None:
    """The vendor's test/retest threshold for a change of `metric`: the target of its "… Test/Retest" row
    when it reads as an upper bound ("< 25 ms"); None when the report gives none."""
    wanted = " ".join(metric.split()).casefold()
    for fact in facts:
        name = str(fact.get("metric", ""))
        if not _RETEST.search(name):
            continue
        if " ".join(_RETEST.sub("", name).split()).casefold() != wanted:
            continue
        if match := _THRESHOLD.match(str(fact.get("target") or "")):
            return float(match.group(1))
    return None


def series(facts: list[dict[str, Any]], *, min_points: int = 2) -> list[Series]:
    """Each measurement's numbers across timeline sessions (one point per session: the first reading,
    corrections applied), for measurements with numbers in at least `min_points` sessions. Session dates,
    test/retest rows (they are the changes) and disagreeing readings are not series of their own."""
    by_key: dict[tuple, dict[int, dict[str, Any]]] = {}
    first_of: dict[tuple, dict[str, Any]] = {}
    for fact in facts:
        name = str(fact.get("metric", ""))
        if name == SESSION_DATE or _RETEST.search(name) or fact.get("session") is None:
            continue
        if _number(fact) is None:
            continue
        key = measurement_key(fact)
        first_of.setdefault(key, fact)
        by_key.setdefault(key, {}).setdefault(fact["session"], fact)
    out = []
    for key, by_session in by_key.items():
        if len(by_session) < min_points:
            continue
        first = first_of[key]
        points = tuple(
            Point(
                session=s,
                number=float(_number(f)),
                value=str(_value(f)),
                fact_id=str(f.get("id", "")),
                report_id=f.get("report_id"),
                page=f.get("report_page", f.get("page")),
            )
            for s, f in sorted(by_session.items())
        )
        out.append(
            Series(
                metric=first["metric"],
                site=first.get("site"),
                band=first.get("band"),
                unit=first.get("unit") or "",
                target=first.get("target") or "",
                points=points,
                threshold=retest_threshold(facts, first["metric"]),
            )
        )
    return out
