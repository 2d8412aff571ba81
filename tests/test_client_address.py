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
from audit.services import client_address, origin_of_scope

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
        # Anything after the address but a port is no address written by a proxy: the walk stops there.
        ([PROXY], PROXY, "[2001:db8::7]junk", PROXY),
        ([PROXY], PROXY, "[2001:db8::7]:", PROXY),
        ([PROXY], PROXY, "203.0.113.7:x", PROXY),
        ([PROXY], PROXY, "203.0.113.7:", PROXY),
        # A zone names the proxy's interface, not the client: the address alone.
        (["::1"], "::1", "[fe80::1%eth0]:443", "fe80::1"),
        (["::1"], "::1", "fe80::1%eth0", "fe80::1"),
    ],
)
def test_the_rule(settings, proxies, remote, forwarded, expected):
    settings.TRUSTED_PROXIES = proxies
    assert client_address(remote, forwarded) == expected


@pytest.mark.parametrize(
    ("proxies", "remote", "expected"),
    [
        ([], "fe80::1%eth0", "fe80::1"),  # no proxy trusted: the connection's address, its zone left off
        ([PROXY], "fe80::1%eth0", "fe80::1"),  # a connection not from the proxy
        ([], "fe80::1%2", "fe80::1"),  # a zone as an interface's index
        ([], "::ffff:192.0.2.50", "192.0.2.50"),  # an IPv4 client on a dual-stack socket
        ([], "2001:DB8::7", "2001:db8::7"),  # written as a forwarded one is
        (["fe80::/10"], "fe80::1%eth0", "fe80::1"),  # a link-local proxy, nothing forwarded: the proxy itself
        ([], "", ""),  # no address at all (a Unix socket): as it came
    ],
)
def test_the_connections_own_address_is_written_as_a_forwarded_one_is(settings, proxies, remote, expected):
    """A raw REMOTE_ADDR and the same address forwarded by a trusted proxy are one address: the zone names the
    interface the connection came in on, not the client."""
    settings.TRUSTED_PROXIES = proxies
    assert client_address(remote) == expected
    settings.TRUSTED_PROXIES = ["::1"]
    if remote:
        assert client_address("::1", remote) == expected


def test_one_client_on_two_interfaces_is_one_address_to_the_lockout_and_the_bound(db, settings, monkeypatch):
    """Failed sign-ins from one link-local client seen on two interfaces (no proxy): the lockout, the trail
    and the repeat bound's tally (keyed by the address as text) count one address."""
    from types import SimpleNamespace

    from django.utils import timezone

    from audit import bounds
    from audit.models import RepeatTally

    settings.AUDIT_REPEATS_WRITTEN = 2
    now = timezone.now()  # the bound's clock stands still (a window boundary crossed would split the tally)
    monkeypatch.setattr(bounds, "timezone", SimpleNamespace(now=lambda: now))
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = _sign_in(f"guess-{n}", "wrong", remote=f"fe80::1%eth{n % 2}")
        assert response.status_code == (429 if n == settings.AXES_FAILURE_LIMIT - 1 else 200)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"fe80::1"}
    assert set(AuditEvent.objects.values_list("ip", flat=True)) == {"fe80::1"}
    assert set(RepeatTally.objects.values_list("who", flat=True)) == {"ip:fe80::1"}


def _start(tmp_path, **settings: str) -> subprocess.CompletedProcess:
    """Django set up in a child process with these environment settings."""
    env = {**settings, "QEEG_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
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


def test_a_setting_that_is_no_address_stops_the_start(tmp_path):
    result = _start(tmp_path, TRUSTED_PROXIES="10.0.0.1,proxy.example")
    assert result.returncode != 0
    assert "TRUSTED_PROXIES: 'proxy.example' is not an address or a network" in result.stderr


# --- RFC 7239 Forwarded (TRUSTED_PROXY_HEADER=Forwarded) -------------------------------------------------


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        ([], "127.0.0.1", "for=203.0.113.7", "127.0.0.1"),  # no trusted proxy: never read
        ([PROXY], "192.0.2.50", "for=203.0.113.7", "192.0.2.50"),  # not through the proxy: not read
        ([PROXY], PROXY, "", PROXY),
        ([PROXY], PROXY, "for=203.0.113.7", "203.0.113.7"),
        ([PROXY], PROXY, "For=203.0.113.7;proto=https;by=10.0.0.1", "203.0.113.7"),  # names ignore case
        ([PROXY], PROXY, 'for="203.0.113.7:5123"', "203.0.113.7"),  # a port: quoted, as it must be
        ([PROXY], PROXY, 'for="[2001:db8::7]:4711"', "2001:db8::7"),
        ([PROXY], PROXY, 'for="[2001:db8::7]"', "2001:db8::7"),
        (
            [PROXY],
            PROXY,
            "for=6.6.6.6, for=203.0.113.7",
            "203.0.113.7",
        ),  # the client's own, left: not believed
        (["10.0.0.0/24"], PROXY, "for=6.6.6.6, for=203.0.113.7, for=10.0.0.2", "203.0.113.7"),  # two proxies
        ([PROXY], PROXY, "for=203.0.113.7, for=10.0.0.2", "10.0.0.2"),  # 10.0.0.2 is not trusted
        # A comma inside a quoted value (the second proxy's `by`) joins the pieces around it.
        (["10.0.0.0/24"], PROXY, 'for=203.0.113.7, for=10.0.0.2;by="a,b"', "203.0.113.7"),
        (
            ["10.0.0.0/24"],
            PROXY,
            'for=203.0.113.7, for="10.0.0.2, 6.6.6.6"',
            PROXY,
        ),  # an entry, not an address
        # Forged or broken, each stops the walk at the last trusted proxy and is never believed:
        ([PROXY], PROXY, "for=unknown", PROXY),
        ([PROXY], PROXY, "for=_hidden", PROXY),  # an obfuscated node (RFC 7239 §6.3)
        ([PROXY], PROXY, "proto=https;by=10.0.0.1", PROXY),  # no `for`
        ([PROXY], PROXY, "for=2001:db8::7", PROXY),  # IPv6 unquoted: not a token
        ([PROXY], PROXY, "for=203.0.113.7:80", PROXY),  # a port unquoted: not a token
        ([PROXY], PROXY, "for=203.0.113.7;for=6.6.6.6", PROXY),  # a parameter twice in one element
        ([PROXY], PROXY, "for=203.0.113.7 6.6.6.6", PROXY),
        ([PROXY], PROXY, 'for="203.0.113.7', PROXY),  # an unclosed quote
        ([PROXY], PROXY, "for=203.0.113.7,", PROXY),  # an empty element at the right
        ([PROXY], PROXY, "203.0.113.7", PROXY),  # X-Forwarded-For's shape in Forwarded
        ([PROXY], PROXY, "for=\x00203.0.113.7", PROXY),
        # What the client wrote, however broken, cannot spoil what the proxy appended to its right.
        ([PROXY], PROXY, 'for="6.6.6.6, for=203.0.113.7', "203.0.113.7"),  # an unclosed quote of the client's
        ([PROXY], PROXY, "for=;;;==, for=203.0.113.7", "203.0.113.7"),
        ([PROXY], PROXY, 'for="[::1, for=203.0.113.7', "203.0.113.7"),
    ],
)
def test_the_rule_for_rfc_7239_forwarded(settings, proxies, remote, forwarded, expected):
    settings.TRUSTED_PROXIES = proxies
    assert client_address(remote, forwarded, header="Forwarded") == expected


def test_only_the_header_the_proxies_write_is_read(clinician, settings):
    """Both headers present: TRUSTED_PROXY_HEADER says which one the proxy writes, and the other, which the
    proxy passes through as the client wrote it, is never read, whichever it is."""
    settings.TRUSTED_PROXIES = [PROXY]
    both = {"X-Forwarded-For": "203.0.113.7", "Forwarded": "for=198.51.100.66"}
    _sign_in("guess-a", "wrong", remote=PROXY, **both)
    settings.TRUSTED_PROXY_HEADER = "Forwarded"
    _sign_in("guess-b", "wrong", remote=PROXY, **both)
    # With Forwarded chosen, a forged X-Forwarded-For is what the client wrote: ignored.
    _sign_in(
        "guess-c", "wrong", remote=PROXY, **{"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=203.0.113.8"}
    )
    assert list(
        AuditEvent.objects.filter(action="sign_in.failed").order_by("pk").values_list("username", "ip")
    ) == [("guess-a", "203.0.113.7"), ("guess-b", "198.51.100.66"), ("guess-c", "203.0.113.8")]
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {
        "203.0.113.7",
        "198.51.100.66",
        "203.0.113.8",
    }
    # The live stream (an ASGI scope, not a Django request) reads by the same rule.
    scope = {
        "client": (PROXY, 5123),
        "headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"forwarded", b"for=203.0.113.9")],
    }
    assert origin_of_scope(scope).ip == "203.0.113.9"
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    assert origin_of_scope(scope).ip == "6.6.6.6"


def test_forged_forwarded_elements_do_not_escape_the_lockout(clinician, settings):
    """The client writes a new Forwarded element (or junk) each time; the proxy appends the one it saw. The
    lock is on the address the proxy saw."""
    settings.TRUSTED_PROXIES = [PROXY]
    settings.TRUSTED_PROXY_HEADER = "Forwarded"
    forged = ["for=198.51.100.{n}", 'for="198.51.100.{n}', "for=198.51.100.{n};for=1.1.1.1", "garbage{n}"]
    for n in range(settings.AXES_FAILURE_LIMIT):
        header = forged[n % len(forged)].format(n=n) + ", for=203.0.113.7"
        response = _sign_in(f"guess-{n}", "wrong", remote=PROXY, Forwarded=header)
        assert response.status_code == (429 if n == settings.AXES_FAILURE_LIMIT - 1 else 200)
    assert set(AuditEvent.objects.filter(action="sign_in.failed").values_list("ip", flat=True)) == {
        "203.0.113.7"
    }
    assert _sign_in("clinician", PASSWORD, remote=PROXY, Forwarded="for=203.0.113.7").status_code == 429
    assert _sign_in("clinician", PASSWORD, remote=PROXY, Forwarded="for=203.0.113.9").status_code == 302


def test_any_forwarded_header_answers_an_address_and_never_raises(settings):
    """Whatever a Forwarded header holds (bounded, seeded): no exception, and the answer is the proxy or an
    address the header names, never text that is not an address."""
    import ipaddress

    from hypothesis import given, seed
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    alphabet = st.sampled_from([*'for=;,"[]:_. \t\\\x00\xff', "10.0.0.2", "203.0.113.7", "2001:db8::7"])

    @seed(7239)
    @hsettings(max_examples=400, deadline=None, database=None)
    @given(st.lists(alphabet, max_size=40).map("".join))
    def check(header: str) -> None:
        found = client_address(PROXY, header, header="Forwarded")
        ipaddress.ip_address(found)
        assert found == PROXY or found in header

    check()
    big = "for=6.6.6.6;" * 20000 + ', for="' * 20000 + ", for=203.0.113.7"
    assert client_address(PROXY, big, header="Forwarded") == "203.0.113.7"


def test_a_proxy_header_that_is_neither_stops_the_start(tmp_path):
    result = _start(tmp_path, TRUSTED_PROXY_HEADER="X-Real-IP")
    assert result.returncode != 0
    assert "TRUSTED_PROXY_HEADER must be X-Forwarded-For or Forwarded, not 'X-Real-IP'" in result.stderr
