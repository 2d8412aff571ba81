"""The guard's folding (case, marks, spacing and hyphen styles ignored, with a map back to the original) is
the same as folding one character at a time, for every character there is; and a guard looks through a text
it has found clean only once."""

from __future__ import annotations

import functools
import random
import unicodedata

from council import deid
from council.deid import _APOSTROPHES, _SEPARATORS, _Folded


@functools.cache
def _fold_one(ch: str) -> str:
    if ch in _APOSTROPHES:
        return "'"
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _one_at_a_time(text: str) -> _Folded:
    """The reference: every character on its own."""
    chars: list[str] = []
    index: list[int] = []
    gap = False
    for i, ch in enumerate(text):
        if ch.isspace() or ch in _SEPARATORS:
            if not gap:
                chars.append(" ")
                index.append(i)
            gap = True
            continue
        gap = False
        folded = _fold_one(ch)
        chars.extend(folded)
        index.extend([i] * len(folded))
    return _Folded("".join(chars), index)


def test_folding_matches_one_character_at_a_time_for_every_character():
    # Every character beside a letter, beside itself and after a gap, a block of characters per text (one
    # text per character took half a minute); a mismatching block is then searched for its character.
    codes = [code for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF]
    for start in range(0, len(codes), 4096):
        block = [chr(code) for code in codes[start : start + 4096]]
        text = "".join(f"b{ch}{ch} -{ch}" for ch in block)
        if _Folded.of(text) != _one_at_a_time(text):
            bad = next(
                ch for ch in block if _Folded.of(f"b{ch}{ch} -{ch}") != _one_at_a_time(f"b{ch}{ch} -{ch}")
            )
            raise AssertionError(f"folding differs for {hex(ord(bad))}")


def test_folding_matches_on_mixed_text():
    rng = random.Random(7)
    alphabet = list("aB -_\t\n'`\u00b4x9Zé\u2013 .,\x1c\x1fµ±\u00a0\u2019ßİﬁ\u0301Ä")
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _Folded.of(text) == _one_at_a_time(text), repr(text)


def test_a_clean_text_is_looked_through_once(monkeypatch):
    guard = deid.IdentifierGuard(deid.Identifiers(names=("Anna Müller",)))
    looked: list[str] = []
    real = guard._find
    monkeypatch.setattr(guard, "_find", lambda text, *folded: looked.append(text) or real(text, *folded))
    clean = "Alpha peak 9.5 Hz (p. 1). " * 200
    assert guard.find(clean) is None and guard.find(clean) is None
    assert looked == [clean]
    # A text with an identifier is looked through every time: it is never remembered as clean.
    dirty = "Seen today: Anna Mueller."
    assert guard.find(dirty) is not None
    assert guard.find(dirty) is not None
    assert looked == [clean, dirty, dirty]
