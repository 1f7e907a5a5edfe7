"""Serve the API emulator until SIGINT or SIGTERM: ``synthbio-pipeline emulator``.

``python -m synthbio_pipeline.emulator`` is an alias. Prints one line with the emulator's
URL (``http://127.0.0.1:PORT``) as soon as it listens, so that a script can start it with
``--port 0`` and read where it is.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading

from .faults import KINDS, FaultPlan, FaultPlanError
from .generate import DEFAULT_GENES
from .server import start_emulator

#: How often the serving loop looks for a stop signal.
SIGNAL_CHECK_SECONDS = 0.5

FAULTS_HELP = f"""\
fault plans (--faults PATH_OR_JSON: a .json/.yaml file, or inline JSON starting with '{{'):
  {{"seed": 1, "faults": [
    {{"endpoint": "predict", "fault": "503", "requests": [1], "retry_after": 1}},
    {{"endpoint": "status", "fault": "429", "fraction": 0.2, "retry_after": "http-date"}},
    {{"endpoint": "status", "fault": "stall", "requests": [3], "stall_seconds": 40}},
    {{"endpoint": "download", "fault": "truncate", "requests": [1], "keep_fraction": 0.5}}]}}

  endpoint       list_models, example_query, predict, status, download
  fault          {", ".join(KINDS)}
                 (429/5xx and drop: the request has no effect; drop_after: processed, then
                 the connection closes unanswered; stall: answer after stall_seconds;
                 failed, expire_url: status only (an expire_url hit on a status that is
                 not ready is carried to the next ready one); truncate: download only; short:
                 download, and predict of a self-hosted container (the stream breaks off))
  requests       1-based ordinals of that endpoint's requests, counted from when the plan
                 was installed; or
  fraction       chance per request, drawn from a generator seeded by seed and endpoint
  retry_after    seconds, or "http-date", for a Retry-After header on 429/5xx
  stall_seconds  delay of a stall (default 60); keep_fraction: share of the body kept (0.5)

  Replace the plan of a running emulator with POST /_emulator/faults (JSON body, with the
  bearer token, as every API call); GET /_emulator/stats (token too) counts injected faults
  as "endpoint:kind".
  Details: python -c "import synthbio_pipeline.emulator.faults as f; help(f)"
"""


DESCRIPTION = "Offline emulator of the Synthesize Bio API (synthetic data, not a model)."


def fault_plan(text: str) -> FaultPlan:
    """``--faults``: a plan file or inline JSON, checked when the options are read."""
    try:
        return FaultPlan.load(text)
    except FaultPlanError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's options (and its help text) on ``parser``."""
    parser.description = DESCRIPTION
    parser.epilog = FAULTS_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1); anything but loopback is reachable from other "
        "machines, and a warning says so",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds from submission to ready (default: 1)")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        metavar="C",
        help="refuse submissions with 429 while C queries are in flight (default: no cap)",
    )
    parser.add_argument(
        "--genes", type=_gene_count, default=DEFAULT_GENES, help=f"genes per sample (default: {DEFAULT_GENES:,})"
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="T",
        help="accepted bearer token (repeatable); without one, any non-empty token is accepted",
    )
    parser.add_argument(
        "--self-hosted",
        action="store_true",
        help="act as a self-hosted model container: POST /api/models/{id}/predict answers at once with an "
        "Arrow IPC stream (pysynthbio: SYNTHESIZE_SELF_HOSTED=1); no token needed unless --token is given",
    )
    parser.add_argument("--url-ttl", type=float, default=300.0, help="lifetime of a signed download URL in seconds")
    parser.add_argument("--workdir", default=None, help="keep result files here (default: a temporary folder)")
    parser.add_argument(
        "--faults",
        type=fault_plan,
        default=None,
        metavar="PATH_OR_JSON",
        help="a fault plan: a JSON/YAML file or inline JSON (format below); "
        "also settable later with POST /_emulator/faults",
    )


def exposure_warning(host: str, tokens: list[str]) -> str | None:
    """The warning to print when ``host`` is not a loopback address (None when it is)."""
    try:
        loopback = host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    who = "with one of the --token values" if tokens else "with ANY token (give --token to require one)"
    return (
        f"warning: listening on {host}, which other machines may reach: anyone who can connect can "
        f"submit queries and steer faults {who}. The emulator is a test tool; bind it to 127.0.0.1 "
        "unless you mean this. Clients only send a token over plain http to a loopback address."
    )


def _gene_count(text: str) -> int:
    """--genes: a whole number from 1 to the number of gene ids the emulator has."""
    from .generate import ensembl_gene_ids

    known = len(ensembl_gene_ids())
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of genes, not {text!r}") from None
    if not 1 <= count <= known:
        raise argparse.ArgumentTypeError(f"1 to {known:,} (the human Ensembl gene ids the emulator has), not {count:,}")
    return count


def run(args: argparse.Namespace) -> int:
    """Serve with the options of :func:`add_arguments` until SIGINT or SIGTERM."""
    warning = exposure_warning(args.host, args.token)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = start_emulator(
        args.host,
        args.port,
        tokens=args.token,
        latency=args.latency,
        genes=args.genes,
        url_ttl=args.url_ttl,
        workdir=args.workdir,
        faults=args.faults,
        max_in_flight=args.max_in_flight,
        self_hosted=args.self_hosted,
    )
    try:
        if args.token:
            auth = f"{len(args.token)} token(s) accepted"
        else:
            auth = "no token needed" if args.self_hosted else "any bearer token accepted"
        what = "self-hosted model container emulator" if args.self_hosted else "Synthesize Bio API emulator"
        print(f"{what} at {emulator.url} ({auth}; synthetic data, not a model)", flush=True)
        while not stop.wait(SIGNAL_CHECK_SECONDS):
            pass
    finally:
        emulator.stop()
    print("emulator stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m synthbio_pipeline.emulator``, the alias of ``synthbio-pipeline emulator``."""
    parser = argparse.ArgumentParser(prog="python -m synthbio_pipeline.emulator")
    add_arguments(parser)
    return run(parser.parse_args(argv))
