"""HEAD answers wherever GET does, with GET's status and headers and no body: every GET route of the project
(pages, the JSON API, downloads), signed out and as each role; the live stream answers its headers and ends;
a method a route truly does not take is still a JSON 405 under /api/. Through a real daphne too: no body
bytes follow a HEAD's headers, so the next request on the connection reads its own answer."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.test import Client

from runs.models import Run
from tests.access_world import World, world  # noqa: F401  (the fixture)
from tests.conftest import signed_in, token_client
from tests.stream_helpers import asgi_request, daphne_server, session_cookie
from tests.test_access_matrix import ROLES, STREAM_ROUTES, Route, _url, routes, users  # noqa: F401

# What GET says about its answer and HEAD must say the same (Date, cookies and a CSP nonce may differ).
SAME_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Location",
    "Allow",
    "Cache-Control",
    "X-Frame-Options",
)


def _gets(routes: list[Route]) -> list[Route]:  # noqa: F811
    return [route for route in routes if route.method == "GET" and route.name not in STREAM_ROUTES]


def _differences(client: Client, route: Route, world: World) -> list[str]:  # noqa: F811
    url = _url(route, world)
    got, head = client.get(url), client.head(url)
    wrong = []
    if head.status_code != got.status_code:
        wrong.append(f"{route.key}: HEAD {head.status_code}, GET {got.status_code}")
    for name in SAME_HEADERS:
        if head.get(name) != got.get(name):
            wrong.append(f"{route.key}: {name} HEAD {head.get(name)!r}, GET {got.get(name)!r}")
    if got.has_header("Content-Length") and not head.has_header("Content-Length"):
        wrong.append(f"{route.key}: HEAD has no Content-Length")
    if b"".join(head.streaming_content) if head.streaming else head.content:
        wrong.append(f"{route.key}: HEAD sent a body")
    return wrong


@pytest.mark.parametrize("role", ["signed_out", *ROLES])
def test_head_answers_every_get_route_as_get_does(routes, world, users, role):  # noqa: F811
    gets = _gets(routes)
    assert len(gets) > 40  # pages, API reads and downloads
    wrong = []
    for route in gets:
        if role == "signed_out":
            client = Client()
        else:
            client = token_client(users[role]) if route.is_api else signed_in(users[role])
        wrong += _differences(client, route, world)
    assert not wrong, wrong
    # Not a 405 anywhere for someone allowed: the clinician's reads answer 200 to HEAD as to GET.
    if role == "clinician":
        api = token_client(users[role])
        assert api.head(f"/api/patients/{world.patient.pk}").status_code == 200
        assert signed_in(users[role]).head(f"/runs/{world.run.pk}/").status_code == 200


def test_a_download_answers_head_with_its_length_and_no_file_read(world, clinician, monkeypatch):  # noqa: F811
    api = token_client(clinician)
    url = f"/api/runs/{world.run.pk}/export/{Run.EXPORT_MARKDOWN}"
    got = api.get(url)
    body = b"".join(got.streaming_content)
    head = api.head(url)
    assert head.status_code == 200 and head["Content-Length"] == str(len(body)) and len(body) > 0
    assert head["Content-Disposition"] == got["Content-Disposition"]
    assert not b"".join(head.streaming_content)


def test_a_head_writes_no_downloaded_or_viewed_row_and_a_refused_head_is_still_recorded(
    routes,  # noqa: F811
    world,  # noqa: F811
    clinician,
    audit_clock,
):
    """A HEAD hands over nothing, so the trail says nothing was: no "downloaded" row for a download (the
    original, either export, through the page and the API) and no "viewed" row anywhere, where GET writes
    them (nor a count of one: audit.bounds). A HEAD refused (404) is an `access.refused` row as GET's is."""
    from audit.bounds import write_counts
    from audit.models import AuditEvent, RepeatTally
    from audit.services import HANDED_OVER

    def handed_over() -> list[str]:
        return sorted(
            a for a in AuditEvent.objects.values_list("action", flat=True) if a.endswith(HANDED_OVER)
        )

    downloads = [
        f"/reports/{world.report.pk}/original/",
        f"/api/reports/{world.report.pk}/original",
        f"/api/runs/{world.run.pk}/export/{Run.EXPORT_MARKDOWN}",
        f"/api/runs/{world.run.pk}/export/{Run.EXPORT_PDF}",
    ]
    page, api = signed_in(clinician), token_client(clinician)
    before = handed_over()
    for url in downloads:
        client = api if url.startswith("/api/") else page
        assert client.head(url).status_code == 200, url
    for route in _gets(routes):
        (api if route.is_api else page).head(_url(route, world))
    assert handed_over() == before
    assert not RepeatTally.objects.filter(action__endswith=HANDED_OVER).exists()

    for url in downloads:
        client = api if url.startswith("/api/") else page
        assert client.get(url).status_code == 200, url
    write_counts()  # the original through the API is the page's read again: one row and one count row
    assert handed_over() == sorted(
        [*before, "report.downloaded", "report.downloaded", *["export.downloaded"] * 2]
    )

    last = AuditEvent.objects.order_by("pk").last().pk
    refused = AuditEvent.objects.filter(action="access.refused", pk__gt=last)
    assert api.head("/api/reports/999999/original").status_code == 404
    assert list(refused.values_list("object_id", "detail__status")) == [("999999", 404)]


def test_a_method_a_route_does_not_take_is_still_a_json_405(world, clinician):  # noqa: F811
    api = token_client(clinician)
    refused = api.delete(f"/api/patients/{world.patient.pk}/runs")
    assert refused.status_code == 405 and refused["Content-Type"] == "application/json"
    assert refused.json()["detail"].startswith("DELETE is not allowed")
    # HEAD of a route that takes POST only: 405 as GET would be, and it says HEAD.
    head = api.head(f"/api/runs/{world.run.pk}/start")
    assert head.status_code == 405 and head["Content-Type"] == "application/json"
    assert head["Allow"] == api.get(f"/api/runs/{world.run.pk}/start")["Allow"]
    assert int(head["Content-Length"]) > 0 and not head.content  # the JSON's length, no body
    assert signed_in(clinician).head(f"/runs/{world.run.pk}/select/").status_code == 405  # POST-only page


@pytest.mark.django_db(transaction=True)
async def test_the_live_stream_answers_head_with_its_headers_and_ends(clinician, other_clinician):
    from asgiref.sync import sync_to_async

    from tests.test_stream import make_run

    run = await sync_to_async(make_run)()
    await sync_to_async(run.patient.clinicians.add)(clinician)
    cookie = await session_cookie(clinician)
    head = await asgi_request(f"/api/runs/{run.pk}/stream", method="HEAD", headers={"cookie": cookie})
    assert head.status == 200 and head.headers["content-type"].startswith("text/event-stream")
    assert head.headers["cache-control"] == "no-cache, no-store, private"
    chunks = [chunk async for chunk in head.body]  # ends: no stream stays open for a HEAD
    assert b"".join(chunks) == b"" and not head.body.more
    stranger = await asgi_request(
        f"/api/runs/{run.pk}/stream", method="HEAD", headers={"cookie": await session_cookie(other_clinician)}
    )
    assert stranger.status == 404
    posted = await asgi_request(f"/api/runs/{run.pk}/stream", method="DELETE", headers={"cookie": cookie})
    assert posted.status == 405 and posted.headers["allow"] == "GET, HEAD"


# ---------------------------------------------------------------- through daphne


@pytest.fixture
def server(subprocess_env: dict[str, str]) -> Iterator[str]:
    with daphne_server(dict(subprocess_env, LOG_LEVEL="WARNING")) as url:
        yield url


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response's head and whatever else arrives within a short wait."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    sock.settimeout(0.5)
    try:
        while chunk := sock.recv(65536):
            rest += chunk
    except TimeoutError:
        pass
    sock.settimeout(10)
    return head, rest


@pytest.mark.django_db(transaction=True)
def test_daphne_sends_no_body_after_a_head_and_the_connection_goes_on(server, api_token):
    address = urlsplit(server)
    request = "{} /api/patients HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n"
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request.format("HEAD", api_token).encode())
        head, rest = _answer(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head.lower()
        assert rest == b""
        sock.sendall(request.format("GET", api_token).encode())
        head, rest = _answer(sock)
        assert head.startswith(b"HTTP/1.1 200") and rest.startswith(b"{")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(rest) == length
