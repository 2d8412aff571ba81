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


def test_runpipeline_imports_nothing_the_run_does_not_use(subprocess_env):
    child = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "manage.py"), "runpipeline", "--list"],
        env=subprocess_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", child.stderr, re.MULTILINE))
    assert "runs.pipeline" in imported  # the import record is really there
    assert "council.client" in imported
    top_level = {name.split(".")[0] for name in imported}
    unwanted = [name for name in NOT_IN_A_RUNNER if name in imported or name in top_level]
    assert unwanted == []


def test_workers_skip_the_system_checks():
    from patients.management.commands.ingestreport import Command as IngestReport

    assert RunPipeline.requires_system_checks == []
    assert IngestReport.requires_system_checks == []
