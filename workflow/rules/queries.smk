# Stage 1: one query per condition, in the API's wire format, a batch of them per job.


rule write_queries:
    output:
        directory("results/queries/{modality}/{batch}"),
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
