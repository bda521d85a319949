"""layerwise-bench: reproduce the claims of four papers on layer-wise and efficient CNN training.

The package's folders are the pipeline's stages, in the order the data flows through them; a module imports from
its own stage and the ones above it, never from a later one (tests/test_stages.py):

  bench/__init__.py, schema.py   the base: BenchError, the JSON schemas of the YAML data files
  claims/                        what the papers claim: the registry of printed cells, the dataset catalog, the
                                 headline claims, the audit of the printed numbers
  experiments.py                 what runs: the experiments behind the cells, their configs from the grids
                                 (grids/) scaled by the profiles (profiles.yaml)
  data/, models/, methods/       how one run trains: datasets and batches, networks, training methods
  run/                           the jobs: `bench run` and its result file, `bench measure`, MLflow, the warm worker
  cost/                          beside the jobs, what they cost: `bench plan`, `bench perf`, `bench devicecheck`
  verdicts/                      result files -> statistics and verdicts (`bench aggregate`, tolerances.yaml)
  report/                        the Markdown reports (`bench report`, `bench audit`)
  cli.py                         the command line on top: argument parsing that calls into the stages

The Snakefile wires these together as one job per (experiment, seed).
"""

__version__ = "0.1.0"


class BenchError(Exception):
    """An error the user can act on: the CLI prints its message on one line and exits non-zero."""
