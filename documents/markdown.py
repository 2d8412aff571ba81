"""The one markdown → safe HTML path: Python-Markdown, then nh3 down to an allowlist of tags and attributes.

Markdown here is untrusted (model output): it may carry raw HTML, and a remote <img> would make the
clinician's browser call out with patient context in the page. So pages get nh3's default allowlist without
images, links open without a referrer; the PDF asks for its own, smaller allowlist (documents.markdown_pdf).
"""

from __future__ import annotations

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
