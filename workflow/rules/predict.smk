# Stage 2: submit each query, poll it, download and parse the result (a paid API call).
# The token is read from the environment inside the job; it is never a parameter.


rule predict:
    input:
        query="results/queries/{condition}.json",
    output:
        expression="results/predictions/{condition}/expression.parquet",
        metadata="results/predictions/{condition}/metadata.parquet",
    log:
        "logs/predict/{condition}.log",
    resources:
        synthbio_api=1,
    params:
        model_id=get_model_id,
        condition="{condition}",
        base_url=config["api_base_url"],
        as_counts=config["as_counts"],
        # Functions of `resources` are not rerun triggers: changing how often or how
        # long to poll must not buy finished predictions again.
        poll_interval=lambda wildcards, resources: config["poll_interval_seconds"],
        poll_timeout=lambda wildcards, resources: config["poll_timeout_seconds"],
        resubmit_failed=lambda wildcards, resources: config["resubmit_failed"],
    wrapper:
        f"{WRAPPERS}/synthesize/predict"
