"""An offline emulator of the Synthesize Bio API: a real HTTP server on loopback.

It speaks the wire protocol (``/api/models``, ``example-query``, ``predict``, ``status``,
signed downloads) so that this package's client and the vendor's ``pysynthbio`` can be run
end to end without a token or a network. It serves every GEM-1 model of the vocabulary's
table: the baselines (:mod:`.generate`), reference conditioning (:mod:`.reference`: the
reference's profile moved by the perturbation) and metadata prediction (:mod:`.annotate`:
recovers the metadata the generator used). What it returns is synthetic: plausible and
deterministic, but not a model prediction.

It serves GEM-1's baseline models and every GEM-2 id and operation (:mod:`.gem2`); with
``self_hosted=True`` (``--self-hosted``) it is a self-hosted model container answering
``predict`` at once with an Arrow IPC stream (:mod:`.self_hosted`).

In process::

    with start_emulator(tokens=["secret"], latency=0.5, genes=2000) as emulator:
        predict_query(query, api_base_url=emulator.url)
        emulator.stats()

As a process: ``synthbio-pipeline emulator --port 8765`` (or ``python -m synthbio_pipeline.emulator``).

A fault plan (:mod:`.faults`: 429/5xx, dropped connections, stalls, failed queries, expired
URLs, corrupt downloads) is given with ``start_emulator(faults=...)`` or ``--faults``, and
replaced on a running emulator with ``emulator.set_faults(...)`` or ``POST /_emulator/faults``.
"""

from .faults import FaultPlan, FaultPlanError
from .generate import encode_ints, gene_order
from .server import Emulator, body_hash, start_emulator

__all__ = ["Emulator", "FaultPlan", "FaultPlanError", "body_hash", "encode_ints", "gene_order", "start_emulator"]
