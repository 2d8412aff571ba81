"""Write a response's bytes to its socket at once, instead of at the reactor's next turn.

Twisted (under daphne) buffers every `transport.write` and asks the reactor to say when the socket is
writable (`addWriter`); the next turn of the loop writes the buffer and takes the socket off again
(`removeWriter`): two changes to the poller's set and a callback per write (Twisted #5303, open since 2011).
A live stream writes one small frame per event to every open stream, so with 1,000 streams that churn was
about a third of each event's CPU, and no stream got a byte until every stream's write had been queued.

`install()` makes a write to a socket with nothing waiting in its buffer go straight to `send()`; only what
the kernel does not take now (a full socket buffer, a slow client) is buffered and left to the reactor as
before. Writes keep their order: once anything is buffered, every later write queues behind it.

It also gives each HTTP request's scope the ASGI extension `BODY_NOW` (`scope["extensions"]`): a plain
function that writes a response body chunk as daphne would for `http.response.body` with more body to come,
returning False once the connection is gone, without an ASGI message. A live stream's event reaches a
thousand streams in one loop through it (runs/feed.py, runs/stream.py): no message through channels'
dispatch, its middleware's `send` and daphne's reply per stream. The stream, its headers and its end still
go through ASGI; without daphne (in-process tests, another server) the extension is absent and events are
sent as messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from twisted.internet import abstract, tcp

BODY_NOW = "qeeg.body_now"  # the scope extension's name: a `BodyNow`
BodyNow = Callable[[bytes], bool]

_installed = False


def _write_now(self: abstract.FileDescriptor, data: bytes) -> bytes | None:
    """Send what the socket takes now; returns what is left to buffer, or None to use Twisted's own path."""
    if (
        not isinstance(self, tcp.Connection)  # sockets only (TCP, Unix): pipes and files as Twisted does
        or self._tempDataBuffer
        or self.offset != len(self.dataBuffer)  # something waits: behind it, in order
        or not self.connected
        or self.disconnecting
        or self._writeDisconnected
        or self._writeDisconnecting
    ):
        return None
    sent = self.writeSomeData(data)
    if isinstance(sent, Exception) or sent < 0:
        return None  # a broken connection: Twisted's own path finds it at the next turn and closes it
    return data[sent:]


def _write(self: abstract.FileDescriptor, data: bytes) -> None:
    abstract._dataMustBeBytes(data)
    left = _write_now(self, data) if data else None
    if left is None:
        _twisted_write(self, data)
    elif left:
        _twisted_write(self, left)


def _write_sequence(self: abstract.FileDescriptor, iovec: Iterable[bytes]) -> None:
    chunks = list(iovec)
    for chunk in chunks:
        abstract._dataMustBeBytes(chunk)
    _write(self, b"".join(chunks))


_twisted_write = abstract.FileDescriptor.write
_daphne_create_application: Any = None  # daphne's own, once `install` replaced it
_twisted_request_write: Any = None


def _body_now(server: Any, request: Any, body: bytes) -> bool:
    """daphne's `http.response.body` (more to come) for one request, called directly: the checks of its
    `Server.handle_reply` and `WebRequest.handle_reply`, then Twisted's `Request.write` (chunked coding, and
    through the write above, the socket). False when the connection is closed or the response is not under
    way (the caller sends the message the ASGI way, which finds out as daphne does)."""
    connection = server.connections.get(request)
    if (
        connection is None
        or "disconnected" in connection
        or request.finished
        or request.channel is None
        or not request._response_started
        or not request.startedWriting  # the headers go out with the first body, through ASGI
    ):
        return False
    _twisted_request_write(request, body)
    return True


def _create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
    if scope.get("type") == "http":
        scope["extensions"] = {**scope.get("extensions", {}), BODY_NOW: partial(_body_now, self, protocol)}
    return _daphne_create_application(self, protocol, scope)


def install() -> None:
    """Once per process (daphne's), before it serves."""
    global _installed, _daphne_create_application, _twisted_request_write
    if _installed:
        return
    abstract.FileDescriptor.write = _write
    abstract.FileDescriptor.writeSequence = _write_sequence
    try:
        from daphne.server import Server
        from twisted.web.http import Request
    except ImportError:  # not under daphne: no extension
        pass
    else:
        _daphne_create_application, _twisted_request_write = Server.create_application, Request.write
        Server.create_application = _create_application
    _installed = True
