# layerwise-bench: one job per (experiment, seed) and per measured model, then aggregate, then report.
#   snakemake --cores all                          the paper profile (default), the papers' own settings
#   snakemake --cores all --config profile=smoke   the whole DAG on synthetic stand-ins, minutes on a laptop CPU
# Targets come from the claims registry (bench/claims); rules live in workflows/rules/.
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/workflows/config.yaml"


include: "workflows/rules/common.smk"
include: "workflows/rules/setup.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/measure.smk"
include: "workflows/rules/report.smk"
include: "workflows/rules/worker.smk"


rule all:
    input:
        REPORT_MANIFEST,
        AUDIT_DONE,
        f"{RESULTS}/summary.txt",
    default_target: True
