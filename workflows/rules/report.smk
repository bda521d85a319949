# Seeds -> per-cell statistics -> Markdown reports with figures.
rule aggregate:
    input:
        RUNS,
        MODEL_FILES,
        # the verdicts change with the tolerances and the headline claims: a changed file re-judges
        f"{workflow.basedir}/bench/tolerances.yaml",
        f"{workflow.basedir}/bench/claims/headlines.yaml",
    output:
        f"{RESULTS}/cells.csv",
        f"{RESULTS}/headlines.csv",
        f"{RESULTS}/companions.csv",
    params:
        seeds=",".join(map(str, SEEDS)),
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} aggregate --profile {PROFILE} --results {shlex.quote(config['results'])} --seed-list {{params.seeds}}"


rule report:
    input:
        f"{RESULTS}/cells.csv",
        f"{RESULTS}/headlines.csv",
    # Only the manifest (in results/) is an output: Snakemake deletes a job's outputs before it runs, and the
    # committed reports must survive a run that is not as full as theirs (`bench report` then writes beside them).
    output:
        REPORT_MANIFEST,
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} report --profile {PROFILE} --results {shlex.quote(config['results'])} "
        f"--reports {shlex.quote(config['reports'])}{REPLACE}"
        + (f" --only {shlex.quote(config['only'])}" if config["only"] else "")


# The papers' printed numbers checked against each other (registry alone), with what the real-data runs showed.
rule audit:
    input:
        list(Path(workflow.basedir, "bench", "claims").glob("*.csv")),
        f"{workflow.basedir}/bench/claims/headlines.yaml",
        # the implied epochs read the printed times through the grids' configured schedules (bench.cost.plan)
        list(Path(workflow.basedir, "bench", "grids").glob("*.yaml")),
        f"{workflow.basedir}/bench/profiles.yaml",
        # the findings of the runs (Karimi's Eq. 7 as printed) read the real-data profiles' results, once aggregated
        f"{RESULTS}/companions.csv",
    # reports/audit.md is not an output, for the reason given at `report`: `bench audit` keeps one with more findings
    output:
        AUDIT_DONE,
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} audit --out {shlex.quote(config['reports'] + '/audit.md')} --results {shlex.quote(config['results'])}"
        f"{REPLACE} 2>&1 > /dev/null | tee {{output:q}}"


# The last job: FAILED and DIVERGED runs counted with their first errors. A run that failed for good is recorded
# (the reports show it) and then makes the workflow exit non-zero here, after everything else was done.
rule summary:
    input:
        RUNS,
        REPORT_MANIFEST,
        AUDIT_DONE,
    output:
        f"{RESULTS}/summary.txt",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} failed --profile {PROFILE} --results {shlex.quote(config['results'])} --summary | tee {{output:q}}"
