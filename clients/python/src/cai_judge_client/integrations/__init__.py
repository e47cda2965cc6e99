"""Drop-in reward functions for RL trainers over `POST /v1/rewards` (docs/DESIGN.md §9).

One module per trainer, each a thin shell over `_core.RewardCaller` (total timeout, fallback,
logged and counted errors): `trl` (GRPOTrainer, group and reference modes), `openrlhf`
(`--reward.remote_url FILE.py`), `verl` (async `compute_score`), `slime` (`--group-rm`).
Importing one never imports its trainer.
"""
