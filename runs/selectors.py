"""Reads for runs: progress per stage, artifact text, the Stage 5 votes. Pages, the API, the stream, the
export and `runpipeline` all read through these."""

from __future__ import annotations

from typing import Any, TypedDict

from council.schemas import FinalReview, InvalidReply, PeerReview, parse_artifact
from council.stages import NAMES
from runs.models import Artifact, Run


class ModelProgress(TypedDict):
    model_id: str
    label: str
    status: str  # ok | failed | running | pending
    error: str
    artifact_id: int | None


class StageProgress(TypedDict):
    stage: int
    name: str
    state: str  # pending | running | done | partial | failed | skipped
    ok: int
    failed: int
    total: int
    summary: str  # "2 of 3 models"
    models: list[ModelProgress]


def artifact_text(artifact: Artifact) -> str:
    """The stored text of an artifact ("" for a failed one: it has no file, only its reason)."""
    if artifact.status != Artifact.Status.OK or not artifact.file_path:
        return ""
    return artifact.path.read_text(encoding="utf-8")


def artifact_parsed(artifact: Artifact) -> PeerReview | FinalReview | None:
    """A Stage 2/5 artifact read back through the shared schema module (None for markdown or failures)."""
    if artifact.stage not in (2, 5) or artifact.status != Artifact.Status.OK:
        return None
    try:
        return parse_artifact(artifact.stage, artifact_text(artifact))
    except (InvalidReply, OSError):
        return None


def labels_by_model(run: Run) -> dict[str, str]:
    return {model: label for label, model in run.label_map.items()}


def stage_participants(run: Run, artifacts: list[Artifact], stage: int) -> list[str]:
    """Who takes part in a stage. Stage 1: the whole council; Stage 4: the consolidator; otherwise the
    council members whose Stage 1 analysis exists (a model that failed it has nothing to revise)."""
    if stage == 1:
        return list(run.council_models)
    if stage == 4:
        return [run.consolidator]
    analysed = {a.model_id for a in artifacts if a.stage == 1 and a.status == Artifact.Status.OK}
    members = [model for model in run.council_models if model in analysed]
    if stage == 2 and len(members) < 2:
        return []  # a lone analysis has no peers to review it
    return members


def run_progress(run: Run) -> dict[str, Any]:
    """Status, per-stage progress with each model's state and reason, and an honest council summary."""
    artifacts = list(run.artifacts.all())
    by_stage: dict[int, dict[str, Artifact]] = {}
    for artifact in artifacts:
        by_stage.setdefault(artifact.stage, {})[artifact.model_id] = artifact
    labels = labels_by_model(run)
    stage1_known = run.stages_done >= 1
    stages: list[StageProgress] = []
    for stage in range(1, 7):
        rows = by_stage.get(stage, {})
        if stage == 1 or stage == 4 or stage1_known:
            participants = stage_participants(run, artifacts, stage)
        else:
            participants = list(run.council_models)  # provisional until Stage 1 says who is left
        for model in rows:
            if model not in participants:
                participants.append(model)
        models: list[ModelProgress] = []
        for model in participants:
            artifact = rows.get(model)
            if artifact is not None:
                status = artifact.status
            elif run.status == Run.Status.RUNNING and run.current_stage == stage:
                status = "running"
            else:
                status = "pending"
            models.append(
                {
                    "model_id": model,
                    "label": labels.get(model, ""),
                    "status": status,
                    "error": artifact.error if artifact is not None else "",
                    "artifact_id": artifact.pk if artifact is not None else None,
                }
            )
        ok = sum(m["status"] == Artifact.Status.OK for m in models)
        failed = sum(m["status"] == Artifact.Status.FAILED for m in models)
        total = len(models)
        if stage <= run.stages_done:
            state = "skipped" if total == 0 else ("partial" if failed or ok < total else "done")
        elif run.current_stage == stage and run.status == Run.Status.RUNNING:
            state = "running"
        elif run.current_stage == stage and (ok or failed):
            state = "failed" if run.status == Run.Status.FAILED else "partial"
        else:
            state = "pending"
        unit = "model" if total == 1 else "models"
        stages.append(
            {
                "stage": stage,
                "name": NAMES[stage],
                "state": state,
                "ok": ok,
                "failed": failed,
                "total": total,
                "summary": f"{ok} of {total} {unit}",
                "models": models,
            }
        )
    return {
        "status": run.status,
        "current_stage": run.current_stage,
        "stages_done": run.stages_done,
        "council_summary": council_summary(run, artifacts),
        "stages": stages,
    }


def council_summary(run: Run, artifacts: list[Artifact] | None = None) -> str:
    """ "3 of 3 models", or "2 of 3 models (gemini-2.5-pro failed Stage 1: …)": how many council members
    took part (Stage 1), then every failure of any stage with its reason — a gap is never hidden."""
    artifacts = list(run.artifacts.all()) if artifacts is None else artifacts
    total = len(run.council_models)
    stage1 = {a.model_id: a for a in artifacts if a.stage == 1}
    if not stage1:
        return f"{total} council models, not started" if total != 1 else "1 council model, not started"
    ok = [m for m in run.council_models if m in stage1 and stage1[m].status == Artifact.Status.OK]
    failures = [
        f"{a.model_id} failed Stage {a.stage}: {a.error}"
        for a in sorted(artifacts, key=lambda a: (a.stage, a.model_id))
        if a.status == Artifact.Status.FAILED
    ]
    text = f"{len(ok)} of {total} models"
    return f"{text} ({'; '.join(failures)})" if failures else text


def final_votes(run: Run) -> list[dict[str, Any]]:
    """Stage 5 votes for the UI and the export's run card: label, model, vote, score, required changes."""
    labels = labels_by_model(run)
    votes = []
    for artifact in run.artifacts.filter(stage=5, status=Artifact.Status.OK).order_by("model_id"):
        vote = artifact_parsed(artifact)
        if isinstance(vote, FinalReview):
            votes.append(
                {
                    "model_id": artifact.model_id,
                    "label": labels.get(artifact.model_id, ""),
                    "vote": vote.vote,
                    "quality_score_1to10": vote.quality_score_1to10,
                    "required_changes": vote.required_changes,
                    "optional_changes": vote.optional_changes,
                }
            )
    return votes
