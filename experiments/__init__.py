"""Runnable studies: configs, the benchmark runner, results and the `iqacl` CLI.

Heavy imports (torch, Avalanche) happen inside the functions that need them,
so `iqacl --help` is instant.
"""
