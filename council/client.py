"""The one CLIProxyAPI client. Every model call the council makes goes through `CLIProxyClient`.

Text and images in, text and usage out; nothing here knows about the ORM or HTTP requests.

Failure rules (CLIProxyAPI is more surprising than a plain OpenAI endpoint):
- 429, 502 and 503 are retried with exponential backoff and jitter, bounded by `max_attempts` and by
  `max_retry_seconds` of total time. A 429 that says when the model is usable again (`error.reset_seconds`,
  CLIProxyAPI's `model_cooldown`, or a `Retry-After` header) is waited out, capped at `max_cooldown_seconds`.
  Connection failures and malformed reply bodies are retried the same way; a read timeout is not (the read
  timeout is already long, and a second wait of that length helps nobody).
- 401, and 503 (or 500) whose `error.message` starts with `auth_unavailable` (what CLIProxyAPI answers
  for a while after an upstream 401), raise `NeedsAuth`; never retried.
- 400 `model_not_found`, and the legacy 502 "unknown provider for model X", raise `ModelNotFound`.
- An empty reply raises `EmptyCompletion`.
- Every retry is told, before its wait, to `on_retry` (a `RetryNotice`: what failed, how long the wait is,
  which attempt comes next of how many), so a run can show "429 from the upstream, retrying in 12 s,
  attempt 3 of 5" where it happens.
- Every payload passes the client's `IdentifierGuard` (council/deid.py) just before it is sent: a known
  patient identifier in any text, or a page image not marked painted out, raises `IdentifierRefused` and
  nothing is sent. Without identifiers the guard still refuses unmarked images.
- Fallback to /v1/responses: when /v1/chat/completions answers a client error (400/404/405/422) whose error
  text names the endpoint problem (mentions `responses`, `chat/completions`, "not a chat model" or an
  `unsupported_api*` code), the same call is sent once to /v1/responses. Any other 4xx is the request's
  fault and is raised as is, so a genuinely bad request is not sent twice. A model that needed the fallback is
  remembered by this client instance and goes straight to /v1/responses afterwards.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from council.deid import IdentifierGuard

log = logging.getLogger(__name__)

CHAT = "chat/completions"
RESPONSES = "responses"

RETRYABLE_STATUSES = frozenset({429, 502, 503})
# Error text on /v1/chat/completions that means "this model only speaks another endpoint".
_WRONG_ENDPOINT = re.compile(
    r"responses|chat/completions|chat completions|not a chat model|unsupported_api", re.IGNORECASE
)
_UNKNOWN_PROVIDER = re.compile(r"unknown provider", re.IGNORECASE)


@dataclass(frozen=True)
class UpstreamModel:
    id: str
    owned_by: str | None
    created: int | None


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    endpoint: str  # "chat/completions" | "responses"
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int
    attempts: int
    finish_reason: str | None  # "length" when the upstream cut the reply off


@dataclass(frozen=True)
class RetryNotice:
    """One failed attempt that will be tried again after `wait_seconds`: attempt `attempt` of `max_attempts`
    comes next."""

    model: str | None
    status: int | None  # the HTTP status that failed, None for a connection failure
    kind: str  # UpstreamError.kind of the failure
    message: str  # the raw error, as an operator reads it
    wait_seconds: float
    attempt: int
    max_attempts: int
    cooldown: bool  # the wait is what the upstream asked for (a 429 with a reset time), not our backoff

    @property
    def sentence(self) -> str:
        if self.kind == "connection_refused":
            what = "The upstream refused the connection"
        elif self.kind == "timeout":
            what = "The upstream did not accept the connection in time"
        elif self.status == 200:
            what = "A reply from the upstream that was not valid JSON"
        elif self.status:
            what = f"{self.status} from the upstream"
        else:
            what = "The upstream dropped the connection"
        asked = " (the wait it asked for)" if self.cooldown else ""
        return f"{what}, retrying in {self.wait_seconds:.0f} s{asked}, attempt {self.attempt} of {self.max_attempts}"


OnRetry = Callable[[RetryNotice], Awaitable[None]]


class UpstreamError(Exception):
    """Anything that went wrong talking to CLIProxyAPI. `message` is readable by an operator.

    `kind` narrows it down for health reports: connection_refused, timeout, unauthorized, bad_response,
    model_not_found, empty, retries_exhausted, rejected (a 4xx the request caused)."""

    kind = "bad_response"

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        if kind:
            self.kind = kind


class NeedsAuth(UpstreamError):
    kind = "unauthorized"


class ModelNotFound(UpstreamError):
    kind = "model_not_found"


class UpstreamUnavailable(UpstreamError):
    kind = "retries_exhausted"


class EmptyCompletion(UpstreamError):
    kind = "empty"


class _Retryable(Exception):
    """Internal: one failed attempt that may be tried again. `cooldown` is what the upstream asked for."""

    def __init__(self, error: UpstreamError, *, cooldown: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.cooldown = cooldown


@dataclass(frozen=True)
class _ErrorBody:
    message: str
    code: str | None
    type: str | None
    reset_seconds: float | None


def _parse_error_body(response: httpx.Response) -> _ErrorBody:
    """Both shapes CLIProxyAPI uses: `{"error": "Missing API key"}` and `{"error": {"message", "type", "code"}}`."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return _ErrorBody(text[:300] or response.reason_phrase or "no message", None, None, None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return _ErrorBody(error, None, None, None)
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") or code or error.get("type") or "no message"
        reset = error.get("reset_seconds")
        return _ErrorBody(
            str(message),
            str(code) if code is not None else None,
            str(error["type"]) if error.get("type") is not None else None,
            float(reset) if isinstance(reset, int | float) and reset >= 0 else None,
        )
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _ErrorBody(body["message"], None, None, None)
    return _ErrorBody(response.text.strip()[:300] or "no message", None, None, None)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "output_text")
        )
    return ""


def _to_responses_input(messages: list[dict]) -> list[dict]:
    """OpenAI chat messages → /v1/responses input items (text and image parts renamed)."""
    items = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type")
                if kind == "text":
                    text_type = "output_text" if message.get("role") == "assistant" else "input_text"
                    parts.append({"type": text_type, "text": part.get("text", "")})
                elif kind == "image_url":
                    image = part.get("image_url")
                    url = image.get("url") if isinstance(image, dict) else image
                    parts.append({"type": "input_image", "image_url": url})
            content = parts
        items.append({"role": message.get("role", "user"), "content": content})
    return items


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's verifying TLS context (its CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), made once per process
    and shared by every client: loading the bundle is ~50 ms of CPU, which each runner paid before its first
    request and the web server at each health check."""
    return httpx.create_ssl_context()


def prepare() -> None:
    """Load once what every client's first request needs; the warm runner calls it before it forks (jobs/warm.py),
    so no forked runner loads it again: httpcore, anyio and its asyncio backend (imported by the first
    connection: ~100 ms of a stage's first requests, all of them waiting), and the TLS context."""
    import anyio
    import anyio.streams.memory
    import anyio.streams.stapled
    import anyio.streams.tls
    import anyio.to_thread
    import httpcore  # noqa: F401  (httpx imports it when its first transport is made)

    async def first_touch() -> None:
        await anyio.sleep(0)  # anyio loads the backend of the loop it first runs in

    asyncio.run(first_touch())
    tls_context()


class CLIProxyClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 300.0,
        max_cooldown_seconds: float = 120.0,
        models_cache_seconds: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        guard: IdentifierGuard | None = None,
        per_model_concurrency: int = 1,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.on_retry = on_retry
        self.guard = guard or IdentifierGuard()
        self.max_attempts = max(1, max_attempts)
        self.max_retry_seconds = max_retry_seconds
        self.max_cooldown_seconds = max_cooldown_seconds
        self.models_cache_seconds = models_cache_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # Injectable so retry tests do not really wait (the sleep can advance the fake clock).
        self._sleep = sleep or asyncio.sleep
        self._clock = clock or time.monotonic
        self._models: list[UpstreamModel] | None = None
        self._models_at = 0.0
        self._responses_only: set[str] = set()
        # Each model is its own subscription: at most this many of its requests in flight from this client
        # (retries and cooldown waits included), however many stages or steps ask it at once.
        self.per_model_concurrency = max(1, per_model_concurrency)
        self._model_gates: dict[str, asyncio.Semaphore] = {}
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=60.0, pool=read_timeout),
            transport=transport,
            verify=tls_context(),
        )

    @classmethod
    def from_settings(cls, **overrides: Any) -> CLIProxyClient:
        from django.conf import settings

        options: dict[str, Any] = {
            "base_url": settings.CLIPROXY_BASE_URL,
            "api_key": settings.CLIPROXY_API_KEY,
            "connect_timeout": settings.CLIPROXY_CONNECT_TIMEOUT,
            "read_timeout": settings.CLIPROXY_READ_TIMEOUT,
            "max_attempts": settings.CLIPROXY_MAX_ATTEMPTS,
            "max_retry_seconds": settings.CLIPROXY_MAX_RETRY_SECONDS,
            "max_cooldown_seconds": settings.CLIPROXY_MAX_COOLDOWN_SECONDS,
            "models_cache_seconds": settings.CLIPROXY_MODELS_CACHE_SECONDS,
            "per_model_concurrency": settings.COUNCIL_PER_MODEL_CONCURRENCY,
        }
        options.update(overrides)
        return cls(**options)

    async def __aenter__(self) -> CLIProxyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- models ---------------------------------------------------------------------------------------

    async def list_models(self) -> list[UpstreamModel]:
        now = self._clock()
        if self._models is not None and now - self._models_at < self.models_cache_seconds:
            return list(self._models)
        body, _ = await self._with_retries("GET", "/v1/models", None, model=None)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UpstreamError(
                "CLIProxyAPI's /v1/models did not return a model list.", status=200, kind="bad_response"
            )
        models = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            created = item.get("created")
            owned_by = item.get("owned_by")
            models.append(
                UpstreamModel(
                    id=item["id"],
                    owned_by=owned_by if isinstance(owned_by, str) else None,
                    created=created if isinstance(created, int) and not isinstance(created, bool) else None,
                )
            )
        self._models = models
        self._models_at = self._clock()
        return list(models)

    # -- completions ----------------------------------------------------------------------------------

    async def complete(
        self,
        model: str,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        gate = self._model_gates.setdefault(model, asyncio.Semaphore(self.per_model_concurrency))
        async with gate:
            return await self._complete(model, messages, max_tokens=max_tokens, temperature=temperature)

    async def _complete(
        self, model: str, messages: list[dict], *, max_tokens: int | None, temperature: float | None
    ) -> Completion:
        started = self._clock()
        attempts = 0
        if model not in self._responses_only:
            payload: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
            if max_tokens is not None:
                payload["max_tokens"] = max_tokens
            if temperature is not None:
                payload["temperature"] = temperature
            try:
                body, attempts = await self._with_retries(
                    "POST", "/v1/chat/completions", payload, model=model
                )
            except _WrongEndpoint as wrong:
                attempts = wrong.attempts
                self._responses_only.add(model)
            else:
                return self._chat_completion(body, model, attempts, started)

        payload = {"model": model, "input": _to_responses_input(messages), "stream": False}
        if max_tokens is not None:
            payload["max_output_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        body, more = await self._with_retries("POST", "/v1/responses", payload, model=model, fallback=False)
        return self._responses_completion(body, model, attempts + more, started)

    def _chat_completion(self, body: Any, model: str, attempts: int, started: float) -> Completion:
        try:
            choice = body["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError(
                f"{model}: the chat completion has no choices.", status=200, kind="bad_response"
            ) from None
        text = _content_text(message.get("content"))
        finish_reason = choice.get("finish_reason")
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return self._finish(
            text=text,
            model=model,
            endpoint=CHAT,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            attempts=attempts,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            started=started,
        )

    def _responses_completion(self, body: Any, model: str, attempts: int, started: float) -> Completion:
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise UpstreamError(f"{model}: the response has no output.", status=200, kind="bad_response")
        # Only message items' output_text parts; a top-level `output_text` is an SDK convenience, not the API.
        text = "".join(
            str(part.get("text", ""))
            for item in body["output"]
            if isinstance(item, dict) and item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "output_text"
        )
        status = body.get("status")
        reason = (body.get("incomplete_details") or {}).get("reason") if status == "incomplete" else None
        if status == "incomplete":
            finish_reason = "length" if reason in (None, "max_output_tokens") else str(reason)
        elif status == "completed":
            finish_reason = "stop"
        else:
            finish_reason = status if isinstance(status, str) else None
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return self._finish(
            text=text,
            model=model,
            endpoint=RESPONSES,
            prompt_tokens=usage.get("input_tokens"),
            completion_tokens=usage.get("output_tokens"),
            attempts=attempts,
            finish_reason=finish_reason,
            started=started,
        )

    def _finish(
        self,
        *,
        text: str,
        model: str,
        endpoint: str,
        prompt_tokens: Any,
        completion_tokens: Any,
        attempts: int,
        finish_reason: str | None,
        started: float,
    ) -> Completion:
        if not text.strip():
            raise EmptyCompletion(
                f"{model} returned an empty reply via /v1/{endpoint} (finish_reason: {finish_reason or 'none'}).",
                status=200,
            )
        return Completion(
            text=text,
            model=model,
            endpoint=endpoint,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
            latency_ms=round((self._clock() - started) * 1000),
            attempts=attempts,
            finish_reason=finish_reason,
        )

    # -- transport and retries ------------------------------------------------------------------------

    async def _with_retries(
        self, method: str, path: str, payload: dict | None, *, model: str | None, fallback: bool = True
    ) -> tuple[Any, int]:
        """One logical request with the retry policy. Returns (parsed JSON body, attempts used)."""
        started = self._clock()

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, _Retryable) and error.cooldown is not None:
                return min(error.cooldown, self.max_cooldown_seconds)
            backoff = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
            return backoff * random.uniform(0.5, 1.0) + random.uniform(0, self.backoff_base * 0.5)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.max_attempts:
                return True
            # Give up rather than sleep past the total budget.
            return self._clock() - started + state.upcoming_sleep > self.max_retry_seconds

        async def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if self.on_retry is None or not isinstance(error, _Retryable):
                return
            notice = RetryNotice(
                model=model,
                status=error.error.status,
                kind=error.error.kind,
                message=error.error.message,
                wait_seconds=state.upcoming_sleep,
                attempt=state.attempt_number + 1,
                max_attempts=self.max_attempts,
                cooldown=error.cooldown is not None,
            )
            try:
                await self.on_retry(notice)
            except Exception:
                # Telling is best effort: a busy database must not turn a retry into a failure.
                log.warning("could not report a retry of %s", model or path, exc_info=True)

        attempts = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=wait,
            stop=stop,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    body = await self._send(method, path, payload, model=model, fallback=fallback)
                    return body, attempts
        except _Retryable as last:
            error = last.error
            suffix = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
            raise UpstreamUnavailable(
                error.message + suffix,
                status=error.status,
                code=error.code,
                kind=error.kind if error.kind in ("connection_refused", "timeout") else "retries_exhausted",
            ) from None
        except _WrongEndpoint as wrong:
            wrong.attempts = attempts
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, method: str, path: str, payload: dict | None, *, model: str | None, fallback: bool
    ) -> Any:
        where = f"CLIProxyAPI at {self.base_url}"
        if payload is not None:
            # The last look before anything leaves; raised outside the retry rules (never retried).
            self.guard.check(payload, where=f"the request to {model}" if model else "the request")
        try:
            response = await self._http.request(method, path, json=payload)
        except httpx.ConnectTimeout:
            raise _Retryable(
                UpstreamError(f"{where} did not accept the connection in time.", kind="timeout")
            ) from None
        except httpx.ConnectError:
            raise _Retryable(
                UpstreamError(f"{where} refused the connection (is it running?).", kind="connection_refused")
            ) from None
        except httpx.TimeoutException:
            raise UpstreamUnavailable(
                f"{where} did not answer {path} in time{f' for {model}' if model else ''}.", kind="timeout"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _Retryable(
                UpstreamError(f"{where} dropped the connection: {exc}", kind="bad_response")
            ) from None
        except httpx.HTTPError as exc:
            # E.g. CLIPROXY_BASE_URL without http://: no request can be made, so none is retried, and callers
            # that promise an UpstreamError (the health check never raises) still get one.
            raise UpstreamError(
                f"{where} cannot be asked ({exc}); check CLIPROXY_BASE_URL.", kind="connection_refused"
            ) from None

        status = response.status_code
        if status < 400:
            try:
                return response.json()
            except ValueError:
                raise _Retryable(
                    UpstreamError(
                        f"{where} sent a reply that is not valid JSON on {path}.",
                        status=status,
                        kind="bad_response",
                    )
                ) from None

        error = _parse_error_body(response)
        subject = f"{model}: " if model else ""
        readable = f"{subject}CLIProxyAPI answered {status}: {error.message}"
        # CLIProxyAPI sends auth_unavailable as 503 (some builds: 500) with code internal_server_error.
        if status == 401 or (
            status >= 500
            and (error.message.startswith("auth_unavailable") or error.code == "auth_unavailable")
        ):
            hint = " Check CLIPROXY_API_KEY, or sign in again in CLIProxyAPI."
            raise NeedsAuth(readable + hint, status=status, code=error.code)
        if error.code == "model_not_found" or (status == 502 and _UNKNOWN_PROVIDER.search(error.message)):
            raise ModelNotFound(readable, status=status, code=error.code)
        if status in RETRYABLE_STATUSES:
            cooldown = None
            if status == 429:
                cooldown = error.reset_seconds if error.reset_seconds is not None else _retry_after(response)
            raise _Retryable(
                UpstreamError(readable, status=status, code=error.code, kind="bad_response"),
                cooldown=cooldown,
            )
        if (
            fallback
            and path == "/v1/chat/completions"
            and status in (400, 404, 405, 422)
            and _WRONG_ENDPOINT.search(f"{error.message} {error.code or ''} {error.type or ''}")
        ):
            raise _WrongEndpoint(readable)
        raise UpstreamError(
            readable, status=status, code=error.code, kind="rejected" if status < 500 else None
        )


class _WrongEndpoint(Exception):
    """Internal: the model rejected /v1/chat/completions; try /v1/responses once."""

    attempts = 0
