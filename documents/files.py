"""The one way files are written: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half of either."""
    write_all_atomic({path: data})


def write_all_atomic(contents: dict[Path, bytes]) -> None:
    """Write every file to a temporary name beside it (fsync'd), then rename them all into place. Until the
    renames, earlier files are untouched; on any failure the temporary files are removed."""
    temporary: dict[Path, Path] = {}
    try:
        for target, data in contents.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary[target] = _temporary_copy(target, data)
        for target, temp in temporary.items():
            os.replace(temp, target)
    finally:
        for temp in temporary.values():
            temp.unlink(missing_ok=True)  # after a failed write (disk full); gone already after the rename


def _temporary_copy(target: Path, data: bytes) -> Path:
    # The one place a file this package writes is created (its mode is decided here).
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    ) as handle:
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
    return Path(handle.name)
