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
        f"{BENCH} aggregate --profile {PROFILE} --results {config['results']} --seed-list {{params.seeds}}"


rule report:
    input:
        f"{RESULTS}/cells.csv",
        f"{RESULTS}/headlines.csv",
    output:
        REPORT_MANIFEST,
        REPORTS,
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} report --profile {PROFILE} --results {config['results']} --reports {config['reports']}"
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
    output:
        f"{config['reports']}/audit.md",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} audit --out {{output}} --results {config['results']} > /dev/null"


# The last job: FAILED and DIVERGED runs counted with their first errors. A run that failed for good is recorded
# (the reports show it) and then makes the workflow exit non-zero here, after everything else was done.
rule summary:
    input:
        RUNS,
        REPORT_MANIFEST,
        f"{config['reports']}/audit.md",
    output:
        f"{RESULTS}/summary.txt",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} failed --profile {PROFILE} --results {config['results']} --summary | tee {{output}}"
