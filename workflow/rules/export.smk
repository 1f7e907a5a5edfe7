# Files other tools read, made from the merged pair of a modality (config: outputs).


rule export_h5ad:
    input:
        expression="results/{modality}/expression.parquet",
        metadata="results/{modality}/metadata.parquet",
    output:
        "results/{modality}/{modality}.h5ad",
    log:
        "logs/export/{modality}.h5ad.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/export_h5ad.py"


rule export_log_cpm:
    input:
        expression="results/{modality}/expression.parquet",
    output:
        "results/{modality}/log1p_cpm.parquet",
    log:
        "logs/export/{modality}.log_cpm.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/export_log_cpm.py"


rule export_counts_tsv:
    input:
        expression="results/{modality}/expression.parquet",
    output:
        "results/{modality}/counts.tsv.gz",
    log:
        "logs/export/{modality}.counts_tsv.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/export_counts_tsv.py"
