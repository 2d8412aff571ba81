"""Over-cap and signed-out writes are refused from their headers, before the body is read: by the ASGI
wrapper for any server, and inside daphne, which would otherwise hold a whole body in memory before the
application could say no (an unauthenticated 300 MB POST took daphne from 0.5 to 4 GB)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import AsyncClient

from patients.models import Patient
from qeeg_site.asgi_guard import RequestGuard
from qeeg_site.models import ApiToken
from tests.stream_helpers import daphne_process
from tests.synthetic_reports import make_qeeg_pdf

MB = 1024 * 1024


# -- the ASGI wrapper ---------------------------------------------------------------------------------------


class App:
    """Stands in for the application: records whether it ran."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope, receive, send) -> None:
        self.called = True
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _guarded(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, bool]:
    app = App()
    sent: list[dict] = []

    async def receive():
        raise AssertionError("the guard read the body")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}
    await RequestGuard(app)(scope, receive, send)
    status = sent[0]["status"]
    body = json.loads(sent[1]["body"]) if status != 204 and path.startswith("/api/") else {}
    return status, body, app.called


async def test_an_over_cap_request_is_refused_from_its_content_length():
    status, body, called = await _guarded(
        "POST", "/api/patients/1/reports", [(b"content-length", str(300 * MB).encode())]
    )
    assert (status, called) == (413, False)
    assert "REQUEST_MAX_BYTES" in body["detail"] and "300.0 MB" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/api/patients", 401), ("PUT", "/api/patients/1", 401), ("POST", "/patients/new/", 403)],
)
async def test_a_signed_out_write_is_refused_before_the_app(method, path, status):
    assert (await _guarded(method, path, [(b"content-length", b"10")]))[0::2] == (status, False)


@pytest.mark.django_db(transaction=True)
async def test_a_write_with_dead_credentials_is_refused():
    for header in ((b"cookie", b"sessionid=not-a-session"), (b"authorization", b"Bearer not-a-token")):
        status, body, called = await _guarded("POST", "/api/patients", [header])
        assert (status, called) == (401, False) and "Bearer" in body["detail"]


@pytest.mark.django_db(transaction=True)
async def test_reads_sign_in_and_live_credentials_pass(django_user_model):
    user = await django_user_model.objects.acreate(username="guard-user")
    _, token = await _issue(user)
    client = AsyncClient()
    await client.aforce_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    for method, path, headers in [
        ("GET", "/api/patients", []),
        ("POST", "/login/", [(b"content-length", b"40")]),
        ("POST", "/api/patients", [(b"authorization", f"Bearer {token}".encode())]),
        ("POST", "/patients/new/", [(b"cookie", f"csrftoken=x; sessionid={session}".encode())]),
    ]:
        assert (await _guarded(method, path, headers))[0::2] == (204, True), (method, path)


async def _issue(user):
    from asgiref.sync import sync_to_async

    from qeeg_site.models import ApiToken

    return await sync_to_async(ApiToken.issue)(user=user, name="t")


# -- daphne -------------------------------------------------------------------------------------------------


def _rss_mb(pid: int) -> tuple[int, int]:
    """(current, peak) resident size of a process in MB, from /proc."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmRSS"].split()[0]) // 1024, int(status["VmHWM"].split()[0]) // 1024


def _post_headers(port: int, path: str, *, length: int | None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary=BOUNDARY\r\n{size}{extra}\r\n"
    ).encode()


def _send_body(sock: socket.socket, total: int, *, chunked: bool) -> int:
    """Send a generated multipart body of `total` bytes in 1 MiB pieces until done or the server closes;
    returns how much went out."""
    head = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="files"; filename="big.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.7\n"
    )
    piece = b"0" * MB
    sent = 0
    try:
        while sent < total:
            data = head if sent == 0 else piece[: min(MB, total - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            sent += len(data)
    except OSError:  # reset once the server stopped listening: expected
        pass
    return sent


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def daphne(subprocess_env):
    env = dict(subprocess_env, LOG_LEVEL="WARNING", REPORT_OCR_ENABLED="false")
    with daphne_process(env) as (url, proc):
        yield url, proc


@pytest.mark.django_db(transaction=True)
def test_daphne_answers_an_unauthenticated_300_mb_post_before_its_body_in_bounded_memory(daphne):
    url, proc = daphne
    port = int(url.rsplit(":", 1)[1])
    httpx.get(f"{url}/login/", timeout=10)  # warm: Django loaded, a request served
    before, _ = _rss_mb(proc.pid)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_post_headers(port, "/api/patients/1/reports", length=300 * MB))
        status, body = _answer(sock)  # answered from the headers: not a byte of body sent yet
        assert status == 413 and "REQUEST_MAX_BYTES" in json.loads(body)["detail"]
        sent = _send_body(sock, 300 * MB, chunked=False)
    # It read and dropped what a browser would still be sending, up to REQUEST_MAX_BYTES, then hung up.
    assert sent < 300 * MB, sent
    time.sleep(0.5)
    after, peak = _rss_mb(proc.pid)
    assert peak - before < 40, (before, after, peak)  # 3.5 GB more without the guard
    with socket.create_connection(("127.0.0.1", port)) as sock:  # under the cap, but signed out
        sock.sendall(_post_headers(port, "/api/patients/1/reports", length=40 * MB))
        status, body = _answer(sock)
        assert status == 401 and "Bearer" in json.loads(body)["detail"]
    assert _rss_mb(proc.pid)[1] - before < 40


@pytest.mark.django_db(transaction=True)
def test_daphne_refuses_a_chunked_body_at_the_cap(daphne):
    url, proc = daphne
    port = int(url.rsplit(":", 1)[1])
    httpx.get(f"{url}/login/", timeout=10)
    before, _ = _rss_mb(proc.pid)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # A token-shaped header passes the header check; no length to judge by, so the count decides.
        sock.sendall(
            _post_headers(port, "/api/patients/1/reports", length=None, extra="Authorization: Bearer x\r\n")
        )
        sent = _send_body(sock, 3 * settings.REQUEST_MAX_BYTES, chunked=True)
        status, _ = _answer(sock)
    assert status == 413
    assert sent < 3 * settings.REQUEST_MAX_BYTES
    assert _rss_mb(proc.pid)[1] - before < 40


@pytest.mark.django_db(transaction=True)
def test_daphne_still_takes_a_real_upload(daphne, staff, tmp_path):
    url, _ = daphne
    _, api_token = ApiToken.issue(user=staff, name="uploads")  # uploads are staff's
    patient = Patient.objects.create(label="SYNTH-GUARD")
    pdf = tmp_path / "r.pdf"
    make_qeeg_pdf(pdf, pages=1, image_only_pages=())
    reply = httpx.post(
        f"{url}/api/patients/{patient.pk}/reports",
        headers={"Authorization": f"Bearer {api_token}"},
        files={"files": ("r.pdf", pdf.read_bytes(), "application/pdf")},
        timeout=30,
    )
    assert reply.status_code == 201, reply.text


@pytest.mark.django_db(transaction=True)
def test_daphne_looks_up_a_cookie_before_it_reads_a_large_body_into_memory(daphne, staff):
    """A made-up session cookie passes the header check; daphne used to read the whole body into memory
    before the application's look-up refused it (four 100 MB posts: 1.2 GB more). A large body's credentials
    are looked up first, while the body waits on disk; live ones still pass."""
    url, proc = daphne
    port = int(url.rsplit(":", 1)[1])
    httpx.get(f"{url}/login/", timeout=10)
    before, _ = _rss_mb(proc.pid)
    for path, cookie in [
        ("/patients/1/reports/upload/", "sessionid=made-up"),
        ("/api/patients/1/reports", ""),
    ]:
        extra = f"Cookie: {cookie}\r\n" if cookie else "Authorization: Bearer qc_made-up\r\n"
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(_post_headers(port, path, length=60 * MB, extra=extra))
            _send_body(sock, 60 * MB, chunked=False)
            status, _ = _answer(sock)
        assert status == (403 if cookie else 401), path
    assert _rss_mb(proc.pid)[1] - before < 40
    _, api_token = ApiToken.issue(user=staff, name="uploads")
    patient = Patient.objects.create(label="SYNTH-GUARD")
    reply = httpx.post(
        f"{url}/api/patients/{patient.pk}/reports",
        headers={"Authorization": f"Bearer {api_token}"},
        files={"files": ("big.pdf", b"%PDF-1.7\n" + b"0" * (3 * MB), "application/pdf")},
        timeout=60,
    )
    assert reply.status_code == 422 and "damaged or not a valid PDF" in reply.json()["detail"], reply.text
