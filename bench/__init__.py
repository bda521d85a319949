"""layerwise-bench: reproduce the claims of four papers on layer-wise and efficient CNN training.

The registry (bench/claims) says what the papers claim; the grids (bench/grids) say how each
experiment is configured; `bench run` trains one experiment for one seed; `bench aggregate` and
`bench report` turn the result files into statistics and Markdown reports. The Snakefile wires
these together as one job per (experiment, seed).
"""

__version__ = "0.1.0"


class BenchError(Exception):
    """An error the user can act on: the CLI prints its message on one line and exits non-zero."""
