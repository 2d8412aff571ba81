"""Page readers, registered in one place: adding a vendor is adding a module and a line below.

Each reader says whether a page looks like its layout (`matches`) and reads it (`read`) into facts. They
work on a `patients.layout.PageLayout`, so a page reads the same from OCR boxes and from text-layer words.
The first reader that matches a page reads it; the generic row reader comes last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from patients.layout import PageLayout
from patients.readers import generic, neuroguide, wavi
from patients.readers.base import Fact, Reading


@dataclass(frozen=True)
class PageReader:
    name: str
    matches: Callable[[PageLayout], bool]
    read: Callable[[PageLayout], Reading]


READERS: tuple[PageReader, ...] = (
    PageReader(wavi.P300, wavi.matches_p300, wavi.read_p300),
    PageReader(wavi.SUMMARY, wavi.matches_summary, wavi.read_summary),
    PageReader(wavi.SITES, wavi.matches_sites, wavi.read_sites),
    PageReader(neuroguide.NAME, neuroguide.matches, neuroguide.read),
    PageReader(generic.NAME, generic.matches, generic.read),
)


def read_page(layout: PageLayout) -> Reading | None:
    """The reading of the first registered reader whose layout the page has; None when none knows it."""
    for reader in READERS:
        if reader.matches(layout):
            return reader.read(layout)
    return None


__all__ = ["READERS", "Fact", "PageReader", "Reading", "read_page"]
