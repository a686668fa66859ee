"""`make perf`: where the time goes, as ratios against baselines measured in the same run.

Not part of the code a run imports (benchmarks, models, strategies, experiments):
a benchmark script of its own, run from the repository's root.

    python -m perf [--tiny] [--out docs/PERFORMANCE.md]      # CPU rows, the report
    python -m perf --gpu --json docs/perf_gpu.json           # GPU rows, on a CUDA machine

- `timing`: rows, repeats timed in turns, medians and spreads;
- `cpu`: the CPU rows (loaders, loops, frozen features, EWC, stream building, CLI, memory);
- `gpu`: the GPU rows;
- `report`: docs/PERFORMANCE.md.
"""
