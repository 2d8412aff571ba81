"""Drafts written from a generated fact table, correct or with planted wrong numbers (for council.numbers).

`fact_rows(truth)` turns the facts a synthetic vendor report printed (tests.synthetic_vendor) into fact
table rows as `patients.facts` stores them; `correct_draft` writes sentences, a table and derived changes
that are all true; `planted_errors` writes one sentence per planted error of each kind, with the offset of
the wrong number so a test can ask whether exactly that number was flagged.
"""

from __future__ import annotations

import random
from typing import Any

from patients.readers.base import PLACEHOLDERS

KINDS = ("dropped_decimal", "swapped_session", "wrong_site", "not_in_report", "wrong_page")


def fact_rows(truth_facts: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for index, fact in enumerate(truth_facts):
        value = fact["value"].replace("\u2013", "-")
        try:
            number = None if value in PLACEHOLDERS else float(value)
        except ValueError:
            number = None
        rows.append(
            {
                **fact,
                "id": f"f{index}",
                "section": "",
                "session_date": None,
                "number": number,
                "placeholder": value in PLACEHOLDERS,
                "norm": "",
                "reader": "truth",
                "source": "text layer",
                "confidence": 1.0,
                "correction": None,
            }
        )
    return rows


def _measures(rows):
    return [r for r in rows if r["number"] is not None and r["metric"] != "Session date"]


def sentence(
    fact: dict[str, Any], *, value: str | None = None, site=None, session=None, page=None, rng=None
) -> str:
    rng = rng or random.Random(0)
    value = fact["value"] if value is None else value
    site = fact["site"] if site is None else site
    session = fact["session"] if session is None else session
    page = fact["page"] if page is None else page
    unit = fact["unit"]
    number = f"{value} {unit}".strip() if unit != "Z" else f"Z = {value}"
    band = f" in the {fact['band']} band" if fact["band"] else ""
    where = f" at {site}" if site else ""
    when = f"session {session}" if session else ""
    cite = rng.choice([f"[p{page}]", f"(p. {page})"])
    forms = [
        f"{fact['metric']}{band}{where} in {when} was {number} {cite}.",
        f"In {when}, the {fact['metric'].lower()}{band}{where} measured {number} {cite}.",
        f"{fact['metric']}{band}{where} reached {number} in {when} {cite}.",
    ]
    if not when:
        forms = [f"{fact['metric']}{band}{where} was {number} {cite}."]
    return rng.choice(forms)


def correct_draft(rows: list[dict[str, Any]], *, seed: int = 0, count: int = 120) -> str:
    rng = random.Random(seed)
    measures = _measures(rows)
    chosen = rng.sample(measures, min(count, len(measures)))
    lines = [
        "## 1. Summary",
        "",
        "Recordings followed the 10-20 system; this is the Stage 4 consolidation of 3 sessions.",
        "1. Findings are listed per measure; PHQ-9 and Alpha 1 are names, not numbers.",
        "",
    ]
    dates = sorted({r["value"] for r in rows if r["metric"] == "Session date"})
    if dates:
        lines.append(f"The first session was recorded on {dates[0]} and the study ran in 2024.")
    for fact in chosen:
        lines.append(sentence(fact, rng=rng))
    retest = next((r for r in rows if r["metric"] == "P300 Latency Test/Retest"), None)
    if retest:
        lines.append(f"The vendor's test/retest threshold for P300 latency is < 25 ms [p{retest['page']}].")
    # Derived: changes between sessions of one measurement.
    groups: dict[tuple, dict[int, dict]] = {}
    for fact in measures:
        if fact["session"]:
            groups.setdefault((fact["page"], fact["metric"], fact["site"], fact["band"]), {})[
                fact["session"]
            ] = fact
    pairs = [g for g in groups.values() if 1 in g and 3 in g and g[1]["number"]]
    for group in rng.sample(pairs, min(15, len(pairs))):
        a, b = group[1], group[3]
        change = b["number"] - a["number"]
        decimals = max(len(a["value"].partition(".")[2]), len(b["value"].partition(".")[2]))
        unit = f" {a['unit']}" if a["unit"] and a["unit"] != "Z" else ""
        percent = change / a["number"] * 100
        where = f" at {a['site']}" if a["site"] else ""
        band = f" ({a['band']})" if a["band"] else ""
        lines.append(
            f"{a['metric']}{band}{where} went from {a['value']}{unit} in session 1 to {b['value']}{unit} in "
            f"session 3 [p{a['page']}], a change of {abs(change):.{decimals}f}{unit} ({percent:+.1f}%)."
        )
    # A table, as the drafts write them.
    table_rows = [f for f in chosen if f["session"] and not f["band"]][:10]
    lines += ["", "| Measure | Site | Session | Value | Page |", "|---|---|---|---|---|"]
    for fact in table_rows:
        lines.append(
            f"| {fact['metric']} | {fact['site'] or '-'} | Session {fact['session']} | "
            f"{fact['value']} {fact['unit'] if fact['unit'] != 'Z' else ''} | [p{fact['page']}] |"
        )
    return "\n".join(lines) + "\n"


def _other(rows, fact, **change):
    for row in rows:
        if row is fact or row["number"] is None:
            continue
        if all(row[k] == fact[k] for k in ("page", "metric", "band") if k) and all(
            row[k] == v for k, v in change.items()
        ):
            keep = {k for k in ("site", "session") if k not in change}
            if all(row[k] == fact[k] for k in keep) and row["value"] != fact["value"]:
                return row
    return None


def planted_errors(
    rows: list[dict[str, Any]], *, seed: int = 0, per_kind: int = 20
) -> list[tuple[str, str, str]]:
    """(kind, sentence, wrong number as written) for `per_kind` sentences of each kind."""
    rng = random.Random(seed)
    measures = _measures(rows)
    values_by_unit: dict[str, set[float]] = {}
    for row in measures:
        values_by_unit.setdefault(row["unit"], set()).add(row["number"])
    out: list[tuple[str, str, str]] = []
    decimals = [f for f in measures if "." in f["value"]]
    for fact in rng.sample(decimals, min(per_kind, len(decimals))):
        wrong = fact["value"].replace(".", "").lstrip("0") or "0"
        if fact["value"].startswith("-"):
            wrong = "-" + fact["value"][1:].replace(".", "").lstrip("0")
        if float(wrong) in values_by_unit[fact["unit"]]:
            continue
        out.append(("dropped_decimal", sentence(fact, value=wrong, rng=rng), wrong))
    sessioned = [f for f in measures if f["session"] and f["metric"] not in {"Absolute Power Z"}]
    rng.shuffle(sessioned)
    found = 0
    for fact in sessioned:
        other = next(
            (
                _other(rows, fact, session=s)
                for s in (1, 2, 3)
                if s != fact["session"] and _other(rows, fact, session=s)
            ),
            None,
        )
        if other is None:
            continue
        out.append(("swapped_session", sentence(other, session=fact["session"], rng=rng), other["value"]))
        found += 1
        if found == per_kind:
            break
    sited = [f for f in measures if f["site"]]
    rng.shuffle(sited)
    found = 0
    for fact in sited:
        others = [
            r
            for r in measures
            if r["metric"] == fact["metric"]
            and r["band"] == fact["band"]
            and r["session"] == fact["session"]
            and r["page"] == fact["page"]
            and r["site"] != fact["site"]
            and r["site"]
            and r["value"] != fact["value"]
        ]
        if not others:
            continue
        other = rng.choice(others)
        out.append(("wrong_site", sentence(other, site=fact["site"], rng=rng), other["value"]))
        found += 1
        if found == per_kind:
            break
    for fact in rng.sample(measures, per_kind):
        number = fact["number"]
        digits = len(fact["value"].partition(".")[2])
        for step in range(1, 50):
            candidate = round(number * (1 + 0.13 * step) + step, digits)
            if candidate not in values_by_unit[fact["unit"]]:
                break
        wrong = f"{candidate:.{digits}f}"
        out.append(("not_in_report", sentence(fact, value=wrong, rng=rng), wrong))
    pages = sorted({r["page"] for r in rows})
    for fact in rng.sample(measures, per_kind):
        page = rng.choice([p for p in pages if p != fact["page"]])
        out.append(("wrong_page", sentence(fact, page=page, rng=rng), fact["value"]))
    return out
