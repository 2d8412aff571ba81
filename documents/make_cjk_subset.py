"""Make static/fonts/NotoSansCJKsc-Regular-subset.otf and NotoSansCJKsc-Bold-subset.otf, the PDF export's
fallback fonts for CJK (regular and bold text). Run by hand, not at run time, after
`apt-get install fonts-noto-cjk`:

    uv run python documents/make_cjk_subset.py static/fonts/NotoSansCJKsc-Regular-subset.otf
    uv run python documents/make_cjk_subset.py static/fonts/NotoSansCJKsc-Bold-subset.otf Bold

It keeps every code point from U+2E80 to U+FFEF that one of GB2312, Shift JIS (JIS X 0208), Big5 or EUC-KR
(KS X 1001) can encode, plus all CJK punctuation, kana, Hangul compatibility jamo and full-width forms: the
characters of names and notes written in Chinese, Japanese or Korean (about 28,700, 5.2 MB; the whole font is
over 16 MB). Anything outside it is refused by the export with its code point, never dropped."""

from __future__ import annotations

import sys

from fontTools import subset
from fontTools.ttLib import TTCollection

SOURCE = "/usr/share/fonts/opentype/noto/NotoSansCJK-{weight}.ttc"
FACE = {"Regular": "Noto Sans CJK SC", "Bold": "Noto Sans CJK SC Bold"}
CODECS = ("gb2312", "shift_jis", "big5", "euc_kr")
WHOLE_BLOCKS = [(0x3000, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF), (0xFF00, 0xFFEF)]


def wanted() -> set[int]:
    points = {cp for first, last in WHOLE_BLOCKS for cp in range(first, last + 1)}
    for cp in range(0x2E80, 0xFFF0):
        for codec in CODECS:
            try:
                chr(cp).encode(codec)
            except UnicodeEncodeError:
                continue
            points.add(cp)
            break
    return points


def main(target: str, weight: str = "Regular") -> None:
    # Both weights keep the same code points, so bold text never falls back to the regular face.
    source = SOURCE.format(weight=weight)
    collection = TTCollection(source)
    index = next(i for i, f in enumerate(collection.fonts) if f["name"].getDebugName(4) == FACE[weight])
    cmap = collection.fonts[index].getBestCmap()
    points = {cp for cp in wanted() if cp in cmap}
    options = subset.Options()
    options.layout_features = []
    options.name_IDs = ["*"]
    options.notdef_outline = True
    options.hinting = False
    options.font_number = index
    font = subset.load_font(source, options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=points)
    subsetter.subset(font)
    font.save(target)
    print(f"{target}: {len(points)} code points")


if __name__ == "__main__":
    main(*sys.argv[1:3])
