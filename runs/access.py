"""Who may see and do what with a council run, built on patients.access: a run is reached through its
patient (out of reach: 404, as if it did not exist), and each action needs the role's run permission
(within reach but not in the role: 403). Pages, the API, the live stream and the export downloads all ask here,
and each refusal is audited as it is decided (patients.access explains).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import Http404

from patients.access import holding, in_reach, not_found, patient_for, reaching, report_for, require
from patients.models import Patient, Report
from runs.models import Artifact, Run

ACTIONS: dict[str, tuple[str, str]] = {
    "view": ("runs.view_run", "Your role cannot read council runs."),  # every stage, artifacts, exports
    "start": ("runs.add_run", "Your role cannot start council runs."),  # create, start, resume
    "select": ("runs.change_run", "Your role cannot select a draft."),
    "export": ("runs.change_run", "Your role cannot export a run."),
    "cancel": ("runs.change_run", "Your role cannot cancel a run."),
    # Council changes make model calls, as starting a run does.
    "drop": ("runs.add_run", "Your role cannot change who takes part in a run."),
    "reask": ("runs.add_run", "Your role cannot ask a model again."),
    "replace": ("runs.add_run", "Your role cannot change who takes part in a run."),
    "rejoin": ("runs.add_run", "Your role cannot change who takes part in a run."),
    "edit": ("runs.change_run", "Your role cannot edit the write-up."),
    "sign": ("runs.change_run", "Your role cannot sign the write-up."),
    "ask": ("runs.change_run", "Your role cannot ask a model for the patient version."),
}


def runs_for(user: Any) -> QuerySet[Run]:
    """The runs of every patient `user` reaches, if the role reads runs at all (else none)."""
    if not user.is_authenticated or not user.has_perm(ACTIONS["view"][0]):
        return Run.objects.none()
    return Run.objects.filter(in_reach(user, "patient_id"))


def run_for(user: Any, pk: int, action: str = "view", *, queryset: QuerySet[Run] | None = None) -> Run:
    """The run `pk` if `user` reaches its patient (else 404) and may do `action` (else 403)."""
    rows = Run.objects.all() if queryset is None else queryset
    # No ORDER BY for one primary key: compiling one hashed every selected column (1-2 ms on the run page).
    run = next(iter(rows.filter(in_reach(user, "patient_id"), pk=pk).order_by()[:1]), None)
    if run is None:
        not_found(user, pk, Run.objects.values_list("patient_id", flat=True))
        raise Http404(f"There is no run {pk}.")
    require(user, *ACTIONS[action], run)
    return run


def watchers_lost(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of (user id, run id) pairs, a process's open live streams, those whose user may no longer watch that
    run: made inactive, the run's patient out of their reach (taken off its clinicians), or a role that no
    longer reads runs; the run deleted. Four queries however many streams; each stream found here asks
    `run_for` itself before it ends (runs/stream.py), so this rule only says which to ask."""
    if not pairs:
        return set()
    patient_of = dict(Run.objects.filter(pk__in={r for _, r in pairs}).values_list("pk", "patient_id"))
    readers = set(
        get_user_model()
        .objects.filter(pk__in={u for u, _ in pairs}, is_active=True)
        .filter(holding(ACTIONS["view"][0]))
        .values_list("pk", flat=True)
    )
    wanted = {(u, patient_of[r]) for u, r in pairs if u in readers and r in patient_of}
    reached = reaching(wanted)
    return {(u, r) for u, r in pairs if (u, patient_of.get(r)) not in reached}


def patient_runs_for(user: Any, patient_id: int, action: str = "view") -> Patient:
    """A patient whose runs `user` would list (`view`) or start (`start`): 404 out of reach, else 403."""
    patient = patient_for(user, patient_id)
    require(user, *ACTIONS[action], patient)
    return patient


def patient_run_rows(
    user: Any, patient_id: int, fields: tuple[str, ...], **reads: Any
) -> list[dict[str, Any]]:
    """The `fields` (and the annotations `reads`) of patient `patient_id`'s runs (newest first) for a user who
    may list them, with the answers of `patient_runs_for` (404 out of reach, else 403). The reach is part of
    the one query: rows show the patient is reached; only an empty answer asks about the patient itself."""
    if not user.is_authenticated or not user.has_perm(ACTIONS["view"][0]):
        patient_runs_for(user, patient_id)  # 404 out of reach, else 403
    # `patient__pk`, not `patient_id`: the key's own lookup knows the column's range, so an id past it is no
    # row rather than an OverflowError.
    rows = Run.objects.filter(patient__pk=patient_id)
    if not user.has_perm("patients.view_patient"):  # as in_reach: every patient, else the assigned
        rows = rows.filter(in_reach(user, "patient_id"))
    found = list(rows.annotate(**reads).values(*fields, *reads))
    if not found:
        patient_runs_for(user, patient_id)  # none yet, or out of reach (404)
    return found


def artifact_for(user: Any, run_id: int, artifact_id: int) -> Artifact:
    """An artifact of a run `user` may read (404 for an unknown pair or a run out of reach)."""
    run = run_for(user, run_id)
    artifact = Artifact.objects.filter(pk=artifact_id, run=run).first()
    if artifact is None:
        not_found(user, artifact_id, Artifact.objects.values_list("run__patient_id", flat=True))
        raise Http404(f"Run {run_id} has no artifact {artifact_id}.")
    artifact.run = run
    return artifact


def artifact_in_reach(user: Any, artifact_id: int) -> Artifact | None:
    """The artifact `artifact_id` of any run `user` may read; else None, audited (a body naming it: 422)."""
    artifact = Artifact.objects.filter(pk=artifact_id, run__in=runs_for(user)).first()
    if artifact is None:
        not_found(user, artifact_id, Artifact.objects.values_list("run__patient_id", flat=True))
    return artifact


def report_for_runs(user: Any, pk: int) -> Report:
    """A report as the council would see it (the de-identification preview): reached through its patient
    (else 404), for a role that reads runs (else 403)."""
    report = report_for(user, pk)
    require(user, *ACTIONS["view"], report)
    return report
