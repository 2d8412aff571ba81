"""Synthetic council output for the export tests: a realistic final draft of a qEEG report (invented patient,
invented numbers), written the way models write markdown — 2-space nested lists, a table right under a line
of text, Unicode units and signs."""

from __future__ import annotations

# ruff: noqa: RUF001  (the Unicode signs and units are what the export tests are about)

FINAL_DRAFT = """# qEEG Interpretation — Final Draft

**Recording:** 19-channel, linked-ears montage, impedances ≤ 5 kΩ, room 22 °C, eyes closed (EC) and eyes open (EO).
**Artifact rejection:** 8.4 % of EC epochs removed; *no* epileptiform discharges identified.

## Summary

The record shows **excess frontal theta** with a raised theta/beta ratio (θ/β = 4.1 at Cz, norm ≈ 2.5 ± 0.6),
a slowed posterior dominant rhythm (PDR 8.6 Hz, age-expected ≥ 9.5 Hz) and reduced alpha reactivity
(EO → EC increase 38 %, norm > 50 %). Together these suggest an **under-arousal** pattern; they are not
diagnostic on their own.

## Absolute power (eyes closed)
Z-scores against the age-matched database; |Z| ≥ 2.0 is flagged.

| Band | Range | Fz (µV²) | Cz (µV²) | Pz (µV²) | Z (Fz) | Z (Cz) | Flag |
|:-----|:------|--------:|--------:|--------:|------:|------:|:----:|
| Delta δ | 1–4 Hz | 18.2 | 16.9 | 14.1 | +0.4 | +0.2 | — |
| Theta θ | 4–8 Hz | 31.7 | 29.5 | 21.0 | **+2.6** | **+2.3** | ↑ |
| Alpha α | 8–12 Hz | 22.4 | 27.8 | 41.3 | −0.9 | −0.7 | — |
| Beta β | 13–30 Hz | 6.1 | 7.2 | 6.8 | −2.3 | −1.8 | ↓ |
| High beta | 20–30 Hz | 2.0 | 2.4 | 2.2 | −1.1 | −0.6 | — |

## Event-related potentials

1. **P300 (oddball):** latency 372 ms at Pz (norm 300–350 ms), amplitude 6.2 µV (norm ≥ 8 µV).
2. **N100:** within normal limits (latency 104 ms).
3. Reaction time 512 ± 84 ms; 3 omission errors.

## Findings
- Frontal midline theta excess (Fz, Cz), Z up to +2.6.
  - Most marked at Fz; also present eyes open.
  - Coherence Fz–Cz in theta within ±1 SD.
- Posterior dominant rhythm 8.6 Hz, below age expectation.
- Beta deficit at Fz (Z = −2.3), consistent with the raised θ/β ratio.

> **Caution.** qEEG findings support, but do not replace, clinical assessment. Medication (sertraline
> 50 mg) can increase frontal beta; the beta deficit is therefore probably *understated*.

## Suggested next steps

1. Correlate with the clinical history (attention, sleep, medication timing).
2. Consider repeating the recording off caffeine, at the same time of day.
3. If neurofeedback is considered, a protocol targeting theta ↓ / beta ↑ at Cz is the usual starting
   point — `protocol: Cz θ/β down-train`, 20 sessions, review at session 10.

---

*Prepared for the treating clinician. Values such as −2.3 and ±0.6 are copied from the vendor report.*
"""

WIDE_TABLE = "| " + " | ".join(f"Column{n}" for n in range(80)) + " |\n"
WIDE_TABLE += "|" + "---|" * 80 + "\n"
WIDE_TABLE += "| " + " | ".join(f"value{n}xyzxyz" for n in range(80)) + " |\n"


def pdf_pages_text(data: bytes) -> list[str]:
    """The text of each page, as a PDF reader extracts it (pypdfium2)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    try:
        return [document[index].get_textpage().get_text_bounded() for index in range(len(document))]
    finally:
        document.close()


def ruled_lines(data: bytes, *, page: int = 0, min_mm: float = 20.0) -> tuple[int, int]:
    """(horizontal, vertical) count of straight ruled lines at least `min_mm` long on a rendered page: table
    borders and rules. Text never makes such lines: glyphs leave gaps between letters."""
    import numpy as np
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    try:
        scale = 2.0  # 144 dpi
        image = document[page].render(scale=scale).to_pil().convert("L")
    finally:
        document.close()
    dark = np.asarray(image) < 200
    min_px = int(min_mm / 25.4 * 72 * scale)

    def count(mask: np.ndarray) -> int:
        hits = [index for index, line in enumerate(mask) if _longest_run(line) >= min_px]
        groups = 0
        previous = -10
        for index in hits:
            if index > previous + 1:
                groups += 1
            previous = index
        return groups

    return count(dark), count(dark.T)


def _longest_run(line) -> int:
    import numpy as np

    if not line.any():
        return 0
    padded = np.concatenate(([0], line.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())
