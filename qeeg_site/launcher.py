"""Start a management command in its own process, detached from the web server.

Long work (report ingestion, council runs) runs in `manage.py <command>` processes the web server launches:
no daemon has to be running, the web server stays responsive, and the work survives a restart of the web
server. What a process was doing is in the database, so a lost process is detected and resumed from there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading

from django.conf import settings

log = logging.getLogger(__name__)


def launch_command(name: str, *args: str) -> int:
    """Start `manage.py name args…` in a new session and return its pid. Output goes to data/logs/."""
    log_dir = settings.DATA_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{_log_stem(name, *args)}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), name, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
            env=os.environ.copy(),
            start_new_session=True,
        )
    # Reap the child when it exits so it never lingers as a zombie of the web server.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    log.info("launched %s %s as pid %s (log: %s)", name, " ".join(args), proc.pid, log_path)
    return proc.pid


def _log_stem(name: str, *args: str) -> str:
    """`ingestreport-12-13`; a long batch is cut and made unique with a hash, since a file name over
    255 bytes would stop the launch itself."""
    stem = "-".join((name, *args))
    if len(stem) <= 120:
        return stem
    return f"{stem[:100]}-etc-{hashlib.sha256(stem.encode()).hexdigest()[:12]}"


def pid_alive(pid: int | None) -> bool:
    """Does a process with this pid exist on this machine? (Launched work records its pid; a pid that is
    gone means the work stopped without a word and can be picked up again.)"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True
