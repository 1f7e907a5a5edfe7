"""Checks the workflow makes once, at parse time, before any job runs.

- :func:`config_problems`: the config against its JSON schema, one line per problem, naming
  the key, with "did you mean" for a misspelt key and the expected form of a bad value.
- :func:`check_token`: a token is there (no request is sent).
- :func:`service_problem`: the API answers, accepts the token and offers every model the
  table needs (one ``GET /api/models``, short timeouts, no retries), so that a wrong port or
  a refused token ends the run in seconds with one line naming the cause and the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from synthbio_pipeline.client.constants import TOKEN_ENV
from synthbio_pipeline.client.http import SynthesizeClient, check_base_url, is_loopback, token_may_travel
from synthbio_pipeline.client.self_hosted import SelfHostedClient
from synthbio_pipeline.client.token_store import resolve_token
from synthbio_pipeline.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    MissingTokenError,
    SynthbioError,
)
from synthbio_pipeline.vocabulary.options import FALSE_WORDS, TRUE_WORDS

#: (connect, read) seconds of the preflight request: a refused port fails at once, an
#: unroutable host after the connect timeout; the models list is answered at once.
PREFLIGHT_TIMEOUT = (3.0, 10.0)


class PreflightError(SynthbioError):
    """The service cannot run this table; the message is one line: the cause, then the fix."""


class ConfigError(SynthbioError, ValueError):
    """The config breaks its schema; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = [f"{len(self.problems)} problem(s) in the config (config file and --config):"]
        lines += [f"- {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


# --- the token -------------------------------------------------------------------------


def check_token(base_url: str, *, allowed_http_hosts: Iterable[str] = ()) -> None:
    """Make sure jobs will find a token; stop the run now, with directions, when there is none.

    The token is only looked up, not handed on: the prediction jobs, which run on this host
    (a localrule), read it themselves from the environment or the keyring. Copying a keyring
    token into this process's environment would also send it with every job a cluster
    executor submits (SLURM's ``--export=ALL`` keeps job environments in its state
    directory), and those jobs never call the API. ``allowed_http_hosts``: as
    :func:`~synthbio_pipeline.client.http.check_base_url`'s.
    """
    check_base_url(base_url, allowed_http_hosts=allowed_http_hosts)
    try:
        resolve_token()
    except MissingTokenError:
        where = "the emulator" if _is_local(base_url) else base_url
        raise MissingTokenError(
            f"No Synthesize Bio API token for {where}; the run was stopped before any job.",
            hint=(
                f"Set {TOKEN_ENV}, or store a token once with `synthbio-pipeline token set` "
                "(the vendor client's keyring entry is read too). To try the workflow without "
                "a token: `bash scripts/demo.sh`, or start `synthbio-pipeline emulator` "
                f"and run with `--config api_base_url=<its URL>` and any {TOKEN_ENV} value."
            ),
        ) from None


def _is_local(base_url: str) -> bool:
    return is_loopback(urlsplit(base_url).hostname or "")


# --- the service -----------------------------------------------------------------------


def service_problem(
    base_url: str,
    model_ids: Iterable[str],
    *,
    timeout=PREFLIGHT_TIMEOUT,
    self_hosted: bool = False,
    allowed_http_hosts: Iterable[str] = (),
    send_token_over_http: bool = False,
) -> str | None:
    """``None`` when the API at ``base_url`` answers, accepts the token and offers every
    model in ``model_ids``; else one line saying what is wrong and what to do.

    One ``GET /api/models``, without retries: a preflight that retried for minutes would
    defeat its purpose. Nothing is submitted, so nothing is paid for. With ``self_hosted``
    the service is a model container: the token is optional (sent only from
    ``SYNTHESIZE_API_KEY``, and over plain http only with ``send_token_over_http``), and plain
    http is allowed to the hosts of ``allowed_http_hosts``.
    """
    check_base_url(base_url, allowed_http_hosts=allowed_http_hosts)
    url = base_url.rstrip("/")
    needed = sorted(set(model_ids))
    kind = SelfHostedClient if self_hosted else SynthesizeClient
    options = {"allowed_http_hosts": allowed_http_hosts, "send_token_over_http": send_token_over_http}
    try:
        with kind(url, max_retries=0, timeout=timeout, **options) as client:
            answer = client.list_models()
    except MissingTokenError:
        return f"no API token — set {TOKEN_ENV} or run `synthbio-pipeline token set`"
    except APITimeoutError:
        return f"{url} did not answer within {max(timeout):g} s — check api_base_url; " + (
            "is the emulator running?" if _is_local(url) else "the service or your network may be down"
        )
    except APIConnectionError:
        if _is_local(url):
            return f"nothing answers at {url} — is the emulator running? check api_base_url"
        return f"nothing answers at {url} — check api_base_url, your network and any proxy"
    except AuthenticationError as error:
        if not token_may_travel(url, send_token_over_http=send_token_over_http):
            return (
                f"{url} asks for a token ({error.status_code}), which is not sent over plain http — "
                "set send_token_over_http: true if the network to it is trusted (config/README.md, 'Self-hosted')"
            )
        return (
            f"the token was refused by {url} ({error.status_code}) — "
            f"set {TOKEN_ENV} or run `synthbio-pipeline token set`"
        )
    except APIStatusError as error:
        if error.status_code >= 500 or error.status_code == 429:
            return f"{url} answered GET /api/models with {error.status_code} — the service has trouble; try again later"
        return (
            f"{url} answered GET /api/models with {error.status_code} — is api_base_url the API's base URL "
            "(such as https://app.synthesize.bio, without /api)?"
        )
    available = _model_ids(answer)
    if available is None:
        return f"{url} does not answer GET /api/models as the Synthesize Bio API does — check api_base_url"
    missing = [model for model in needed if model not in available]
    if missing:
        offered = ", ".join(sorted(available)) or "none"
        return (
            f"model {', '.join(missing)} is not available to this token at {url} (it offers: {offered}) — "
            "change the table's modality, or ask Synthesize Bio for access"
        )
    return None


def _model_ids(answer: Any) -> set[str] | None:
    """The model ids of a ``GET /api/models`` answer, or ``None`` when it is not one."""
    models = answer.get("models") if isinstance(answer, Mapping) else None
    if not isinstance(models, list):
        return None
    return {str(model["model_id"]) for model in models if isinstance(model, Mapping) and "model_id" in model}


# --- the config ------------------------------------------------------------------------

_TYPE_NAMES = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "array": "a list such as [a, b]",
    "object": "a mapping of keys to values",
    "null": "empty",
}


def with_boolean_words(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the top-level boolean options given as words read as booleans.

    Snakemake's ``--config as_counts=false`` passes the text ``'false'`` (it reads only
    ``True`` and ``False``); the table's words for a boolean (``true``/``false``, ``yes``/``no``,
    ``1``/``0``, any case) are taken here too. Other text is left for the schema to refuse.
    """
    booleans = {key for key, spec in schema.get("properties", {}).items() if spec.get("type") == "boolean"}
    words = {**dict.fromkeys(TRUE_WORDS, True), **dict.fromkeys(FALSE_WORDS, False)}
    return {
        key: words.get(value.strip().lower(), value) if key in booleans and isinstance(value, str) else value
        for key, value in config.items()
    }


def config_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every way ``config`` breaks ``schema``, one line each, in the order of the keys.

    A line names the key (``defaults.seed``), then says what is wrong: an unknown key gets
    the nearest known one ("did you mean"), a bad value the form expected, in words taken
    from the schema (its types, enums, bounds and descriptions; never a raw pattern).
    """
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        problems.extend(_describe(error))
    return list(dict.fromkeys(problems))


def _describe(error) -> list[str]:
    path = _key_path(error.absolute_path)
    schema, value, kind = error.schema, error.instance, error.validator
    if kind == "additionalProperties":
        properties = schema.get("properties", {})
        known = list(properties)
        where = f"{path}: " if path else ""
        lines = []
        for key in (k for k in value if k not in known):
            # A key whose description names the unknown one is meant (gene_order_files: the model
            # id gem-1-sc is the single-cell group's), else the nearest spelling.
            word = re.compile(rf"(?<![\w-]){re.escape(str(key))}(?![\w-])")
            named = [k for k in known if word.search(str(properties[k].get("description", "")))]
            near = named if len(named) == 1 else difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"known keys: {', '.join(known)}"
            lines.append(f"{where}unknown key {key!r} — {hint}")
        return lines
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        described = _first_sentence(schema.get("properties", {}).get(missing, {}).get("description", ""))
        return [f"{_join(path, missing)}: missing" + (f" — {described}" if described else "")]
    expected = _expected(kind, error.validator_value, schema)
    described = _first_sentence(schema.get("description", ""))
    example = schema.get("examples", [None])[0] if schema.get("examples") else schema.get("default")
    line = f"{path or 'the config'}: {_shown(value)} is not {expected}"
    if described:
        line += f" — {described.rstrip('.')}"
    if example is not None and kind in ("pattern", "format", "minLength", "maxLength"):
        line += f"; for example {example}"
    return [line]


def _expected(kind: str, rule: Any, schema: Mapping[str, Any]) -> str:
    if kind == "type":
        types = [rule] if isinstance(rule, str) else list(rule)
        return " or ".join(_TYPE_NAMES.get(t, t) for t in types)
    if kind == "enum":
        return "one of " + ", ".join(str(v) for v in rule)
    if kind == "const":
        return f"{rule}"
    bounds = {
        "minimum": f"at least {rule}",
        "exclusiveMinimum": f"more than {rule}",
        "maximum": f"at most {rule}",
        "exclusiveMaximum": f"less than {rule}",
        "minLength": "empty" if rule == 0 else "non-empty text",
        "minItems": f"a list of at least {rule}",
        "uniqueItems": "a list without repeats",
    }
    if kind in bounds:
        return bounds[kind]
    return "in the expected form"  # pattern, format, ...: the description says which


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    end = text.find(". ")
    return (text[: end + 1] if end >= 0 else text).rstrip()
