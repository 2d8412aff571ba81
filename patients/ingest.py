"""Turning an uploaded report into page-marked text and page images, all on this machine.

No ORM here: files in, files out, so it is testable on its own and the `ingestreport` process can call it
between two short database updates.

For a PDF, per page: the text layer (pypdfium2), a PNG render and a thumbnail, and local OCR (rapidocr on
onnxruntime, models in its wheel) when the text layer is thin or images cover much of the page — vendor
exports often put the key tables in bitmaps. The stored text (`text.md`) marks pages `=== PAGE i / N ===`
and keeps each source's text under its own label (`[text layer]`, `[OCR]`), so nothing is silently dropped
and a reader can tell where a number came from. `pages.json` records per page what each source yielded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from patients import facts, layout

TEXT_LAYER = layout.TEXT_LAYER
OCR = layout.OCR
TEXT_FILE = "text file"
THUMB_SIZE = (220, 300)


class UnreadableReport(Exception):
    """The file cannot be used; `status` is the HTTP answer an upload gets (413, 415 or 422)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class PageRecord(TypedDict):
    page: int
    chars: dict[str, int]  # source label -> characters it yielded
    ocr_ran: bool
    ocr_reason: str  # why OCR ran (or did not)
    ocr_confidence: float | None  # mean recognition score of the OCR boxes, 0..1
    ocr_seconds: float | None
    ocr_stages: dict[str, float]  # seconds OCR spent per stage: render, detect, layout, read
    image_coverage: float  # share of the page area covered by image objects
    image: str | None  # path relative to the report folder
    thumb: str | None
    sources: dict[str, str]  # source label -> text


@dataclass
class IngestOptions:
    max_pages: int
    render_dpi: int
    ocr_enabled: bool
    ocr_min_chars: int
    ocr_image_area: float


@dataclass
class IngestResult:
    page_count: int
    pages: list[PageRecord] = field(default_factory=list)
    seconds: float = 0.0
    layouts: list[layout.PageLayout] = field(default_factory=list, repr=False)  # for the vision reader


@dataclass(frozen=True)
class Step:
    """What ingestion starts doing now ("OCR of page 4"), with how many pages are done of how many."""

    what: str
    done: int
    total: int


OnStep = Callable[[Step], None]


def _no_steps(step: Step) -> None:
    pass


# --- what kind of file is it ------------------------------------------------------------------------------

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}
_MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/Excel file)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
]


def sniff_kind(head: bytes, name: str) -> str:
    """ "pdf", "text" or "markdown" from the file's first bytes and its name; UnreadableReport(415) else."""
    if b"%PDF-" in head[:1024]:
        return "pdf"
    suffix = Path(name).suffix.lower()
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise UnreadableReport(f"{name} is {what}, not a PDF or a text file.", status=415)
    if suffix in TEXT_SUFFIXES:
        if b"\x00" in head:
            raise UnreadableReport(f"{name} is named like a text file but holds binary data.", status=415)
        return TEXT_SUFFIXES[suffix]
    if suffix == ".pdf":
        raise UnreadableReport(f"{name} is named .pdf but is not a PDF.", status=415)
    raise UnreadableReport(
        f"{name}: only PDF, plain-text (.txt) and markdown (.md) reports are accepted.", status=415
    )


def _has_no_pages(data: bytes) -> bool:
    # PDFium refuses a document with an empty page tree outright; tell that apart from a broken file.
    return (
        re.search(rb"/Type\s*/Pages", data) is not None
        and re.search(rb"/Type\s*/Page(?![s\w])", data) is None
        and re.search(rb"/Count\s+0\b", data) is not None
    )


def open_pdf(path: Path, *, name: str, max_pages: int) -> pdfium.PdfDocument:
    """Open a PDF or raise UnreadableReport with a message a clinician understands."""
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise UnreadableReport(
                f"{name} is password-protected. Save an unprotected copy and upload that."
            ) from exc
        data = path.read_bytes()
        if _has_no_pages(data):
            raise UnreadableReport(f"{name} has no pages.") from exc
        raise UnreadableReport(f"{name} is damaged or not a valid PDF; it cannot be read.") from exc
    try:
        count = len(document)
        if count == 0:
            raise UnreadableReport(f"{name} has no pages.")
        if count > max_pages:
            raise UnreadableReport(
                f"{name} has {count} pages; the limit is {max_pages} (REPORT_MAX_PAGES).", status=413
            )
    except BaseException:
        document.close()
        raise
    return document


def check_report_file(path: Path, *, name: str, kind: str, max_pages: int) -> int:
    """Fast checks at upload time (no rendering): the page count, or UnreadableReport."""
    if path.stat().st_size == 0:
        raise UnreadableReport(f"{name} is empty.")
    if kind != "pdf":
        _read_text(path, name=name)
        return 1
    document = open_pdf(path, name=name, max_pages=max_pages)
    try:
        return len(document)
    finally:
        document.close()


def _read_text(path: Path, *, name: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            # Vendor text exports from Windows tools are often cp1252; it decodes nearly anything, so
            # demand that most of it is printable before trusting it.
            text = path.read_bytes().decode("cp1252")
        except UnicodeDecodeError as exc:
            raise UnreadableReport(f"{name} is not readable text (expected UTF-8).", status=415) from exc
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
        if printable < 0.95 * len(text):
            raise UnreadableReport(f"{name} is not readable text (expected UTF-8).", status=415) from None
        return text


# --- OCR ----------------------------------------------------------------------------------------------------

_engine: Any = None
_engine_lock = threading.Lock()


def ocr_engine() -> Any:
    """One RapidOCR engine per process: loading the models costs far more than one page."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from rapidocr_onnxruntime import RapidOCR

            # One thread: ingestion shares the machine with the web server and council runs, and
            # onnxruntime's spinning worker threads cost more than they give on a busy small box.
            _engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
        return _engine


# --- the work -----------------------------------------------------------------------------------------------


def image_coverage(page: pdfium.PdfPage) -> float:
    """Share of the page covered by image objects (overlaps counted twice; capped at 1)."""
    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return 0.0
    covered = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        left, bottom, right, top = obj.get_bounds()
        covered += max(0.0, min(right, width) - max(left, 0.0)) * max(
            0.0, min(top, height) - max(bottom, 0.0)
        )
    return min(1.0, covered / (width * height))


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def ingest_pdf(
    source: Path, out_dir: Path, *, name: str, options: IngestOptions, on_step: OnStep = _no_steps
) -> IngestResult:
    """Write pages/, thumbs/, text.md and pages.json for a PDF into out_dir (an empty work folder).
    `on_step` hears of each step as it starts (the page shows it live)."""
    started = time.monotonic()
    document = open_pdf(source, name=name, max_pages=options.max_pages)
    (out_dir / "pages").mkdir()
    (out_dir / "thumbs").mkdir()
    result = IngestResult(page_count=len(document))
    layouts: list[layout.PageLayout] = []
    try:
        for index in range(len(document)):
            number = index + 1
            on_step(Step(f"text layer and image of page {number}", index, result.page_count))
            page = document[index]
            try:
                textpage = page.get_textpage()
                layer = _clean(textpage.get_text_bounded())
                textpage.close()
                if layer:
                    layouts.append(layout.read_text_layer(page, number=number))
                coverage = round(image_coverage(page), 3)
                bitmap = page.render(scale=options.render_dpi / 72)
                image = bitmap.to_pil()
                image_rel = f"pages/page-{number:04d}.png"
                thumb_rel = f"thumbs/page-{number:04d}.png"
                image.save(out_dir / image_rel, optimize=False)
                thumb = image.copy()
                thumb.thumbnail(THUMB_SIZE)
                thumb.save(out_dir / thumb_rel)
                record = PageRecord(
                    page=number,
                    chars={TEXT_LAYER: len(layer)},
                    ocr_ran=False,
                    ocr_reason="",
                    ocr_confidence=None,
                    ocr_seconds=None,
                    ocr_stages={},
                    image_coverage=coverage,
                    image=image_rel,
                    thumb=thumb_rel,
                    sources={TEXT_LAYER: layer},
                )
                reason = _ocr_reason(len(layer), coverage, options)
                if reason and options.ocr_enabled:
                    on_step(Step(f"OCR of page {number}", index, result.page_count))
                    ocr_started = time.monotonic()
                    read = layout.read_ocr(page, number=number, engine=ocr_engine())
                    layouts.append(read)
                    text = read.text()
                    record.update(
                        ocr_ran=True,
                        ocr_reason=reason,
                        ocr_confidence=read.mean_confidence(),
                        ocr_seconds=round(time.monotonic() - ocr_started, 2),
                        ocr_stages=read.seconds,
                    )
                    record["chars"][OCR] = len(text)
                    record["sources"][OCR] = text
                else:
                    record["ocr_reason"] = (reason + "; OCR is off") if reason else "text layer is enough"
                result.pages.append(record)
            finally:
                page.close()
    finally:
        document.close()
    on_step(Step("the fact table", result.page_count, result.page_count))
    table = facts.build_table(facts.read_layouts(layouts), page_count=result.page_count)
    result.layouts = layouts
    result.seconds = round(time.monotonic() - started, 2)
    _write_outputs(out_dir, result, kind="pdf", table=table)
    return result


def _ocr_reason(chars: int, coverage: float, options: IngestOptions) -> str:
    if chars < options.ocr_min_chars:
        return f"text layer has {chars} characters (< {options.ocr_min_chars})"
    if coverage >= options.ocr_image_area:
        return f"images cover {coverage:.0%} of the page"
    return ""


def ingest_text(source: Path, out_dir: Path, *, name: str, kind: str) -> IngestResult:
    """A plain-text or markdown upload is one "page" with no image."""
    started = time.monotonic()
    text = _clean(_read_text(source, name=name))
    result = IngestResult(
        page_count=1,
        pages=[
            PageRecord(
                page=1,
                chars={TEXT_FILE: len(text)},
                ocr_ran=False,
                ocr_reason="a text upload has no images",
                ocr_confidence=None,
                ocr_seconds=None,
                ocr_stages={},
                image_coverage=0.0,
                image=None,
                thumb=None,
                sources={TEXT_FILE: text},
            )
        ],
    )
    result.seconds = round(time.monotonic() - started, 2)
    # A text upload has no positions to read tables by: its fact table says so, page by page.
    _write_outputs(out_dir, result, kind=kind, table=facts.build_table([], page_count=1))
    return result


def render_text(pages: list[PageRecord]) -> str:
    """The stored, page-marked text: every source of every page, labelled."""
    total = len(pages)
    chunks = []
    for record in pages:
        chunks.append(f"=== PAGE {record['page']} / {total} ===")
        for label, text in record["sources"].items():
            chunks.append(f"[{label}]")
            chunks.append(text if text else "(empty)")
        chunks.append("")
    return "\n".join(chunks)


def _write_outputs(out_dir: Path, result: IngestResult, *, kind: str, table: facts.FactTable) -> None:
    (out_dir / "text.md").write_text(render_text(result.pages), encoding="utf-8")
    facts.write_table(out_dir, table)
    meta = {"kind": kind, "page_count": result.page_count, "seconds": result.seconds, "pages": result.pages}
    (out_dir / "pages.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
