"""Measuring a judge against gold preferences: metrics, protocols, reports.

Layering: `metrics` and `protocols` are pure; `gold` reads files; `runner` drives the
`Judge`; `report` renders. The CLI sits on top (cli → evaluation → labeling → engine).
"""
