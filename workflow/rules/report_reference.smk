# The report's figures of the reference-conditioning and metadata-prediction families
# (synthbio_pipeline.pipeline.report_reference): the round trip, when metadata prediction
# is on, and MA plots of the reference-conditioned conditions. Which modalities get them:
# reference_report_targets() in common.smk.


rule report_round_trip:
    input:
        metadata="results/{modality}/metadata.parquet",
        predicted="results/{modality}/predicted_metadata.parquet",
        probabilities="results/{modality}/classifier_probs.parquet",
    output:
        table="results/report/{modality}/round_trip.tsv",
        html=report(
            "results/report/{modality}/round_trip.html",
            caption="../report/round_trip_table.rst",
            category="{modality}",
            subcategory="Round trip",
            labels=reference_labels("round trip table"),
        ),
        figure=report(
            "results/report/{modality}/round_trip.svg",
            caption="../report/round_trip.rst",
            category="{modality}",
            subcategory="Round trip",
            labels=reference_labels("round trip"),
        ),
    log:
        "logs/report/{modality}_round_trip.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    params:
        # What each condition asked for, from the table: editing a row's metadata reruns this.
        requests=get_requests,
    script:
        "../scripts/report_round_trip.py"


rule report_reference:
    input:
        expression="results/{modality}/expression.parquet",
        metadata="results/{modality}/metadata.parquet",
        references="results/{modality}/references.parquet",
    output:
        figure=report(
            "results/report/{modality}/ma_plots.svg",
            caption="../report/ma_plots.rst",
            category="{modality}",
            subcategory="Reference conditioning",
            labels=reference_labels("MA plots vs reference"),
        ),
        table="results/report/{modality}/top_changed_genes.tsv",
        html=report(
            "results/report/{modality}/top_changed_genes.html",
            caption="../report/top_changed_genes.rst",
            category="{modality}",
            subcategory="Reference conditioning",
            labels=reference_labels("top changed genes"),
        ),
    log:
        "logs/report/{modality}_reference.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/report_reference.py"
