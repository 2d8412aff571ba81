"""Synthetic qEEG/ERP-like report files for tests and demos. No patient data: every number is made up.

`make_qeeg_pdf` writes a vendor-style report: pages with a real text layer (band-power Z-score tables and
ERP P300 figures) and pages where the summary table exists ONLY as a bitmap (rendered with Pillow's bundled
font at a size OCR reads reliably), plus a short text-layer caption on those pages. It returns what it wrote
per page, so tests assert on the exact numbers and the page they came from.

The `make_*` functions below it write the hostile/broken files ingestion must refuse cleanly.
"""

from __future__ import annotations

import binascii
import io
import random
import re
import struct
import zlib
from pathlib import Path
from typing import TypedDict

from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

SITES = ("Fz", "Cz", "Pz", "O1", "O2")
BANDS = ("Delta", "Theta", "Alpha", "Beta")


class PageContent(TypedDict):
    number: int  # 1-based page number
    kind: str  # "text" (table in the text layer) or "image" (table only in a bitmap)
    z_scores: dict[str, dict[str, str]]  # site -> band -> "1.23" / "-0.45", as printed
    p300_latency_ms: str  # e.g. "312"
    p300_amplitude_uv: str  # e.g. "7.4"
    numbers: list[str]  # every number printed in the page's table, as printed
    caption: str  # the page's text-layer text when the table is an image ("" for text pages)


class ReportContent(TypedDict):
    patient_label: str
    page_count: int
    pages: list[PageContent]  # pages[i] is page i + 1


def _page_numbers(rng: random.Random, used: set[str]) -> tuple[dict[str, dict[str, str]], str, str]:
    """Z-scores unique by magnitude across the report (so "0.47" never hides inside "-0.47" and a number
    found in the text names its page) while the pool lasts: about 14 pages. Longer reports reuse values."""

    def fresh(make) -> str:
        for _ in range(200):
            value = make()
            if value.lstrip("-") not in used:
                used.add(value.lstrip("-"))
                return value
        return value  # pool exhausted: a long report repeats values

    z_scores = {
        site: {band: fresh(lambda: f"{rng.uniform(-2.9, 2.9):.2f}") for band in BANDS} for site in SITES
    }
    latency = fresh(lambda: str(rng.randint(280, 420)))
    amplitude = fresh(lambda: f"{rng.uniform(3.0, 14.0):.1f}")
    return z_scores, latency, amplitude


def numbers_in(text: str) -> set[str]:
    """The numbers printed in a text, as tokens (so "2.5" is not found inside "2.55")."""
    return set(re.findall(r"-?\d+(?:\.\d+)?", text))


def table_lines(z_scores: dict[str, dict[str, str]], latency: str, amplitude: str) -> list[str]:
    """The summary table as printed lines (header, one row per site, then the ERP line)."""
    lines = ["Site   " + "   ".join(f"{band:>6}" for band in BANDS)]
    for site in SITES:
        lines.append(f"{site:<6} " + "   ".join(f"{z_scores[site][band]:>6}" for band in BANDS))
    lines.append(f"ERP P300 latency {latency} ms   amplitude {amplitude} uV")
    return lines


def render_table_image(title: str, lines: list[str], *, font_size: int = 44) -> Image.Image:
    """Text drawn into a white bitmap with Pillow's bundled font (no system fonts needed)."""
    font = ImageFont.load_default(size=font_size)
    title_font = ImageFont.load_default(size=int(font_size * 1.15))
    line_height = int(font_size * 1.6)
    width = 1500
    height = line_height * (len(lines) + 2) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 30), title, fill="black", font=title_font)
    y = 30 + line_height * 2
    # Columns drawn at fixed x positions so OCR sees clean, well-separated cells.
    for line in lines:
        cells = line.split()
        if len(cells) == 5 and cells[0] in (*SITES, "Site"):
            for i, cell in enumerate(cells):
                draw.text((40 + i * 270, y), cell, fill="black", font=font)
        else:
            draw.text((40, y), line, fill="black", font=font)
        y += line_height
    return image


def make_qeeg_pdf(
    path: Path | str,
    *,
    pages: int = 3,
    image_only_pages: tuple[int, ...] = (2,),
    patient_label: str = "SYNTH-001",
    seed: int = 7,
) -> ReportContent:
    """Write a synthetic qEEG report PDF to `path` and return the numbers it printed on each page.

    Pages listed in `image_only_pages` (1-based) carry their table only as an embedded image, with a short
    caption in the text layer (well under the OCR threshold); the other pages carry it as real text.
    """
    rng = random.Random(seed)
    used: set[str] = set()
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(auto=False)
    pdf.set_title(f"Synthetic qEEG report {patient_label}")
    content: list[PageContent] = []
    for number in range(1, pages + 1):
        z_scores, latency, amplitude = _page_numbers(rng, used)
        lines = table_lines(z_scores, latency, amplitude)
        numbers = [z_scores[s][b] for s in SITES for b in BANDS] + [latency, amplitude]
        pdf.add_page()
        if number in image_only_pages:
            caption = f"{patient_label} summary page {number} (table as image)"
            pdf.set_font("Helvetica", size=10)
            pdf.text(15, 15, caption)
            image = render_table_image(f"Summary table, page {number}", lines)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            buffer.seek(0)
            pdf.image(buffer, x=10, y=25, w=190)
            kind = "image"
        else:
            caption = ""
            pdf.set_font("Helvetica", style="B", size=14)
            pdf.text(15, 20, f"Synthetic qEEG/ERP report - {patient_label} - page {number}")
            pdf.set_font("Helvetica", size=10)
            pdf.text(15, 28, "Eyes-closed resting EEG, linked-ears reference. All values are synthetic.")
            pdf.set_font("Helvetica", style="B", size=11)
            pdf.text(15, 40, "Absolute band power, Z-scores against an age-matched norm")
            pdf.set_font("Courier", size=11)
            y = 50
            for line in lines:
                pdf.text(15, y, line)
                y += 7
            pdf.set_font("Helvetica", size=10)
            pdf.text(
                15, y + 8, "Interpretation is left to the clinician; this page exists for software tests."
            )
            kind = "text"
        content.append(
            PageContent(
                number=number,
                kind=kind,
                z_scores=z_scores,
                p300_latency_ms=latency,
                p300_amplitude_uv=amplitude,
                numbers=numbers,
                caption=caption,
            )
        )
    Path(path).write_bytes(bytes(pdf.output()))
    return ReportContent(patient_label=patient_label, page_count=pages, pages=content)


# --- broken and hostile files ---------------------------------------------------------------------------


def make_encrypted_pdf(path: Path | str, *, user_password: str = "synthetic-secret") -> Path:
    """A valid PDF that needs a password to open."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.text(20, 20, "Synthetic encrypted report")
    pdf.set_encryption(owner_password="synthetic-owner", user_password=user_password)
    Path(path).write_bytes(bytes(pdf.output()))
    return Path(path)


def make_corrupt_pdf(path: Path | str) -> Path:
    """Starts like a PDF, then nothing a PDF reader can make sense of."""
    rng = random.Random(3)
    junk = bytes(rng.randrange(256) for _ in range(4096))
    Path(path).write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + junk)
    return Path(path)


def make_zero_page_pdf(path: Path | str) -> Path:
    """A well-formed PDF whose page tree is empty."""
    body = (
        b"%PDF-1.4\n"
        b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    )
    xref_at = len(body)
    offset_1 = body.index(b"1 0 obj")
    offset_2 = body.index(b"2 0 obj")
    xref = (
        b"xref\n0 3\n0000000000 65535 f \n"
        + f"{offset_1:010d} 00000 n \n{offset_2:010d} 00000 n \n".encode()
        + b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n"
        + str(xref_at).encode()
        + b"\n%%EOF\n"
    )
    Path(path).write_bytes(body + xref)
    return Path(path)


def make_png_named_pdf(path: Path | str) -> Path:
    """PNG bytes under a .pdf name (a renamed non-PDF)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def make_long_pdf(path: Path | str, *, pages: int) -> Path:
    """A valid PDF with `pages` short text pages (for the page cap)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.text(20, 20, f"Synthetic filler page {number}")
    Path(path).write_bytes(bytes(pdf.output()))
    return Path(path)


def make_padded_pdf(path: Path | str, *, size_bytes: int) -> Path:
    """A valid one-page PDF padded with trailing bytes up to `size_bytes` (for the size cap)."""
    make_long_pdf(path, pages=1)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data + b"\n%" + b"0" * max(0, size_bytes - len(data) - 2))
    return Path(path)


def make_text_report(path: Path | str, *, markdown: bool = False, seed: int = 11) -> ReportContent:
    """A plain-text or markdown report with the same kind of table; one "page"."""
    rng = random.Random(seed)
    z_scores, latency, amplitude = _page_numbers(rng, set())
    lines = table_lines(z_scores, latency, amplitude)
    if markdown:
        head = "# Synthetic qEEG report\n\n| Site | " + " | ".join(BANDS) + " |\n|---|---|---|---|---|\n"
        rows = "".join(
            f"| {site} | " + " | ".join(z_scores[site][b] for b in BANDS) + " |\n" for site in SITES
        )
        text = head + rows + f"\nERP P300 latency {latency} ms, amplitude {amplitude} uV.\n"
    else:
        text = "Synthetic qEEG report\n\n" + "\n".join(lines) + "\n"
    Path(path).write_text(text, encoding="utf-8")
    numbers = [z_scores[s][b] for s in SITES for b in BANDS] + [latency, amplitude]
    page = PageContent(
        number=1,
        kind="text",
        z_scores=z_scores,
        p300_latency_ms=latency,
        p300_amplitude_uv=amplitude,
        numbers=numbers,
        caption="",
    )
    return ReportContent(patient_label="SYNTH-TEXT", page_count=1, pages=[page])


# --- resource bombs: tiny files that would cost gigabytes to read -----------------------------------------


def _raw_pdf(objects: list[bytes]) -> bytes:
    """A well-formed PDF from object bodies (object i + 1 is objects[i]; 1 is the catalog), with a real xref."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _one_page_pdf(page_extra: bytes, content: bytes, *more: bytes) -> bytes:
    return _raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 5 0 R >> %s>> %s /Contents 4 0 R >>"
            % (b"/XObject << /Im1 6 0 R >> " if more else b"", page_extra),
            content,
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            *more,
        ]
    )


def make_huge_page_pdf(path: Path | str, *, points: int = 14400) -> Path:
    """One page of points x points (14400 pt = 200 in, the largest PDF allows) with a line of text: under a
    kilobyte on disk, about 2 GB as a bitmap at 110 dpi."""
    text = b"BT /F1 24 Tf 72 72 Td (Synthetic poster-sized page) Tj ET"
    data = _one_page_pdf(b"/MediaBox [0 0 %d %d]" % (points, points), _stream(text))
    Path(path).write_bytes(data)
    return Path(path)


def _deflate_repeated(unit: bytes, size: int, *, layers: int = 1, prefix: bytes = b"") -> bytes:
    """zlib of `prefix` then `unit` repeated up to `size` bytes, made in 1 MiB pieces so making it never holds
    `size`."""
    compressor = zlib.compressobj(9)
    piece = unit * (1024 * 1024 // len(unit))
    chunks, left = [compressor.compress(prefix)], size
    while left > 0:
        chunks.append(compressor.compress(piece[:left]))
        left -= len(piece)
    chunks.append(compressor.flush())
    data = b"".join(chunks)
    for _ in range(layers - 1):
        data = zlib.compress(data, 9)
    return data


def make_inflation_bomb_pdf(
    path: Path | str,
    *,
    inflated_bytes: int = 1 << 30,
    layers: int = 1,
    hex_wrapped: bool = False,
    flate_name: bytes = b"/FlateDecode",
) -> Path:
    """An A4 page whose content stream is about 1 MB of FlateDecode that inflates to `inflated_bytes` of
    blanks. With `layers`=2 it is compressed twice (a few kilobytes); `hex_wrapped` puts ASCIIHexDecode in
    front; `flate_name` may spell the filter another legal way (`/Fl`, `/Fl#61teDecode`)."""
    content = _deflate_repeated(b" ", inflated_bytes, layers=layers)
    names = [flate_name] * layers
    if hex_wrapped:
        content = binascii.hexlify(content) + b">"
        names.insert(0, b"/ASCIIHexDecode")
    stream = _stream(content, b"/Filter [%s] " % b" ".join(names))
    data = _one_page_pdf(b"/MediaBox [0 0 595 842]", stream)
    Path(path).write_bytes(data)
    return Path(path)


def make_image_bomb_pdf(path: Path | str, *, side: int = 40000) -> Path:
    """An A4 page showing one side x side RGB image whose pixels (4.8 GB at 40000) deflate to a few MB."""
    pixels = _deflate_repeated(b"\xff", side * side * 3)
    image = _stream(
        pixels,
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 "
        b"/Filter /FlateDecode " % (side, side),
    )
    content = _stream(b"q 500 0 0 700 40 60 cm /Im1 Do Q")
    data = _one_page_pdf(b"/MediaBox [0 0 595 842]", content, image)
    Path(path).write_bytes(data)
    return Path(path)


def make_object_stream_bomb_pdf(
    path: Path | str, *, inflated_bytes: int = 1 << 30, hidden_filter: bool = False, layers: int = 1
) -> Path:
    """A PDF 1.5 file (cross-reference stream) whose page tree lives in an object stream padded with blanks
    that inflate to `inflated_bytes`: PDFium inflates the whole object stream as soon as it counts the pages,
    before any page is opened or drawn (1 GiB: a 1 MB file, a 2 GB peak). `layers` deflates it again (a few
    kilobytes); `hidden_filter` puts the filter 20 KB before `stream`, out of a short look back."""
    pages = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 5 0 R >>"
    header = b"2 0 3 %d " % (len(pages) + 1)
    # One zlib stream: the header and the two objects, then the blanks.
    packed = _deflate_repeated(b" ", inflated_bytes, layers=layers, prefix=header + pages + b" " + page)
    filters = b"[" + b" ".join([b"/FlateDecode"] * layers) + b"]"
    # hidden_filter: the filter first in a dictionary padded past what a reader looking back from `stream` sees.
    extra = b"/Filter %s %s/Type /ObjStm /N 2 /First %d " % (
        filters,
        b" " * 20_000 if hidden_filter else b"",
        len(header),
    )
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}

    def add(number: int, body: bytes) -> None:
        offsets[number] = len(out)
        out.extend(b"%d 0 obj\n" % number + body + b"\nendobj\n")

    add(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    add(4, _stream(packed, extra))
    add(5, _stream(b"BT /F1 12 Tf 72 720 Td (Synthetic page) Tj ET"))
    xref = len(out)
    rows = bytearray(struct.pack(">BIH", 0, 0, 65535))
    for number in range(1, 7):
        if number in (2, 3):  # in object stream 4, at index 0 and 1
            rows += struct.pack(">BIH", 2, 4, number - 2)
        else:
            rows += struct.pack(">BIH", 1, xref if number == 6 else offsets[number], 0)
    out += b"6 0 obj\n" + _stream(bytes(rows), b"/Type /XRef /Size 7 /W [1 4 2] /Root 1 0 R ") + b"\nendobj\n"
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    Path(path).write_bytes(bytes(out))
    return Path(path)
