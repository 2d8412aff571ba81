"""Write a response's bytes to its socket at once, instead of at the reactor's next turn.

Twisted (under daphne) buffers every `transport.write` and asks the reactor to say when the socket is
writable (`addWriter`); the next turn of the loop writes the buffer and takes the socket off again
(`removeWriter`): two changes to the poller's set and a callback per write (Twisted #5303, open since 2011).
A live stream writes one small frame per event to every open stream, so with 1,000 streams that churn was
about a third of each event's CPU, and no stream got a byte until every stream's write had been queued.

`install()` makes a write to a socket with nothing waiting in its buffer go straight to `send()`; only what
the kernel does not take now (a full socket buffer, a slow client) is buffered and left to the reactor as
before. Writes keep their order: once anything is buffered, every later write queues behind it.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import abstract, tcp

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


def install() -> None:
    """Once per process (daphne's), before it serves."""
    global _installed
    if _installed:
        return
    abstract.FileDescriptor.write = _write
    abstract.FileDescriptor.writeSequence = _write_sequence
    _installed = True
