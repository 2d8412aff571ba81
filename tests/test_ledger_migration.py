"""The model-call ledger moved from runs/ to ledger/ keeping its table and every row: a database with calls
counted before the move counts the same calls after it, on SQLite and PostgreSQL (and the move goes back)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.postgres import ROOT

BEFORE = """
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone
# As a database from before the move has it: the model's content type is runs'.
ContentType.objects.filter(app_label__in=["runs", "ledger"], model="modelcall").delete()
ContentType.objects.create(app_label="runs", model="modelcall")
user = get_user_model().objects.create_user(username="spender", password="x-pass-12345")
with connection.cursor() as cursor:
    for n in range(3):
        cursor.execute(
            "INSERT INTO runs_modelcall (user_id, kind, stage, model_id, made_at) VALUES (%s, %s, %s, %s, %s)",
            [user.pk, "stage", n + 1, f"model-{n}", timezone.now()],
        )
"""

AFTER = """
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from ledger import calls
from ledger.models import ModelCall
user = apps.get_model("auth", "User").objects.get(username="spender")
assert not apps.is_installed("runs") or not hasattr(apps.get_app_config("runs").models_module, "ModelCall")
print(calls.used_today(user), sorted(ModelCall.objects.values_list("model_id", flat=True)))
ModelCall.objects.create(user=user, kind=ModelCall.Kind.VISION, model_id="v")
print(calls.used_today(user), list(ContentType.objects.filter(model="modelcall").values_list("app_label", flat=True)))
"""


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_calls_counted_before_the_move_are_counted_after_it(engine, request, tmp_path):
    if engine == "postgres":
        env = request.getfixturevalue("postgres_db").child_env()
    else:
        env = {
            **os.environ,
            "QEEG_DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'before.sqlite3'}",
        }
        _manage(env, "migrate", "--no-input")  # as PostgreSQL's: migrated, then the move undone and redone
    _manage(env, "migrate", "--no-input", "runs", "0013")
    _manage(env, "shell", "-c", BEFORE)
    _manage(env, "migrate", "--no-input")
    counted, after = _manage(env, "shell", "-c", AFTER).splitlines()[-2:]
    assert counted == "3 ['model-0', 'model-1', 'model-2']"
    assert after == "4 ['ledger']"  # its content type (and the permissions on it) moved too
