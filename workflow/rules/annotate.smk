# Metadata prediction (config/README.md, "Metadata prediction"): of every generated
# sample (outputs: predicted_metadata) and of users' own counts files (annotate:), with
# the output group's predict-metadata model (GEM-1's or GEM-2's; an annotate entry's model), predict_metadata_batch samples per query. Each
# query is paid for.


rule write_metadata_queries:
    input:
        expression="results/{group}/expression.parquet",
    output:
        queries=directory("results/queries/{group}/predicted_metadata"),
        samples="results/queries/{group}/predicted_metadata.samples.json",
    log:
        "logs/queries/{group}/predicted_metadata.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        model_id=lambda wildcards: group_metadata_model(wildcards.group),
        batch=config["predict_metadata_batch"],
        seed=config["defaults"].get("seed"),
        modality=lambda wildcards: group_modality(wildcards.group),
    script:
        "../scripts/write_metadata_queries.py"


rule predict_metadata:
    input:
        queries="results/queries/{group}/predicted_metadata",
        samples="results/queries/{group}/predicted_metadata.samples.json",
    output:
        **latents_output("results/{group}/encoded_latents.parquet"),
        predicted_metadata="results/{group}/predicted_metadata.parquet",
        classifier_probs="results/{group}/classifier_probs.parquet",
        summary="results/predictions/{group}/predicted_metadata/summary.json",
        # outputs: latents: what the model encoded each sample to (none otherwise).
    log:
        "logs/predict/{group}/predicted_metadata.log",
    localrule: True
    threads: 1
    resources:
        synthbio_api=get_metadata_in_flight,
    params:
        **service_params(),
        model_id=lambda wildcards: group_metadata_model(wildcards.group),
        base_url=config["api_base_url"],
        ticket_dir=lambda wildcards, output: os.path.join(
            os.path.dirname(output.summary), ".tickets"
        ),
    wrapper:
        f"{WRAPPERS}/synthesize/predict"


# A user's counts file: every sample checked and aligned to the model's gene order.
rule write_annotate_queries:
    input:
        unpack(get_annotate_inputs),
    output:
        queries=directory("results/queries/annotate/{name}"),
        samples="results/queries/annotate/{name}.samples.json",
    log:
        "logs/queries/annotate/{name}.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        entry=lambda wildcards: ANNOTATIONS[wildcards.name],
        model_id=lambda wildcards: ANNOTATIONS[wildcards.name].model_id,
        batch=config["predict_metadata_batch"],
        seed=config["defaults"].get("seed"),
        modality=lambda wildcards: ANNOTATIONS[wildcards.name].modality,
    script:
        "../scripts/write_metadata_queries.py"


rule annotate:
    input:
        queries="results/queries/annotate/{name}",
        samples="results/queries/annotate/{name}.samples.json",
    output:
        **latents_output("results/annotate/{name}/encoded_latents.parquet"),
        predicted_metadata="results/annotate/{name}/predicted_metadata.parquet",
        classifier_probs="results/annotate/{name}/classifier_probs.parquet",
        summary="results/predictions/annotate/{name}/summary.json",
    log:
        "logs/predict/annotate/{name}.log",
    localrule: True
    threads: 1
    resources:
        synthbio_api=config["queries_per_job"],
    params:
        **service_params(),
        model_id=lambda wildcards: ANNOTATIONS[wildcards.name].model_id,
        base_url=config["api_base_url"],
        ticket_dir=lambda wildcards, output: os.path.join(
            os.path.dirname(output.summary), ".tickets"
        ),
    wrapper:
        f"{WRAPPERS}/synthesize/predict"
