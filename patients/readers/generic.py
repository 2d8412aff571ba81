"""The generic row reader: tables whose header names sessions ("Session 1 … Session 3") and maybe a target.

Rows like "Trail Making Test A   41 sec   33 sec   47 sec   38-64 sec" become one fact per session, the
last column the target range. Columns come from the header's positions, so a value keeps its session even
when a neighbouring cell is empty or a placeholder. Vendor readers reuse `read_session_tables` for the
same kind of table on their own pages (WAVi's summary blocks).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from patients.layout import Box, PageLayout, Row, group_rows
from patients.readers.base import (
    Reading,
    count_merged,
    fold,
    joined,
    label_text,
    make_fact,
    phrases,
    split_unit,
)

NAME = "generic"
_SESSION = re.compile(r"^session\s*(\d{1,2})$", re.I)
TARGET_WORDS = {"target", "normal", "range", "reference", "norm", "expected"}


@dataclass
class Column:
    session: int | None  # None: the target column
    x0: float


@dataclass
class Block:
    label_x0: float
    columns: list[Column]
    right: float  # where the next block starts
    header: Row
    header_label: str


def _header_blocks(row: Row, page_width: float) -> list[Block]:
    """The blocks a header row opens: [label] [Session k]… [Target]; a row may hold several side by side."""
    cells = phrases(row, gap=1.0)
    blocks: list[Block] = []
    current: Block | None = None
    for cell in cells:
        text = fold(joined(cell)).replace(" ", "").lower()
        session = _SESSION.match(text)
        if session is None:
            # "Session1 Session2" read as one phrase: split it.
            many = re.fullmatch(r"(?:session\d{1,2})+", text)
            if many and current is not None:
                for number in re.findall(r"session(\d{1,2})", text):
                    current.columns.append(Column(int(number), cell[0].x0))
                continue
        if session is not None and current is not None:
            current.columns.append(Column(int(session.group(1)), cell[0].x0))
        elif text in TARGET_WORDS and current is not None and current.columns:
            current.columns.append(Column(None, cell[0].x0))
        else:
            current = Block(cell[0].x0, [], page_width, row, fold(joined(cell)))
            blocks.append(current)
    blocks = [block for block in blocks if sum(1 for c in block.columns if c.session) >= 2]
    for left, right in itertools.pairwise(blocks):
        left.right = right.label_x0
    return blocks


def _cells(row_boxes: list[Box], block: Block) -> tuple[list[Box], dict[int | None, list[Box]]]:
    """A data row cut at the header's columns: (label boxes, column -> boxes)."""
    tolerance = 0.6 * (sorted(box.height for box in row_boxes)[len(row_boxes) // 2] if row_boxes else 1.0)
    edges = [column.x0 - tolerance for column in block.columns]
    label: list[Box] = []
    cells: dict[int | None, list[Box]] = {}
    for box in row_boxes:
        if box.x0 < edges[0]:
            label.append(box)
            continue
        index = max(i for i, edge in enumerate(edges) if box.x0 >= edge)
        cells.setdefault(block.columns[index].session, []).append(box)
    return label, cells


def read_session_tables(
    layout: PageLayout, *, reader: str, dates: dict[int, str] | None = None
) -> tuple[Reading, list[Block]]:
    """Every session table on the page: one fact per row and session, the target beside it."""
    reading = Reading(reader=reader)
    rows = layout.rows()
    blocks_found: list[Block] = []
    headers = [
        (index, block) for index, row in enumerate(rows) for block in _header_blocks(row, layout.width)
    ]
    # A block ends where the next block to its right starts, whichever row that block's header is on.
    for _, block in headers:
        block.right = min(
            [b.label_x0 for _, b in headers if b.label_x0 > block.label_x0 + 10] + [block.right]
        )
    for index, block in headers:
        row = rows[index]
        blocks_found.append(block)
        reading.labels_found += 1
        section = _section_above(rows, index, block)
        sessions = [c.session for c in block.columns if c.session is not None]
        line = max(row.boxes[0].height, 1.0)
        previous_cy = row.cy
        # Rows are rebuilt from this block's own boxes: a block beside it has its own line spacing.
        below = [
            b
            for b in layout.boxes
            if block.label_x0 - line <= b.x0 < block.right - 0.5 * line and b.cy > row.cy + 0.5 * line
        ]
        for data_row in group_rows(below):
            boxes = data_row.boxes
            if data_row.cy - previous_cy > 2.6 * line:
                break
            label, cells = _cells(boxes, block)
            if not label or not any(cells.get(s) for s in sessions):
                break  # a heading or the next header: the table has ended
            if _header_blocks(Row(boxes), layout.width):
                break
            previous_cy = data_row.cy
            metric = label_text(label)
            target_boxes = cells.get(None, [])
            target = joined(target_boxes)
            reading.merged_tokens += count_merged(boxes)
            for session in sessions:
                reading.expected.append((metric, None, None, session))
                cell = cells.get(session)
                if not cell:
                    continue
                value, unit = split_unit(joined(cell))
                reading.cell(
                    make_fact(
                        layout,
                        reader=reader,
                        metric=metric,
                        section=section,
                        boxes=cell,
                        text=value,
                        unit=unit,
                        session=session,
                        session_date=(dates or {}).get(session),
                        target=target,
                    )
                )
    return reading, blocks_found


def _section_above(rows: list[Row], index: int, block: Block) -> str:
    """The heading printed just above a table header, within the block's columns."""
    if index == 0:
        return ""
    above = [b for b in rows[index - 1].boxes if block.label_x0 - 2 <= b.x0 < block.right]
    header = rows[index]
    if not above or header.cy - rows[index - 1].cy > 3 * max(header.boxes[0].height, 1.0):
        return ""
    return fold(joined(above))


def matches(layout: PageLayout) -> bool:
    return any(_header_blocks(row, layout.width) for row in layout.rows())


def read(layout: PageLayout) -> Reading:
    reading, _ = read_session_tables(layout, reader=NAME)
    return reading
