# The report's figures and tables (outputs: report: true). `snakemake --report report.html`
# gathers the outputs marked report(...) into one self-contained page; captions are in
# workflow/report/.


rule report_figures:
    input:
        expression="results/{modality}/expression.parquet",
        metadata="results/{modality}/metadata.parquet",
        # Timings and submissions of each condition's prediction.
        summaries=get_run_summaries,
    output:
        # No library sizes figure with as_counts: false (report_figures() in common.smk).
        **figure_outputs(),
        summary=report(
            "results/report/{modality}/summary.html",
            caption="../report/summary.rst",
            category="{modality}",
            subcategory="Per-condition summary",
            labels=figure_labels("per-condition summary"),
        ),
        summary_tsv="results/report/{modality}/summary.tsv",
    log:
        "logs/report/{modality}.log",
    conda:
        "../envs/synthbio.yaml"
    threads: 1
    script:
        "../scripts/report_figures.py"


# The table as the workflow read it (defaults applied), and what the data was made with
# (service, table, options: its labels, which workflow.rst reads); a small local job.
rule report_conditions:
    input:
        # local(): under a module prefix, the table stays where the host's config says.
        table=local(config["conditions"]),
        provenance=get_provenance_files,
    output:
        report(
            "results/report/conditions.html",
            caption="../report/conditions.rst",
            category="Conditions table",
            labels=lambda wildcards, input: provenance_labels(input.provenance),
        ),
    log:
        "logs/report/conditions.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        defaults=config["defaults"],
    script:
        "../scripts/report_conditions.py"
