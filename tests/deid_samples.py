"""A synthetic report with identifiers planted in it, the way vendor exports print them (header block, session
dates, a device serial, a referral note), around measurements printed as WAVi-style summaries do. Made up."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TypedDict

from tests.synthetic_reports import make_text_report


class Planted(TypedDict):
    name: str  # as staff record it
    birth_date: date
    mrn: str
    phone: str
    email: str
    street: str
    serial: str
    # Every spelling of every planted identifier the text uses; none may reach a model.
    spellings: list[str]
    measurements: list[str]  # lines that must reach the models exactly as printed


PLANTED = Planted(
    name="Anna-Maria Müller-Lüdenscheidt",
    birth_date=date(2016, 3, 14),
    mrn="00447192",
    phone="(555) 201-7788",
    email="anna.mueller@example.org",
    street="42 Linden Avenue",
    serial="WAVI-88213-X",
    spellings=[
        "Müller",
        "MÜLLER",
        "Mueller",
        "Lüdenscheidt",
        "LUDENSCHEIDT",
        "Anna",
        "Maria",
        "03/14/2016",
        "14 March 2016",
        "2016-03-14",
        "20160314",
        "00447192",
        "0044 7192",
        "201-7788",
        "(555)",
        "555-201",
        "anna.mueller@example.org",
        "Linden",
        "62704",
        "WAVI-88213-X",
        "88213",
        "Sacramento",  # an unlabelled birthplace and towns of residence (no identifier recorded for them)
        "Elk Grove",
        "Folsom",
    ],
    measurements=[
        "P300 latency 253\u2013364 ms (target), Session 1 312 ms, Session 2 298 ms",
        "P300 amplitude 11.5 µV, 10.7 µV; N100 -4.2 µV",
        "Peak alpha frequency 9.0\u201311.0 Hz: 9.8 Hz, 10.1 Hz",
        "Theta/beta ratio 0.9-2.2: 2.41, 2.05",
        "Trail Making Test A 41 sec 33 sec 47 sec 38-64 sec",
        "Fz Z = -1.23, Cz Z = +2.10, O1 01 02 11.5 352 10.7 348",
        "Reaction time 253364ms 0.92.2 9.011.0 Hz 3610.7348",
    ],
)


def make_identified_report(path: Path | str, *, seed: int = 11) -> Planted:
    """A text report like make_text_report's, with the planted identifiers in a header and a note."""
    path = Path(path)
    make_text_report(path, seed=seed)
    table = path.read_text(encoding="utf-8")
    header = "\n".join(
        [
            "NeuroClinic qEEG summary — SYNTH-001",
            "Patient: MÜLLER-LÜDENSCHEIDT, Anna-Maria      DOB: 03/14/2016      MRN: 00447192",
            f"Phone: {PLANTED['phone']}   Email: {PLANTED['email']}",
            f"Address: {PLANTED['street']}, Springfield, IL 62704",
            "Session 1: 2024-03-01   Session 2 (03/24/2024)   Session 3: 12 April 2024",
            f"Device Serial: {PLANTED['serial']}",
            "",
        ]
    )
    note = "\n".join(
        [
            "",
            *PLANTED["measurements"],
            "",
            "Note: Anna (born 14 March 2016, 20160314) came with her mother, Mrs Mueller; chart no. 0044 7192.",
            "Lüdenscheidt, A. M. tolerated the recording well. Printed 2 May 2024.",
            "History: born at term in Sacramento, CA; raised in Elk Grove, she now lives in Folsom. Sacramento",
            "follow-up planned.",
        ]
    )
    path.write_text(header + table + note + "\n", encoding="utf-8")
    return PLANTED
