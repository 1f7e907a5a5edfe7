"""Checks the workflow makes once, at parse time, before any job runs."""

from __future__ import annotations

from synthbio_pipeline.client.constants import TOKEN_ENV
from synthbio_pipeline.client.http import check_base_url, is_loopback
from synthbio_pipeline.client.token_store import resolve_token
from synthbio_pipeline.errors import MissingTokenError


def check_token(base_url: str) -> None:
    """Make sure jobs will find a token; stop the run now, with directions, when there is none.

    The token is only looked up, not handed on: the prediction jobs, which run on this host
    (a localrule), read it themselves from the environment or the keyring. Copying a keyring
    token into this process's environment would also send it with every job a cluster
    executor submits (SLURM's ``--export=ALL`` keeps job environments in its state
    directory), and those jobs never call the API.
    """
    check_base_url(base_url)
    try:
        resolve_token()
    except MissingTokenError:
        from urllib.parse import urlsplit

        where = "the emulator" if is_loopback(urlsplit(base_url).hostname or "") else base_url
        raise MissingTokenError(
            f"No Synthesize Bio API token for {where}; the run was stopped before any job.",
            hint=(
                f"Set {TOKEN_ENV}, or store a token once with `synthbio-pipeline token set` "
                "(the vendor client's keyring entry is read too). To try the workflow without "
                "a token: `bash scripts/demo.sh`, or start `synthbio-pipeline emulator` "
                f"and run with `--config api_base_url=<its URL>` and any {TOKEN_ENV} value."
            ),
        ) from None
