"""A council runner starts fast: `manage.py runpipeline` imports nothing of the web server (daphne, twisted,
channels, the API routers) or of report reading (PDF rendering, OCR), and skips the system checks."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from runs.management.commands.runpipeline import Command as RunPipeline
from tests.stream_helpers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

NOT_IN_A_RUNNER = (
    "daphne",
    "twisted",
    "autobahn",
    "channels",
    "pypdfium2",
    "numpy",
    "PIL",
    "rapidocr_onnxruntime",
    "onnxruntime",
    "qeeg_site.api",
    "patients.api",
    "runs.api",
    "runs.stream",
    "patients.ingest",
)


def _imported(args: list[str], env: dict[str, str]) -> set[str]:
    """The modules `manage.py <args>` imports, read from the interpreter's own import record."""
    child = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, (child.stdout + child.stderr)[-2000:]
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", child.stderr, re.MULTILINE))
    assert "runs.pipeline" in imported  # the import record is really there
    assert "council.client" in imported
    return imported


def _unwanted(imported: set[str]) -> list[str]:
    top_level = {name.split(".")[0] for name in imported}
    return [name for name in NOT_IN_A_RUNNER if name in imported or name in top_level]


def test_runpipeline_imports_nothing_the_run_does_not_use(subprocess_env):
    assert _unwanted(_imported(["runpipeline", "--list"], subprocess_env)) == []


def test_a_whole_run_imports_nothing_of_report_reading(run, fake_upstream_env):
    # Reading the report's fact table at the start is reading its JSON: the page readers it was built with
    # (numpy, pypdfium2) cost a runner 0.2-0.4 s before its first call, forked from the warm runner or not.
    imported = _imported(["runpipeline", str(run.pk)], fake_upstream_env)
    run.refresh_from_db()
    assert run.status == "complete" and "patients.facts" in imported
    assert _unwanted(imported) == []


def test_workers_skip_the_system_checks():
    from patients.management.commands.ingestreport import Command as IngestReport

    assert RunPipeline.requires_system_checks == []
    assert IngestReport.requires_system_checks == []
