"""A fake CLIProxyAPI: a real HTTP server on loopback speaking the proxy's shapes, scriptable per model.

    fake = FakeUpstream().start()              # port 0 → an ephemeral port; fake.base_url
    fake.script("gpt-5", failures=["429", "502"], latency=0.2)   # changes at runtime are fine
    fake.count(model="gpt-5", stage=1)          # every call is recorded
    fake.stop()

Failure tokens, consumed one per call to that model (any endpoint): "429" / "429:<reset_seconds>"
(model_cooldown), "502", "503", "500", "401" (then 503 auth_unavailable for `auth_unavailable_seconds`),
"auth_unavailable", "model_not_found", "unknown_provider" (legacy 502), "malformed" (200, broken JSON),
"empty" (200, empty content), "sleep:<seconds>" (answers after that long).

`latency` delays every answer of a model; `reply_chars` makes its markdown replies as long as real ones;
`page_facts_replies` scripts what it answers the vision reader (patients/readers/vision.py), verbatim.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fake_upstream import replies

CREATED = 1_700_000_000


@dataclass
class ModelBehaviour:
    latency: float = 0.0  # seconds before every answer
    failures: list[str] = field(default_factory=list)  # consumed one per call, then normal answers
    listed: bool = True  # appears in GET /v1/models
    owned_by: str | None = "fake"
    created: int | None = CREATED
    responses_only: bool = False  # rejects /v1/chat/completions the way CLIProxyAPI relays it
    image_only: bool = False  # listed, but produces no text on either endpoint
    always_empty: bool = False
    always_malformed: bool = False
    needs_auth: bool = False  # 401, then 503 auth_unavailable for a while, then 401 again…
    auth_unavailable_seconds: float = 2.0
    truncate_times: int = 0  # markdown replies are cut off (finish_reason length) this many times
    invalid_json_times: int = 0  # Stage 2/5 replies are invalid this many times before a valid one
    json_fence: bool = False  # Stage 2/5 JSON wrapped in a ```json fence
    vote: str = "APPROVE"  # Stage 5
    reply_chars: int = 0  # markdown replies padded to at least this many characters (real-length outputs)
    # Replies to the vision reader's page-facts requests (an image and `qEEG Council — Page facts: page N`),
    # sent verbatim, one per call; then a valid reply with no facts, marked fake.
    page_facts_replies: list[str] = field(default_factory=list)


def default_models() -> dict[str, ModelBehaviour]:
    return {
        "gpt-5": ModelBehaviour(owned_by="openai"),
        "claude-sonnet-4-5": ModelBehaviour(owned_by="anthropic", created=None),
        "gemini-2.5-pro": ModelBehaviour(owned_by="google", json_fence=True),
        # Special behaviours, named for what they do.
        "fake-responses-only": ModelBehaviour(responses_only=True),
        "fake-image-only": ModelBehaviour(image_only=True),
        "fake-slow": ModelBehaviour(latency=3.0),
        "fake-empty": ModelBehaviour(always_empty=True),
        "fake-truncated": ModelBehaviour(truncate_times=1),
        "fake-malformed": ModelBehaviour(always_malformed=True),
        "fake-cooldown": ModelBehaviour(failures=["429:1"]),
        "fake-needs-auth": ModelBehaviour(needs_auth=True, auth_unavailable_seconds=30.0),
        "fake-reviser": ModelBehaviour(vote="REVISE"),
    }


@dataclass(frozen=True)
class Call:
    model: str | None
    endpoint: str  # "models" | "chat/completions" | "responses" | other path
    stage: int | None
    status: int
    at: float  # time.time()
    body: dict[str, Any] | None
    authorization: str | None


class _Answer(Exception):
    def __init__(
        self, status: int, body: Any, *, raw: bytes | None = None, headers: dict | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.raw = raw
        self.headers = headers or {}


def _error(status: int, message: str, *, type_: str, code: str | None = None, **extra: Any) -> _Answer:
    return _Answer(status, {"error": {"message": message, "type": type_, "code": code, **extra}})


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a council of 8 opening its connections at once overflowed
    # it, and the kernel dropped the extra SYNs, which the client retried 1 s later (Stage 1 of an 8-model
    # run took 2 s instead of 1). A real proxy listens with the system's backlog (somaxconn).
    request_queue_size = socket.SOMAXCONN


class FakeUpstream:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: list[str] | None = None,
        models: dict[str, ModelBehaviour] | None = None,
        legacy_unknown_provider: bool = False,
        default_latency: float = 0.0,
    ) -> None:
        self.host = host
        self.requested_port = port
        self._lock = threading.RLock()
        self._api_keys = list(api_keys or [])
        self._models = models if models is not None else default_models()
        if default_latency:
            for name, behaviour in self._models.items():
                if not behaviour.latency:
                    self._models[name] = replace(behaviour, latency=default_latency)
        self._auth_down_until: dict[str, float] = {}
        self._calls: list[Call] = []
        self.legacy_unknown_provider = legacy_unknown_provider
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        fake = self

        class Handler(_Handler):
            upstream = fake

        server = _Server((self.host, self.requested_port), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a slow model must not hold up stop()
        self._server = server
        # Keep the port across stop()/start(), so a restarted fake is found where it was.
        self.requested_port = server.server_address[1]
        # A short poll interval so stop() returns quickly.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-upstream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Kept-alive connections too: a stopped upstream must not keep answering a client's pooled socket.
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self.requested_port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scripting (thread-safe; takes effect on the next call) ----------------------------------------

    def script(self, model: str, **changes: Any) -> ModelBehaviour:
        """Change (or add) a model's behaviour, e.g. `script("gpt-5", failures=["503", "503"], latency=1)`."""
        with self._lock:
            current = self._models.get(model, ModelBehaviour())
            for name in ("failures", "page_facts_replies"):
                if name in changes:
                    changes[name] = list(changes[name])
            self._models[model] = replace(current, **changes)
            return self._models[model]

    def remove_model(self, model: str) -> None:
        with self._lock:
            self._models.pop(model, None)

    def behaviour(self, model: str) -> ModelBehaviour | None:
        with self._lock:
            return self._models.get(model)

    def set_api_keys(self, keys: list[str]) -> None:
        with self._lock:
            self._api_keys = list(keys)

    # -- the record ------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def count(
        self,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        stage: int | None = None,
        status: int | None = None,
    ) -> int:
        return len(
            [
                c
                for c in self.calls
                if (model is None or c.model == model)
                and (endpoint is None or c.endpoint == endpoint)
                and (stage is None or c.stage == stage)
                and (status is None or c.status == status)
            ]
        )

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    # -- behaviour -------------------------------------------------------------------------------------

    def check_key(self, authorization: str | None, api_key_header: str | None) -> None:
        with self._lock:
            keys = list(self._api_keys)
        if not keys:
            return
        presented = api_key_header
        if authorization and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        if not presented:
            raise _Answer(401, {"error": "Missing API key"})
        if presented not in keys:
            raise _Answer(401, {"error": "Invalid API key"})

    def models_listing(self) -> dict[str, Any]:
        with self._lock:
            items = list(self._models.items())
        data = []
        # Order is not part of the contract; reversed so clients cannot come to depend on it.
        for name, behaviour in reversed(items):
            if not behaviour.listed:
                continue
            entry: dict[str, Any] = {"id": name, "object": "model"}
            if behaviour.created is not None:
                entry["created"] = behaviour.created
            if behaviour.owned_by is not None:
                entry["owned_by"] = behaviour.owned_by
            data.append(entry)
        return {"object": "list", "data": data}

    def _take_failure(self, model: str) -> tuple[ModelBehaviour | None, str | None]:
        with self._lock:
            behaviour = self._models.get(model)
            if behaviour is None:
                return None, None
            failure = behaviour.failures.pop(0) if behaviour.failures else None
            return behaviour, failure

    def answer(self, endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The reply to one completion request (either endpoint); raises _Answer for errors."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _error(400, "model is required", type_="invalid_request_error")
        behaviour, failure = self._take_failure(model)
        if behaviour is None:
            if self.legacy_unknown_provider:
                raise _error(502, f"unknown provider for model {model}", type_="server_error")
            raise _error(
                400,
                f"The model `{model}` does not exist or you do not have access to it.",
                type_="invalid_request_error",
                code="model_not_found",
            )
        if behaviour.latency:
            time.sleep(behaviour.latency)
        if failure:
            self._fail(model, failure, endpoint)
        if behaviour.needs_auth:
            self._auth_cycle(model, behaviour)
        if behaviour.image_only:
            if endpoint == "chat/completions":
                raise _error(
                    400,
                    f"model {model} does not support chat completions; it is an image generation model",
                    type_="invalid_request_error",
                    code="unsupported_api_for_model",
                )
            raise _error(
                400,
                f"model {model} only generates images and cannot produce text output",
                type_="invalid_request_error",
                code="unsupported_model_output",
            )
        if behaviour.responses_only and endpoint == "chat/completions":
            raise _error(
                400,
                f'model "{model}" is not accessible via the /chat/completions endpoint; use /v1/responses',
                type_="invalid_request_error",
                code="unsupported_api_for_model",
            )
        if behaviour.always_malformed:
            raise _Answer(200, None, raw=b'{"id": "chatcmpl-broken", "choices": [{"message": ')
        messages = _messages_of(endpoint, body)
        if behaviour.always_empty:
            text, finish = "", "stop"
        else:
            text, finish = self._reply_text(model, behaviour, messages)
        limit = body.get("max_tokens") if endpoint == "chat/completions" else body.get("max_output_tokens")
        if isinstance(limit, int) and limit > 0 and len(text) > limit * 4:
            text, finish = text[: limit * 4], "length"
        return 200, _shape(endpoint, model, text, finish, messages)

    def _fail(self, model: str, failure: str, endpoint: str = "chat/completions") -> None:
        kind, _, argument = failure.partition(":")
        if kind == "429":
            reset = float(argument) if argument else 1.0
            raise _error(
                429,
                f"All credentials for model {model} are cooling down via provider fake",
                type_="rate_limit_error",
                code="model_cooldown",
                model=model,
                provider="fake",
                reset_seconds=reset,
                reset_time=f"{reset:g}s",
            )
        if kind in ("500", "502", "503"):
            raise _error(int(kind), f"fake upstream error {kind} for {model}", type_="server_error")
        if kind == "401":
            with self._lock:
                behaviour = self._models.get(model)
                window = behaviour.auth_unavailable_seconds if behaviour else 2.0
                self._auth_down_until[model] = time.monotonic() + window
            raise _error(
                401, "unauthorized: the provider rejected the stored sign-in", type_="authentication_error"
            )
        if kind == "auth_unavailable":
            raise _error(
                503,
                f"auth_unavailable: no auth available (providers=fake, model={model})",
                type_="server_error",
                code="internal_server_error",
            )
        if kind == "model_not_found":
            raise _error(
                400,
                f"The model `{model}` does not exist.",
                type_="invalid_request_error",
                code="model_not_found",
            )
        if kind == "unknown_provider":
            raise _error(502, f"unknown provider for model {model}", type_="server_error")
        if kind == "malformed":
            raise _Answer(200, None, raw=b'{"choices": [')
        if kind == "empty":
            raise _Answer(200, _shape(endpoint, model, "", "stop", []))
        if kind == "sleep":
            time.sleep(float(argument or 1))
            return
        raise ValueError(f"unknown failure token {failure!r}")

    def _auth_cycle(self, model: str, behaviour: ModelBehaviour) -> None:
        """After an upstream 401, CLIProxyAPI answers 503 auth_unavailable for that model for a while."""
        with self._lock:
            down_until = self._auth_down_until.get(model, 0.0)
            if time.monotonic() < down_until:
                raise _error(
                    503,
                    f"auth_unavailable: no auth available (providers=fake, model={model})",
                    type_="server_error",
                    code="internal_server_error",
                )
            self._auth_down_until[model] = time.monotonic() + behaviour.auth_unavailable_seconds
        raise _error(
            401, "unauthorized: the provider rejected the stored sign-in", type_="authentication_error"
        )

    def _take_page_facts_reply(self, model: str) -> str | None:
        with self._lock:
            behaviour = self._models.get(model)
            return behaviour.page_facts_replies.pop(0) if behaviour and behaviour.page_facts_replies else None

    def _reply_text(self, model: str, behaviour: ModelBehaviour, messages: list[dict]) -> tuple[str, str]:
        page = replies.page_facts_page(messages)
        if page is not None:
            scripted = self._take_page_facts_reply(model)
            return (
                scripted if scripted is not None else replies.page_facts_reply(model=model, page=page)
            ), "stop"
        stage = replies.parse_stage(messages)
        # Stages 2 and 5 answer JSON; every other numbered stage (a step a test adds too) answers markdown.
        if stage is not None and stage not in (2, 5):
            full = replies.markdown_report(model=model, stage=stage, messages=messages)
            if behaviour.reply_chars:
                full = replies.padded(full, chars=behaviour.reply_chars, model=model, stage=stage)
            if behaviour.truncate_times:
                done = replies.continuation_count(messages)
                parts = behaviour.truncate_times + 1
                piece = replies.truncated_piece(full, part=min(done, parts - 1), parts=parts)
                return piece, "length" if done < behaviour.truncate_times else "stop"
            return full, "stop"
        if stage in (2, 5):
            if replies.invalid_retry_count(messages) < behaviour.invalid_json_times:
                return replies.invalid_json_reply(model=model, stage=stage), "stop"
            obj = (
                replies.peer_review(model=model, messages=messages)
                if stage == 2
                else replies.final_vote(model=model, vote=behaviour.vote)
            )
            return replies.json_reply(obj, fence=behaviour.json_fence), "stop"
        if replies.is_patient_version(messages):
            return replies.patient_version(model=model, messages=messages), "stop"
        return replies.generic_reply(model=model, messages=messages), "stop"


def _messages_of(endpoint: str, body: dict[str, Any]) -> list[dict]:
    if endpoint == "chat/completions":
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages = [m for m in items or [] if isinstance(m, dict)]
    if isinstance(body.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    return messages


def _prompt_chars(messages: list[dict]) -> int:
    return sum(len(replies.message_text(m)) for m in messages)


def _shape(endpoint: str, model: str, text: str, finish: str, messages: list[dict]) -> dict[str, Any]:
    prompt_tokens = max(1, _prompt_chars(messages) // 4)
    completion_tokens = len(text) // 4
    if endpoint == "chat/completions":
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    response: dict[str, Any] = {
        "id": f"resp_{uuid.uuid4().hex[:12]}",
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "completed" if finish != "length" else "incomplete",
        "output": [
            {"id": f"rs_{uuid.uuid4().hex[:8]}", "type": "reasoning", "summary": []},
            {
                "id": f"msg_{uuid.uuid4().hex[:8]}",
                "type": "message",
                "status": "completed" if finish != "length" else "incomplete",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            },
        ],
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    if finish == "length":
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    return response


class _Handler(BaseHTTPRequestHandler):
    upstream: FakeUpstream
    server_version = "FakeCLIProxyAPI/1.0"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY each reply waits ~40 ms on delayed ACKs.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.upstream._lock:
            self.upstream._connections.add(self.connection)

    def finish(self) -> None:
        with self.upstream._lock:
            self.upstream._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the call record instead
        return

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, None, raw=b"FAKE CLIProxyAPI for qEEG Council tests - not a real model router\n")
            return
        if path == "/v1/models":
            self._handle("models", None)
            return
        self._send(404, None, raw=b"404 page not found")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        endpoints = {"/v1/chat/completions": "chat/completions", "/v1/responses": "responses"}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path not in endpoints:
            self._send(404, None, raw=b"404 page not found")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self._send(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        self._handle(endpoints[path], body)

    def _handle(self, endpoint: str, body: dict[str, Any] | None) -> None:
        fake = self.upstream
        started = time.time()
        model = body.get("model") if body else None
        stage = replies.parse_stage(_messages_of(endpoint, body)) if body else None
        raw: bytes | None = None
        headers: dict | None = None
        try:
            fake.check_key(self.headers.get("Authorization"), self.headers.get("X-Api-Key"))
            if endpoint == "models":
                status, payload = 200, fake.models_listing()
            else:
                status, payload = fake.answer(endpoint, body or {})
        except _Answer as answer:
            status, payload, raw, headers = answer.status, answer.body, answer.raw, answer.headers
        except Exception as exc:  # a bug in the fake: say so loudly rather than hang the client
            status, payload = (
                500,
                {"error": {"message": f"fake upstream crashed: {exc!r}", "type": "server_error"}},
            )
        # Recorded before the reply is sent, so a test that has its answer always sees the call.
        fake._record(
            Call(
                model=model if isinstance(model, str) else None,
                endpoint=endpoint,
                stage=stage,
                status=status,
                at=started,
                body=body,
                authorization=self.headers.get("Authorization"),
            )
        )
        self._send(status, payload, raw=raw, headers=headers)

    def _send(
        self, status: int, payload: Any, *, raw: bytes | None = None, headers: dict | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        content_type = (
            "application/json" if (raw is None or raw.startswith(b"{")) else "text/plain; charset=utf-8"
        )
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
