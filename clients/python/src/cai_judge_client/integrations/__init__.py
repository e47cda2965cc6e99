"""Drop-in reward functions for RL trainers over `POST /v1/rewards` (docs/DESIGN.md §9).

One module per trainer, each a thin shell over `_core.RewardCaller` (requests sized to the
server's limits, bounded concurrency, one deadline, neutral flagged fallbacks, configuration
errors raised as `JudgeConfigurationError`): `trl` (GRPOTrainer, group and reference modes),
`openrlhf` (`--reward.remote_url FILE.py`), `verl` (async `compute_score`), `slime`
(`--group-rm`). Importing one never imports its trainer.
"""

from cai_judge_client.integrations._core import JudgeConfigurationError, RewardStats

__all__ = ["JudgeConfigurationError", "RewardStats"]
