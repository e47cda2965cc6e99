"""Transport-neutral use cases (DESIGN.md §8): labels, constitutions, jobs, revisions.

The HTTP routes, the gRPC servicer, the worker and the CLI call these; each raises the typed
errors of `errors.py`, which every wire maps once, so one situation gets one answer.
"""
