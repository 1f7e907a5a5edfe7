# The report's figures of the reference-conditioning and metadata-prediction families
# (synthbio_pipeline.pipeline.report_reference): the round trip, when metadata prediction
# is on, and MA plots of the reference-conditioned conditions, per output group (GEM-1's
# bulk and single-cell, GEM-2's gem-2-bulk and gem-2-single-cell: each against its own
# family's metadata prediction). Which groups get them: reference_report_targets() in common.smk.


rule report_round_trip:
    input:
        metadata="results/{group}/metadata.parquet",
        predicted="results/{group}/predicted_metadata.parquet",
        probabilities="results/{group}/classifier_probs.parquet",
    output:
        table="results/report/{group}/round_trip.tsv",
        html=report(
            "results/report/{group}/round_trip.html",
            caption="../report/round_trip_table.rst",
            category="{group}",
            subcategory="Round trip",
            labels=reference_labels("round trip table"),
        ),
        figure=report(
            "results/report/{group}/round_trip.svg",
            caption="../report/round_trip.rst",
            category="{group}",
            subcategory="Round trip",
            labels=reference_labels("round trip"),
        ),
    log:
        "logs/report/{group}_round_trip.log",
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
        expression="results/{group}/expression.parquet",
        metadata="results/{group}/metadata.parquet",
        references="results/{group}/references.parquet",
    output:
        figure=report(
            "results/report/{group}/ma_plots.svg",
            caption="../report/ma_plots.rst",
            category="{group}",
            subcategory="Reference conditioning",
            labels=reference_labels("MA plots vs reference"),
        ),
        table="results/report/{group}/top_changed_genes.tsv",
        html=report(
            "results/report/{group}/top_changed_genes.html",
            caption="../report/top_changed_genes.rst",
            category="{group}",
            subcategory="Reference conditioning",
            labels=reference_labels("top changed genes"),
        ),
    log:
        "logs/report/{group}_reference.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/report_reference.py"
