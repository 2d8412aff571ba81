"""Where a request comes from: one rule (audit.services.client_ip, TRUSTED_PROXIES) for the audit trail and
for django-axes' lockout by address. Without a trusted proxy X-Forwarded-For is never believed; behind one,
each client is itself, and what a client writes into the header beyond the trusted hops is not believed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from axes.models import AccessAttempt
from django.test import Client

from audit.models import AuditEvent
from audit.services import client_address

PROXY = "10.0.0.1"
PASSWORD = "clinician-pass-123"


def _sign_in(username: str, password: str, **headers: str):
    """A sign-in as a browser behind (or pretending to be behind) a proxy would send it."""
    remote = headers.pop("remote", "127.0.0.1")
    client = Client(REMOTE_ADDR=remote, headers=headers)
    return client.post("/login/", {"username": username, "password": password})


def _fail_until_locked(settings, forwarded: Callable[[int], str]) -> None:
    """Failed sign-ins through the proxy up to the limit, the n-th with X-Forwarded-For `forwarded(n)`; a new
    username each time, so only the address can lock (AXES_LOCKOUT_PARAMETERS: username or address)."""
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = _sign_in(f"guess-{n}", "wrong", remote=PROXY, **{"X-Forwarded-For": forwarded(n)})
        assert response.status_code == (429 if n == settings.AXES_FAILURE_LIMIT - 1 else 200)


def test_without_a_trusted_proxy_a_forged_header_changes_nothing(clinician, settings):
    assert settings.TRUSTED_PROXIES == []  # the default
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = _sign_in(f"guess-{n}", "wrong", **{"X-Forwarded-For": f"198.51.100.{n}"})
        assert response.status_code == (429 if n == settings.AXES_FAILURE_LIMIT - 1 else 200)
    failed = AuditEvent.objects.filter(action="sign_in.failed")
    assert failed.count() == settings.AXES_FAILURE_LIMIT
    assert set(failed.values_list("ip", flat=True)) == {"127.0.0.1"}
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    # Each forged header named a new address; the lock is on the real one all the same.
    locked = _sign_in("clinician", PASSWORD, **{"X-Forwarded-For": "198.51.100.200"})
    assert locked.status_code == 429


def test_two_clients_behind_a_trusted_proxy_are_locked_and_audited_apart(clinician, settings):
    settings.TRUSTED_PROXIES = [PROXY]
    _fail_until_locked(settings, lambda n: "203.0.113.7")
    assert (
        _sign_in("guess-more", "wrong", remote=PROXY, **{"X-Forwarded-For": "203.0.113.7"}).status_code == 429
    )
    # The other client, through the same proxy, is not locked out by the first one's failures.
    other = _sign_in("clinician", PASSWORD, remote=PROXY, **{"X-Forwarded-For": "203.0.113.8"})
    assert other.status_code == 302
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}
    failed = AuditEvent.objects.filter(action__in=["sign_in.failed", "sign_in.locked_out"])
    assert set(failed.values_list("ip", flat=True)) == {"203.0.113.7"}
    assert AuditEvent.objects.get(action="sign_in").ip == "203.0.113.8"


def test_a_forged_entry_left_of_the_trusted_hops_is_not_believed(clinician, settings):
    """The client writes X-Forwarded-For itself, a new address each time; the proxy appends the address it saw.
    The trail names what the proxy saw, and changing the forged part does not escape the lockout."""
    settings.TRUSTED_PROXIES = [PROXY]
    _fail_until_locked(settings, lambda n: f"198.51.100.{n}, 203.0.113.7")
    assert set(AuditEvent.objects.filter(action="sign_in.failed").values_list("ip", flat=True)) == {
        "203.0.113.7"
    }
    again = _sign_in("clinician", PASSWORD, remote=PROXY, **{"X-Forwarded-For": "192.0.2.99, 203.0.113.7"})
    assert again.status_code == 429


def test_a_request_that_did_not_come_through_the_proxy_is_not_believed(clinician, settings):
    settings.TRUSTED_PROXIES = [PROXY]
    _sign_in("guess", "wrong", remote="192.0.2.50", **{"X-Forwarded-For": "203.0.113.7"})
    assert AuditEvent.objects.get(action="sign_in.failed").ip == "192.0.2.50"


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        ([], "127.0.0.1", "203.0.113.7", "127.0.0.1"),
        ([PROXY], PROXY, "", PROXY),  # nothing forwarded: the proxy itself
        ([PROXY], PROXY, "203.0.113.7", "203.0.113.7"),
        ([PROXY], PROXY, "6.6.6.6, 203.0.113.7", "203.0.113.7"),
        ([PROXY], PROXY, "6.6.6.6,203.0.113.7:5123", "203.0.113.7"),  # a port after the address
        ([PROXY], PROXY, "203.0.113.7, 10.0.0.2", "10.0.0.2"),  # 10.0.0.2 is not trusted: it is the client
        (["10.0.0.0/24"], PROXY, "6.6.6.6, 203.0.113.7, 10.0.0.2", "203.0.113.7"),  # two proxies in a row
        ([PROXY], PROXY, "203.0.113.7, unknown", PROXY),  # not an address: the last proxy that vouched
        ([PROXY], PROXY, "10.0.0.1", PROXY),
        (["::1"], "::1", "[2001:db8::7]:443", "2001:db8::7"),
        ([PROXY], "::ffff:10.0.0.1", "203.0.113.7", "203.0.113.7"),  # an IPv4 proxy on a dual-stack socket
        ([PROXY], "192.0.2.50", "203.0.113.7", "192.0.2.50"),
    ],
)
def test_the_rule(settings, proxies, remote, forwarded, expected):
    settings.TRUSTED_PROXIES = proxies
    assert client_address(remote, forwarded) == expected


def test_a_setting_that_is_no_address_stops_the_start(tmp_path):
    env = {
        "TRUSTED_PROXIES": "10.0.0.1,proxy.example",
        "QEEG_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'qeeg_site.settings'; django.setup()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "TRUSTED_PROXIES: 'proxy.example' is not an address or a network" in result.stderr
