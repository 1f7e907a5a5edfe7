# Stage 2: submit a batch's queries, poll them, download and parse the results (paid API
# calls). The token is read from the environment inside the job; it is never a parameter.
#
# A job waits on many queries at once (threads; `synthbio_api` of them, a global resource
# capped with --resources) and parses one result at a time: it needs one core. It runs
# where Snakemake runs (localrule): on a cluster, waiting must not hold a compute node.


rule predict:
    input:
        # The queries, the columns their samples get, and (reference rows) the gene order.
        unpack(get_predict_inputs),
    output:
        **latents_output("results/predictions/{group}/{batch}/latents.parquet"),
        expression="results/predictions/{group}/{batch}/expression.parquet",
        metadata="results/predictions/{group}/{batch}/metadata.parquet",
        summary="results/predictions/{group}/{batch}/summary.json",
        # outputs: latents: the samples' latent vectors (none otherwise).
    log:
        "logs/predict/{group}/{batch}.log",
    localrule: True
    threads: 1
    resources:
        synthbio_api=get_in_flight,
    params:
        # Polling, self-hosted mode, URL rules, download bounds: not rerun triggers.
        **service_params(),
        # The batch's conditions in table order, and their models: not rerun triggers (a
        # changed batch rewrites its query folder, the input), so that -n stays readable.
        conditions=lambda wildcards, resources: get_batch(wildcards),
        model_id=lambda wildcards, resources: get_model_ids(wildcards),
        base_url=config["api_base_url"],
        as_counts=config["as_counts"],
        # Answered queries are remembered across runs, per output group (see README, "Reruns");
        # derived from the output, so that a module's prefix applies to it too.
        ticket_dir=lambda wildcards, output: os.path.join(
            os.path.dirname(os.path.dirname(output.expression)), ".tickets"
        ),
    wrapper:
        f"{WRAPPERS}/synthesize/predict"
