# Stage 1: one query per condition, in the API's wire format.


rule write_query:
    output:
        "results/queries/{condition}.json",
    log:
        "logs/queries/{condition}.log",
    localrule: True
    conda:
        "../envs/synthbio.yaml"
    params:
        condition=get_condition,
        # The request itself: a change to the row reruns this condition (and only it).
        body=get_wire_body,
    script:
        "../scripts/write_query.py"
