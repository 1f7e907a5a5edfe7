"""``synthbio-pipeline demo``: the library end to end against the bundled emulator.

``python -m synthbio_pipeline.demo`` is an alias.

Starts the emulator on loopback, then does what a user of the vendor's client does:
list the models, build the example query of each modality, predict it, and look at the
tables. No token and no network are needed; everything printed is labelled as emulated.
"""

from __future__ import annotations

import argparse
import os
import time

from synthbio_pipeline import get_valid_modalities, get_valid_query, list_models, log_cpm, predict_query
from synthbio_pipeline.client.constants import TOKEN_ENV
from synthbio_pipeline.emulator import start_emulator

DEMO_TOKEN = "emulator-demo-token"


DESCRIPTION = "The library end to end against the bundled emulator (no token, no network)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options on ``parser``."""
    parser.description = DESCRIPTION
    parser.add_argument("--genes", type=int, default=44_590, help="genes per sample (default: GEM-1's 44,590)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds each emulated query takes")


def run(args: argparse.Namespace) -> int:
    """List the models, then predict each modality's example query and print its tables."""
    # The demo's token is for the emulator only; a real token in the environment is left unused.
    import pandas as pd  # here: `synthbio-pipeline token has` need not wait for pandas

    os.environ[TOKEN_ENV] = DEMO_TOKEN
    pd.set_option("display.width", 120)
    with start_emulator(latency=args.latency, genes=args.genes, tokens=[DEMO_TOKEN]) as emulator:
        print(f"Emulator (synthetic data, not a model) at {emulator.url}\n")
        print("Models:\n" + pd.DataFrame(list_models(emulator.url)["models"]).to_string(index=False) + "\n")
        for modality in get_valid_modalities():
            query = get_valid_query(modality)
            started = time.monotonic()
            result = predict_query(query, api_base_url=emulator.url, poll_interval_seconds=1)
            expression, metadata = result["expression"], result["metadata"]
            print(
                f"== {modality}: {query['mode']!r}, {len(query['inputs'])} conditions, "
                f"{time.monotonic() - started:.1f} s"
            )
            print(
                f"expression: {expression.shape[0]} samples x {expression.shape[1]} genes, "
                f"library sizes {int(expression.sum(axis=1).min()):,}-{int(expression.sum(axis=1).max()):,}"
            )
            print(metadata.to_string(max_cols=6) + "\n")
            print("log1p-CPM of the first genes:\n" + log_cpm(expression).iloc[:, :5].round(2).to_string() + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m synthbio_pipeline.demo``, the alias of ``synthbio-pipeline demo``."""
    parser = argparse.ArgumentParser(prog="python -m synthbio_pipeline.demo")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
