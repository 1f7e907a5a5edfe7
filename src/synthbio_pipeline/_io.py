"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it into place only on success.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic; a
    process killed before it leaves at most a hidden ``.name.*.part`` file, never a
    truncated ``destination``. With ``durable``, the file and its folder are fsynced, so
    the new file survives a power cut or node loss right after this returns.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(fd)
    try:
        yield Path(temporary)
        if durable:
            _fsync(temporary)
        os.replace(temporary, destination)
        if durable:
            _fsync(destination.parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
