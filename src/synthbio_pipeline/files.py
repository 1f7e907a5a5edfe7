"""Atomic file writes (a reader never sees a half-written output), and file sizes as messages say them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Read once, at import: reading the umask means setting it, which would race with threads
# creating files (a batch job writes from several).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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
        # mkstemp makes the file private (0600); an output gets the mode any new file would
        # (0666 less the umask), so colleagues sharing a project folder can read it.
        os.chmod(temporary, 0o666 & ~_UMASK)
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


def size_text(n_bytes: int | float) -> str:
    """A size for a message: ``512 bytes``, ``40.1 kB``, ``10,737.4 MB`` (decimal units)."""
    if n_bytes < 1e3:
        return f"{n_bytes:,.0f} bytes"
    if n_bytes < 1e6:
        return f"{n_bytes / 1e3:,.1f} kB"
    return f"{n_bytes / 1e6:,.1f} MB"
