"""Shared fixtures: personas built once, an isolated data folder per test, and API clients."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from django.test import Client

from qeeg_site.models import ApiToken

pytest_plugins = ["tests.fake_upstream.fixtures", "tests.postgres"]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path: Path) -> Path:
    """Every test gets its own data folder, so no test sees another's files."""
    path = tmp_path / "data"
    path.mkdir()
    settings.DATA_DIR = path
    return path


@pytest.fixture
def clinician(django_user_model):
    return django_user_model.objects.create_user(username="clinician", password="clinician-pass-123")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-pass-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def outsider() -> Client:
    """Nobody signed in."""
    return Client()


@pytest.fixture
def clinician_client(clinician) -> Client:
    client = Client()
    client.force_login(clinician)
    return client


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def api_token(clinician) -> str:
    _, token = ApiToken.issue(user=clinician, name="tests")
    return token


@pytest.fixture
def api(api_token) -> Client:
    """An API client that authenticates as the clinician with a bearer token."""
    return Client(headers={"Authorization": f"Bearer {api_token}"})


@pytest.fixture
def subprocess_env(request, data_dir: Path) -> dict[str, str]:
    """Environment for a `manage.py` child process that must see this test's database and data folder.
    Use with `transactional_db`, so the rows the test made are committed where the child can read them, or
    with `postgres_db` (tests/postgres.py), whose database it then names, whatever the fixtures' order."""
    if "postgres_db" in request.fixturenames:
        return request.getfixturevalue("postgres_db").child_env()
    env = dict(os.environ)
    env["QEEG_DATA_DIR"] = str(data_dir)
    env["DATABASE_URL"] = current_database_url()
    return env


def current_database_url() -> str:
    """The URL of the database the tests are using right now (the test database, SQLite or PostgreSQL)."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{db.get('HOST') or ''}{port}/{db['NAME']}"


@pytest.fixture
def launched(monkeypatch) -> list[tuple[str, ...]]:
    """Records what the job runtime would have started in a child process (`launch_command` args) instead of
    starting it; each call answers with a made-up pid. The jobs stay launched ("starting") until they go
    stale, as a process that never claimed them would leave them."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr("jobs.launcher.launch_command", lambda *args, **kwargs: calls.append(args) or 4242)
    return calls


@pytest.fixture
def run(fake_upstream, tmp_path):
    """A created (not started) run of the default three-model council over a ready report."""
    from runs import services
    from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report

    patient = make_patient()
    report = make_ready_report(patient, tmp_path)
    return services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
