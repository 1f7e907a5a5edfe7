# Stage 3: all conditions of one modality in one expression and one metadata file, and a
# record of what made them (service, table, options), which the report reads.


rule merge:
    input:
        expression=get_parts("expression"),
        metadata=get_parts("metadata"),
        # The base URL each query went to.
        summaries=get_run_summaries,
    output:
        expression="results/{modality}/expression.parquet",
        metadata="results/{modality}/metadata.parquet",
        provenance="results/{modality}/provenance.json",
    log:
        "logs/merge/{modality}.log",
    conda:
        "../envs/synthbio.yaml"
    params:
        # What the run that makes the data was given; not rerun triggers (a change that
        # matters reruns the predictions, and so this merge).
        table=lambda wildcards, resources: config["conditions"],
        config=lambda wildcards, resources: config,
    script:
        "../scripts/merge.py"
