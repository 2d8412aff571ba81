"""One PDF's ingestion in a child process with a memory and a time limit, so a hostile file costs a failed
report with its reason, never the machine.

Why a child and not limits on the `ingestreport` process itself: PDFium does not fail an allocation, it
aborts the process (SIGABRT), and a dead ingester leaves its report "processing", which the orphan sweep
would hand to a new ingester, to die the same way. The child (started fresh, `spawn`) sets RLIMIT_AS to
INGEST_MAX_MEMORY_MB and RLIMIT_CPU to INGEST_MAX_SECONDS before it reads a byte; the ingester waits at most
INGEST_MAX_SECONDS of wall time, then kills it. Whatever ends it (MemoryError, an abort, SIGXCPU, the
deadline) becomes an UnreadableReport naming the limit. No ORM here either: files in, files out.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from patients import ingest


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    seconds: float


def _child(sender: Connection, source: Path, out_dir: Path, name: str, options: Any, limits: Limits) -> None:
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = max(1, round(limits.seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU, then SIGKILL 5 s later
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent decides what a stop means

    def on_step(step: ingest.Step) -> None:
        sender.send(("step", step))  # the parent records it on the report as it happens

    try:
        message: tuple = (
            "ok",
            ingest.ingest_pdf(source, out_dir, name=name, options=options, on_step=on_step),
        )
    except ingest.UnreadableReport as exc:
        message = ("unreadable", exc.message, exc.status)
    except MemoryError:
        message = ("memory",)
    except Exception as exc:  # reported by the parent like any other ingestion error
        # onnxruntime reports a failed allocation as a RuntimeError naming std::bad_alloc.
        message = ("memory",) if "bad_alloc" in str(exc) else ("error", f"{type(exc).__name__}: {exc}")
    sender.send((*message, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))
    sender.close()


def _refusal(name: str, limits: Limits, *, exitcode: int | None, timed_out: bool) -> ingest.UnreadableReport:
    if timed_out or exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        return ingest.UnreadableReport(
            f"Reading {name} took longer than {limits.seconds:g} s (INGEST_MAX_SECONDS), so it was stopped.",
            status=413,
        )
    how = f"signal {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
    return ingest.UnreadableReport(
        f"The PDF reader stopped on {name} ({how}): it needs more than the {limits.memory_mb} MB an "
        "ingestion may use (INGEST_MAX_MEMORY_MB), or the file is malformed.",
        status=413,
    )


def ingest_pdf_limited(
    source: Path,
    out_dir: Path,
    *,
    name: str,
    options: ingest.IngestOptions,
    limits: Limits,
    on_step: ingest.OnStep | None = None,
) -> ingest.IngestResult:
    """`ingest.ingest_pdf` in a limited child; its result, or UnreadableReport with the reason. The child's
    steps reach `on_step` (when given) here, in the parent, as they start."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, args=(sender, source, out_dir, name, options, limits), name="ingest", daemon=True
    )
    child.start()
    sender.close()  # ours: so the pipe reports EOF the moment the child is gone
    deadline = time.monotonic() + limits.seconds
    message = None
    timed_out = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if receiver.poll(min(remaining, 1.0)):
                try:
                    message = receiver.recv()
                except EOFError:  # it died without a word (aborted, killed)
                    break
                if message[0] == "step":
                    if on_step is not None:
                        on_step(message[1])
                    message = None
                    continue
                break
    finally:
        if message is None and child.is_alive():
            child.kill()
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
        receiver.close()
    if message is None:
        raise _refusal(name, limits, exitcode=child.exitcode, timed_out=timed_out)
    kind, *rest, peak_mb = message
    if kind == "ok":
        result: ingest.IngestResult = rest[0]
        result.peak_memory_mb = peak_mb
        return result
    if kind == "unreadable":
        raise ingest.UnreadableReport(rest[0], status=rest[1])
    if kind == "memory":
        raise ingest.UnreadableReport(
            f"{name} needs more memory to read than the {limits.memory_mb} MB an ingestion may use "
            "(INGEST_MAX_MEMORY_MB).",
            status=413,
        )
    raise RuntimeError(rest[0])
