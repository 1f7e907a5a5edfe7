"""What made a modality's merged data: the service, the conditions table and the options.

The merge writes ``results/{modality}/provenance.json`` next to the merged pair, from the
prediction summaries (which record the base URL each query went to) and the config of the
run that made the data. The report reads it, not the current config: a report built later,
with another config or none, still describes the run behind the figures.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.files import atomic_path

PROVENANCE_NAME = "provenance.json"
#: The config options recorded (the token never is: it is not in the config).
RECORDED_OPTIONS = (
    "as_counts",
    "defaults",
    "batch_size",
    "queries_per_job",
    "poll_interval_seconds",
    "poll_timeout_seconds",
    "resubmit_failed",
)


class ProvenanceError(SynthbioError, ValueError):
    """A provenance file that cannot be read."""


def write_provenance(
    path: str | os.PathLike,
    *,
    modality: str,
    data: str,
    summaries: Sequence[str | os.PathLike],
    conditions_table: str | os.PathLike,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """Record what made a merged pair; return the record.

    ``data`` says who made the values (:func:`~synthbio_pipeline.pipeline.report.data_source`);
    ``summaries`` are the batches' ``summary.json`` (their conditions' ``base_url``); the
    config's ``api_base_url`` stands in for summaries written before they recorded it.
    """
    urls, conditions = [], 0
    for summary in summaries:
        for entry in json.loads(Path(summary).read_text())["conditions"]:
            conditions += 1
            url = entry.get("base_url") or config.get("api_base_url")
            if url and url not in urls:
                urls.append(url)
    table = Path(conditions_table)
    record = {
        "modality": modality,
        "data": data,
        "api_base_url": urls,
        "conditions_table": str(conditions_table),
        "conditions_table_sha256": hashlib.sha256(table.read_bytes()).hexdigest() if table.exists() else None,
        "conditions": conditions,
        "options": {key: config[key] for key in RECORDED_OPTIONS if key in config},
        "made": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "synthbio_pipeline": _version(),
    }
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_provenance(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The records of one run's modalities, combined: every URL, the table, the options."""
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise ProvenanceError(f"{path}: not a provenance record ({error})") from error
    if not records:
        raise ProvenanceError("no provenance records given")
    urls = list(dict.fromkeys(url for record in records for url in record.get("api_base_url", [])))
    tables = list(dict.fromkeys(str(record.get("conditions_table")) for record in records))
    return {
        "api_base_url": urls,
        "conditions_table": tables,
        "data": list(dict.fromkeys(str(record.get("data")) for record in records)),
        "options": records[0].get("options", {}),
        "made": max(str(record.get("made", "")) for record in records),
        "modalities": [record.get("modality") for record in records],
    }


def provenance_labels(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Report labels of the conditions table: where the data came from, in words."""
    record = read_provenance(paths)
    as_counts = record["options"].get("as_counts", True)
    return {
        "table": "conditions as run",
        "file": ", ".join(record["conditions_table"]),
        "service": ", ".join(record["api_base_url"]) or "not recorded",
        "data": " + ".join(record["data"]),
        "values": "counts" if as_counts else "log1p-CPM",
        "made": record["made"],
    }


def _version() -> str:
    try:
        return importlib.metadata.version("synthbio-pipeline")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"
