"""Who may see and do what with a patient: the one place pages, the API, the stream and downloads ask.

Reach: a user with `patients.view_patient` (the Staff and Administrators roles) reaches every patient;
anyone else reaches only the patients assigned to them (`Patient.clinicians`). A patient out of reach answers
404, as if it did not exist, and lists leave it out. Within reach, an action the user's role does not include
answers 403 with the reason. An API token acts as its user, so it gets exactly these answers too.

Each refusal of a signed-in user is also in the audit trail (`access.refused`: which kind of record and its
id, the patient it belongs to if it exists, the route, from where), recorded here and in runs/access.py as it
is decided, so no page, endpoint, stream or download can refuse without a row. Lists and `can` (which only
hides buttons) record nothing; a request that passes pays nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404

import audit
from patients.models import Patient, Report

# What each action on a patient needs beyond reaching it, and the reason given when the role lacks it.
ACTIONS: dict[str, tuple[str | None, str]] = {
    "view": (None, ""),  # the record, its reports, their text, page images and originals
    "create": ("patients.add_patient", "Your role cannot create patient records."),
    "edit": ("patients.change_patient", "Your role cannot change patient records."),
    "upload": ("patients.add_report", "Your role cannot upload reports."),
    "reingest": ("patients.change_report", "Your role cannot have reports read again."),
    "assign": ("patients.assign_clinicians", "Your role cannot assign clinicians."),
    "view_identifiers": ("patients.view_identifiers", "Your role cannot see patient identifiers."),
    "change_identifiers": ("patients.change_identifiers", "Your role cannot record patient identifiers."),
    "correct_facts": ("patients.correct_facts", "Your role cannot correct facts."),
    "lock_facts": ("patients.correct_facts", "Your role cannot lock or unlock fact tables."),
    "redact": ("patients.add_redaction", "Your role cannot add or remove redactions."),
}


REACHES_EVERY_PATIENT = "patients.view_patient"


def _active(user: Any) -> bool:
    return user is not None and user.is_authenticated and user.is_active


def patients_for(user: Any) -> QuerySet[Patient]:
    """Every patient `user` may see (none for anonymous or inactive users)."""
    if not _active(user):
        return Patient.objects.none()
    return Patient.objects.filter(in_reach(user))


def in_reach(user: Any, patient: str = "pk") -> Q:
    """A filter on any table's rows: those whose `patient` (the patient's id: "pk" on patients, "patient_id"
    on their records) is a patient `user` may see. Checked row by row, by the assignment's own index (an
    EXISTS), never as the list of every patient assigned: SQLite built that list of a clinician's 5,000
    patients on every request to check one run or to find a page of 200 (4-7 ms), and sorted them all."""
    if not _active(user):
        return Q(pk__in=[])
    if user.has_perm(REACHES_EVERY_PATIENT):
        return Q()
    # A subquery rather than a join, so callers can annotate counts without the join multiplying rows.
    assigned = Patient.clinicians.through.objects.filter(user_id=user.pk, patient_id=OuterRef(patient))
    return Q(Exists(assigned))


def assigned(user: Any) -> QuerySet | None:
    """The (patient, clinician) rows that give `user` its reach: None when it reaches every patient, none for
    anonymous or inactive users (a list can count these rather than the patients, and read few of them)."""
    pairs = Patient.clinicians.through.objects
    if not _active(user):
        return pairs.none()
    return None if user.has_perm(REACHES_EVERY_PATIENT) else pairs.filter(user_id=user.pk)


def holding(permission: str) -> Q:
    """The users `has_perm(permission)` says yes for (Django's ModelBackend: a superuser, the permission
    given to the user or to a group of theirs), as a filter on the user table: many users in one query.
    Active users only, as has_perm; filter on is_active beside it."""
    app_label, codename = permission.split(".", 1)
    given = Permission.objects.filter(content_type__app_label=app_label, codename=codename).filter(
        Q(user=OuterRef("pk")) | Q(group__user=OuterRef("pk"))
    )
    return Q(is_superuser=True) | Exists(given)


def reaching(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of (user id, patient id) pairs, those where the user (active) reaches the patient, by
    `patients_for`'s rule; two queries however many pairs (the live streams' look, runs/stream.py)."""
    users = get_user_model().objects.filter(pk__in={u for u, _ in pairs}, is_active=True)
    everyone = set(users.filter(holding(REACHES_EVERY_PATIENT)).values_list("pk", flat=True))
    assigned = set(
        Patient.clinicians.through.objects.filter(
            user_id__in={u for u, _ in pairs} - everyone, patient_id__in={p for _, p in pairs}
        ).values_list("user_id", "patient_id")
    )
    return {(u, p) for u, p in pairs if u in everyone or (u, p) in assigned}


def reports_for(user: Any) -> QuerySet[Report]:
    return Report.objects.filter(in_reach(user, "patient_id"))


def can(user: Any, action: str) -> bool:
    """May `user`'s role do `action` on a patient it reaches? (For showing or hiding a button.)"""
    permission, _ = ACTIONS[action]
    return _active(user) and (permission is None or user.has_perm(permission))


def require(user: Any, permission: str | None, reason: str, obj: Any = None) -> None:
    """403 with `reason` unless `user` holds `permission` (None: nothing beyond being signed in); the refusal
    is audited, naming `obj` (the record within reach the action was asked on), if any."""
    if not _active(user) or (permission is not None and not user.has_perm(permission)):
        audit.record_refusal(user, 403, obj=obj, permission=permission or "")
        raise PermissionDenied(reason)


def require_action(user: Any, action: str, obj: Any = None) -> None:
    require(user, *ACTIONS[action], obj)


def not_found(user: Any, pk: Any, owner: QuerySet) -> None:
    """Audit a 404 (out of reach, or no such record): the kind and id asked, and the patient the record
    belongs to if there is one. `owner` is the one column of the record's model that names its patient
    (`Run.objects.values_list("patient_id", flat=True)`): read here, on the refusal path only."""
    patient_id = owner.filter(pk=pk).first()
    audit.record_refusal(user, 404, owner.model._meta.model_name, pk, patient_id=patient_id)


def patient_in_reach(user: Any, pk: int) -> Patient | None:
    """The patient `pk` if `user` reaches it; else None, audited (a body naming it answers 422, a path 404)."""
    patient = patients_for(user).filter(pk=pk).first()
    if patient is None:
        not_found(user, pk, Patient.objects.values_list("pk", flat=True))
    return patient


def reports_in_reach(user: Any, pks: list[int], *, patient: Patient | None = None) -> dict[int, Report]:
    """Those of the reports `pks` that `user` reaches (of `patient` only, one the user reaches, if given), by
    id; each other id is audited as refused."""
    rows = reports_for(user) if patient is None else patient.reports.all()
    found = {r.pk: r for r in rows.filter(pk__in=pks)}
    if missing := [pk for pk in dict.fromkeys(pks) if pk not in found]:
        owners = dict(Report.objects.filter(pk__in=missing).values_list("pk", "patient_id"))
        for pk in missing:
            audit.record_refusal(user, 404, "report", pk, patient_id=owners.get(pk))  # one look-up for all
    return found


def patient_for(user: Any, pk: int, action: str = "view") -> Patient:
    """The patient `pk` if `user` reaches it (else 404) and may do `action` on it (else 403)."""
    patient = patient_in_reach(user, pk)
    if patient is None:
        raise Http404(f"No patient with id {pk}.")
    require_action(user, action, patient)
    return patient


def report_for(user: Any, pk: int, action: str = "view") -> Report:
    """The report `pk` (its patient loaded) if `user` reaches its patient (else 404) and may do `action`."""
    report = reports_for(user).select_related("patient").filter(pk=pk).first()
    if report is None:
        not_found(user, pk, Report.objects.values_list("patient_id", flat=True))
        raise Http404(f"No report with id {pk}.")
    require_action(user, action, report)
    return report


def abilities(user: Any) -> dict[str, bool]:
    """Every action's answer for `user`, for templates to show only the buttons that will work."""
    return {action: can(user, action) for action in ACTIONS}
