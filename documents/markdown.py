"""The one markdown → safe HTML path: Python-Markdown, then nh3 down to an allowlist of tags and attributes.

Markdown here is untrusted (model output): it may carry raw HTML, and a remote <img> would make the
clinician's browser call out with patient context in the page. So pages get nh3's default allowlist without
images, links open without a referrer; the PDF asks for its own, smaller allowlist (documents.markdown_pdf).
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from collections.abc import Collection, Mapping

import markdown as markdown_lib
import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown.inlinepatterns import LinkInlineProcessor

# Python-Markdown finds a link's text by scanning from each "[" to its "]" and its address from "(" to ")",
# to the text's end when there is none: once per bracket, so a model's 16 KB of "[" took 72 s to render (and
# 24 KB of "[a " 30 s), holding a page, the editor and the export. Here a link's text is at most
# LINK_TEXT_CHARS long with brackets nested three deep, found by one regex (C speed), and its address ends
# within LINK_ADDRESS_CHARS; past either it is text, as an unclosed bracket is.
LINK_TEXT_CHARS = 1000
LINK_ADDRESS_CHARS = 500
_PLAIN = r"[^\[\]]"
_LINK_TEXT = re.compile(rf"(?:{_PLAIN}|\[(?:{_PLAIN}|\[(?:{_PLAIN}|\[{_PLAIN}*+\])*+\])*+\])*+\]")


def _bounded_links(processor: LinkInlineProcessor) -> None:
    """`processor`'s getText and getLink, each looking at a bounded stretch of the text (Python-Markdown's
    answer within it)."""
    get_link = processor.getLink

    def get_text(data: str, index: int) -> tuple[str, int, bool]:
        found = _LINK_TEXT.match(data, index, index + LINK_TEXT_CHARS)
        if found is None:
            return "", index, False
        return data[index : found.end() - 1], found.end(), True

    def bounded_link(data: str, index: int) -> tuple[str, str | None, int, bool]:
        start = max(index - 1, 0)
        href, title, end, handled = get_link(data[start : index + LINK_ADDRESS_CHARS], index - start)
        return href, title, end + start, handled

    processor.getText = get_text  # type: ignore[method-assign]
    processor.getLink = bounded_link  # type: ignore[method-assign]


class BoundedLinks(markdown_lib.Extension):
    """Every link, image and reference parser of a Markdown instance bounded (`_bounded_links`)."""

    def extendMarkdown(self, md: markdown_lib.Markdown) -> None:
        for processor in md.inlinePatterns:
            if isinstance(processor, LinkInlineProcessor):
                _bounded_links(processor)


EXTENSIONS = ["tables", "fenced_code", "sane_lists", BoundedLinks()]
logger = logging.getLogger(__name__)

PAGE_TAGS = frozenset(nh3.ALLOWED_TAGS) - {"img", "area", "map"}
PAGE_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items() if tag in PAGE_TAGS}
PAGE_URL_SCHEMES = frozenset({"http", "https", "mailto"})


def safe_html(
    text: str,
    *,
    tags: Collection[str],
    attributes: Mapping[str, Collection[str]],
    url_schemes: Collection[str] = PAGE_URL_SCHEMES,
    link_rel: str | None = "noopener noreferrer nofollow",
    align_attribute: bool = False,
) -> str:
    """`text` as HTML holding only `tags` and `attributes`; everything else is reduced to its text (script
    and style elements are dropped whole). `align_attribute` writes table alignment as `align=` instead of a
    style, for renderers that read attributes."""
    try:
        html = markdown_lib.markdown(
            text,
            extensions=EXTENSIONS,
            extension_configs={"tables": {"use_align_attribute": align_attribute}},
            output_format="html",
        )
    except RecursionError:
        # Python-Markdown parses nested lists by recursion: a model's "- - - … a" (1,000 markers in 2 KB)
        # went past Python's limit and every page showing it answered 500. Such a text is shown as written.
        logger.warning(
            "markdown nested past the parser's depth (%s characters): shown as plain text", len(text)
        )
        html = f"<pre>{html_lib.escape(text)}</pre>"
    return nh3.clean(
        html,
        tags=set(tags),
        attributes={tag: set(names) for tag, names in attributes.items()},
        url_schemes=set(url_schemes),
        link_rel=link_rel,
    )


def page_html(text: str) -> SafeString:
    """Markdown for a web page: safe to put in a template unescaped."""
    return mark_safe(safe_html(text, tags=PAGE_TAGS, attributes=PAGE_ATTRIBUTES))


# Private-use characters carry inserted markup through Markdown and the cleaner untouched; model text never
# keeps its own (they are removed first), so only the markup this module inserts comes back as tags.
_OPEN, _CLOSE, _END = "\ue000", "\ue001", "\ue002"
_PRIVATE = re.compile("[\ue000-\ue002]")


def annotated_page_html(text: str, spans: list[tuple[int, int, str, str]]) -> SafeString:
    """`page_html`, with trusted markup around character ranges of the markdown: each span is
    (start, end, opening tag, closing tag), spans not overlapping. The text is cleaned as ever; the tags are
    put in after cleaning, so they are never subject to (or a way around) the allowlist. A span the
    markdown split apart (across a table cell or a line of a list) loses its markup, never its text."""
    if not spans:
        return page_html(text)
    tags: list[tuple[str, str]] = []
    pieces: list[str] = []
    at = 0
    clean = _PRIVATE.sub("", text)
    if clean != text:  # offsets were taken on `text`: only shift-free when nothing was removed
        return page_html(clean)
    for start, end, opening, closing in sorted(spans):
        if start < at or end <= start:
            continue
        index = len(tags)
        tags.append((opening, closing))
        pieces += [text[at:start], f"{_OPEN}{index}{_CLOSE}", text[start:end], f"{_END}{index}{_CLOSE}"]
        at = end
    pieces.append(text[at:])
    html = safe_html("".join(pieces), tags=PAGE_TAGS, attributes=PAGE_ATTRIBUTES)

    def put(match: re.Match) -> str:
        if html.rfind("<", 0, match.start()) > html.rfind(">", 0, match.start()):
            return ""  # inside a tag (a link's address): no markup there
        opening, closing = tags[int(match.group(2))]
        return opening if match.group(1) == _OPEN else closing

    html = re.sub(f"([{_OPEN}{_END}])(\\d+){_CLOSE}", put, html)
    return mark_safe(_PRIVATE.sub("", html))


# ---------------------------------------------------------------- markdown → markdown without raw HTML

# What a clinician's exported Markdown may still hold after the HTML is gone: nh3 (html5ever, as a browser
# reads it) drops every tag, comment and script/style body and keeps the text; these put back what its
# serializer escaped, except a "<" that could open a tag again (kept as the entity, which renders as "<").
_AMP = "\ue003"
_AUTOLINK_OPEN, _AUTOLINK_CLOSE = "\ue004", "\ue005"
_OWN = re.compile("[\ue000-\ue005]")
_UNESCAPE = re.compile(r"&lt;(?![A-Za-z/!?])|&gt;|&nbsp;")
_UNESCAPED = {"&lt;": "<", "&gt;": ">", "&nbsp;": "\u00a0"}
# CommonMark's autolinks (<scheme:…>, <name@host>): kept as links when their scheme is one pages link to.
_AUTOLINK = re.compile(
    r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>\x00-\x1f]*"
    r"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*)>"
)
# A link reference definition ("[label]: destination"), wherever it stands (a quote or a list holds them too).
# Its label as long as any viewer takes (CommonMark stops at 999 characters, Python-Markdown and markdown-it
# do not); linear all the same, a label holding no bracket.
_DEFINITION = re.compile(r"(?<!\\)\[(?:[^\[\]\\]|\\.)+\](:)[ \t]*\n?[ \t>]*(<[^<>\n]*>|\S+)")
# Every "](" and what follows it up to a parenthesis (the address, spaces a browser ignores, any title): a
# viewer finds a link however long its text or title, so no bound here (the pages' parser has them).
_LINK_CLOSE = re.compile(r"\]\(\s*([^()]*)")
_IMAGE = re.compile(r"!\[")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_IGNORED = re.compile(r"[\x00-\x20]")


def clean_markdown(text: str) -> str:
    """`text` as Markdown with no raw HTML and no link a page would not make: what any Markdown viewer
    shows of it is its text, headings, lists, tables and emphasis. Tags, comments and script/style bodies
    go (the text between tags stays, as on the pages); a link or link definition whose address has a
    scheme other than http, https or mailto, and every image (a viewer would fetch it), are written out as
    text. Idempotent, so cleaning a clean text changes nothing."""
    text = _OWN.sub("", text)
    if "<" not in text:
        return _unlinked(text) if "[" in text else text

    def autolink(match: re.Match) -> str:
        target = match.group(1)
        if ("@" in target and ":" not in target) or _safe_url(target):
            return f"{_AUTOLINK_OPEN}{target}{_AUTOLINK_CLOSE}"
        return target

    text = _AUTOLINK.sub(autolink, text)
    # "&" hidden from the parser: an entity in the text ("&lt;script&gt;") stays an entity, never a tag.
    html = nh3.clean(text.replace("&", _AMP), tags=set(), strip_comments=True)
    text = _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(0)], html).replace(_AMP, "&")
    text = text.replace(_AUTOLINK_OPEN, "<").replace(_AUTOLINK_CLOSE, ">")
    return _unlinked(text)


def _safe_url(url: str) -> bool:
    """A browser's reading of a link address: entities and escapes decoded, spaces and controls ignored;
    no scheme (a relative address) or one of PAGE_URL_SCHEMES."""
    decoded = _URL_IGNORED.sub("", html_lib.unescape(re.sub(r"\\(.)", r"\1", url)).strip("<>"))
    scheme = _SCHEME.match(decoded)
    return scheme is None or scheme.group(1).lower() in PAGE_URL_SCHEMES


def _escaped(text: str, at: int) -> bool:
    """Whether the character at `at` is backslash-escaped (an odd run of backslashes before it)."""
    run = at
    while run > 0 and text[run - 1] == "\\":
        run -= 1
    return (at - run) % 2 == 1


def _unlinked(text: str) -> str:
    """Images, unsafe links and unsafe link definitions of `text` made text with a backslash. A link is
    "[text](address)" with its "](" adjacent in every viewer, so each "](" is looked at, whatever stands
    before it (nested brackets, a text of any length) or after its address (a title of any length): an
    unsafe address gets its "]" escaped and no viewer closes a link there. Then, in what that made (an
    escaped bracket may join two lines' brackets into one label), a definition with an unsafe address gets
    its ":" escaped, which makes nothing new. Linear: each regex stops at the next bracket or parenthesis."""
    escape = [m.start() + 1 for m in _IMAGE.finditer(text) if not _escaped(text, m.start())]
    escape += [
        m.start() for m in _LINK_CLOSE.finditer(text) if not _escaped(text, m.start()) and not _safe_url(m[1])
    ]
    text = _backslashed(text, escape)
    return _backslashed(
        text,
        [
            m.start(1)
            for m in _DEFINITION.finditer(text)
            if not _escaped(text, m.start()) and not _safe_url(m[2])
        ],
    )


def _backslashed(text: str, positions: list[int]) -> str:
    """`text` with a backslash before each of `positions` (one pass, not a copy per insert)."""
    pieces, at = [], 0
    for position in sorted(set(positions)):
        pieces += [text[at:position], "\\"]
        at = position
    pieces.append(text[at:])
    return "".join(pieces)
