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

import base64
import binascii
import itertools
import json
import math
import mmap
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
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
    render_note: str  # why the page was rendered coarser than asked (a page too large), or ""
    sources: dict[str, str]  # source label -> text


@dataclass
class IngestOptions:
    max_pages: int
    render_dpi: int
    ocr_enabled: bool
    ocr_min_chars: int
    ocr_image_area: float
    # A render is never larger than this many pixels: a bigger page is rendered at a lower resolution.
    max_page_pixels: int = 12_000_000
    # No stream of the file may inflate past this many bytes (checked before PDFium opens the file).
    max_stream_bytes: int = 256 * 1024 * 1024


@dataclass
class IngestResult:
    page_count: int
    pages: list[PageRecord] = field(default_factory=list)
    seconds: float = 0.0
    peak_memory_mb: int | None = None  # of the process that read it, when it ran in its own (sandbox.py)
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


def check_report_file(path: Path, *, name: str, kind: str, max_pages: int, max_stream_bytes: int) -> int:
    """Fast checks at upload time (no rendering): the page count, or UnreadableReport. The streams are
    checked first: counting the pages makes PDFium inflate the object streams holding the page tree, here in
    the web server's process."""
    if path.stat().st_size == 0:
        raise UnreadableReport(f"{name} is empty.")
    if kind != "pdf":
        _read_text(path, name=name)
        return 1
    check_streams(path, name=name, max_bytes=max_stream_bytes)
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


# --- decompression bombs ------------------------------------------------------------------------------------

# A stream's dictionary ends right before its `stream` keyword; the object it belongs to starts at `n g obj`.
_STREAM_KEYWORD = re.compile(rb">>\s*stream(?:\r\n|\n|\r)")
_OBJECT_START = re.compile(rb"\d+\s+\d+\s+obj\b")
_FILTER = re.compile(rb"/Filter\s*(\[[^\]]*\]|/[^\s/\[\]<>()]+)")
_NAME = re.compile(rb"/([^\s/\[\]<>()]+)")
_ABBREVIATIONS = {"Fl": "FlateDecode", "AHx": "ASCIIHexDecode", "A85": "ASCII85Decode"}
_ZLIB_HEADER = re.compile(rb"\x78[\x01\x5e\x9c\xda]")
_CHUNK = 1 << 20


def _filters(dictionary: bytes, data: memoryview) -> list[str]:
    """The stream's filter names in order, with `#xx` escapes undone (`/Fl#61teDecode` is FlateDecode). None
    seen (given indirectly, `/Filter 7 0 R`, or out of sight in a long dictionary): `_sniffed` reads the data
    for what it is."""
    found = list(_FILTER.finditer(dictionary))
    match = found[-1] if found else None
    if match is None:
        return []
    names = []
    for raw in _NAME.findall(match.group(1)):
        name = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw).decode("latin-1")
        names.append(_ABBREVIATIONS.get(name, name))
    return names


def _ascii_decoded(data: memoryview, kind: str) -> bytes:
    """ASCIIHex/ASCII85 decoded in memory: their output is smaller than their input, which is in the file."""
    text = bytes(data[: _CHUNK * 64])
    try:
        if kind == "ASCIIHexDecode":
            digits = re.sub(rb"\s", b"", text.split(b">", 1)[0])
            return binascii.unhexlify(digits + b"0" * (len(digits) % 2))
        body = re.sub(rb"\s", b"", text.split(b"~>", 1)[0])
        return base64.a85decode(body.removeprefix(b"<~"))
    except (ValueError, binascii.Error):
        return b""


def _inflated(pieces: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    """FlateDecode as a stream of at most 1 MiB pieces; stops at the end of the zlib data or at an error,
    as far as PDFium would get."""
    inflater = zlib.decompressobj()
    for piece in pieces:
        data = piece
        while data and not inflater.eof:
            try:
                out = inflater.decompress(data, _CHUNK)
            except zlib.error:
                return
            data = inflater.unconsumed_tail
            if out:
                yield out
        if inflater.eof:
            return


def _raw_pieces(data: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(data), _CHUNK):
        yield data[start : start + _CHUNK]


def _decoded_size(data: memoryview, filters: list[str], limit: int) -> int:
    """How many bytes the stream decodes to, counted in pieces and given up past `limit`. Counted through
    any chain of FlateDecode (and ASCIIHex/ASCII85 in front of it); other filters (images, LZW, RunLength)
    stop the count, and the ingester's memory limit bounds what they might still cost."""
    pieces: Iterator[bytes | memoryview] = _raw_pieces(data)
    for position, name in enumerate(filters):
        if name in ("ASCIIHexDecode", "ASCII85Decode") and position == 0:
            pieces = iter([_ascii_decoded(data, name)])
        elif name == "FlateDecode":
            pieces = _inflated(pieces)
        else:
            break
    else:
        if not filters:
            return 0  # stored as is: no bigger than the file
    return _counted(pieces, limit)


def _counted(pieces: Iterator[bytes | memoryview], limit: int) -> int:
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > limit:
            break
    return total


_SNIFFED_LAYERS = 8
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f\s]{16,}")


def _sniffed(data: memoryview, limit: int) -> int:
    """How many bytes a stream whose filters its dictionary does not show decodes to, read from its bytes:
    zlib while each layer starts like zlib (a hexadecimal wrapping first included), counted in pieces and
    given up past `limit`. Data that only looks like zlib stops at its first error, at no cost."""
    pieces: Iterator[bytes | memoryview] = _raw_pieces(data)
    if _HEX_DIGITS.match(data[:64]) and _ZLIB_HEADER.match(_ascii_decoded(data[:64], "ASCIIHexDecode")[:2]):
        pieces = iter([_ascii_decoded(data, "ASCIIHexDecode")])
    layers = 0
    while layers < _SNIFFED_LAYERS:
        first = next(pieces, None)
        if first is None:
            return 0
        pieces = itertools.chain([first], pieces)
        if not _ZLIB_HEADER.match(bytes(first[:2])):
            break
        pieces = _inflated(pieces)
        layers += 1
    return _counted(pieces, limit) if layers else 0


def check_streams(path: Path, *, name: str, max_bytes: int) -> None:
    """Refuse (413) a file any stream of which inflates past `max_bytes`: PDFium would inflate it whole into
    memory when it opens the file or a page (a 1 MB stream can hold a gigabyte of blanks, a 3 KB one twice
    deflated as much). Read straight from the file; nothing but one piece at a time is held."""
    if path.stat().st_size == 0:
        return
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        whole = memoryview(mapped)
        try:
            for match in _STREAM_KEYWORD.finditer(mapped):
                window = mapped[max(0, match.start() - 16384) : match.start()]
                starts = list(_OBJECT_START.finditer(window))
                dictionary = window[starts[-1].end() :] if starts else window
                data = whole[match.end() :]
                filters = _filters(dictionary, data)
                size = _decoded_size(data, filters, max_bytes) if filters else _sniffed(data, max_bytes)
                del data
                if size > max_bytes:
                    raise UnreadableReport(
                        f"{name} holds compressed content that inflates to more than "
                        f"{max_bytes // (1024 * 1024)} MB (REPORT_MAX_STREAM_MB); it is refused unread.",
                        status=413,
                    )
        finally:
            whole.release()


def render_scale(width: float, height: float, *, dpi: int, max_pixels: int) -> tuple[float, str]:
    """The scale to render a page of width x height points at, and why it is coarser than `dpi` when the
    page is so large that the render would pass `max_pixels` (checked before anything is rendered)."""
    scale = dpi / 72
    if width <= 0 or height <= 0 or width * height * scale * scale <= max_pixels:
        return scale, ""
    scale = math.sqrt(max_pixels / (width * height)) * 0.999  # PDFium rounds the bitmap's sides up
    return scale, (
        f"rendered at {scale * 72:.0f} dpi, not {dpi}: the page is {width / 72:.0f} x {height / 72:.0f} in, "
        f"and a render may have at most {max_pixels / 1e6:g} million pixels (REPORT_MAX_PAGE_PIXELS)"
    )


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
            from patients import ocr_model

            _engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
            ocr_model.load_simplified(_engine, threads=1, cache=_model_cache())
        return _engine


def _model_cache() -> Path | None:
    """Where the simplified OCR graphs are kept: the data folder's `cache/ocr`, when Django's settings are
    there to say where that is (an ingestion child has them from its environment); else none."""
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    return Path(settings.DATA_DIR) / "cache" / "ocr"


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
    check_streams(source, name=name, max_bytes=options.max_stream_bytes)
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
                width, height = page.get_size()
                scale, render_note = render_scale(
                    width, height, dpi=options.render_dpi, max_pixels=options.max_page_pixels
                )
                bitmap = page.render(scale=scale)
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
                    render_note=render_note,
                    sources={TEXT_LAYER: layer},
                )
                reason = _ocr_reason(len(layer), coverage, options)
                if reason and options.ocr_enabled:
                    on_step(Step(f"OCR of page {number}", index, result.page_count))
                    ocr_started = time.monotonic()
                    # The fine OCR render is capped like the page image: a poster is read coarser.
                    ocr_scale, _ = render_scale(
                        width, height, dpi=layout.READ_DPI, max_pixels=options.max_page_pixels
                    )
                    read = layout.read_ocr(page, number=number, engine=ocr_engine(), read_dpi=ocr_scale * 72)
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
                render_note="",
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
