# Files other tools read, made from the merged pair of an output group (config: outputs).


rule export_h5ad:
    input:
        expression="results/{group}/expression.parquet",
        metadata="results/{group}/metadata.parquet",
    output:
        "results/{group}/{group}.h5ad",
    log:
        "logs/export/{group}.h5ad.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/export_h5ad.py"


rule export_log_cpm:
    input:
        expression="results/{group}/expression.parquet",
    output:
        "results/{group}/log1p_cpm.parquet",
    log:
        "logs/export/{group}.log_cpm.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/export_log_cpm.py"


rule export_counts_tsv:
    input:
        expression="results/{group}/expression.parquet",
    output:
        "results/{group}/counts.tsv.gz",
    log:
        "logs/export/{group}.counts_tsv.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/export_counts_tsv.py"
