"""Artifact file names from upstream model ids: deterministic, distinct, never outside the stage folder."""

from __future__ import annotations

import hashlib

import pytest

from documents.files import write_atomic
from runs.services import artifact_relpath, safe_model_file


@pytest.mark.parametrize("model_id", ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro", "qwen3_coder.v2"])
def test_plain_ids_are_their_own_file_names(model_id):
    assert safe_model_file(model_id) == model_id


@pytest.mark.parametrize(
    "model_id",
    ["org/model:free", "../../etc/passwd", "..", ".", "", "a b", "model\\x", "con", "x" * 300, "ünïcode"],
)
def test_other_ids_become_a_slug_plus_hash_that_stays_in_its_folder(model_id, tmp_path):
    name = safe_model_file(model_id)
    assert name == safe_model_file(model_id)  # deterministic
    assert name.endswith(hashlib.sha256(model_id.encode()).hexdigest()[:8])
    assert "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 89
    folder = tmp_path / "stage-1"
    assert (folder / f"{name}.md").resolve().parent == folder.resolve()


def test_ids_that_slug_alike_still_get_different_files():
    assert safe_model_file("org/model") != safe_model_file("org-model") != safe_model_file("org:model")
    assert safe_model_file("org/model:free").startswith("org-model-free-")


def test_relative_path_follows_the_contract():
    assert (
        artifact_relpath(run_id=7, stage=2, model_id="gpt-5", kind="json") == "artifacts/7/stage-2/gpt-5.json"
    )


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "b.md"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["b.md"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "stage-1" / "b.md"
    write_atomic(target, b"one")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("documents.files.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"two")
    assert target.read_bytes() == b"one" and [p.name for p in target.parent.iterdir()] == ["b.md"]
