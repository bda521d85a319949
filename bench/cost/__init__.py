"""Beside the jobs, what they cost: the cost planner (`bench plan`), the training-step benchmarks (`bench perf`,
`bench data benchmark`) and the short GPU-window check (`bench devicecheck`)."""
