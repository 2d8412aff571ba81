"""Writes for patients and reports: one path per behaviour, called by pages, the API and commands alike."""

from __future__ import annotations


def reports_resume_pending() -> int:
    return 0
