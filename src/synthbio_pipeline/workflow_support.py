"""Checks the workflow makes once, at parse time, before any job runs."""

from __future__ import annotations

import os

from ._constants import TOKEN_ENV
from .client import check_base_url, is_loopback
from .errors import MissingTokenError
from .token_store import resolve_token


def check_token(base_url: str, *, export: bool = True) -> None:
    """Make sure jobs will find a token; stop the run now, with directions, when there is none.

    With ``export``, a token found only in the keyring is copied into this process's
    environment, which local jobs inherit. A cluster run passes ``export=False``: the jobs
    that call the API run locally and read the keyring themselves, and whatever is in the
    environment would travel with every submitted job (SLURM's ``--export=ALL`` keeps it in
    its spool directory).
    """
    check_base_url(base_url)
    try:
        token = resolve_token()
        if export:
            os.environ[TOKEN_ENV] = token
    except MissingTokenError:
        from urllib.parse import urlsplit

        where = "the emulator" if is_loopback(urlsplit(base_url).hostname or "") else base_url
        raise MissingTokenError(
            f"No Synthesize Bio API token for {where}; the run was stopped before any job.",
            hint=(
                f"Set {TOKEN_ENV}, or store a token once with `synthbio-pipeline token set` "
                "(the vendor client's keyring entry is read too). To try the workflow without "
                "a token: `bash scripts/demo.sh`, or start `python -m synthbio_pipeline.emulator` "
                f"and run with `--config api_base_url=<its URL>` and any {TOKEN_ENV} value."
            ),
        ) from None
