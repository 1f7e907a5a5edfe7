"""Learn a model's gene order and cache it (rule gene_order): from this workflow's own
results of the model when it holds one, else from one paid query of one sample."""

import logging
import os
import sys

sys.stderr = open(snakemake.log[0], "a")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")

from synthbio_pipeline.pipeline.references import learn_gene_order
from synthbio_pipeline.vocabulary.models import get_model

model_id = snakemake.wildcards.model
source = learn_gene_order(
    snakemake.output[0],
    model_id=model_id,
    base_url=snakemake.params.base_url,
    predictions=os.path.join(snakemake.params.predictions, get_model(model_id).modality),
    poll_interval=float(snakemake.params.poll_interval),
    poll_timeout=float(snakemake.params.poll_timeout),
    keep_ticket=True,
    log=logging.getLogger("gene_order"),
)
logging.info("%s: gene order cached in %s, from %s", model_id, snakemake.output[0], source)
