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
        expression="results/predictions/{modality}/{batch}/expression.parquet",
        metadata="results/predictions/{modality}/{batch}/metadata.parquet",
        summary="results/predictions/{modality}/{batch}/summary.json",
    log:
        "logs/predict/{modality}/{batch}.log",
    localrule: True
    threads: 1
    resources:
        synthbio_api=get_in_flight,
    params:
        # The batch's conditions in table order, and their models: not rerun triggers (a
        # changed batch rewrites its query folder, the input), so that -n stays readable.
        conditions=lambda wildcards, resources: get_batch(wildcards),
        model_id=lambda wildcards, resources: get_model_ids(wildcards),
        base_url=config["api_base_url"],
        as_counts=config["as_counts"],
        # Answered queries are remembered across runs, per modality (see README, "Reruns");
        # derived from the output, so that a module's prefix applies to it too.
        ticket_dir=lambda wildcards, output: os.path.join(
            os.path.dirname(os.path.dirname(output.expression)), ".tickets"
        ),
        # Functions of `resources` are not rerun triggers: changing how often or how
        # long to poll must not buy finished predictions again.
        poll_interval=lambda wildcards, resources: config["poll_interval_seconds"],
        poll_timeout=lambda wildcards, resources: config["poll_timeout_seconds"],
        resubmit_failed=lambda wildcards, resources: config["resubmit_failed"],
        # Seconds between two "running for N s" lines of a waiting query in the log.
        heartbeat=lambda wildcards, resources: config["progress_interval_seconds"],
        # Bounds of each result download (size per sample asked, deadline): config `download`.
        download_limits=lambda wildcards, resources: config["download"],
    wrapper:
        f"{WRAPPERS}/synthesize/predict"
