"""The workflow's steps, Snakemake-free: the conditions table, the batch runner, the report."""
