"""Where the API token lives: the environment, or the vendor client's keyring entry.

:func:`resolve_token` looks the token up each time a request needs it: ``SYNTHESIZE_API_KEY``
first, then the system keyring under the vendor client's entry (service ``pysynthbio``, user
``api_token``), so a token stored with pysynthbio works here and the other way round.
Nothing copies a keyring token into the environment behind the user's back: the workflow's
prediction jobs read the keyring themselves, so the token is not handed to the jobs a
cluster executor submits. :func:`set_token` and :func:`load_token_from_keyring` mirror the
vendor client's functions: they put a token into this Python process's environment, for
this session and the processes it starts.

The token is never printed, logged, taken as a command-line argument or written to a file
by this package.
"""

from __future__ import annotations

import getpass
import logging
import os

from synthbio_pipeline.client.constants import KEYRING_SERVICE, KEYRING_USER, TOKEN_ENV
from synthbio_pipeline.errors import MissingTokenError

log = logging.getLogger(__name__)


def _keyring():
    try:
        import keyring
    except Exception:  # pragma: no cover - keyring is a dependency, but its backends may fail
        return None
    return keyring


def set_token(token: str | None = None, *, use_keyring: bool = False) -> None:
    """Set the token for this session; prompt for it (hidden) when none is given.

    With ``use_keyring`` it is also stored in the system keyring under the vendor
    client's entry, so later sessions (and pysynthbio) find it.
    """
    if token is None:
        token = getpass.getpass("Synthesize Bio API token (input hidden): ")
    token = token.strip()
    if not token:
        raise MissingTokenError("The token given is empty.")
    os.environ[TOKEN_ENV] = token
    if use_keyring:
        keyring = _keyring()
        if keyring is None:
            raise RuntimeError("the 'keyring' package is not usable here; the token is set for this session only")
        keyring.set_password(KEYRING_SERVICE, KEYRING_USER, token)


def load_token_from_keyring() -> bool:
    """Copy the keyring's token into this session; ``False`` when there is none."""
    token = _read_keyring()
    if not token:
        return False
    os.environ[TOKEN_ENV] = token
    return True


def has_token() -> bool:
    """Whether a token is set in this session's environment."""
    return bool(os.environ.get(TOKEN_ENV, "").strip())


def clear_token(remove_from_keyring: bool = False) -> None:
    """Forget the session's token; with ``remove_from_keyring``, delete the stored one too."""
    os.environ.pop(TOKEN_ENV, None)
    if remove_from_keyring:
        keyring = _keyring()
        if keyring is not None:
            try:
                keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
            except Exception as error:  # PasswordDeleteError when there is none
                log.debug("no keyring token removed: %s", type(error).__name__)


def resolve_token() -> str:
    """The token to send: the environment's, else the keyring's; raise when there is none."""
    token = os.environ.get(TOKEN_ENV, "").strip() or (_read_keyring() or "").strip()
    if not token:
        raise MissingTokenError()
    return token


def _read_keyring() -> str | None:
    keyring = _keyring()
    if keyring is None:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception as error:  # no usable backend (headless machines) is not an error here
        log.debug("keyring not readable: %s", type(error).__name__)
        return None
