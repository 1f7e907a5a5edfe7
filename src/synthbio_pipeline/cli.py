"""``synthbio-pipeline``: the project's one command line.

    synthbio-pipeline token set              store a token in the system keyring (hidden prompt, or stdin)
    synthbio-pipeline token has              exit 0 when a token is available, 1 when not
    synthbio-pipeline token clear [--keyring]  forget the token (--keyring: delete the stored one)
    synthbio-pipeline models [--base-url URL]
    synthbio-pipeline example-query (--modality bulk|single-cell | --model-id ID [--base-url URL])
    synthbio-pipeline validate TABLE [--config FILE]
    synthbio-pipeline emulator [--port 0] [--latency S] [--faults PLAN] ...
    synthbio-pipeline demo [--genes N] [--latency S]
    synthbio-pipeline report EXPRESSION METADATA OUTDIR [--format svg|png|pdf]

``python -m synthbio_pipeline.emulator`` and ``python -m synthbio_pipeline.demo`` remain as
aliases of ``emulator`` and ``demo``. The token is never printed and never taken as a
command-line argument: it is read from a hidden prompt, or from standard input when that is
not a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from synthbio_pipeline import demo
from synthbio_pipeline.client import token_store
from synthbio_pipeline.client.constants import KEYRING_SERVICE, KEYRING_USER, TOKEN_ENV
from synthbio_pipeline.emulator import serve
from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.vocabulary.models import MODALITIES

#: The workflow's config file, read by ``validate`` for its ``defaults`` when it exists.
WORKFLOW_CONFIG = Path("config/config.yaml")


def _read_token_from_user() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Synthesize Bio API token (input hidden): ")
    return sys.stdin.readline()


# --- token -------------------------------------------------------------------------------


def _token_set(args) -> int:
    # A command cannot change its parent shell's environment: the keyring is the one place
    # it can keep a token for later sessions, so that is where `set` stores it. Without a
    # usable keyring, say so (one line, offering the environment) before the token is typed.
    token_store.check_keyring()
    token = _read_token_from_user().strip()
    token_store.set_token(token)
    token_store.store_in_keyring(token)  # raises when it cannot (set_token(use_keyring=True) only warns)
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


# --- the API -----------------------------------------------------------------------------


def _models(args) -> int:
    import pandas as pd

    from synthbio_pipeline.vendor_api import list_models

    listed = list_models(args.base_url)
    print(pd.DataFrame(listed.get("models", []) if isinstance(listed, dict) else listed).to_string(index=False))
    return 0


def _example_query(args) -> int:
    if args.model_id:
        from synthbio_pipeline.vendor_api import get_example_query

        query = get_example_query(args.model_id, args.base_url).get("example_query", {})
    else:
        from synthbio_pipeline.vocabulary.query import get_valid_query

        query = get_valid_query(args.modality)
    print(json.dumps(query, indent=2))
    return 0


# --- the conditions table and the report -------------------------------------------------


def _read_config(path: Path | None) -> dict:
    """A workflow config file (YAML or JSON) as a mapping; ``{}`` without a file."""
    if path is None:
        return {}
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the workflow extra
        raise SynthbioError(f"reading {path} needs PyYAML: pip install 'synthbio-pipeline[workflow]'") from None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SynthbioError(f"{path}: cannot read the config: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SynthbioError(f"{path}: not YAML: {str(error).splitlines()[0]}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise SynthbioError(f"{path}: a config is a mapping of option -> value")
    if not isinstance(config.get("defaults", {}), dict):
        raise SynthbioError(f"{path}: 'defaults' must be a mapping of column -> value")
    return config


#: Where the workflow keeps an output group's tickets, relative to its working directory.
TICKETS = "results/predictions/{group}/.tickets"


def _validate(args) -> int:
    from synthbio_pipeline.pipeline.budget import budget_problem, plan_purchases
    from synthbio_pipeline.pipeline.conditions import MAX_TABLE_ROWS, ConditionsError, read_conditions
    from synthbio_pipeline.pipeline.references import aligned_reference_counts, own_output_problem, reference_problems

    path = args.config if args.config is not None else (WORKFLOW_CONFIG if WORKFLOW_CONFIG.is_file() else None)
    try:
        config = _read_config(path)
        max_rows = config.get("max_table_rows", MAX_TABLE_ROWS)
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise SynthbioError(f"{path}: max_table_rows must be a whole number of at least 1, not {max_rows!r}")
        conditions = read_conditions(args.table, config.get("defaults") or {}, max_rows=max_rows)
        # Reference rows: their files and samples, and their overlap with the model's genes where
        # the gene order is known here (configured, or cached by an earlier run in this folder;
        # else the workflow checks it once it knows the order).
        references = [condition.reference for condition in conditions if condition.is_reference]
        own = own_output_problem(references)
        if own:
            raise SynthbioError(own)
        gene_orders = _known_gene_orders(config, {c.group for c in conditions if c.is_reference})
        problems = reference_problems(conditions, args.table, gene_orders)
        if problems:
            raise ConditionsError(problems)
        # What the rows would buy, less what the workflow's tickets here already hold (the
        # workflow adds metadata prediction's samples and a gene order's one-sample query).
        plan = plan_purchases(
            conditions,
            lambda group: Path(TICKETS.format(group=group)),
            config.get("api_base_url"),
            allowed_http_hosts=config.get("allowed_http_hosts") or (),
            # A reference row's ticket is recognised by the counts it was sent with.
            reference_counts=aligned_reference_counts(conditions, gene_orders),
        )
        over = budget_problem(plan, config.get("max_samples"))
        if over:
            raise SynthbioError(over)
    except ConditionsError as error:
        print(error, file=sys.stderr)
        return 1
    except SynthbioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    samples = sum(condition.num_samples for condition in conditions)
    to_buy = sum(entry.samples for entry in plan.values())
    held = f", {samples - to_buy:,} already bought" if to_buy < samples else ""
    rows = f"{len(conditions):,} condition{'' if len(conditions) == 1 else 's'}"
    print(f"{rows}, {samples:,} samples ({to_buy:,} to buy{held}, within max_samples), OK")
    return 0


def _known_gene_orders(config: dict, groups: set[str]) -> dict[str, list[str]]:
    """The gene orders of ``groups`` that validate knows as the workflow would: the config's
    ``gene_order_files``, else the cache an earlier run in this folder left for the config's
    service (the workflow also reads them from its results)."""
    from synthbio_pipeline.client.constants import API_BASE_URL
    from synthbio_pipeline.pipeline.references import (
        GENE_ORDER_MODELS,
        gene_order_path,
        read_configured_gene_order,
        read_gene_order,
    )

    configured = config.get("gene_order_files") or {}
    if not isinstance(configured, dict):
        raise SynthbioError("gene_order_files: a mapping of output group -> file")
    for key in configured:
        if key not in GENE_ORDER_MODELS:
            raise SynthbioError(
                f"gene_order_files: unknown key {key!r} — the keys are the output groups {', '.join(GENE_ORDER_MODELS)}"
            )
    orders = {}
    for group in sorted(groups):
        model = GENE_ORDER_MODELS[group]
        if configured.get(group):
            orders[group] = read_configured_gene_order(f"gene_order_files.{group}", configured[group], model)
            continue
        cache = Path(gene_order_path(config.get("api_base_url") or API_BASE_URL, model))
        if cache.is_file():
            orders[group] = read_gene_order(cache)
    return orders


def _report(args) -> int:
    from synthbio_pipeline.pipeline.report import write_report_folder

    options = {"image_format": args.format} | ({} if args.pca_genes is None else {"pca_genes": args.pca_genes})
    for path in write_report_folder(args.expression, args.metadata, args.outdir, **options):
        print(path)
    return 0


# --- the parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthbio-pipeline",
        description="The token, the API's models and examples, conditions tables, the offline emulator, "
        "the demo and report figures: one command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="manage the API token").add_subparsers(dest="action", required=True)
    token.add_parser("set", help="store a token in the system keyring (hidden prompt, or stdin)").set_defaults(
        func=_token_set
    )
    token.add_parser("has", help="exit 0 when a token is available").set_defaults(func=_token_has)
    clear = token.add_parser("clear", help="forget the token")
    clear.add_argument("--keyring", action="store_true", help="also delete the token stored in the keyring")
    clear.set_defaults(func=_token_clear)

    base_url = {"help": "API base URL (default: $SYNTHESIZE_API_BASE_URL or production)"}
    models = commands.add_parser("models", help="list the models the token may use")
    models.add_argument("--base-url", **base_url)
    models.set_defaults(func=_models)

    example = commands.add_parser("example-query", help="print an example query")
    which = example.add_mutually_exclusive_group(required=True)
    which.add_argument("--modality", choices=MODALITIES, help="rsynthbio's user-facing example")
    which.add_argument("--model-id", help="ask the server for its example (wire format)")
    example.add_argument("--base-url", **base_url)
    example.set_defaults(func=_example_query)

    validate = commands.add_parser(
        "validate",
        help="check a conditions table without Snakemake or the API",
        description="Check a conditions table as the workflow does before any job, and print every problem "
        "with its file, line, condition and column (exit 1), or a one-line summary (exit 0). Nothing is sent.",
    )
    validate.add_argument("table", type=Path, help="the table (TSV, or CSV by its .csv name)")
    validate.add_argument(
        "--config",
        type=Path,
        help=f"workflow config whose 'defaults' fill empty cells (default: {WORKFLOW_CONFIG} when it exists)",
    )
    validate.set_defaults(func=_validate)

    emulator = commands.add_parser("emulator", help="serve the offline API emulator until interrupted")
    serve.add_arguments(emulator)
    emulator.set_defaults(func=serve.run)

    demo_command = commands.add_parser("demo", help="the library end to end against the emulator (no token)")
    demo.add_arguments(demo_command)
    demo_command.set_defaults(func=demo.run)

    report = commands.add_parser(
        "report",
        help="draw the report figures and summary table of a merged pair",
        description="Draw the report figures and summary table of a merged expression + metadata pair.",
    )
    report.add_argument("expression", help="expression.parquet (counts or log1p-CPM)")
    report.add_argument("metadata", help="metadata.parquet")
    report.add_argument(
        "outdir",
        help="writes library_sizes (counts only), detected_genes, pca, condition_correlation (in --format) "
        "and conditions.tsv here",
    )
    report.add_argument("--format", choices=("svg", "png", "pdf"), default="svg")
    report.add_argument(
        "--pca-genes", type=int, default=None, help="most variable genes in the PCA (default: as in the workflow)"
    )
    report.set_defaults(func=_report)
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
