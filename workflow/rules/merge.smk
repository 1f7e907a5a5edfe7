# Stage 3: all conditions of one modality in one expression and one metadata file.


rule merge:
    input:
        expression=get_parts("expression"),
        metadata=get_parts("metadata"),
    output:
        expression="results/{modality}/expression.parquet",
        metadata="results/{modality}/metadata.parquet",
    log:
        "logs/merge/{modality}.log",
    conda:
        "../envs/synthbio.yaml"
    script:
        "../scripts/merge.py"
