# Reference conditioning: the model's gene order, and every reference aligned to it
# (config/README.md, "Reference conditioning"). Rules run only when the table has
# reference rows or the config an annotate list.


# The gene order of a baseline model from a service (its reference-conditioning and
# metadata-prediction models share it; GEM-2's ids of a modality share gem-2-{bulk,sc}'s),
# learned once and cached: from this workflow's
# own results of that model when it holds one, else from a one-sample query (paid).
# Then every reference row and annotate file of the modality is checked against it,
# before any of their queries is written.
rule gene_order:
    output:
        "resources/gene_order/{service}/{model}.json",
    log:
        "logs/gene_order/{service}/{model}.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        # Polling, self-hosted mode, URL rules, download bounds, as the predict jobs'.
        **service_params(),
        # The modality's predictions folder (under a module's prefix too), where earlier
        # results of the model may be.
        predictions=lambda wildcards, output: os.path.join(
            os.path.dirname(
                os.path.dirname(os.path.dirname(os.path.dirname(output[0])))
            ),
            "results",
            "predictions",
        ),
        # Functions of `resources` are not rerun triggers: new polling options, or rows
        # added to the table, must not learn the gene order again.
        base_url=lambda wildcards, resources: config["api_base_url"],
        # The reference rows and annotate files of the modality, checked against the order.
        checks=lambda wildcards, resources: gene_order_checks(wildcards),
    script:
        "../scripts/gene_order.py"


# Every reference-conditioned condition's sample of an output group aligned to its gene
# order, in one file:
# the report compares the generated samples with these.
rule align_references:
    input:
        unpack(get_alignment_inputs),
    output:
        "results/{group}/references.parquet",
    log:
        "logs/references/{group}.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        conditions=lambda wildcards: reference_conditions(wildcards.group),
    script:
        "../scripts/align_references.py"
