"""Every action the audit trail knows, and what it means. `audit.record` refuses any other name, so a typo
cannot start a new kind of event nobody filters for."""

from __future__ import annotations

ACTIONS: dict[str, str] = {
    # Signing in.
    "sign_in": "signed in",
    "sign_in.failed": "failed to sign in",
    "sign_in.locked_out": "was locked out after too many failed sign-ins",
    "sign_out": "signed out",
    "session.idle_timeout": "was signed out after the idle timeout",
    # Asked for a record out of reach or not there (404), or an action beyond the role (403).
    "access.refused": "was refused a record or an action",
    # Patients and their identifiers.
    "patient.created": "created a patient",
    "patient.edited": "edited a patient",
    "patient.viewed": "viewed a patient",
    "patient.assigned": "changed who is assigned to a patient",
    "identifiers.viewed": "viewed a patient's identifiers",
    "identifiers.changed": "changed a patient's identifiers",
    # Reports.
    "report.uploaded": "uploaded a report",
    "report.viewed": "viewed a report",
    "report.downloaded": "downloaded a report's original",
    "report.reingested": "had a report read again",
    "deid.preview_viewed": "viewed the de-identification preview",
    "fact.corrected": "corrected a fact",
    "facts.locked": "locked a report's fact table",
    "facts.unlocked": "unlocked a report's fact table",
    # Runs.
    "run.created": "created a run",
    "run.started": "started a run",
    "run.resumed": "resumed a run",
    "run.cancelled": "cancelled a run",
    "run.model_dropped": "went on without a model",
    "run.model_reasked": "asked a model again",
    "run.model_replaced": "put another model in a model's place",
    "run.model_rejoined": "let a model rejoin",
    "artifact.viewed": "viewed a run's output",
    "run.selected": "selected a draft",
    "run.acknowledged": "acknowledged a flagged number",
    "version.viewed": "viewed a write-up",
    "run.exported": "exported a run",
    "version.saved": "saved a version of a write-up or patient version",
    "version.signed": "signed a version of a write-up or patient version",
    "patient_version.requested": "asked a model for the patient version",
    "patient_version.written": "had the patient version written by a model",
    "patient_version.exported": "exported the patient version",
    "export.downloaded": "downloaded an export",
    # API tokens.
    "token.created": "created an API token",
    "token.used": "used an API token",
    "token.revoked": "revoked an API token",
}
