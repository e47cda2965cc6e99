"""Real processes on loopback for the tests and the benchmarks alike: `cai-judge serve`
(service_process.py), redis-server, `vllm serve`, a free port, and the tiny random model.

Why here: a benchmark must not import the test tree (DESIGN.md §8), and both start the
same processes the same way, so the one copy lives in the package both import. Nothing
in the service imports this; it only spawns the service (never imports it), and its heavy
imports (torch, for the tiny model) are made inside the function that needs them.
"""
