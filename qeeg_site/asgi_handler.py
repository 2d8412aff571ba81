"""Django's ASGI handler for a site whose views and middleware are all synchronous: each request's sync work
runs in one hop to a thread, on a thread kept from request to request (so its database connection is too).

Django's own `ASGIHandler` gives every request a new thread (asgiref's `ThreadSensitiveContext`), and with an
all-sync middleware chain under an async handler it hops between that thread and the event loop at each
place the chain changes mode (a middleware that can run either way is run async, its hooks sent back to the
thread one by one). A new thread per request also means a new database connection per request whatever
CONN_MAX_AGE says, and on SQLite that is a new connection, its functions registered and its PRAGMAs run,
every time: the reason Django's docs say to turn persistent connections off under ASGI.

Here the middleware chain is loaded in its sync form (as under WSGI) and the whole of it, view included, is
one `sync_to_async` call; that call, the request_started / request_finished signals and the response's close
all run on one thread taken from a set kept by this process: a request takes an idle one (or a new one when
none is idle, so no request ever waits for another's thread) and gives it back when it is done. A thread
kept holds its connection across requests as a WSGI server's threads do, so CONN_MAX_AGE means what it says
again; Django still closes a connection at a request's start or end once it is older than CONN_MAX_AGE or
unusable. Past `KEEP_IDLE` idle threads, a thread given back closes its connections and ends.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler
from django.db import connections

# Idle request threads (and so open database connections) a process keeps. More requests than this at once
# still each get a thread; the extra ones end when given back.
KEEP_IDLE = 16


class _RequestThread(ThreadPoolExecutor):
    """One worker thread; counts the calls sent to it that have not finished, so a thread still busy (a
    request whose client went away mid-view) is never handed to the next request."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="django-request")
        self._lock = threading.Lock()
        self.unfinished = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            self.unfinished += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future) -> None:
        with self._lock:
            self.unfinished -= 1

    def retire(self) -> None:
        """Close this thread's database connections (they live in it) and let the thread end."""
        super().submit(connections.close_all)
        self.shutdown(wait=False)


class SyncASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._idle: list[_RequestThread] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self._idle.pop() if self._idle else _RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            if thread.unfinished == 0 and len(self._idle) < KEEP_IDLE:
                self._idle.append(thread)
            else:
                thread.retire()

    async def get_response_async(self, request: Any) -> Any:
        # The sync chain (BaseHandler.get_response: URL conf, middleware, view, error logging) in one hop.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_asgi_application() -> SyncASGIHandler:
    """`django.core.asgi.get_asgi_application`, with this handler."""
    import django

    django.setup(set_prefix=False)
    return SyncASGIHandler()
