"""Stage 8, from result files to verdicts: cells.csv and headlines.csv (aggregate.py), the statistics (stats.py),
the per-cell verdicts and their bands (cells.py, bench/tolerances.yaml), the headline claims tested on the runs
(headlines.py), each method's runs against chance (learning.py), and `bench power`'s simulation of the rule."""
