# Stage 1: one query per condition, in the API's wire format, a batch of them per job.


rule write_queries:
    input:
        # A batch with reference rows: their files and the model's gene order.
        unpack(get_query_inputs),
    output:
        queries=directory("results/queries/{modality}/{batch}"),
        # Per condition, the columns its samples' metadata rows get (reference provenance).
        columns="results/queries/{modality}/{batch}.columns.json",
    log:
        "logs/queries/{modality}/{batch}.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        # A digest of the requests (and models): a change to a row reruns its batch, and
        # only it, with a rerun reason that fits on a line.
        queries=get_queries_digest,
        # The conditions themselves: not a rerun trigger (the digest is).
        conditions=lambda wildcards, resources: get_batch_conditions(wildcards),
    script:
        "../scripts/write_queries.py"
