"""What a workflow job does when it refuses its input: one line on the console, the traceback in its log."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from synthbio_pipeline.errors import SynthbioError

__all__ = ["refusal_on_console"]


@contextmanager
def refusal_on_console(job: str, console: TextIO, log: str | os.PathLike) -> Iterator[None]:
    """Run the block; a :class:`SynthbioError` (a refused file) is logged with its traceback, said
    in one line on ``console`` (``<job> failed: <error> (log: <log>)``), and the process exits 1.

    Other exceptions pass: they are bugs, and their traceback is the message."""
    try:
        yield
    except SynthbioError as error:
        logging.exception("the job failed")
        print(f"{job} failed: {error} (log: {log})", file=console)
        sys.exit(1)
