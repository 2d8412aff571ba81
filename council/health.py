"""Is CLIProxyAPI there, does it let us in, and which models does it offer?

One short check (`GET /v1/models`, one attempt, short timeouts: an operator wants an answer in seconds, not
the completion read timeout) and a process-local cache of its result, so the banner shown on every page and
the public /api/health never put more than one request every few seconds on the upstream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from council.client import CLIProxyClient, NeedsAuth, UpstreamError, UpstreamModel

# The kinds of problem, in the operator's words.
CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
UNAUTHORIZED = "unauthorized"
BAD_RESPONSE = "bad_response"
NO_MODELS = "no_models"


@dataclass(frozen=True)
class UpstreamHealth:
    reachable: bool
    problem: str | None  # None, or one of the kinds above
    message: str
    hint: str
    models: tuple[UpstreamModel, ...] = field(default_factory=tuple)
    base_url: str = ""
    latency_ms: int = 0
    checked_at: float = 0.0  # time.monotonic() of the check

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]

    @property
    def needs_attention(self) -> bool:
        """What the page banner is for: the operator must do something before runs can work."""
        return self.problem is not None


def _hint(problem: str | None, base_url: str, timeout: float) -> str:
    if problem == CONNECTION_REFUSED:
        return (
            f"Nothing answers at {base_url}: start CLIProxyAPI there (or `manage.py fakeupstream` to try the "
            "app with fake models), or set CLIPROXY_BASE_URL."
        )
    if problem == TIMEOUT:
        return f"CLIProxyAPI at {base_url} did not answer within {timeout:g} s: check that it is running and not stuck."
    if problem == UNAUTHORIZED:
        return "CLIProxyAPI refused our key: set CLIPROXY_API_KEY to one of the api-keys in its config.yaml."
    if problem == NO_MODELS:
        return "CLIProxyAPI lists no models: sign in to a provider in CLIProxyAPI (e.g. `cli-proxy-api --login`)."
    if problem == BAD_RESPONSE:
        return f"Something answers at {base_url}, but not like CLIProxyAPI: check CLIPROXY_BASE_URL."
    return "CLIProxyAPI is reachable and lists models."


async def check_upstream(
    *, base_url: str, api_key: str = "", timeout: float = 3.0, transport=None
) -> UpstreamHealth:
    """One `GET /v1/models` with one attempt and `timeout` for connect and read; never raises."""
    started = time.monotonic()
    client = CLIProxyClient(
        base_url=base_url,
        api_key=api_key,
        connect_timeout=timeout,
        read_timeout=timeout,
        max_attempts=1,
        models_cache_seconds=0,
        transport=transport,
    )
    problem: str | None = None
    models: list[UpstreamModel] = []
    try:
        models = await client.list_models()
    except NeedsAuth as exc:
        problem, message = UNAUTHORIZED, exc.message
    except UpstreamError as exc:
        problem = exc.kind if exc.kind in (CONNECTION_REFUSED, TIMEOUT) else BAD_RESPONSE
        message = exc.message
    finally:
        await client.aclose()
    if problem is None:
        if models:
            message = f"CLIProxyAPI at {base_url} lists {len(models)} model{'s' if len(models) != 1 else ''}."
        else:
            problem, message = NO_MODELS, f"CLIProxyAPI at {base_url} lists no models."
    return UpstreamHealth(
        reachable=problem not in (CONNECTION_REFUSED, TIMEOUT),
        problem=problem,
        message=message,
        hint=_hint(problem, base_url, timeout),
        models=tuple(models),
        base_url=base_url,
        latency_ms=round((time.monotonic() - started) * 1000),
        checked_at=time.monotonic(),
    )


async def check_upstream_from_settings() -> UpstreamHealth:
    from django.conf import settings

    return await check_upstream(
        base_url=settings.CLIPROXY_BASE_URL,
        api_key=settings.CLIPROXY_API_KEY,
        timeout=settings.CLIPROXY_HEALTH_TIMEOUT,
    )


# -- the process-local cache ---------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cached: tuple[tuple[str, str], UpstreamHealth] | None = None
_checks_in_flight: dict[tuple[asyncio.AbstractEventLoop, tuple[str, str]], asyncio.Task[UpstreamHealth]] = {}


def _cache_key() -> tuple[str, str]:
    from django.conf import settings

    # Keyed by where and as whom we ask, so changing the settings (tests do) never reuses an old verdict.
    return settings.CLIPROXY_BASE_URL, settings.CLIPROXY_API_KEY


def _max_age() -> float:
    from django.conf import settings

    return settings.CLIPROXY_HEALTH_CACHE_SECONDS


def peek_cached_health() -> UpstreamHealth | None:
    """The cached result if it is still fresh; never talks to the upstream (safe on every page render)."""
    with _cache_lock:
        if _cached is None or _cached[0] != _cache_key():
            return None
        health = _cached[1]
    if time.monotonic() - health.checked_at > _max_age():
        return None
    return health


async def cached_upstream_health() -> UpstreamHealth:
    """The cached result when fresh, else a new check (which refreshes the cache)."""
    if (health := peek_cached_health()) is not None:
        return health
    return await fresh_upstream_health()


async def fresh_upstream_health() -> UpstreamHealth:
    """A new check, whatever the cache holds, stored for the banner: for decisions that must see the models
    listed right now (creating a run), still one attempt with the short health timeout.

    Callers that arrive while a check is under way share it: the patient page asks for the banner and the
    run wizard at the same moment, and the upstream should still see one check."""
    loop = asyncio.get_running_loop()
    key = (loop, _cache_key())
    check = _checks_in_flight.get(key)
    if check is None:
        check = _checks_in_flight[key] = loop.create_task(_check_and_store(key[1]))
        check.add_done_callback(lambda _: _checks_in_flight.pop(key, None))
    # Shielded: a caller that goes away (a closed page) does not cancel the check the others wait on.
    return await asyncio.shield(check)


async def _check_and_store(key: tuple[str, str]) -> UpstreamHealth:
    global _cached
    health = await check_upstream_from_settings()
    with _cache_lock:
        _cached = (key, health)
    return health


def forget_cached_health() -> None:
    global _cached
    with _cache_lock:
        _cached = None
