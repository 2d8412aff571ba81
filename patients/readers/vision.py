"""The vision reader: a page the deterministic readers are unsure of, read again by a vision model.

After the deterministic readers have built the fact table (patients/facts.py), every page that is not fully
read (its `unsure` reasons: expected facts missing, labels not found, merged tokens left, low confidence)
and has an image is rendered at `FACTS_VISION_DPI`, its identifying regions painted out from its own word
boxes (council/deid.py, the same painting the council's page images get), and sent through the one
CLIProxyAPI client (bounded retries, the identifier guard) to `FACTS_VISION_MODEL`, asking for a strict
JSON list of facts (`PageFactsReply`). A reply that does not validate is sent back with the error
(`council.stages.base.complete_json`, `COUNCIL_JSON_RETRIES` times), then the page is given up and the
table says so. The model's facts join the table as one more reader (`vision:<model>`, source
`page image`): what the deterministic readers missed is added, what they read alike is confirmed, and a
value they read differently is kept beside theirs with both marked, never resolved.

Nothing here can fail an ingestion: every upstream or reply problem becomes the page's `vision` note, and
the whole pass is bounded by `FACTS_VISION_TIMEOUT_SECONDS`. Pages whose text cannot all be located (a
bitmap on a page OCR did not read) are not sent, as with the council's page images. Without a model (or
with `DEID_PAGE_IMAGES=off`, which lets no page image leave) nothing is sent and the table lists the pages
that were not fully read. Each page sent is one model call charged to the report's uploader, whatever
retries it takes: `on_call(page)` (patients/services.py: the ledger) runs once the guard has passed the
page and just before its call leaves, so a pass killed while a call is out has it counted; `calls_made`
counts the same pages from the table afterwards. `calls_left` (their allowance when the pass begins, None:
no limit) bounds how many pages are sent, and a page past it is not sent, with `quota_note` as its reason.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from council import deid, prompts
from council.schemas import parse_reply
from council.stages.base import CallLimits, ModelFailed, complete_json, system_user
from patients import facts as fact_table
from patients.layout import Box, PageLayout, is_merged_token
from patients.readers.base import Fact, fold, parse_value, repair_electrode, split_unit

READER = "vision"
SOURCE = "page image"
PROMPT = "page_facts.v1"
_VALUE = re.compile(r"^[<>]?-?\d+(?:\.\d+)?$")
PLACEHOLDER_VALUES = ("-", "N/A", "<0")
CHARGED = ("read", "invalid", "failed")  # a page's statuses once its call was made (refused: nothing left)


# --- the reply ------------------------------------------------------------------------------------------------


class PageFact(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    metric: str = Field(min_length=1, max_length=120)
    site: str | None = Field(default=None, max_length=40)
    band: str | None = Field(default=None, max_length=40)
    session: int | None = Field(default=None, ge=1, le=50)
    value: str = Field(min_length=1, max_length=24)
    unit: str = Field(default="", max_length=16)
    target: str = Field(default="", max_length=60)

    @field_validator("value")
    @classmethod
    def _printed_value(cls, value: str) -> str:
        folded = fold(value)
        if folded in PLACEHOLDER_VALUES or _VALUE.match(folded):
            return folded
        raise ValueError(
            f"value {value!r} is not a number as printed (no unit, no words) nor one of {', '.join(PLACEHOLDER_VALUES)}"
        )


class PageFactsReply(BaseModel):
    """What the vision model answers for one page."""

    model_config = ConfigDict(extra="forbid")

    page: int
    facts: list[PageFact] = Field(max_length=1500)
    unreadable: list[str] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _one_value_per_measurement(self, info: Any) -> PageFactsReply:
        expected_page = (info.context or {}).get("page") if info is not None else None
        if expected_page is not None and self.page != expected_page:
            raise ValueError(f"page must be {expected_page}, the page shown (got {self.page})")
        seen: dict[tuple, str] = {}
        for fact in self.facts:
            key = (fact.metric.lower(), fact.site, fact.band, fact.session)
            if key in seen and seen[key] != fact.value:
                raise ValueError(
                    f"two values for {fact.metric} {fact.site or ''} {fact.band or ''} session {fact.session}: "
                    f"{seen[key]} and {fact.value}"
                )
            seen[key] = fact.value
        return self


REPLY_EXAMPLE = {
    "page": 2,
    "facts": [
        {"metric": "P300 Rare latency", "site": "Cz", "band": None, "session": 1, "value": "352", "unit": "ms"},
        {"metric": "Errors", "site": None, "band": None, "session": 2, "value": "N/A", "unit": ""},
        {"metric": "Reaction Time", "site": None, "band": None, "session": 1, "value": "312", "unit": "ms",
         "target": "253-364 ms"},
    ],
    "unreadable": ["the Fz panel's third row is smudged"],
}  # fmt: skip


def parse_page_facts(text: str, *, page: int) -> PageFactsReply:
    return parse_reply(PageFactsReply, text, context={"page": page})


# --- settings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionConfig:
    model: str  # "" = off
    max_pages: int
    timeout_seconds: float  # the whole pass over a report
    dpi: int
    json_retries: int
    max_tokens: int | None
    images_allowed: bool  # DEID_PAGE_IMAGES lets painted images leave

    @classmethod
    def from_settings(cls) -> VisionConfig:
        from django.conf import settings

        return cls(
            model=settings.FACTS_VISION_MODEL,
            max_pages=settings.FACTS_VISION_MAX_PAGES,
            timeout_seconds=settings.FACTS_VISION_TIMEOUT_SECONDS,
            dpi=settings.FACTS_VISION_DPI,
            json_retries=settings.COUNCIL_JSON_RETRIES,
            max_tokens=settings.COUNCIL_MAX_TOKENS,
            images_allowed=settings.DEID_PAGE_IMAGES == "paint",
        )


# --- which pages ---------------------------------------------------------------------------------------------


def unsure_pages(table: dict[str, Any]) -> list[int]:
    return [page["page"] for page in table["pages"] if not page["fully_read"]]


def _why_not_sent(quality: dict[str, Any], record: dict[str, Any], layouts: list[PageLayout]) -> str:
    """Why this page cannot (or need not) go to the vision model ("" when it goes)."""
    if not record.get("image"):
        return "the page has no image"
    if quality["reader"] is None and not record.get("ocr_ran"):
        return "no reader knows this text-layer page; its text goes to the council exactly as printed"
    if not layouts:
        return "nothing on the page could be located, so nothing could be painted out"
    bitmaps = record.get("image_coverage", 1.0) > 0 or record.get("ocr_ran")
    if bitmaps and not any(layout.source == "OCR" for layout in layouts):
        return "text inside its images was not located (OCR did not run), so it cannot be painted out"
    return ""


# --- one page ------------------------------------------------------------------------------------------------


def painted_png(
    pdf_path: Path,
    number: int,
    layouts: list[PageLayout],
    identifiers: deid.Identifiers,
    *,
    dpi: int,
    order: str,
) -> tuple[bytes, int]:
    """Page `number` rendered at `dpi` with every identifying region painted out, and how many were."""
    import pypdfium2 as pdfium

    from patients.boxes import layout_lines

    document = pdfium.PdfDocument(pdf_path)
    try:
        page = document[number - 1]
        try:
            image = page.render(scale=dpi / 72).to_pil().convert("RGB")
        finally:
            page.close()
    finally:
        document.close()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    lines = layout_lines(layouts, image.size)
    found = deid.identifying_boxes(lines, identifiers, order=order)
    return deid.paint_out(buffer.getvalue(), found), len(found)


def _expected_lines(table: dict[str, Any], number: int) -> list[str]:
    """The measurements the deterministic readers know this page holds (read or missing), without values."""
    keys = {}
    for row in [*table["facts"], *table["missing"]]:
        if row["page"] == number:
            keys[(row["metric"], row["site"], row["band"], row["session"])] = None
    return [
        json.dumps({"metric": metric, "site": site, "band": band, "session": session}, ensure_ascii=False)
        for metric, site, band, session in keys
    ]


def build_messages(table: dict[str, Any], number: int, data_url: str) -> list[dict]:
    quality = next(page for page in table["pages"] if page["page"] == number)
    expected = _expected_lines(table, number)
    system, user = prompts.load(PROMPT).render(
        page=str(number),
        reader=quality["reader"] or "none",
        unsure="; ".join(quality["unsure"]) or "none",
        expected="\n".join(expected)
        if expected
        else "(no reader knows this page's layout: list what it prints)",
        example=json.dumps(REPLY_EXAMPLE, indent=2, ensure_ascii=False),
    )
    return system_user(
        system, [{"type": "text", "text": user}, {"type": "image_url", "image_url": {"url": data_url}}]
    )


def _canonical(table: dict[str, Any], number: int) -> dict[str, dict[str, str]]:
    """The spellings the deterministic readers use on this page, so the model's "p300 rare Latency" or
    "alpha1" lands on the same measurement as theirs."""
    names: dict[str, dict[str, str]] = {"metric": {}, "band": {}, "site": {}}
    for row in [*table["facts"], *table["missing"]]:
        if row["page"] != number:
            continue
        for field in names:
            if row[field]:
                names[field][_squash(row[field])] = row[field]
    return names


def _squash(text: str) -> str:
    return re.sub(r"[\s_]+", "", fold(text)).lower()


# How sure a vision reading is, said from what the page's own text shows (a model states no calibrated score;
# the prompt already tells it to leave out what it cannot read surely). Each level has its sentence.
AT_PLACE = 0.9  # a box printing the same value where the measurement is (its cell, its row or its panel)
ON_PAGE = 0.75  # printed once on the page, where the measurement is not known
IN_MERGED = 0.7  # printed inside a box the OCR could not split ("11.5352" holding 11.5)
UNSEEN = 0.5  # no box there prints it: the model's reading alone (the prompts mark it unsure)
BASIS = {
    AT_PLACE: "the page's own text prints the same value at the highlighted place",
    ON_PAGE: "the page's own text prints this value once, at the highlighted place, but where this "
    "measurement is on the page is not known",
    IN_MERGED: "the page's own text holds this value only run together with another (highlighted)",
    UNSEEN: "no text read on the page prints this value where the measurement is: the vision model's "
    "reading alone",
}
NEAR = 8.0  # a measurement's row or panel: within this many print heights of what marks its place


def confidence_basis(fact: dict[str, Any]) -> str:
    """The sentence behind a vision fact's confidence ("" for another reader's fact)."""
    return BASIS.get(fact.get("confidence"), "") if fact.get("source") == SOURCE else ""


def locate(
    value: str,
    *,
    metric: str,
    site: str | None,
    band: str | None,
    session: int | None,
    table: dict[str, Any],
    number: int,
    boxes: list[Box],
) -> tuple[list[float], float]:
    """(box, confidence) of a vision reading from the page's boxes: the box printing `value` nearest to
    where the measurement is. Its place is the cell a deterministic reader read for the same measurement
    (then only that cell counts), else the cells of its other sessions and its site's label."""
    exact = [box for box in boxes if _printed(box) == value]
    merged = [
        box
        for box in boxes
        if len(value) >= 2
        and value not in PLACEHOLDER_VALUES
        and is_merged_token(fold(box.text))
        and (fold(box.text).startswith(value) or fold(box.text).endswith(value))
    ]
    if not boxes or not (exact or merged):
        return [], UNSEEN
    height = statistics.median(box.height for box in boxes) or 1.0
    mine = [
        row
        for row in table["facts"]
        if row["page"] == number
        and row.get("box")
        and row.get("source") != SOURCE
        and (row["metric"], row["site"], row["band"]) == (metric, site, band)
    ]
    cell = [row["box"] for row in mine if row["session"] == session]
    if cell:
        places, reach = cell, 1.0  # the very cell: a value beside it is another measurement's
    else:
        places = [row["box"] for row in mine]
        if site:
            places += [box.as_list() for box in boxes if repair_electrode(box.text) == site]
        reach = NEAR
    if not places:
        found = exact if len(exact) == 1 else []
        return (found[0].as_list(), ON_PAGE) if found else ([], UNSEEN)
    for candidates, confidence in ((exact, AT_PLACE), (merged, IN_MERGED)):
        near = [
            (distance, box)
            for box in candidates
            if (distance := _distance(box, places, height, same_row=not cell)) <= reach
        ]
        if near:
            return min(near, key=lambda pair: pair[0])[1].as_list(), confidence
    return [], UNSEEN


def _printed(box: Box) -> str:
    value, _ = split_unit(box.text)
    return parse_value(value)[0]


def _distance(box: Box, places: list[list[float]], height: float, *, same_row: bool) -> float:
    """In print heights, from the nearest place; a box inside a place, or on the same printed row as one
    (its other sessions' cells), is at it, however wide the table."""
    best = math.inf
    for x0, y0, x1, y1 in places:
        pad = 0.5 * height
        inside = x0 - pad <= box.cx <= x1 + pad and y0 - pad <= box.cy <= y1 + pad
        if inside or (same_row and abs(box.cy - (y0 + y1) / 2) <= 0.6 * height):
            return 0.0
        best = min(best, math.dist((box.cx, box.cy), ((x0 + x1) / 2, (y0 + y1) / 2)) / height)
    return best


def to_facts(
    reply: PageFactsReply,
    table: dict[str, Any],
    number: int,
    *,
    model: str,
    layouts: Sequence[PageLayout] = (),
) -> list[Fact]:
    """The reply's facts as one more reader's, each placed on the page (`locate`) when its text shows it."""
    boxes = [box for layout in layouts if layout.page == number for box in layout.boxes]
    names = _canonical(table, number)
    dates = {
        row["session"]: row["session_date"]
        for row in table["facts"]
        if row["session"] is not None and row.get("session_date")
    }
    out: list[Fact] = []
    reader = f"{READER}:{model}"
    for item in reply.facts:
        metric = names["metric"].get(_squash(item.metric), item.metric)
        band = names["band"].get(_squash(item.band), item.band) if item.band else None
        site = None
        if item.site:
            site = names["site"].get(_squash(item.site)) or repair_electrode(item.site) or item.site
        value, number_value, placeholder = parse_value(item.value)
        box, confidence = locate(
            value, metric=metric, site=site, band=band, session=item.session, table=table, number=number,
            boxes=boxes,
        )  # fmt: skip
        out.append(
            Fact(
                id="|".join(str(part) for part in (number, reader, metric, site, band, item.session)),
                page=number,
                metric=metric,
                section="",
                site=site,
                band=band,
                session=item.session,
                session_date=dates.get(item.session),
                value=value,
                read_as="",
                number=number_value,
                placeholder=placeholder,
                unit=fold(item.unit),
                target=fold(item.target),
                norm="",
                reader=reader,
                source=SOURCE,
                confidence=confidence,
                box=box,
            )
        )
    return out


# --- the pass over a report ----------------------------------------------------------------------------------


def read_unsure_pages(
    table: dict[str, Any],
    *,
    pdf_path: Path,
    layouts: list[PageLayout],
    records: list[dict[str, Any]],
    identifiers: deid.Identifiers,
    date_order: str,
    config: VisionConfig,
    client_factory: Any = None,
    calls_left: int | None = None,
    quota_note: str = "",
    on_call: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Send the table's unsure pages to the vision model and merge what it reads (see the module docstring).
    Mutates and returns `table`; sets `table["vision"]` and each unsure page's `vision`. Never raises for an
    upstream or reply problem: each becomes a note. At most `calls_left` pages are sent (None: no limit); the
    others are not sent, `quota_note` saying why."""
    pages = unsure_pages(table)
    summary: dict[str, Any] = {"model": config.model, "status": "off", "note": "", "pages": pages}
    table["vision"] = summary
    if not pages:
        summary.update(status="not needed", note="every page was fully read by the deterministic readers")
        return table
    # `pages` says which pages were not fully read; the note says what the vision reader did about them.
    if not config.model:
        summary["note"] = "no vision reader is configured (FACTS_VISION_MODEL)"
        return table
    if not config.images_allowed:
        summary["note"] = "FACTS_VISION_MODEL is set but DEID_PAGE_IMAGES is off, so no page image may leave"
        return table
    if calls_left is not None and calls_left <= 0:
        summary.update(status="over quota", note=f"nothing sent: {quota_note}")
        for page in table["pages"]:
            if page["page"] in pages:
                page["vision"] = {"model": config.model, "status": "not sent", "note": quota_note}
        return table
    _read_pages(
        table,
        pages,
        _Sources(pdf_path, layouts, records, identifiers, date_order),
        config=config,
        client_factory=client_factory,
        calls_left=calls_left,
        quota_note=quota_note,
        on_call=on_call,
    )
    over = sum(
        1 for p in table["pages"] if p.get("vision") and p["vision"]["note"] == quota_note and quota_note
    )
    sent = [
        p["vision"]["status"]
        for p in table["pages"]
        if p.get("vision") and p["vision"]["status"] != "not sent"
    ]
    read = sent.count("read")
    if not sent:
        summary.update(status="nothing sent", note="none of them could be sent (see each page)")
    else:
        summary["status"] = "done" if read == len(sent) else "partial" if read else "failed"
        summary["note"] = f"{read} of {len(sent)} page(s) sent were read by {config.model}" + (
            "; the others keep the deterministic facts only (see each page)" if read < len(sent) else ""
        )
    if over:
        summary["note"] += f"; {over} page(s) not sent: {quota_note}"
    return table


def calls_made(table: dict[str, Any]) -> int:
    """The model calls a pass over `table` made: one per page whose call went out (retries included)."""
    return sum(1 for page in table["pages"] if (page.get("vision") or {}).get("status") in CHARGED)


@dataclass(frozen=True)
class _Sources:
    """What a page is painted and read from."""

    pdf_path: Path
    layouts: list[PageLayout]
    records: list[dict[str, Any]]
    identifiers: deid.Identifiers
    date_order: str


def _read_pages(
    table: dict[str, Any],
    pages: list[int],
    sources: _Sources,
    *,
    config: VisionConfig,
    client_factory: Any,
    calls_left: int | None,
    quota_note: str,
    on_call: Callable[[int], None] | None,
) -> None:
    """The pages one by one, their calls made on one event loop kept from page to page (asyncio.Runner), so
    that `on_call(page)` runs with no loop running (it writes to the database: the ledger)."""
    from council.client import CLIProxyClient, UpstreamError

    started = time.monotonic()
    budget = config.timeout_seconds
    guard = deid.IdentifierGuard(sources.identifiers, order=sources.date_order)
    factory = client_factory or CLIProxyClient.from_settings
    # One call may not outlast the pass, retries and cooldowns included.
    client = factory(
        guard=guard, read_timeout=budget, max_retry_seconds=budget, max_cooldown_seconds=budget / 2
    )
    quality_of = {page["page"]: page for page in table["pages"]}
    records_of = {record["page"]: record for record in sources.records}
    limits = CallLimits(max_tokens=config.max_tokens, json_retries=config.json_retries)
    asked = 0
    with asyncio.Runner() as runner:
        runner.run(client.__aenter__())
        try:
            for index, number in enumerate(pages):
                quality = quality_of[number]
                state: dict[str, Any] = {"model": config.model, "status": "", "note": ""}
                quality["vision"] = state
                if index >= config.max_pages:
                    state.update(
                        status="not sent", note=f"FACTS_VISION_MAX_PAGES ({config.max_pages}) pages were sent"
                    )
                    continue
                page_layouts = [layout for layout in sources.layouts if layout.page == number]
                why = _why_not_sent(quality, records_of.get(number, {}), page_layouts)
                if why:
                    state.update(status="not sent", note=why)
                    continue
                left = budget - (time.monotonic() - started)
                if left <= 0:
                    state.update(status="not sent", note=f"the vision pass ran out of time ({budget:g} s)")
                    continue
                if calls_left is not None and asked >= calls_left:
                    state.update(status="not sent", note=quota_note)
                    continue
                asked += 1
                page_started = time.monotonic()
                try:
                    png, painted = painted_png(
                        sources.pdf_path,
                        number,
                        page_layouts,
                        sources.identifiers,
                        dpi=config.dpi,
                        order=sources.date_order,
                    )
                    state["painted"] = painted
                    messages = build_messages(
                        table, number, "data:image/png;base64," + base64.b64encode(png).decode()
                    )
                    # Looked at before the call is charged (the client looks again as it sends): a page the
                    # guard refuses leaves nothing and costs nothing.
                    guard.check(messages, where=f"the request to {config.model}")
                    if on_call is not None:
                        # Charged before it leaves, so a pass killed while the call is out has it counted.
                        on_call(number)
                    output = runner.run(
                        asyncio.wait_for(
                            complete_json(
                                client,
                                config.model,
                                messages,
                                limits,
                                parse=lambda text, number=number: parse_page_facts(text, page=number),
                                dump=lambda reply: reply.model_dump_json(),
                                what="page facts JSON",
                            ),
                            timeout=left,
                        )
                    )
                except TimeoutError:
                    state.update(status="failed", note=f"no answer within the vision pass's {budget:g} s")
                except ModelFailed as exc:
                    state.update(status="invalid", note=f"gave up: {exc.message}")
                except deid.IdentifierRefused as exc:
                    state.update(status="refused", note=exc.message)
                except UpstreamError as exc:
                    state.update(status="failed", note=exc.message)
                else:
                    reply: PageFactsReply = output.parsed
                    counts = fact_table.add_facts(
                        table,
                        number,
                        to_facts(reply, table, number, model=config.model, layouts=page_layouts),
                    )
                    state.update(
                        status="read",
                        facts=len(reply.facts),
                        added=counts["new"],
                        agreed=counts["agreed"],
                        disagreed=counts["disagreed"],
                        calls=output.usage.calls,
                        unreadable=reply.unreadable[:20],
                        note=(
                            f"{len(reply.facts)} facts: {counts['new']} new, {counts['agreed']} agreeing, "
                            f"{counts['disagreed']} disagreeing with the deterministic readers"
                        ),
                    )
                state["seconds"] = round(time.monotonic() - page_started, 2)
        finally:
            runner.run(client.__aexit__(None, None, None))
