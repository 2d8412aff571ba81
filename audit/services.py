"""Writing the audit trail: `record` is the one way in. Reading it: `events` filters for the page and CSV.
Where a request comes from: `client_ip`, the one rule, read by the trail and by django-axes' lockout."""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, time
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from audit import bounds
from audit.actions import ACTIONS
from audit.models import AuditEvent

log = logging.getLogger(__name__)

Scalar = str | int | float | bool | None

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies)


def _port(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _address(text: str) -> Address | None:
    """An address as a proxy writes it (`203.0.113.7`, `203.0.113.7:5123`, `[2001:db8::7]:443`), or None
    (anything else after the address or its bracket than a port). A link-local address's zone
    (`fe80::1%eth0`) names the proxy's interface, not the client: left off, so one client is one address."""
    text = text.strip()
    if text.startswith("["):
        text, _, rest = text[1:].partition("]")
        if rest and not (rest.startswith(":") and _port(rest[1:])):
            return None
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _port(port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if getattr(address, "scope_id", None) is not None:
        address = ipaddress.ip_address(text.partition("%")[0])
    return getattr(address, "ipv4_mapped", None) or address


# RFC 7239 §4: `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::7]:4711"`; a value is a token or a
# quoted-string (RFC 9110 §5.6), a parameter name a token, each at most once per element.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_QUOTED_PAIR = re.compile(r"\\(.)")
FORWARDED_MAX_ELEMENTS = 64  # hops read from the right; no real chain of proxies is longer


def _forwarded_element(text: str) -> str | None:
    """The `for` value of one element (`for=…;by=…;proto=…`), unquoted; None when the element is not well
    formed, names a parameter twice, or has no `for`."""
    found: dict[str, str] = {}
    position = 0
    while True:
        pair = _PAIR.match(text, position)
        if pair is None:
            return None
        name, value = pair.group(1).lower(), pair.group(2)
        if name in found:
            return None
        found[name] = _QUOTED_PAIR.sub(r"\1", value[1:-1]) if value.startswith('"') else value
        position = pair.end()
        if position == len(text):
            return found.get("for")
        if text[position] != ";":
            return None
        position += 1


def _forwarded_for(header: str) -> Iterator[str | None]:
    """The `for` values of a Forwarded header, right to left, then None at the first element that is not well
    formed (and nothing after it: what is left of it cannot be told apart). Read from the right so that what a
    client wrote, however broken, cannot spoil the elements its proxies appended; a comma inside a quoted
    value joins the pieces around it."""
    pieces = header.split(",")[-FORWARDED_MAX_ELEMENTS:]
    end = len(pieces)
    while end > 0:
        start = end - 1
        # Join pieces leftwards only while the candidate is inside a quoted string (an odd count of quotes).
        while start > 0 and ",".join(pieces[start:end]).replace('\\"', "").count('"') % 2:
            start -= 1
        value = _forwarded_element(",".join(pieces[start:end]))
        yield value
        if value is None:
            return
        end = start


def _x_forwarded_for(header: str) -> Iterator[str]:
    return reversed(header.split(","))


def client_address(remote: str, forwarded: str = "", *, header: str | None = None) -> str:
    """The client's address, from the connection's (`remote`) and what the proxies forwarded: `forwarded`, the
    header TRUSTED_PROXY_HEADER names (`header`, default that setting): X-Forwarded-For's entries or RFC 7239
    Forwarded's `for=` values. The header is believed only when the connection comes from a proxy in
    TRUSTED_PROXIES, and only right to left while each entry is itself such a proxy: the first entry that is
    not is the client (what the last trusted proxy saw connect to it); anything left of it was written by the
    client and is never believed. An entry that is no address (`unknown`, an obfuscated `_node`, a malformed
    Forwarded element) stops the walk at the last proxy that vouched for it. The connection's own address is
    written as a forwarded one is (no zone, an IPv4 address on a dual-stack socket as IPv4), so one client is
    one address however it reached the app; a `remote` that is no address at all is returned as it came."""
    hop = _address(remote)
    if hop is None:
        return remote
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    if not any(hop in network for network in networks):
        return str(hop)
    named = (header or settings.TRUSTED_PROXY_HEADER).lower()
    entries = _forwarded_for(forwarded) if named == "forwarded" else _x_forwarded_for(forwarded)
    for entry in entries:
        address = _address(entry) if entry is not None else None
        if address is None:
            break
        hop = address
        if not any(hop in network for network in networks):
            break
    return str(hop)


def _meta_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def client_ip(request: HttpRequest) -> str:
    """The address a request came from: the audit trail's `ip` and django-axes' (AXES_CLIENT_IP_CALLABLE), so
    the lockout and the trail cannot disagree. Only the header TRUSTED_PROXY_HEADER names is read, never the
    other (a proxy passes the one it does not write through from the client untouched). Django joins repeated
    headers with commas, as both headers' lists are joined."""
    header = settings.TRUSTED_PROXY_HEADER
    return client_address(
        request.META.get("REMOTE_ADDR", ""), request.META.get(_meta_name(header), ""), header=header
    )


class Origin(NamedTuple):
    """Where something was asked from: the client's address and its User-Agent. Kept on a job for the rows
    it writes on its asker's behalf (jobs.Job.origin)."""

    ip: str
    user_agent: str


def origin_of(request: HttpRequest) -> Origin:
    return Origin(client_ip(request), request.META.get("HTTP_USER_AGENT", "")[:300])


def origin_of_scope(scope: dict[str, Any]) -> Origin:
    """The same for an ASGI scope (the live stream, served by channels rather than a Django request)."""

    def header(name: bytes) -> str:
        return ",".join(v.decode("latin-1") for k, v in scope.get("headers") or () if k.lower() == name)

    client = scope.get("client") or ("", 0)
    named = settings.TRUSTED_PROXY_HEADER
    forwarded = header(named.lower().encode("latin-1"))
    return Origin(client_address(client[0] or "", forwarded, header=named), header(b"user-agent")[:300])


class Asked(NamedTuple):
    """A request being served: where from, and the method and URL pattern asked (`GET
    /api/reports/<int:report_id>/original`: the pattern, never the values a user typed)."""

    origin: Origin
    route: str


# What is being served on this thread or task: a request (the middleware sets it), or a stream's opening.
_serving: ContextVar[HttpRequest | Asked | None] = ContextVar("audit_serving", default=None)


@contextmanager
def serving(what: HttpRequest | Asked | None) -> Iterator[None]:
    """Within: refusals (`record_refusal`) are of this request, from its address. None: of nothing."""
    token = _serving.set(what)
    try:
        yield
    finally:
        _serving.reset(token)


def _asked() -> Asked | None:
    what = _serving.get()
    if isinstance(what, HttpRequest):
        match = getattr(what, "resolver_match", None)
        return Asked(origin_of(what), f"{what.method} /{match.route}" if match is not None else what.method)
    return what


class ServingMiddleware:
    """Marks each request as the one being served (audit.serving), so the access rules, which are given only
    the user, can say from where a refusal was asked. A context variable set and reset: nothing else."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        with serving(request):
            return self.get_response(request)


def record_refusal(
    user: Any,
    status: int,
    object_type: str = "",
    object_id: Any = None,
    *,
    patient_id: int | None = None,
    obj: Any = None,
    permission: str = "",
) -> AuditEvent | None:
    """A signed-in user (or token) refused: 404, the record `object_type` `object_id` out of reach or not
    there; 403, within reach (`obj`) but `permission` not in the role. One `access.refused` row, of the request
    being served (who, from where, which route); none for the anonymous, whom sign-in refuses first, nor
    outside a request (a stream's own re-check of a user taken off a patient). Past the user's bound in a
    window (audit.bounds) it is counted instead, and the count written as one row: None."""
    asked = _asked()
    if asked is None or not getattr(user, "is_authenticated", False):
        return None
    patient_id = patient_id if patient_id is not None else _patient_id(obj)
    if not bounds.admit("access.refused", user, *asked.origin, patient_id=patient_id):
        return None
    detail: dict[str, Any] = {"status": status, "route": asked.route[:200]}
    if permission:
        detail["permission"] = permission
    return record(
        user,
        "access.refused",
        obj,
        object_type=object_type,
        object_id=object_id,
        patient_id=patient_id,
        origin=asked.origin,
        **detail,
    )


def _patient_id(obj: Any) -> int | None:
    """The patient a record belongs to, by its own fields (audit knows no models of the other apps)."""
    if obj is None:
        return None
    if obj._meta.label_lower == "patients.patient":
        return obj.pk
    if (patient_id := getattr(obj, "patient_id", None)) is not None:
        return patient_id
    run = getattr(obj, "run", None)  # an artifact: its run's patient
    return getattr(run, "patient_id", None)


def _clean(detail: dict[str, Any]) -> dict[str, Any]:
    # Ids, numbers, short codes; anything else is a bug in the caller (and might carry an identifier).
    for key, value in detail.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, Scalar) for v in values) or any(
            isinstance(v, str) and len(v) > 200 for v in values
        ):
            raise ValueError(f"audit detail {key!r} must be ids, numbers or short codes")
    return detail


# The actions that say content was handed over (a page, a file, a record shown); a HEAD writes none of them.
HANDED_OVER = ("viewed", "downloaded")


def record(
    request_or_user: Any,
    action: str,
    obj: Any = None,
    *,
    patient_id: int | None = None,
    origin: Origin | tuple[str, str] | None = None,
    object_type: str = "",
    object_id: Any = None,
    **detail: Any,
) -> AuditEvent | None:
    """Append one event: `request_or_user` is the request (who, and from where) or a user (a command, or a
    job on the user's behalf: `origin` is then where the user asked from); `obj` the record acted on (its
    patient is found from it), or `object_type` and `object_id` for one that may not exist; `detail` ids and
    counts only. None, and nothing written, for a HANDED_OVER action of a HEAD; None too for a request's
    HANDED_OVER read that its user already made from its address in the window (audit.bounds.first_read):
    counted, and written as part of a count row."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown audit action {action!r}; add it to audit/actions.py.")
    request = request_or_user if isinstance(request_or_user, HttpRequest) else None
    if getattr(request, "head_only", False) and action.endswith(HANDED_OVER):
        return None  # a HEAD, answered as GET with no body (qeeg_site/head.py): nothing was seen or taken
    user = getattr(request, "user", None) if request is not None else request_or_user
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    ip, user_agent = origin_of(request) if request is not None else origin or ("", "")
    username = user.get_username() if user is not None else str(detail.pop("username", ""))[:150]
    object_type = obj._meta.model_name if obj is not None else object_type[:40]
    object_id = str(obj.pk if obj is not None else "" if object_id is None else object_id)[:64]
    patient_id = patient_id if patient_id is not None else _patient_id(obj)
    detail = _clean(detail)
    if (
        request is not None
        and user is not None
        and action.endswith(HANDED_OVER)
        and not bounds.first_read(
            action,
            user,
            ip,
            user_agent,
            object_type=object_type,
            object_id=object_id,
            patient_id=patient_id,
            detail=detail,
        )
    ):
        return None
    return AuditEvent.objects.create(
        user=user,
        username=username,
        action=action,
        object_type=object_type,
        object_id=object_id,
        patient_id=patient_id,
        ip=ip or None,
        user_agent=user_agent[:300],
        detail=detail,
    )


def events(
    *,
    username: str = "",
    action: str = "",
    patient_id: int | None = None,
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """The trail, newest first, filtered; `since`/`until` are whole days in the site's time zone."""
    rows = AuditEvent.objects.all()
    if username:
        rows = rows.filter(username=username)
    if action:
        rows = rows.filter(action=action)
    if patient_id is not None:
        rows = rows.filter(patient_id=patient_id)
    zone = timezone.get_current_timezone()
    if since is not None:
        rows = rows.filter(at__gte=datetime.combine(since, time.min, tzinfo=zone))
    if until is not None:
        rows = rows.filter(at__lte=datetime.combine(until, time.max, tzinfo=zone))
    return rows.order_by("-at", "-pk")
