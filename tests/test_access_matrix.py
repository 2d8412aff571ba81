"""Every route, enumerated from the URL resolver and the API schema (so a new route is covered the day it is
added), tried signed out, with a bad token, and as each role, against a patient assigned to `clinician` only.
Pages are tried with a session, the API with each user's own bearer token (a token acts with its user's
rights). A route missing from EXPECTED fails the test until someone says who may use it. Every refusal of a
signed-in role (its 403 or 404) leaves exactly one `access.refused` row naming that user, the status and the
record the route asked for; an allowed answer, the signed-out and bad tokens leave none."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from audit.models import AuditEvent
from audit.services import Asked, Origin
from patients.models import Patient
from qeeg_site.api import api
from runs import stream
from tests.access_world import World
from tests.conftest import signed_in, token_client
from tests.run_helpers import CONSOLIDATOR, COUNCIL

ALLOWED = "allowed"  # the access check let it through: any answer but 401, 403, 404, 405 or a 5xx
ROLES = ["no_role", "auditor", "staff", "clinician", "other_clinician", "administrator"]


def _for(no_role: Any, auditor: Any, staff: Any, clinician: Any, other_clinician: Any, admin: Any) -> dict:
    return dict(zip(ROLES, [no_role, auditor, staff, clinician, other_clinician, admin], strict=True))


EVERYONE = _for(*[ALLOWED] * 6)
SEES_THE_PATIENT = _for(404, 404, ALLOWED, ALLOWED, 404, ALLOWED)  # the record, its reports and files
KEEPS_THE_RECORD = _for(404, 404, ALLOWED, 403, 404, ALLOWED)  # edit, upload, read again
CREATES_RECORDS = _for(403, 403, ALLOWED, 403, 403, ALLOWED)
WORKS_THE_RUNS = _for(404, 404, 403, ALLOWED, 404, ALLOWED)  # read, start, select, export, stream
READS_THE_TRAIL = _for(403, ALLOWED, 403, 403, 403, ALLOWED)
NOT_YOURS = _for(*[404] * 6)  # someone else's (or no) API token
ADMIN_SITE = _for(302, 302, ALLOWED, 302, 302, ALLOWED)  # the admin sends non-staff to its own sign-in

EXPECTED: dict[str, dict[str, Any]] = {
    "GET /login/": EVERYONE,
    "POST /login/": EVERYONE,  # no credentials sent: the form again
    "PUT /login/": EVERYONE,  # Django's FormView takes PUT as POST
    "POST /logout/": EVERYONE,
    "GET /admin/": ADMIN_SITE,
    "GET /account/tokens/": EVERYONE,  # each user's own tokens
    "POST /account/tokens/": EVERYONE,
    "POST /account/tokens/{pk}/revoke/": NOT_YOURS,
    "GET /": EVERYONE,
    "POST /patients/new/": CREATES_RECORDS,
    "GET /patients/{pk}/": SEES_THE_PATIENT,
    "POST /patients/{pk}/edit/": KEEPS_THE_RECORD,
    "GET /patients/{pk}/reports/": SEES_THE_PATIENT,
    "GET /patients/{pk}/trend.svg": SEES_THE_PATIENT,  # no such measurement: 422 after the access check
    "POST /patients/{pk}/reports/upload/": KEEPS_THE_RECORD,
    "GET /reports/{pk}/": SEES_THE_PATIENT,
    "POST /reports/{pk}/reingest/": KEEPS_THE_RECORD,
    "GET /reports/{pk}/facts/view/": SEES_THE_PATIENT,
    "POST /reports/{pk}/facts/correct/": SEES_THE_PATIENT,  # staff and clinicians correct facts
    "POST /reports/{pk}/facts/lock/": SEES_THE_PATIENT,
    "POST /patients/{pk}/identifiers/": KEEPS_THE_RECORD,
    "POST /patients/{pk}/identifiers/{identifier_id}/delete/": KEEPS_THE_RECORD,
    "POST /reports/{pk}/redactions/": SEES_THE_PATIENT,  # staff and clinicians both redact
    "POST /reports/{pk}/redactions/{redaction_id}/delete/": SEES_THE_PATIENT,
    "GET /runs/reports/{pk}/council-view/": WORKS_THE_RUNS,  # what the council will see
    "GET /runs/reports/{pk}/council-view/pages/{number}.png": WORKS_THE_RUNS,
    "GET /runs/{pk}/council-view/": WORKS_THE_RUNS,  # what the council sees: all of a run's reports
    "GET /runs/patients/{patient_id}/council-view/": WORKS_THE_RUNS,  # …of the reports ticked in the wizard
    "GET /reports/{pk}/original/": SEES_THE_PATIENT,
    "GET /reports/{pk}/pages/{number}.png": SEES_THE_PATIENT,
    "GET /reports/{pk}/thumbs/{number}.png": SEES_THE_PATIENT,
    "GET /audit/": READS_THE_TRAIL,
    "GET /audit/export.csv": READS_THE_TRAIL,
    "GET /runs/": EVERYONE,  # a list: each sees the runs they may read (maybe none)
    "GET /runs/patients/{patient_id}/panel/": WORKS_THE_RUNS,
    "POST /runs/patients/{patient_id}/start/": WORKS_THE_RUNS,
    "GET /runs/{pk}/": WORKS_THE_RUNS,
    "GET /runs/{pk}/live/": WORKS_THE_RUNS,
    "POST /runs/{pk}/resume/": WORKS_THE_RUNS,
    "POST /runs/{pk}/cancel/": WORKS_THE_RUNS,
    "GET /runs/{pk}/changes/": WORKS_THE_RUNS,  # what asking an answer again (or replacing it) would do
    "POST /runs/{pk}/drop/": WORKS_THE_RUNS,  # council changes: the roles that start runs
    "POST /runs/{pk}/reask/": WORKS_THE_RUNS,
    "POST /runs/{pk}/replace/": WORKS_THE_RUNS,
    "POST /runs/{pk}/rejoin/": WORKS_THE_RUNS,
    "GET /runs/{pk}/stages/{stage}/": WORKS_THE_RUNS,
    "POST /runs/{pk}/select/": WORKS_THE_RUNS,
    "POST /runs/{pk}/export/": WORKS_THE_RUNS,
    "GET /runs/{pk}/write-up/": WORKS_THE_RUNS,
    "POST /runs/{pk}/write-up/preview/": WORKS_THE_RUNS,
    "POST /runs/{pk}/write-up/save/": WORKS_THE_RUNS,
    "POST /runs/{pk}/write-up/{number}/sign/": WORKS_THE_RUNS,
    "GET /runs/{pk}/write-up/versions/{number}/": WORKS_THE_RUNS,
    "GET /runs/{pk}/patient-version/": WORKS_THE_RUNS,
    "POST /runs/{pk}/patient-version/ask/": WORKS_THE_RUNS,
    "POST /runs/{pk}/patient-version/preview/": WORKS_THE_RUNS,
    "POST /runs/{pk}/patient-version/save/": WORKS_THE_RUNS,
    "POST /runs/{pk}/patient-version/{number}/sign/": WORKS_THE_RUNS,
    "GET /runs/{pk}/patient-version/versions/{number}/": WORKS_THE_RUNS,
    "POST /runs/{pk}/patient-version/export/": WORKS_THE_RUNS,
    "GET /account/profile/": EVERYONE,  # each user's own profile
    "POST /account/profile/": EVERYONE,
    "GET /api/docs": EVERYONE,
    "GET /api/openapi.json": EVERYONE,
    "GET /api/health": EVERYONE,
    "GET /api/models": EVERYONE,
    "GET /api/upstream/banner": EVERYONE,
    "GET /api/stages": EVERYONE,
    "GET /api/patients": EVERYONE,  # a list: each sees the patients they reach
    "POST /api/patients": CREATES_RECORDS,
    "GET /api/patients/{patient_id}": SEES_THE_PATIENT,
    "PUT /api/patients/{patient_id}": KEEPS_THE_RECORD,
    "GET /api/patients/{patient_id}/reports": SEES_THE_PATIENT,
    "POST /api/patients/{patient_id}/reports": KEEPS_THE_RECORD,
    "GET /api/reports/{report_id}": SEES_THE_PATIENT,
    "GET /api/reports/{report_id}/text": SEES_THE_PATIENT,
    "GET /api/reports/{report_id}/facts": SEES_THE_PATIENT,
    "POST /api/reports/{report_id}/facts/corrections": SEES_THE_PATIENT,  # staff and clinicians correct
    "POST /api/reports/{report_id}/facts/lock": SEES_THE_PATIENT,
    "DELETE /api/reports/{report_id}/facts/lock": SEES_THE_PATIENT,
    "GET /api/reports/{report_id}/pages/{number}.png": SEES_THE_PATIENT,
    "GET /api/reports/{report_id}/original": SEES_THE_PATIENT,
    "POST /api/reports/{report_id}/reingest": KEEPS_THE_RECORD,
    # The role is checked first; a patient out of reach is then "no such patient", as for any bad id in a body.
    "POST /api/runs": _for(403, 403, 403, ALLOWED, 422, ALLOWED),
    "POST /api/runs/{run_id}/start": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/cancel": WORKS_THE_RUNS,  # a finished run: 409, after the access check
    "POST /api/runs/{run_id}/drop": WORKS_THE_RUNS,  # a complete run: 409, after the access check
    "POST /api/runs/{run_id}/reask": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/replace": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/rejoin": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/stream": WORKS_THE_RUNS,
    "GET /api/patients/{patient_id}/runs": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/artifacts": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/artifacts/{artifact_id}": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/select": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/export": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/export/{name}": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/versions": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/versions": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/versions/{number}": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/versions/{number}/sign": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/patient-version/requests": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/patient-version/requests": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/patient-versions": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/patient-versions": WORKS_THE_RUNS,
    "GET /api/runs/{run_id}/patient-versions/{number}": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/patient-versions/{number}/sign": WORKS_THE_RUNS,
    "POST /api/runs/{run_id}/patient-version/export": WORKS_THE_RUNS,
    "GET /api/tokens": EVERYONE,
    "POST /api/tokens": EVERYONE,
    "POST /api/tokens/{token_id}/revoke": NOT_YOURS,
}

# Who needs no sign-in; every other route sends a browser to sign in (pages, the API docs) or answers 401.
PUBLIC = {"GET /login/", "POST /login/", "PUT /login/", "GET /api/health"}
STREAM_ROUTES = {"run-stream"}
SIGN_IN_REDIRECTS = {"GET /api/docs", "GET /api/openapi.json"}


@dataclass
class Route:
    method: str
    template: str  # "/patients/{pk}/"
    name: str  # "patients:detail", "api:patient_detail"

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def is_api(self) -> bool:
        return self.template.startswith("/api/")


def _walk(patterns: list, prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(
                pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace
            )
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), f"{namespace}:{pattern.name}" if namespace else pattern.name


def _template(django_path: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", django_path)


def all_routes(discover) -> list[Route]:
    """Every route of the project but the admin's own (its index stands for them: Django guards the rest).
    API methods come from the schema; a page's from what it answers to OPTIONS."""
    schema_methods: dict[str, list[str]] = {
        path: [method.upper() for method in operations]
        for path, operations in api.get_openapi_schema()["paths"].items()
    }
    routes: dict[str, Route] = {}
    # Django's URLconf, then the routes channels serves in front of it (the live stream).
    for django_path, name in [*_walk(get_resolver().url_patterns), *_walk(stream.urlpatterns)]:
        template = _template(django_path)
        if (template.startswith("/admin/") and template != "/admin/") or template == "/api/":
            continue
        methods = (
            ["GET"] if name in STREAM_ROUTES else schema_methods.get(template) or discover(template, name)
        )
        for method in methods:
            route = Route(method, template, name)
            routes.setdefault(route.key, route)
    # Reads first: a write allowed to one role (read a report again, sign out) must not change what the reads
    # after it see.
    return sorted(routes.values(), key=lambda route: route.method != "GET")


def _url(route: Route, world: World) -> str:
    values = {
        "patient_id": world.patient.pk,
        "report_id": world.report.pk,
        "run_id": world.run.pk,
        "artifact_id": world.artifact.pk,
        "number": 1,
        "stage": 6,
        "name": "final.md",
        "token_id": 999_999,
        "identifier_id": world.identifier.pk,
        "redaction_id": world.redaction.pk,
    }
    if route.name == "account-token-revoke":
        values["pk"] = 999_999
    elif route.name.startswith(("patients:report", "runs:report_preview")):
        values["pk"] = world.report.pk
    elif route.name.startswith("runs:"):
        values["pk"] = world.run.pk
    elif route.name.startswith("patients:redaction"):
        values["pk"] = world.report.pk
    else:
        values["pk"] = world.patient.pk
    return route.template.format(**values)


def _upload() -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile("extra.txt", b"Synthetic qEEG report\n" * 20, content_type="text/plain")]


def _body(route: Route, world: World) -> tuple[Any, str | None]:
    """A request body that would succeed for someone allowed, so the answer shows the access decision."""
    bodies: dict[str, tuple[Any, str | None]] = {
        "POST /patients/new/": ({"label": "SYNTH-NEW"}, None),
        "POST /patients/{pk}/edit/": ({"label": world.patient.label, "age": "41"}, None),
        "POST /patients/{pk}/reports/upload/": ({"files": _upload()}, None),
        "POST /runs/patients/{patient_id}/start/": (
            {"reports": [world.report.pk], "council_models": COUNCIL, "consolidator": CONSOLIDATOR},
            None,
        ),
        "POST /runs/{pk}/select/": ({"artifact": world.artifact.pk}, None),
        "POST /api/patients": ({"label": "SYNTH-NEW"}, "application/json"),
        "PUT /api/patients/{patient_id}": ({"age": 41}, "application/json"),
        "POST /api/patients/{patient_id}/reports": ({"files": _upload()}, None),
        "POST /api/runs": (
            {"patient_id": world.patient.pk, "report_id": world.report.pk},
            "application/json",
        ),
        "POST /api/runs/{run_id}/select": ({"artifact_id": world.artifact.pk}, "application/json"),
        # Council changes as dry runs: the answer shows the access decision, the world stays as it is.
        **{
            f"POST /api/runs/{{run_id}}/{change}": (
                {"model": "gpt-5", "stage": 6, "replacement": "fake-reviser", "dry_run": True},
                "application/json",
            )
            for change in ("drop", "reask", "replace", "rejoin")
        },
        "POST /api/reports/{report_id}/facts/corrections": ({"fact": "f", "value": "1"}, "application/json"),
        "POST /account/tokens/": ({"name": "matrix"}, None),
        "POST /patients/{pk}/identifiers/": ({"kind": "record_number", "value": "SYN-0042"}, None),
        "POST /reports/{pk}/redactions/": ({"phrase": "another phrase", "scope": "report"}, None),
        "POST /api/tokens": ({"name": "matrix"}, "application/json"),
        "POST /api/runs/{run_id}/versions": ({"text": "# Final draft\n\nMatrix edit.\n"}, "application/json"),
        "POST /runs/{pk}/write-up/save/": ({"text": "# Final draft\n\nMatrix page edit.\n"}, None),
        "POST /runs/{pk}/write-up/preview/": ({"text": "# Preview"}, None),
        "POST /runs/{pk}/patient-version/ask/": ({"model": "gpt-5"}, None),
        "POST /runs/{pk}/patient-version/save/": ({"text": "# For you\n\nMatrix page edit.\n"}, None),
        "POST /runs/{pk}/patient-version/preview/": ({"text": "# Preview"}, None),
        "POST /api/runs/{run_id}/patient-version/requests": ({"model_id": "gpt-5"}, "application/json"),
        "POST /api/runs/{run_id}/patient-versions": (
            {"text": "# For you\n\nMatrix edit.\n"},
            "application/json",
        ),
    }
    return bodies.get(route.key, ({}, None))


@dataclass
class Answer:
    status_code: int
    detail: str

    def json(self) -> dict[str, str]:
        return {"detail": self.detail}


def _stream(client: Client, route: Route, world: World) -> Answer:
    """The live stream is a channels consumer (tests/test_stream_access.py goes through it); here its one
    rule, `stream_refusal`, answers for the user the consumer's scope would carry."""
    user = getattr(client, "persona", None) or AnonymousUser()
    refusal = stream.stream_refusal(
        user, world.run.pk, Asked(Origin("127.0.0.1", ""), f"GET /{stream.STREAM_PATH}")
    )
    return Answer(*(refusal or (200, "")))


def call(client: Client, route: Route, world: World):
    if route.name in STREAM_ROUTES:
        return _stream(client, route, world)
    data, content_type = _body(route, world)
    send = getattr(client, route.method.lower())
    kwargs = {"content_type": content_type} if content_type else {}
    if route.method == "GET":
        return send(_url(route, world))
    return send(_url(route, world), data, **kwargs)


def _allowed(status: int) -> bool:
    return status < 400 or status in (409, 422)


@pytest.fixture
def routes(world, administrator) -> list[Route]:
    def discover(template: str, name: str) -> list[str]:
        """The methods a page takes, from the Allow header Django's method decorators and views send to
        OPTIONS (nothing runs)."""
        url = _url(Route("OPTIONS", template, name), world)
        allow = signed_in(administrator).options(url).headers.get("Allow", "GET")
        return [m for m in (m.strip() for m in allow.split(",")) if m in ("GET", "POST", "PUT", "DELETE")]

    return all_routes(discover)


def test_every_route_has_an_expectation(routes):
    missing = sorted(route.key for route in routes if route.key not in EXPECTED)
    assert not missing, f"Say who may use these routes in EXPECTED: {missing}"
    stale = sorted(set(EXPECTED) - {route.key for route in routes})
    assert not stale, f"EXPECTED names routes that no longer exist: {stale}"


def _wrong_for_caller(routes: list[Route], world: World, caller: str) -> list[tuple[str, int]]:
    client = (
        Client() if caller == "signed_out" else Client(headers={"Authorization": "Bearer qc_not-a-token"})
    )
    wrong = []
    refused = AuditEvent.objects.filter(action="access.refused")
    before = refused.count()
    for route in routes:
        response = call(client, route, world)
        if route.key in PUBLIC:
            ok = response.status_code == 200
        elif route.is_api and route.key not in SIGN_IN_REDIRECTS:
            ok = response.status_code == 401 and "Bearer" in response.json()["detail"]
        else:
            sign_in = "/admin/login/" if route.template.startswith("/admin/") else "/login/"
            ok = response.status_code == 302 and response["Location"].startswith(sign_in)
        if not ok:
            wrong.append((route.key, response.status_code))
    if refused.count() != before:
        wrong.append(("access.refused rows for the signed out", refused.count() - before))
    return wrong


def _refusal_wrong(route: Route, world: World, user: Any, expected: Any, rows: list[AuditEvent]) -> str:
    """What is wrong with the `access.refused` rows one route's answer left, or ''."""
    if expected not in (403, 404, 422):  # 422: a body naming a patient out of reach (POST /api/runs)
        return f"{len(rows)} rows for an answer that is no refusal" if rows else ""
    if len(rows) != 1:
        return f"{len(rows)} rows for one refusal"
    [row] = rows
    asked = {
        "patient": world.patient.pk,
        "report": world.report.pk,
        "run": world.run.pk,
        "artifact": world.artifact.pk,
        "apitoken": 999_999,
    }
    if row.user_id != user.pk or row.ip != "127.0.0.1" or not row.detail.get("route"):
        return f"row of {row.username} from {row.ip} route {row.detail.get('route')!r}"
    if row.detail["status"] != (404 if expected == 422 else expected):
        return f"row says {row.detail['status']}"
    if row.object_type and (row.object_type not in asked or str(asked[row.object_type]) != row.object_id):
        return f"row names {row.object_type} {row.object_id}"
    return ""


def _wrong_for_role(routes: list[Route], world: World, user: Any, role: str) -> list[tuple[str, Any, int]]:
    api_client = token_client(user)
    api_client.persona = user  # who the stream's scope would carry for this token
    wrong = []
    refused = AuditEvent.objects.filter(action="access.refused")
    for route in routes:
        expected = EXPECTED[route.key][role]
        last = refused.order_by("-pk").values_list("pk", flat=True).first() or 0
        # A fresh session per page: one route (sign out) ends it.
        response = call(api_client if route.is_api else signed_in(user), route, world)
        status = response.status_code
        if (expected == ALLOWED and not _allowed(status)) or (expected != ALLOWED and status != expected):
            wrong.append((route.key, expected, status))
        elif problem := _refusal_wrong(route, world, user, expected, list(refused.filter(pk__gt=last))):
            wrong.append((route.key, expected, problem))
    return wrong


CALLERS = ["signed_out", "bad_token"]


@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_refuses_the_signed_out_and_bad_tokens(routes, world, caller):
    assert not _wrong_for_caller(routes, world, caller)
    assert not Patient.objects.filter(label="SYNTH-NEW").exists()


@pytest.fixture
def users(django_user_model, auditor, staff, clinician, other_clinician, administrator) -> dict[str, Any]:
    no_role = django_user_model.objects.create_user(username="no-role", password="no-role-pass-123")
    return dict(zip(ROLES, [no_role, auditor, staff, clinician, other_clinician, administrator], strict=True))


@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_each_role_as_its_rights_say(routes, world, users, role):
    wrong = _wrong_for_role(routes, world, users[role], role)
    assert not wrong, f"{role}: (route, expected, got) {wrong}"


def test_the_same_on_postgresql(django_db_setup, postgres_db, routes, world, users):
    """The whole matrix once more on PostgreSQL (roles, groups and per-patient assignment are queries, and
    the two databases differ in what they allow), in one test with one world to keep it short: what each
    caller wrote (a report read again, an identifier removed) is rolled back before the next one."""
    assert connection.vendor == "postgresql"
    wrong: dict[str, list] = {}
    callers = [(caller, lambda c=caller: _wrong_for_caller(routes, world, c)) for caller in CALLERS]
    callers += [(role, lambda r=role: _wrong_for_role(routes, world, users[r], r)) for role in ROLES]
    for who, check in callers:
        with transaction.atomic():
            wrong[who] = check()
            transaction.set_rollback(True)
    assert not {who: found for who, found in wrong.items() if found}
