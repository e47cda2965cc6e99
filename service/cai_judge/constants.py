"""Limits shared by the wire schemas and the domain: pure data (DESIGN.md §8)."""

from __future__ import annotations

# Seeds travel as JSON numbers; above 2**53 - 1 a float64 JSON parser (JavaScript, many
# fuzzers) rounds them, and a schema-valid seed then arrives as another number.
MAX_SEED = 2**53 - 1
# Principles sampled per pair: also the most a constitution may hold.
MAX_PRINCIPLES = 256
# Rationale tokens per (principle, order) in CoT mode: the most any request may ask for.
MAX_COT_TOKENS = 1024
# Tokens one SL-CAI generation (initial response, critique, revision) may ask for.
MAX_GENERATION_TOKENS = 4096
# Group rewards (services/group_rewards.py): the longest a sample may wait for its group. The
# wait, the judgement and the grace stay under OpenRLHF's 180 s and slime's 120 s timeouts.
MAX_GROUP_WAIT_S = 30.0
