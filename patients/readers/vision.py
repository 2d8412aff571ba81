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
that were not fully read.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from council import deid, prompts
from council.schemas import parse_reply
from council.stages.base import CallLimits, ModelFailed, complete_json, system_user
from patients import facts as fact_table
from patients.layout import PageLayout
from patients.readers.base import Fact, fold, parse_value, repair_electrode

READER = "vision"
SOURCE = "page image"
PROMPT = "page_facts.v1"
_VALUE = re.compile(r"^[<>]?-?\d+(?:\.\d+)?$")
PLACEHOLDER_VALUES = ("-", "N/A", "<0")


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


def to_facts(reply: PageFactsReply, table: dict[str, Any], number: int, *, model: str) -> list[Fact]:
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
                confidence=None,  # a model's reading carries no calibrated score
                box=[],
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
) -> dict[str, Any]:
    """Send the table's unsure pages to the vision model and merge what it reads (see the module docstring).
    Mutates and returns `table`; sets `table["vision"]` and each unsure page's `vision`. Never raises for an
    upstream or reply problem: each becomes a note."""
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
    asyncio.run(
        _read_pages(
            table,
            pages,
            _Sources(pdf_path, layouts, records, identifiers, date_order),
            config=config,
            client_factory=client_factory,
        )
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
    return table


@dataclass(frozen=True)
class _Sources:
    """What a page is painted and read from."""

    pdf_path: Path
    layouts: list[PageLayout]
    records: list[dict[str, Any]]
    identifiers: deid.Identifiers
    date_order: str


async def _read_pages(
    table: dict[str, Any], pages: list[int], sources: _Sources, *, config: VisionConfig, client_factory: Any
) -> None:
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
    async with client:
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
                output = await asyncio.wait_for(
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
                    table, number, to_facts(reply, table, number, model=config.model)
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
