"""Markdown → PDF: the clinician's printed copy of a report, ending with an optional table of how it was made.

Pure Python on purpose (fpdf2 + DejaVu fonts embedded from static/fonts), so `uv sync` is the whole install;
README "Design notes" says why not WeasyPrint. The markdown is model output, so it is untrusted: it is turned
into HTML by Python-Markdown, cleaned by nh3 down to the few tags drawn here, and laid out by our own walker
over that tree with fpdf2's public API (text, cells, tables). It knows nothing of runs: the caller gives the
title and the closing card (heading, caption, rows). A table fpdf2 cannot lay out is re-rendered as
plain rows; anything else unexpected falls back to a plain-text document, so export never fails on model text.
"""

from __future__ import annotations

import logging
import re
import traceback
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from fpdf import FPDF, FontFace
from fpdf.enums import WrapMode, XPos, YPos

from documents.markdown import safe_html

logger = logging.getLogger(__name__)
# fontTools logs dozens of INFO lines per embedded font subset; they say nothing an operator needs.
logging.getLogger("fontTools").setLevel(logging.WARNING)

FONT_DIR = Path(__file__).resolve().parent.parent / "static" / "fonts"
SANS = "dejavusans"
MONO = "dejavusansmono"
# What DejaVu lacks, Noto Sans CJK prints (subsets of its regular and bold, see static/fonts/README.md);
# anything neither has is refused with its code point (Unprintable), never dropped.
FALLBACK = "notosanscjk"
FALLBACK_FILES = {"": "NotoSansCJKsc-Regular-subset.otf", "B": "NotoSansCJKsc-Bold-subset.otf"}

# Layout, in mm and pt. A4 with margins that survive office printers and hole punches.
MARGIN_LEFT = 20.0
MARGIN_RIGHT = 20.0
MARGIN_TOP = 20.0
MARGIN_BOTTOM = 18.0
BODY_PT = 9.5
LINE_MM = 4.9
PARAGRAPH_GAP = 2.4
LIST_INDENT = 6.0
QUOTE_INDENT = 5.0
CELL_PAD_X = 1.6
CELL_PAD_Y = 1.1

INK = (33, 37, 41)
MUTED = (108, 117, 125)
ACCENT = (31, 58, 95)  # headings, rules
RULE = (150, 160, 172)
TABLE_BORDER = (120, 130, 142)
TABLE_HEAD_FILL = (226, 232, 240)
TABLE_STRIPE = (246, 248, 250)
CODE_FILL = (243, 244, 246)
CODE_INK = (90, 40, 30)
QUOTE_BAR = (160, 174, 192)
QUOTE_INK = (70, 78, 88)

HEADING_PT = {1: 15.0, 2: 12.5, 3: 11.0, 4: 10.0, 5: 9.5, 6: 9.5}
HEADING_GAP = {1: 5.0, 2: 4.5, 3: 3.5, 4: 3.0, 5: 2.5, 6: 2.5}
BULLETS = ("•", "◦", "▪")

# The only markup that survives cleaning; everything else is reduced to its text (script/style: dropped).
ALLOWED_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "ul", "ol", "li", "blockquote", "pre", "code",
    "strong", "b", "em", "i", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"ol": {"start"}, "th": {"align"}, "td": {"align"}}
INLINE_TAGS = {"strong", "b", "em", "i", "code", "br"}
# An alias for the page count that model text will not contain ("{nb}" could appear in a report).
TOTAL_PAGES_ALIAS = "{qeeg-total-pages}"

# Raw HTML in model text: whole script/style elements, comments, and single-line tags. A stray "<" that is
# not a tag ("p<0.05", "< 5 %") is text and stays.
_RAW_ELEMENT = re.compile(r"<(script|style|iframe|object|template)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_RAW_COMMENT = re.compile(r"<!--.*?(-->|$)", re.DOTALL)
_RAW_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>\n]*)?/?>")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufeff\ufe0e\ufe0f\u200b]")
# Emoji models like to use, mapped to DejaVu symbols; other characters DejaVu lacks print as empty boxes.
_EMOJI = str.maketrans(
    {"✅": "✔", "❌": "✘", "❎": "✘", "❗": "!", "❓": "?", "⭐": "★", "🔴": "●", "🟠": "●", "🟡": "●", "🟢": "●",
     "🔵": "●", "⚪": "○", "⚫": "●", "📈": "↗", "📉": "↘", "👉": "→", "💡": "•", "📌": "•", "🔹": "◆", "🔸": "◆"}
)  # fmt: skip
MAX_INDENT = 48.0  # mm; deeper nesting stops moving right, so a runaway list cannot squeeze text to nothing
_LIST_ITEM = re.compile(r"^( *)([-*+]|\d{1,9}[.)])( +|$)(.*)$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


# ---------------------------------------------------------------- markdown → clean tree


def clean_text(text: str) -> str:
    """Characters a PDF should not carry: terminal colour codes, control characters, emoji DejaVu lacks."""
    return _CONTROL.sub("", _ANSI.sub("", text)).translate(_EMOJI)


def strip_raw_html(text: str) -> str:
    """Remove HTML the model wrote into its markdown, except inside code, before Python-Markdown sees it: an
    unclosed raw <table> or <div> would otherwise swallow the rest of the report as one raw block."""
    text = _RAW_ELEMENT.sub("", text)
    out: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        if in_fence or _FENCE.match(line):
            out.append(line)
            continue
        out.append(_strip_tags_outside_code(line))
    return "\n".join(out)


def _strip_tags_outside_code(line: str) -> str:
    kept: list[str] = []
    last = 0
    for code in _INLINE_CODE.finditer(line):
        kept.append(_RAW_TAG.sub("", _RAW_COMMENT.sub("", line[last : code.start()])))
        kept.append(code.group(0))
        last = code.end()
    kept.append(_RAW_TAG.sub("", _RAW_COMMENT.sub("", line[last:])))
    return "".join(kept)


def normalize_markdown(text: str) -> str:
    """Make common LLM markdown parse the way its author meant with Python-Markdown: nested lists indented by
    2 or 3 spaces (Python-Markdown wants 4), and lists or tables that start right under a paragraph line
    (Python-Markdown wants a blank line first)."""
    out: list[str] = []
    levels: list[int] = []  # indents of the open list levels
    item_depth = 0
    in_fence = False
    previous = ""
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.expandtabs(4)
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            previous = line
            continue
        if in_fence:
            out.append(line)
            previous = line
            continue
        item = _LIST_ITEM.match(line)
        stripped = line.strip()
        if item and not (stripped.startswith("---") or stripped.startswith("***")):
            indent = len(item.group(1))
            if not levels:
                if previous.strip() and not _LIST_ITEM.match(previous):
                    out.append("")
                levels = [indent]
            elif indent > levels[-1]:
                levels.append(indent)
            else:
                while len(levels) > 1 and levels[-1] > indent:
                    levels.pop()
                if levels[-1] < indent:
                    levels.append(indent)
            item_depth = len(levels) - 1
            marker, rest = item.group(2), item.group(4)
            line = "    " * item_depth + marker + " " + rest
        elif levels and stripped:
            if line.startswith(" "):
                line = "    " * (item_depth + 1) + stripped
            elif not previous.strip():
                levels = []  # an unindented paragraph after a blank line ends the list
        if (
            stripped.startswith("|")
            and previous.strip()
            and not previous.strip().startswith("|")
            and not levels
        ):
            out.append("")
        out.append(line)
        previous = line
    return "\n".join(out)


def clean_html(markdown: str) -> str:
    """Markdown → HTML with raw HTML from the model removed (tags reduced to text, scripts dropped)."""
    return safe_html(
        normalize_markdown(strip_raw_html(clean_text(markdown))),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        link_rel=None,
        align_attribute=True,
    )


@dataclass(frozen=True)
class Card:
    """The closing table: a heading, a one-line caption in small italics, then (label, value) rows."""

    heading: str
    rows: list[tuple[str, str]]
    caption: str = ""


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)


class _TreeBuilder(HTMLParser):
    VOID = {"br", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {key: value or "" for key, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {key: value or "" for key, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if any(node.tag == tag for node in self.stack[1:]):
            while self.stack[-1].tag != tag:
                self.stack.pop()
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_markdown(markdown: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(clean_html(markdown))
    builder.close()
    return builder.root


# ---------------------------------------------------------------- inline text


@dataclass(frozen=True)
class Span:
    text: str
    bold: bool = False
    italic: bool = False
    code: bool = False


def _spans(
    nodes: list[Node | str], *, bold: bool = False, italic: bool = False, code: bool = False
) -> list[Span]:
    spans: list[Span] = []
    for node in nodes:
        if isinstance(node, str):
            spans.append(Span(node, bold, italic, code))
        elif node.tag == "br":
            spans.append(Span("\n", bold, italic))
        else:
            spans.extend(
                _spans(
                    node.children,
                    bold=bold or node.tag in ("strong", "b", "th"),
                    italic=italic or node.tag in ("em", "i"),
                    code=code or node.tag == "code",
                )
            )
    return spans


def _collapse(spans: list[Span]) -> list[Span]:
    """HTML whitespace rules: runs of whitespace become one space; none at the start or end of a block."""
    out: list[Span] = []
    after_space = True
    for span in spans:
        if span.text == "\n":
            if out and out[-1].text.endswith(" "):
                out[-1] = Span(out[-1].text.rstrip(" "), out[-1].bold, out[-1].italic, out[-1].code)
            out.append(span)
            after_space = True
            continue
        text = re.sub(r"[ \t\n\r\f\v]+", " ", span.text)
        if after_space:
            text = text.lstrip(" ")
        if not text:
            continue
        after_space = text.endswith(" ")
        out.append(Span(text, span.bold, span.italic, span.code))
    while out and out[-1].text.strip() == "":
        out.pop()
    if out:
        last = out[-1]
        out[-1] = Span(last.text.rstrip(" "), last.bold, last.italic, last.code)
    return out


def _plain(nodes: list[Node | str]) -> str:
    return "".join(span.text for span in _collapse(_spans(nodes)))


# ---------------------------------------------------------------- tables


@dataclass
class TableCell:
    text: str
    bold: bool
    italic: bool
    align: str


@dataclass
class TableData:
    header: list[TableCell] | None
    body: list[list[TableCell]]

    @property
    def rows(self) -> list[list[TableCell]]:
        return ([self.header] if self.header else []) + self.body


class TableFailed(Exception):
    """fpdf2 could not lay this table out; it is drawn as plain rows instead."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


def failure_line(error: BaseException) -> str:
    """One short line for the log about a layout failure: the error's type and where it was raised (the
    innermost frame, and this module's last frame on the way, if another), never its message or a
    traceback: a message may quote the text being laid out (a patient's write-up), and a traceback of fpdf2's
    layout runs to a hundred lines for a failure the document survives."""
    cause = error.__cause__ if isinstance(error, TableFailed) and error.__cause__ else error
    # Our own TableFailed says what did not fit in counts only ("80 columns do not fit across the page").
    what = str(cause) if isinstance(cause, TableFailed) else type(cause).__name__
    frames = traceback.extract_tb(cause.__traceback__)
    if not frames:
        return what
    inner = frames[-1]
    where = f"{Path(inner.filename).name}:{inner.lineno} in {inner.name}"
    ours = [frame for frame in frames if frame.filename == __file__]
    if ours and ours[-1] is not inner:
        where += f", from {Path(__file__).name}:{ours[-1].lineno} in {ours[-1].name}"
    return f"{what} at {where}"


def _table_data(node: Node) -> TableData:
    rows: list[tuple[bool, Node]] = []

    def collect(parent: Node, in_head: bool) -> None:
        for child in parent.children:
            if isinstance(child, Node):
                if child.tag == "tr":
                    rows.append((in_head or all_th(child), child))
                elif child.tag in ("thead", "tbody"):
                    collect(child, child.tag == "thead")
                # nested tables and stray blocks: their text is not lost, the cell collector takes it

    def all_th(tr: Node) -> bool:
        cells = [c for c in tr.children if isinstance(c, Node) and c.tag in ("td", "th")]
        return bool(cells) and all(c.tag == "th" for c in cells)

    collect(node, False)
    parsed: list[tuple[bool, list[TableCell]]] = []
    for is_head, tr in rows:
        cells = []
        for cell in tr.children:
            if not isinstance(cell, Node) or cell.tag not in ("td", "th"):
                continue
            spans = _collapse(_spans(cell.children))
            text = "".join(span.text for span in spans)
            visible = [span for span in spans if span.text.strip()]
            # fpdf2 styles a table cell as a whole: partial emphasis inside a cell is kept as plain text.
            bold = cell.tag == "th" or (bool(visible) and all(span.bold for span in visible))
            italic = bool(visible) and all(span.italic for span in visible)
            align = {"right": "RIGHT", "center": "CENTER"}.get(cell.attrs.get("align", "").lower(), "LEFT")
            cells.append(TableCell(text, bold, italic, align))
        if cells:
            parsed.append((is_head, cells))
    header = parsed[0][1] if parsed and parsed[0][0] else None
    body = [cells for _, cells in (parsed[1:] if header else parsed)]
    width = max((len(cells) for _, cells in parsed), default=0)
    for row in ([header] if header else []) + body:
        row.extend(TableCell("", False, False, "LEFT") for _ in range(width - len(row)))
    return TableData(header, body)


# ---------------------------------------------------------------- the document


class Unprintable(ValueError):
    """The text holds characters no embedded font can print; `characters` names each one."""

    def __init__(self, code_points: list[int]) -> None:
        self.characters = [describe_character(cp) for cp in dict.fromkeys(code_points)]  # as they come
        shown = ", ".join(self.characters[:12]) + (" …" if len(self.characters) > 12 else "")
        count = len(self.characters)
        super().__init__(
            f"The PDF cannot print {count} character{'s' if count != 1 else ''} of this text: {shown}. "
            "Nothing was exported; replace or remove them and export again."
        )


def describe_character(cp: int) -> str:
    name = unicodedata.name(chr(cp), "unnamed character")
    return f"U+{cp:04X} {chr(cp)!r} ({name.lower()})"


def printed_whole(pdf: FPDF) -> bytes:
    """The PDF's bytes, or Unprintable when a font had no glyph for a character it was asked to print (fpdf2
    would draw nothing there and only log it)."""
    data = bytes(pdf.output())
    missing = [cp for font in pdf.fonts.values() for cp in getattr(font, "missing_glyphs", [])]
    if missing:
        raise Unprintable(missing)
    return data


class ClinicalPDF(FPDF):
    def __init__(self, *, title: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.doc_title = title
        self.set_margins(MARGIN_LEFT, MARGIN_TOP, MARGIN_RIGHT)
        self.set_auto_page_break(True, margin=MARGIN_BOTTOM)
        self.c_margin = 0  # text starts exactly at the margin, in line with table borders and rules
        self.alias_nb_pages(TOTAL_PAGES_ALIAS)
        for style, file in (
            ("", "DejaVuSans.ttf"),
            ("B", "DejaVuSans-Bold.ttf"),
            ("I", "DejaVuSans-Oblique.ttf"),
            ("BI", "DejaVuSans-BoldOblique.ttf"),
        ):
            self.add_font(SANS, style, FONT_DIR / file)
        self.add_font(MONO, "", FONT_DIR / "DejaVuSansMono.ttf")
        for style, file in FALLBACK_FILES.items():
            self.add_font(FALLBACK, style, FONT_DIR / file)
        self.set_fallback_fonts([FALLBACK], exact_match=False)
        self.set_title(title)
        self.set_creator("qEEG Council")
        self.set_lang("en")

    def get_fallback_font(self, char: str, style: str = "") -> str | None:
        """Noto Sans CJK has no italic (CJK is not slanted): bold and bold italic fall back to its bold face,
        the rest to its regular. fpdf2's own choice would print bold italic in the regular face."""
        face = FALLBACK + ("B" if "B" in str(style) else "")
        if face in self.fonts and ord(char) in self.fonts[face].cmap:
            return face
        return super().get_fallback_font(char, style)

    def header(self) -> None:
        if self.page_no() == 1:
            return  # page 1 carries the title block instead
        self.set_font(SANS, "", 7.5)
        self.set_text_color(*MUTED)
        self.set_xy(self.l_margin, 10)
        self.cell(self.epw, 4, self.doc_title, align="L")
        self.set_draw_color(*RULE)
        self.set_line_width(0.2)
        self.line(self.l_margin, 15, self.w - self.r_margin, 15)
        self.set_xy(self.l_margin, MARGIN_TOP)

    def footer(self) -> None:
        self.set_font(SANS, "", 7.5)
        self.set_text_color(*MUTED)
        y = self.h - 12
        self.set_draw_color(*RULE)
        self.set_line_width(0.2)
        self.line(MARGIN_LEFT, y - 1.5, self.w - MARGIN_RIGHT, y - 1.5)
        self.set_xy(MARGIN_LEFT, y)
        self.cell(120, 4, "qEEG Council · AI-assisted draft; verify against the source report", align="L")
        # Right-aligned by hand: fpdf2 measures the alias, not the page count that replaces it.
        width = self.get_string_width(f"Page {self.page_no()} of {self.page_no()}") + 0.5
        self.set_xy(self.w - MARGIN_RIGHT - width, y)
        self.cell(width, 4, f"Page {self.page_no()} of {TOTAL_PAGES_ALIAS}", align="L")


class Renderer:
    def __init__(self, *, title: str, text_tables: set[int]) -> None:
        self.pdf = ClinicalPDF(title=title)
        self.title = title
        self.text_tables = text_tables
        self.table_index = 0
        self.color: tuple[int, int, int] = INK
        self.continue_line = False  # the next paragraph starts where a list bullet left the cursor

    # -- entry points

    def render(self, tree: Node, card: Card | None) -> bytes:
        self.pdf.add_page()
        self.title_block()
        self.blocks(tree.children, indent=0.0)
        if card and card.rows:
            self.card(card)
        return printed_whole(self.pdf)

    def title_block(self) -> None:
        pdf = self.pdf
        pdf.set_font(SANS, "B", 16)
        pdf.set_text_color(*ACCENT)
        pdf.multi_cell(pdf.epw, 7.5, self.title, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1.5)
        pdf.set_draw_color(*ACCENT)
        pdf.set_line_width(0.6)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(4)

    # -- blocks

    def blocks(self, children: list[Node | str], *, indent: float) -> None:
        inline: list[Node | str] = []
        for child in children:
            if isinstance(child, str) or child.tag in INLINE_TAGS:
                inline.append(child)
                continue
            if inline:
                self.paragraph(_spans(inline), indent=indent)
                inline = []
            self.block(child, indent=indent)
        if inline:
            self.paragraph(_spans(inline), indent=indent)

    def block(self, node: Node, *, indent: float) -> None:
        if node.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.heading(node, level=int(node.tag[1]), indent=indent)
        elif node.tag == "p":
            self.paragraph(_spans(node.children), indent=indent)
        elif node.tag in ("ul", "ol"):
            self.list(node, indent=indent, depth=0)
        elif node.tag == "blockquote":
            self.blockquote(node, indent=indent)
        elif node.tag == "pre":
            self.code_block(_raw_text(node), indent=indent)
        elif node.tag == "hr":
            self.rule()
        elif node.tag == "table":
            self.table(node, indent=indent)
        else:  # li outside a list, thead/tr outside a table…: keep the words
            self.blocks(node.children, indent=indent)

    def at_page_top(self) -> bool:
        return self.pdf.get_y() <= MARGIN_TOP + 0.5

    def ensure_space(self, height: float) -> None:
        if self.pdf.get_y() + height > self.pdf.page_break_trigger:
            self.pdf.add_page()

    def heading(self, node: Node, *, level: int, indent: float) -> None:
        spans = _collapse(_spans(node.children, bold=True))
        if not spans:
            return
        pdf = self.pdf
        size = HEADING_PT[level]
        line = size * 0.3528 * 1.35
        self.ensure_space(HEADING_GAP[level] + line + 3 * LINE_MM)  # never strand a heading at a page foot
        if not self.at_page_top():
            pdf.ln(HEADING_GAP[level])
        if level <= 3:
            pdf.start_section("".join(span.text for span in spans), level=level - 1, strict=False)
        self.write_spans(spans, indent=indent, size=size, line=line, color=ACCENT if level <= 3 else INK)
        if level <= 2:
            pdf.ln(0.8)
            pdf.set_draw_color(*(ACCENT if level == 1 else RULE))
            pdf.set_line_width(0.4 if level == 1 else 0.2)
            pdf.line(pdf.l_margin + indent, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
            pdf.ln(2.2)
        else:
            pdf.ln(1.2)

    def paragraph(self, spans: list[Span], *, indent: float, gap: float = PARAGRAPH_GAP) -> None:
        spans = _collapse(spans)
        if not spans:
            self.continue_line = False
            return
        self.write_spans(spans, indent=indent, size=BODY_PT, line=LINE_MM, color=self.color)
        self.pdf.ln(gap)

    def write_spans(
        self, spans: list[Span], *, indent: float, size: float, line: float, color: tuple[int, int, int]
    ) -> None:
        """Flow styled text between the indent and the right margin (or on from after a list bullet).
        fpdf2's text regions break lines between words across style changes, unlike repeated write() calls."""
        pdf = self.pdf
        if not self.continue_line:
            self.ensure_space(line)
        self.continue_line = False
        pdf.set_x(MARGIN_LEFT + indent)
        with (
            pdf.text_columns(
                l_margin=MARGIN_LEFT + indent,
                r_margin=MARGIN_RIGHT,
                text_align="LEFT",
                line_height=line / (size * 0.3528),
                skip_leading_spaces=True,
            ) as region,
            region.paragraph() as paragraph,
        ):
            for span in spans:
                if span.code:
                    pdf.set_font(MONO, "", size * 0.92)
                    pdf.set_text_color(*CODE_INK)
                else:
                    pdf.set_font(SANS, ("B" if span.bold else "") + ("I" if span.italic else ""), size)
                    pdf.set_text_color(*color)
                paragraph.write(span.text)
        pdf.set_x(MARGIN_LEFT + indent)

    def list(self, node: Node, *, indent: float, depth: int) -> None:
        ordered = node.tag == "ol"
        try:
            number = int(node.attrs.get("start") or 1)
        except ValueError:
            number = 1
        items = [child for child in node.children if isinstance(child, Node) and child.tag == "li"]
        marker_width = LIST_INDENT + (2.0 if ordered and number + len(items) > 10 else 0.0)
        for item in items:
            marker = f"{number}." if ordered else BULLETS[depth % len(BULLETS)]
            self.list_item(item, marker=marker, indent=indent, marker_width=marker_width, depth=depth)
            number += 1
        if depth == 0:
            self.pdf.ln(PARAGRAPH_GAP - 1.0)

    def list_item(self, item: Node, *, marker: str, indent: float, marker_width: float, depth: int) -> None:
        pdf = self.pdf
        indent = min(indent, MAX_INDENT)
        content_indent = indent + marker_width
        self.ensure_space(LINE_MM)
        y = pdf.get_y()
        pdf.set_font(SANS, "", BODY_PT)
        pdf.set_text_color(*ACCENT)
        pdf.set_xy(MARGIN_LEFT + indent, y)
        pdf.cell(marker_width - 1.6, LINE_MM, marker, align="R")
        pdf.set_xy(MARGIN_LEFT + content_indent, y)
        self.continue_line = True
        inline: list[Node | str] = []
        for child in item.children:
            if isinstance(child, str) or child.tag in INLINE_TAGS:
                inline.append(child)
                continue
            if inline:
                self.paragraph(_spans(inline), indent=content_indent, gap=0.9)
                inline = []
            if child.tag in ("ul", "ol"):
                self.continue_line = False
                self.list(child, indent=content_indent, depth=depth + 1)
            elif child.tag == "p":
                self.paragraph(_spans(child.children), indent=content_indent, gap=1.2)
            else:
                self.continue_line = False
                self.block(child, indent=content_indent)
        if inline:
            self.paragraph(_spans(inline), indent=content_indent, gap=0.9)
        if self.continue_line:  # an empty item: still move below its bullet
            self.continue_line = False
            pdf.ln(LINE_MM)

    def blockquote(self, node: Node, *, indent: float) -> None:
        pdf = self.pdf
        self.ensure_space(LINE_MM)
        start_page, start_y = pdf.page, pdf.get_y()
        previous_color, self.color = self.color, QUOTE_INK
        indent = min(indent, MAX_INDENT)
        self.blocks(node.children, indent=indent + QUOTE_INDENT)
        self.color = previous_color
        end_page, end_y = pdf.page, pdf.get_y() - PARAGRAPH_GAP + 0.6
        x = MARGIN_LEFT + indent + 1.2
        current = pdf.page
        # The bar is drawn afterwards, on every page the quote spans.
        for page in range(start_page, end_page + 1):
            top = start_y if page == start_page else MARGIN_TOP
            bottom = end_y if page == end_page else pdf.page_break_trigger
            if bottom <= top:
                continue
            pdf.page = page
            with pdf.local_context(draw_color=QUOTE_BAR, line_width=0.9):
                pdf.line(x, top, x, bottom)
        pdf.page = current

    def code_block(self, text: str, *, indent: float) -> None:
        pdf = self.pdf
        pdf.set_font(MONO, "", 8.2)
        pdf.set_text_color(*INK)
        pdf.set_fill_color(*CODE_FILL)
        self.ensure_space(8)
        pdf.set_x(MARGIN_LEFT + indent)
        pdf.multi_cell(
            pdf.epw - indent,
            3.9,
            text.rstrip("\n") or " ",
            fill=True,
            align="L",
            wrapmode=WrapMode.CHAR,
            padding=(1.6, 2.0),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.ln(PARAGRAPH_GAP)

    def rule(self) -> None:
        pdf = self.pdf
        pdf.ln(1.5)
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.3)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(3.5)

    # -- tables

    def table(self, node: Node, *, indent: float) -> None:
        index = self.table_index
        self.table_index += 1
        data = _table_data(node)
        if not data.rows:
            return
        if index in self.text_tables:
            self.table_as_text(data, indent=indent)
            return
        try:
            self.draw_table(data, indent=indent)
        except TableFailed:
            raise
        except Exception as error:  # fpdf2's layout limits: narrow columns, rows taller than a page…
            raise TableFailed(index, type(error).__name__) from error

    def draw_table(
        self, data: TableData, *, indent: float, label_column: bool = False, font_pt: float | None = None
    ) -> None:
        pdf = self.pdf
        columns = len(data.rows[0])
        size = font_pt or (9.0 if columns <= 5 else 8.2 if columns <= 8 else 7.2 if columns <= 14 else 6.4)
        available = pdf.epw - indent - 0.05  # fpdf2 rejects a table a hair wider than the page
        pad_x = CELL_PAD_X if columns <= 8 else CELL_PAD_X / 2  # dense channel tables need the room
        widths, wrapmode = self.column_widths(data, size=size, pad_x=pad_x, available=available)
        line = size * 0.3528 * 1.3
        pdf.ln(0.8)
        self.ensure_space(line * (2 if data.header else 1) + 4 * CELL_PAD_Y)
        pdf.set_font(SANS, "", size)
        pdf.set_text_color(*INK)
        pdf.set_draw_color(*TABLE_BORDER)
        pdf.set_line_width(0.2)
        pdf.set_left_margin(MARGIN_LEFT + indent)
        pdf.set_x(pdf.l_margin)
        try:
            with pdf.table(
                width=sum(widths),
                col_widths=tuple(widths),
                align="LEFT",
                borders_layout="ALL",
                first_row_as_headings=data.header is not None,
                headings_style=FontFace(
                    emphasis="BOLD", color=ACCENT, fill_color=TABLE_HEAD_FILL, size_pt=size
                ),
                cell_fill_color=TABLE_STRIPE,
                cell_fill_mode="EVEN_ROWS" if data.header else "NONE",
                line_height=line,
                padding=(CELL_PAD_Y, pad_x),
                text_align="LEFT",
                v_align="MIDDLE",
                wrapmode=wrapmode,
                repeat_headings=1,
            ) as table:
                for row in data.rows:
                    fpdf_row = table.row()
                    for column, cell in enumerate(row):
                        emphasis = ("B" if cell.bold or (label_column and column == 0) else "") + (
                            "I" if cell.italic else ""
                        )
                        style = FontFace(emphasis=emphasis) if emphasis else None
                        fpdf_row.cell(cell.text, align=cell.align, style=style)
        finally:
            pdf.set_left_margin(MARGIN_LEFT)
        pdf.set_x(MARGIN_LEFT)
        pdf.ln(PARAGRAPH_GAP + 0.6)

    def column_widths(
        self, data: TableData, *, size: float, pad_x: float, available: float
    ) -> tuple[list[float], WrapMode]:
        """Columns as wide as their text wants, shrunk towards their longest word when the page is too narrow."""
        pdf = self.pdf
        columns = len(data.rows[0])
        natural = [0.0] * columns
        minimum = [0.0] * columns
        for row in data.rows:
            for column, cell in enumerate(row):
                pdf.set_font(SANS, "B" if cell.bold else "", size)
                lines = cell.text.split("\n") or [""]
                natural[column] = max(natural[column], max(pdf.get_string_width(part) for part in lines))
                words = cell.text.split() or [""]
                minimum[column] = max(minimum[column], max(pdf.get_string_width(word) for word in words))
        pad = 2 * pad_x + 0.6
        natural = [width + pad for width in natural]
        minimum = [min(width, 40.0) + pad for width in minimum]
        if sum(natural) <= available:
            return natural, WrapMode.WORD
        if sum(minimum) <= available:
            return _share_width(natural, minimum, available), WrapMode.WORD
        pdf.set_font(SANS, "B", size)
        widest_glyph = pdf.get_string_width("W") + pad
        if available / columns < widest_glyph:
            raise TableFailed(self.table_index - 1, f"{columns} columns do not fit across the page")
        scale = available / sum(minimum)
        widths = [max(m * scale, widest_glyph) for m in minimum]
        scale = available / sum(widths)
        return [w * scale for w in widths], WrapMode.CHAR

    def table_as_text(self, data: TableData, *, indent: float) -> None:
        for number, row in enumerate(data.rows):
            text = " | ".join(cell.text for cell in row)
            self.paragraph([Span(text, bold=number == 0 and data.header is not None)], indent=indent, gap=0.6)
        self.pdf.ln(PARAGRAPH_GAP)

    # -- closing card

    def card(self, card: Card) -> None:
        pdf = self.pdf
        rows = card.rows
        self.ensure_space(14 + LINE_MM * min(len(rows), 10))
        self.heading(Node("h2", children=[card.heading]), level=2, indent=0.0)
        pdf.set_font(SANS, "I", 8.5)
        pdf.set_text_color(*MUTED)
        if card.caption:
            pdf.multi_cell(pdf.epw, 4, card.caption, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)
        data = TableData(
            header=None,
            body=[
                [TableCell(str(label), True, False, "LEFT"), TableCell(str(value), False, False, "LEFT")]
                for label, value in rows
            ],
        )
        try:
            self.draw_table(data, indent=0.0, label_column=True, font_pt=8.5)
        except Exception as error:
            logger.warning(
                "the card's table could not be drawn (%s); writing it as text", failure_line(error)
            )
            for label, value in rows:
                self.paragraph([Span(f"{label}: ", bold=True), Span(str(value))], indent=0.0, gap=0.6)


def _share_width(natural: list[float], minimum: list[float], available: float) -> list[float]:
    """Browser-like auto layout: columns narrower than a fair share keep their natural width; the wide ones
    share what is left in proportion to their text, never below their longest word."""
    widths = list(natural)
    wide = set(range(len(natural)))
    space = available
    settled = True
    while settled and wide:
        settled = False
        fair = space / len(wide)
        for column in sorted(wide):
            if natural[column] <= fair:
                wide.discard(column)
                space -= natural[column]
                settled = True
    if wide:
        total = sum(natural[column] for column in wide)
        for column in wide:
            widths[column] = max(minimum[column], space * natural[column] / total)
        overflow = sum(widths) - available
        if overflow > 0:  # clamping to the longest words took room: take it back from the roomier columns
            slack = {column: widths[column] - minimum[column] for column in wide}
            total_slack = sum(slack.values()) or 1.0
            for column in wide:
                widths[column] -= overflow * slack[column] / total_slack
    return widths


def _raw_text(node: Node) -> str:
    return "".join(child if isinstance(child, str) else _raw_text(child) for child in node.children)


def _render_plain(markdown: str, *, title: str, card: Card | None) -> bytes:
    """Last resort: the words of the report as plain text, so an export never fails on odd model output."""
    text = strip_raw_html(clean_text(markdown))
    pdf = ClinicalPDF(title=title)
    pdf.add_page()
    pdf.set_font(SANS, "", BODY_PT)
    pdf.set_text_color(*INK)
    pdf.multi_cell(
        pdf.epw, LINE_MM, text, align="L", wrapmode=WrapMode.CHAR, new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    if card and card.rows:
        pdf.ln(4)
        pdf.set_font(SANS, "B", 11)
        pdf.cell(pdf.epw, 6, card.heading, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(SANS, "", BODY_PT)
        for label, value in card.rows:
            pdf.multi_cell(
                pdf.epw, LINE_MM, f"{label}: {value}", align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
    return printed_whole(pdf)


def render_markdown_pdf(markdown: str, *, title: str, card: Card | None = None) -> bytes:
    """A printable PDF of `markdown` (untrusted; raw HTML in it is dropped) that ends with `card`, a
    two-column table of its (label, value) rows under its heading."""
    try:
        tree = parse_markdown(markdown)
        text_tables: set[int] = set()
        while True:
            try:
                return Renderer(title=title, text_tables=text_tables).render(tree, card)
            except TableFailed as failed:
                if failed.index in text_tables:
                    raise
                logger.warning("table %d drawn as text (%s)", failed.index + 1, failure_line(failed))
                text_tables.add(failed.index)
    except Unprintable:
        raise
    except Exception as error:
        logger.error("PDF layout failed (%s); writing the report as plain text", failure_line(error))
        return _render_plain(markdown, title=title, card=card)
