"""What every benchmark part shares: a throw-away data folder, Django set up on it, percentiles, targets.

A part never touches the operator's database or data folder: `throwaway_django()` points QEEG_DATA_DIR at a
new temporary folder (SQLite inside it) before Django reads its settings.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def throwaway_env(prefix: str, folder: Path | None = None) -> tuple[Path, dict[str, str]]:
    """A new data folder (or `folder`, kept by the caller) and the environment that points the project (and
    its child processes) at it."""
    data_dir = folder or Path(tempfile.mkdtemp(prefix=f"qeeg-bench-{prefix}-"))
    env = dict(os.environ, QEEG_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="qeeg_site.settings")
    env.setdefault("LOG_LEVEL", "WARNING")
    env.pop("DATABASE_URL", None)
    return data_dir, env


def throwaway_django(prefix: str, folder: Path | None = None, **extra_env: str) -> Path:
    """Set this process's Django up on a throw-away data folder (or `folder`), migrated; returns the folder."""
    data_dir, env = throwaway_env(prefix, folder)
    env.update(extra_env)
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    return data_dir


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, from /proc/<pid>/stat)."""
    # Fields 14 and 15 of /proc/<pid>/stat are utime and stime in clock ticks (after the "(comm)" field).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def remove(data_dir: Path) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)


def pct(values: list[float], p: float) -> float | None:
    """The p-th quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered) + 0.5) - 1))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Target:
    what: str
    value: float | None
    limit: float
    unit: str = ""
    below: bool = True  # the value must be at most the limit (False: at least)

    @property
    def holds(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.below else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "holds": self.holds}


@dataclass
class PartResult:
    part: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "rows": self.rows,
            "targets": [t.as_dict() for t in self.targets],
            "notes": self.notes,
        }

    def emit(self) -> None:
        """The last line of a part's output is its result, for run_all.py to read."""
        print("BENCH-RESULT " + json.dumps(self.as_dict()))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
    }
