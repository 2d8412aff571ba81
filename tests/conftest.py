"""Shared fixtures: personas built once, an isolated data folder per test, and API clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group
from django.db.models.signals import post_save
from django.test import Client

from patients.models import Patient
from qeeg_site.models import ApiToken
from qeeg_site.roles import AUDITORS, CLINICIANS, STAFF

pytest_plugins = ["tests.fake_upstream.fixtures", "tests.postgres", "tests.access_world"]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path: Path) -> Path:
    """Every test gets its own data folder, so no test sees another's files."""
    path = tmp_path / "data"
    path.mkdir()
    settings.DATA_DIR = path
    return path


def with_role(user, role: str):
    # The groups exist: a migration makes them, and every migrate (also a test's flush) tops them up.
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture(autouse=True, scope="session")
def audit_trail_flushable() -> Iterator[None]:
    """Transactional tests flush the test database between tests, and the audit trail's triggers refuse that,
    as they must everywhere else: around a flush (only) they are lifted and made again, with the very SQL the
    migration ran, so every test still meets them."""
    from django.db.backends.base.operations import BaseDatabaseOperations

    from audit.triggers import DROP, TABLE, create_sql

    original = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        if any(TABLE in sql for sql in sql_list):
            vendor = self.connection.vendor
            sql_list = [*DROP[vendor], *sql_list, *create_sql(vendor)]
        return original(self, sql_list)

    BaseDatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    BaseDatabaseOperations.execute_sql_flush = original


class StillClock:
    """The audit bound's clock (audit.bounds), standing still at `now` until a test moves it on."""

    def __init__(self, now) -> None:
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, **delta) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)


@pytest.fixture
def audit_clock(monkeypatch) -> StillClock:
    """For a test that counts rows in audit windows (AUDIT_REPEAT_WINDOW_MINUTES): a window boundary crossed
    mid-test (every 10 minutes of the wall clock) wrote a past window's count early and failed a land's exact
    counts. The process's note of the windows already written (audit.bounds) starts afresh too."""
    from types import SimpleNamespace

    from django.utils import timezone

    from audit import bounds

    clock = StillClock(timezone.now())
    monkeypatch.setattr(bounds, "timezone", SimpleNamespace(now=clock))
    monkeypatch.setattr(bounds, "_counted_before", None)
    return clock


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Personas are made with passwords in nearly every test; the production hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def clinician(django_user_model):
    """A clinician assigned to every patient the test makes, before or after asking for this persona, so a
    test that makes a patient and reads it as `clinician` means what it meant before roles existed."""
    user = with_role(
        django_user_model.objects.create_user(username="clinician", password="clinician-pass-123"), CLINICIANS
    )
    user.assigned_patients.add(*Patient.objects.all())

    def assign(sender, instance: Patient, created: bool, **kwargs) -> None:
        if created:
            instance.clinicians.add(user)

    post_save.connect(assign, sender=Patient, weak=False, dispatch_uid="tests.assign_clinician")
    yield user
    post_save.disconnect(sender=Patient, dispatch_uid="tests.assign_clinician")


@pytest.fixture
def signer(clinician):
    """The clinician with a name and credentials on their profile, so they can sign."""
    from accounts.models import profile_of

    profile = profile_of(clinician)
    profile.display_name, profile.credentials = "Dr Ada Rivera", "MD, clinical neurophysiology"
    profile.save()
    return clinician


@pytest.fixture
def other_clinician(django_user_model):
    """A clinician assigned to no patient: every patient is out of reach."""
    return with_role(
        django_user_model.objects.create_user(username="other-clinician", password="other-pass-123"),
        CLINICIANS,
    )


@pytest.fixture
def staff(django_user_model):
    """Keeps patient records (the admin, uploads, assignments); reads no council runs."""
    return with_role(
        django_user_model.objects.create_user(username="staff", password="staff-pass-123", is_staff=True),
        STAFF,
    )


@pytest.fixture
def auditor(django_user_model):
    """Reads the audit log, and nothing about patients."""
    return with_role(
        django_user_model.objects.create_user(username="auditor", password="auditor-pass-123"), AUDITORS
    )


@pytest.fixture
def administrator(django_user_model):
    return django_user_model.objects.create_superuser(username="administrator", password="admin-pass-123")


@pytest.fixture
def outsider() -> Client:
    """Nobody signed in."""
    return Client()


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def token_client(user) -> Client:
    """An API client that authenticates as `user` with a bearer token."""
    _, token = ApiToken.issue(user=user, name="tests")
    return Client(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def clinician_client(clinician) -> Client:
    return signed_in(clinician)


@pytest.fixture
def staff_client(staff) -> Client:
    return signed_in(staff)


@pytest.fixture
def api_token(clinician) -> str:
    _, token = ApiToken.issue(user=clinician, name="tests")
    return token


@pytest.fixture
def api(api_token) -> Client:
    """An API client that authenticates as the clinician with a bearer token."""
    return Client(headers={"Authorization": f"Bearer {api_token}"})


@pytest.fixture
def staff_api(staff) -> Client:
    """An API client that authenticates as the staff member with a bearer token."""
    return token_client(staff)


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
