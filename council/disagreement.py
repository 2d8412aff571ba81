"""Where the council disagreed, read strictly from what the models wrote; nothing here guesses.

Two sections, each asked for by its stage's prompt in one fixed form and read back by one parser:

- Stage 4's consolidation ends with `## Where the council disagreed`: one entry per point, naming the
  majority and the minority by their revision labels (A, B, …) and saying how the consolidation resolved
  it, or the one sentence that says there was no disagreement. `read_disagreements` returns the entries, or
  a `problem` saying why the section cannot be read (missing, an entry without its minority, a label no
  revision has). The section stays in the consolidation: it is part of what a clinician reads.
- Stage 6's drafts end with `## Required changes: applied or not`: one line per numbered required change,
  `APPLIED — how` or `NOT APPLIED — why`. `split_applied` cuts that section off the draft (it is the
  council's bookkeeping, not part of the write-up) and reads it: every number once, nothing else, or the
  whole statement is refused with the reason. What a draft says it applied is its own claim; pages say so.

`pool_required_changes` is the one way Stage 5's required changes are pooled: the Stage 6 prompt numbers them
in this order and the pages show them in it, so a draft's line 2 is the page's row 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DISAGREEMENT_HEADING = "Where the council disagreed"
NO_DISAGREEMENT = "The revisions did not disagree on any point."
APPLIED_HEADING = "Required changes: applied or not"

# A heading line; its closing "#"s and spaces are stripped after (a lazy title before "[ \t#]*$" backtracked
# quadratically: a model's heading line with 40 KB of spaces and tabs took 12 s to read, on the run page
# and in the runner).
_HEADING = re.compile(r"^(#{1,6})[ \t]+([^\n]+)$", re.MULTILINE)
_LABEL = re.compile(r"^[A-Z]{1,2}$")
# "- **Point:** text", "* **Minority (B):** text", "- **Majority (A, C)**: text" (bold around the colon or not)
_PART = re.compile(
    r"^[ \t]*[-*+][ \t]+\*\*(?P<key>Point|Majority|Minority|Resolution)[ \t]*(?:\((?P<labels>[^)]*)\))?"
    r"[ \t]*(?::\*\*|\*\*[ \t]*:)[ \t]*(?P<text>.*)$",
    re.IGNORECASE,
)
_APPLIED_LINE = re.compile(
    r"^[ \t]*(?P<number>\d+)[.)][ \t]+\**(?P<status>NOT[ \t]+APPLIED|APPLIED)\**[ \t]*(?:[\u2014\u2013:]|-{1,2})[ \t]*"
    r"(?P<reason>\S.*)$",
    re.IGNORECASE,
)


def change_key(text: str) -> str:
    """Two required changes are the same change when they differ only in case and spacing."""
    return " ".join(text.lower().split())


# -- Stage 5 → Stage 6: the required changes, pooled ---------------------------------------------------


@dataclass
class PooledChange:
    number: int  # 1-based, as the Stage 6 prompt numbers it
    text: str
    voters: list[str] = field(default_factory=list)  # who asked for it (model ids on pages; "" in prompts)

    @property
    def key(self) -> str:
        return change_key(self.text)


def pool_required_changes(votes: Iterable[tuple[str, Sequence[str]]]) -> list[PooledChange]:
    """(voter, its required changes) in vote order → each distinct change once, in first-asked order."""
    pooled: dict[str, PooledChange] = {}
    for voter, changes in votes:
        for change in changes:
            if not change.strip():
                continue
            item = pooled.setdefault(change_key(change), PooledChange(len(pooled) + 1, change.strip()))
            if voter not in item.voters:
                item.voters.append(voter)
    return list(pooled.values())


# -- Stage 4: where the council disagreed ---------------------------------------------------------------


@dataclass(frozen=True)
class Disagreement:
    point: str
    majority: tuple[str, ...]
    majority_view: str
    minority: tuple[str, ...]
    minority_view: str
    resolution: str


@dataclass(frozen=True)
class DisagreementSection:
    points: tuple[Disagreement, ...] = ()
    none: bool = False  # the section says, in its one sentence, that the revisions agreed throughout
    problem: str = ""  # why the section cannot be read; "" when it was read

    @property
    def read(self) -> bool:
        return not self.problem


def _section(text: str, heading: str) -> tuple[int, int, int] | None:
    """(start of the heading line, start of its body, end of its body) of the LAST heading named `heading`;
    the body ends at the next heading of the same or a higher level."""
    wanted = change_key(heading)
    found = [
        m for m in _HEADING.finditer(text) if change_key(m.group(2).rstrip(" \t#").strip("*_ ")) == wanted
    ]
    if not found:
        return None
    match = found[-1]
    level = len(match.group(1))
    end = len(text)
    for later in _HEADING.finditer(text, match.end()):
        if len(later.group(1)) <= level:
            end = later.start()
            break
    return match.start(), match.end(), end


def _labels(raw: str | None, known: set[str], where: str) -> tuple[tuple[str, ...], str]:
    if raw is None or not raw.strip():
        return (), f"{where} names no revision label"
    labels = tuple(part.strip() for part in re.split(r"[,;/&]|\band\b", raw) if part.strip())
    bad = [label for label in labels if not _LABEL.match(label) or (known and label not in known)]
    if bad:
        allowed = ", ".join(sorted(known)) or "A, B, …"
        return (), f"{where} names {', '.join(bad)}, which is not a revision label ({allowed})"
    if len(set(labels)) != len(labels):
        return (), f"{where} names a label twice"
    return labels, ""


def read_disagreements(text: str, labels: Iterable[str] = ()) -> DisagreementSection:
    """The consolidation's disagreement section. `labels`: the revisions' labels (unknown ones are refused)."""
    known = set(labels)
    found = _section(text, DISAGREEMENT_HEADING)
    if found is None:
        return DisagreementSection(problem=f"the consolidation has no “{DISAGREEMENT_HEADING}” section")
    _, body_start, end = found
    body = text[body_start:end].strip()
    if not body:
        return DisagreementSection(problem=f"the “{DISAGREEMENT_HEADING}” section is empty")
    if change_key(body.strip("`*_ ")) == change_key(NO_DISAGREEMENT):
        return DisagreementSection(none=True)
    entries: list[dict[str, Any]] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        part = _PART.match(line)
        if part is None:
            if entries and not line.lstrip().startswith(("-", "*", "+")):
                # A wrapped line continues the part before it.
                last = entries[-1]
                last[last["_last"]]["text"] += " " + line.strip()
                continue
            return DisagreementSection(
                problem=f"a line of the section is not in the asked form: {line.strip()!r}"
            )
        key = part.group("key").lower()
        if key == "point":
            entries.append({"_last": "point"})
        elif not entries:
            return DisagreementSection(problem=f"“{part.group('key')}” comes before any “Point”")
        entry = entries[-1]
        if key in entry:
            return DisagreementSection(problem=f"a point has two “{part.group('key')}” parts")
        entry[key] = {"text": part.group("text").strip(), "labels": part.group("labels")}
        entry["_last"] = key
    if not entries:
        return DisagreementSection(problem="the section lists no point and does not say there was none")
    points = []
    for number, entry in enumerate(entries, 1):
        where = f"point {number}"
        missing = [k.capitalize() for k in ("point", "majority", "minority", "resolution") if k not in entry]
        if missing:
            return DisagreementSection(problem=f"{where} has no {' or '.join(missing)}")
        empty = [
            k.capitalize() for k in ("point", "majority", "minority", "resolution") if not entry[k]["text"]
        ]
        if empty:
            return DisagreementSection(
                problem=f"{where}: {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
            )
        majority, problem = _labels(entry["majority"]["labels"], known, f"{where}'s majority")
        if problem:
            return DisagreementSection(problem=problem)
        minority, problem = _labels(entry["minority"]["labels"], known, f"{where}'s minority")
        if problem:
            return DisagreementSection(problem=problem)
        if set(majority) & set(minority):
            both = ", ".join(sorted(set(majority) & set(minority)))
            return DisagreementSection(problem=f"{where} puts {both} in both the majority and the minority")
        if len(minority) > len(majority):
            return DisagreementSection(
                problem=f"{where}'s minority ({len(minority)}) outnumbers its majority"
            )
        points.append(
            Disagreement(
                point=entry["point"]["text"],
                majority=majority,
                majority_view=entry["majority"]["text"],
                minority=minority,
                minority_view=entry["minority"]["text"],
                resolution=entry["resolution"]["text"],
            )
        )
    return DisagreementSection(points=tuple(points))


# -- Stage 6: which required changes a draft says it applied ---------------------------------------------


@dataclass(frozen=True)
class AppliedLine:
    number: int
    applied: bool
    reason: str


def split_applied(text: str, count: int) -> tuple[str, dict[str, Any]]:
    """(the draft without its applied-or-not section, what the section says) for a draft that was given
    `count` numbered required changes. The second is stored with the artifact: {"applied": [{number,
    applied, reason}] or None, "problem": why it was refused ("" when read)}."""
    found = _section(text, APPLIED_HEADING)
    if found is None:
        body = text
        statement = ""
    else:
        start, body_start, end = found
        body = (text[:start].rstrip() + "\n\n" + text[end:].lstrip()).strip() + "\n"
        statement = text[body_start:end].strip()
    if count == 0:
        return body, {"applied": [], "problem": ""}
    if found is None:
        return body, {"applied": None, "problem": f"the draft has no “{APPLIED_HEADING}” section"}
    lines: dict[int, AppliedLine] = {}
    for raw in statement.splitlines():
        if not raw.strip():
            continue
        line = _APPLIED_LINE.match(raw)
        if line is None:
            return body, {
                "applied": None,
                "problem": f"a line is not “n. APPLIED — …” or “n. NOT APPLIED — …”: {raw.strip()!r}",
            }
        number = int(line.group("number"))
        if not 1 <= number <= count:
            return body, {"applied": None, "problem": f"it answers change {number}; there are {count}"}
        if number in lines:
            return body, {"applied": None, "problem": f"it answers change {number} twice"}
        applied = " ".join(line.group("status").upper().split()) == "APPLIED"
        lines[number] = AppliedLine(number, applied, line.group("reason").strip())
    unanswered = [str(n) for n in range(1, count + 1) if n not in lines]
    if unanswered:
        return body, {"applied": None, "problem": f"it does not answer change {', '.join(unanswered)}"}
    return body, {
        "applied": [
            {"number": n, "applied": lines[n].applied, "reason": lines[n].reason} for n in sorted(lines)
        ],
        "problem": "",
    }
