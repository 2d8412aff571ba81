"""The one markdown → safe HTML path: Python-Markdown, then nh3 down to an allowlist of tags and attributes.

Markdown here is untrusted (model output): it may carry raw HTML, and a remote <img> would make the
clinician's browser call out with patient context in the page. So pages get nh3's default allowlist without
images, links open without a referrer; the PDF asks for its own, smaller allowlist (documents.markdown_pdf).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import markdown as markdown_lib
import nh3
from django.utils.safestring import SafeString, mark_safe

EXTENSIONS = ["tables", "fenced_code", "sane_lists"]

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
    html = markdown_lib.markdown(
        text,
        extensions=EXTENSIONS,
        extension_configs={"tables": {"use_align_attribute": align_attribute}},
        output_format="html",
    )
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
