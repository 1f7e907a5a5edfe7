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
import sys
import warnings

from synthbio_pipeline.client.constants import KEYRING_SERVICE, KEYRING_USER, TOKEN_ENV
from synthbio_pipeline.errors import KeyringUnavailableError, MissingTokenError

log = logging.getLogger(__name__)


def _keyring():
    try:
        import keyring
    except Exception:  # pragma: no cover - keyring is a dependency, but its backends may fail
        return None
    return keyring


#: Where a token is created; said in the prompt (no browser is ever opened).
API_KEYS_PAGE = "https://app.synthesize.bio/account/api-keys"


def set_token(*args: bool | str | None, use_keyring: bool = False, token: str | None = None) -> bool:
    """Set the token for this session; ask for it (hidden input) when none is given.

    Called as the vendor clients' ``set_synthesize_token(use_keyring=False, token=None)``
    (positionally too), or as our ``set_token(token, use_keyring=...)``: a positional string
    is the token, a positional bool is ``use_keyring``.
    Without a token it asks with :func:`getpass.getpass`, only where a person can answer (a
    terminal, or a notebook); elsewhere it raises :class:`MissingTokenError`. No browser is
    opened. With ``use_keyring`` the token is also stored in the system keyring under the
    vendor client's entry, so later sessions (and pysynthbio) find it; when the keyring
    cannot store it, a warning says so and the token is set for this session only (as the
    vendor's client does; :func:`store_in_keyring` raises instead). Returns ``True``.
    """
    if len(args) > 2:
        raise TypeError(f"set_token takes at most 2 positional arguments ({len(args)} given)")
    for value in args:
        if isinstance(value, bool):
            use_keyring = value
        elif isinstance(value, str):
            token = value
        elif value is not None:
            raise TypeError(f"set_token: expected the token (str) or use_keyring (bool), not {type(value).__name__}")
    if token is None:
        if not can_prompt():
            raise MissingTokenError("No token was given and there is no terminal to ask for one on.")
        token = getpass.getpass(f"Synthesize Bio API token (input hidden; create one at {API_KEYS_PAGE}): ")
    token = token.strip()
    if not token:
        raise MissingTokenError("The token given is empty.")
    os.environ[TOKEN_ENV] = token
    if use_keyring:
        try:
            store_in_keyring(token)
        except Exception as error:
            warnings.warn(
                f"the token was not stored in the system keyring ({_reason(error)}); it is set for this session only",
                stacklevel=2,
            )
        else:
            log.info("API token stored in the system keyring.")
    log.info("API token set for the current session.")
    return True


def store_in_keyring(token: str) -> None:
    """Store ``token`` in the system keyring under the vendor client's entry; raise
    :class:`KeyringUnavailableError` (one line, offering the environment) when that fails."""
    check_keyring()
    try:
        _keyring().set_password(KEYRING_SERVICE, KEYRING_USER, token)
    except Exception as error:  # KeyringError, or a backend's own (D-Bus, locked collection)
        raise KeyringUnavailableError(_no_keyring_message(f"storing failed: {type(error).__name__}")) from None


def check_keyring() -> None:
    """Raise :class:`KeyringUnavailableError` unless a system keyring can store a token.

    Headless machines (servers, HPC login nodes) usually have none: keyring then picks its
    ``fail`` backend, which refuses everything, or is set to ``null``, which stores nothing.
    """
    keyring = _keyring()
    if keyring is None:
        raise KeyringUnavailableError(_no_keyring_message("the keyring package cannot be imported"))
    try:
        from keyring.backends import fail, null

        backend = keyring.get_keyring()
    except Exception as error:
        raise KeyringUnavailableError(_no_keyring_message(type(error).__name__)) from None
    if isinstance(backend, (fail.Keyring, null.Keyring)):  # refuses everything / keeps nothing
        name = f"{type(backend).__module__}.{type(backend).__name__}"
        raise KeyringUnavailableError(_no_keyring_message(f"keyring backend {name}"))


def _no_keyring_message(detail: str) -> str:
    return (
        f"no usable system keyring on this machine ({detail}), so the token was not stored; "
        f"set it in the environment instead: export {TOKEN_ENV}=... (to keep it across sessions, "
        "put that line in a file only you can read, chmod 600, and source it from your shell's startup file)"
    )


def _reason(error: Exception) -> str:
    # A keyring backend's message may quote what it was given: show the kind of error only.
    if isinstance(error, KeyringUnavailableError):
        return str(error).split(", so the token", 1)[0]  # ours: "no usable system keyring ... (backend)"
    return type(error).__name__ if not isinstance(error, RuntimeError) else str(error)


def can_prompt() -> bool:
    """Whether a person can be asked for the token: standard input is a terminal, or
    ``getpass`` is a notebook kernel's (ipykernel replaces it while a cell runs)."""
    if str(getattr(getpass.getpass, "__module__", "")).startswith("ipykernel"):
        return True
    try:
        return bool(sys.stdin is not None and sys.stdin.isatty())
    except (AttributeError, ValueError, OSError):
        return False


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


def clear_token(remove_from_keyring: bool = False) -> bool:
    """Forget the session's token; with ``remove_from_keyring``, delete the stored one too. Returns ``True``."""
    os.environ.pop(TOKEN_ENV, None)
    if remove_from_keyring:
        keyring = _keyring()
        if keyring is not None:
            try:
                keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
            except Exception as error:  # PasswordDeleteError when there is none
                log.debug("no keyring token removed: %s", type(error).__name__)
    return True


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
