"""``synthbio-pipeline``: manage the token, look at models and example queries.

    synthbio-pipeline token set [--keyring]   store a token (hidden prompt) in the system keyring
    synthbio-pipeline token has               exit 0 when a token is available, 1 when not
    synthbio-pipeline token clear [--keyring] forget the token (--keyring: delete the stored one)
    synthbio-pipeline models [--base-url URL]
    synthbio-pipeline example-query (--modality bulk|single-cell | --model-id ID [--base-url URL])

The token is never printed and never taken as a command-line argument: it is read from
a hidden prompt, or from standard input when that is not a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from synthbio_pipeline.client import token_store
from synthbio_pipeline.client.constants import KEYRING_SERVICE, KEYRING_USER, TOKEN_ENV
from synthbio_pipeline.errors import SynthbioError


def _read_token_from_user() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Synthesize Bio API token (input hidden): ")
    return sys.stdin.readline()


def _token_set(args) -> int:
    # A command cannot change its parent shell's environment: the keyring is the one place
    # it can keep a token for later sessions, so that is where `set` stores it. Without a
    # usable keyring, say so before the token is typed.
    token_store.check_keyring()
    token_store.set_token(_read_token_from_user(), use_keyring=True)
    print(f"Token stored in the system keyring (service {KEYRING_SERVICE!r}, user {KEYRING_USER!r}).")
    return 0


def _token_has(args) -> int:
    if os.environ.get(TOKEN_ENV, "").strip():
        print(f"A token is set in the environment ({TOKEN_ENV}).")
        return 0
    if token_store.load_token_from_keyring():
        print(f"A token is stored in the system keyring (service {KEYRING_SERVICE!r}).")
        return 0
    print(f"No token: set {TOKEN_ENV} or run `synthbio-pipeline token set`.")
    return 1


def _token_clear(args) -> int:
    token_store.clear_token(remove_from_keyring=args.keyring)
    if args.keyring:
        print("Token removed from the system keyring.")
    if os.environ.get(TOKEN_ENV):
        print(f"{TOKEN_ENV} is set in your shell; run `unset {TOKEN_ENV}` to clear it there.")
    return 0


def _models(args) -> int:
    from synthbio_pipeline.vendor_api import list_models

    print(list_models(args.base_url).to_string(index=False))
    return 0


def _example_query(args) -> int:
    if args.model_id:
        from synthbio_pipeline.vendor_api import get_example_query

        query = get_example_query(args.model_id, args.base_url)
    else:
        from synthbio_pipeline.vocabulary.query import get_valid_query

        query = get_valid_query(args.modality)
    print(json.dumps(query, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthbio-pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="manage the API token").add_subparsers(dest="action", required=True)
    setter = token.add_parser("set", help="store a token in the system keyring (hidden prompt, or stdin)")
    setter.add_argument("--keyring", action="store_true", help="store in the keyring (the default and only store)")
    setter.set_defaults(func=_token_set)
    token.add_parser("has", help="exit 0 when a token is available").set_defaults(func=_token_has)
    clear = token.add_parser("clear", help="forget the token")
    clear.add_argument("--keyring", action="store_true", help="also delete the token stored in the keyring")
    clear.set_defaults(func=_token_clear)

    models = commands.add_parser("models", help="list the models the token may use")
    models.add_argument("--base-url", help="API base URL (default: $SYNTHESIZE_API_BASE_URL or production)")
    models.set_defaults(func=_models)

    example = commands.add_parser("example-query", help="print an example query")
    which = example.add_mutually_exclusive_group(required=True)
    which.add_argument("--modality", choices=["bulk", "single-cell"], help="the seed's user-facing example")
    which.add_argument("--model-id", help="ask the server for its example (wire format)")
    example.add_argument("--base-url")
    example.set_defaults(func=_example_query)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SynthbioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
