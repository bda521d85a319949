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
        f"{BENCH} aggregate --profile {PROFILE} --results {config['results']} --seeds {{params.seeds}}"


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


# The papers' printed numbers checked against each other, from the registry alone (no run needed).
rule audit:
    input:
        list(Path(workflow.basedir, "bench", "claims").glob("*.csv")),
        f"{workflow.basedir}/bench/claims/headlines.yaml",
    output:
        f"{config['reports']}/audit.md",
    conda:
        CONDA_ENV
    shell:
        f"{BENCH} audit --out {{output}} > /dev/null"
