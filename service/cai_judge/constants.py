"""Limits shared by the wire schemas and the domain: pure data (DESIGN.md §8)."""

from __future__ import annotations

from typing import Literal

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

# -- labeling defaults, each written once (DESIGN.md §8) ----------------------------------
# `LabelOptions` (labeling/options.py) carries them; the settings, the wire models, the
# proto's unset fields and the CLI's flags read them from there or from here, and
# tests/test_option_defaults.py fails when any of them drifts.
DEFAULT_PRINCIPLES: Literal["all"] = "all"
DEFAULT_SEED = 0
# Rationale tokens per (principle, order) when the caller names none (capped by a
# service's CAI_JUDGE_MAX_COT_TOKENS).
DEFAULT_COT_TOKENS = 128
# A label whose answer tokens hold less probability mass than this is `low_confidence`.
DEFAULT_LOW_MASS_THRESHOLD = 0.5
# CoT: each order's probability is clamped to [1 - this, this] (CAI §4.1 used 0.6).
DEFAULT_COT_MAX_PROBABILITY = 0.6
