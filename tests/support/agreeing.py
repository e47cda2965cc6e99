"""A fake judge whose principles agree: each prefers the "carefully" response of
tests/support/api.py's pairs by about 1.3 nats, with a little per-unit noise. Adaptive
ensembles (labeling/ensemble.py) stop early on it, as on real judges' pairs; the fake
engine's default numbers are noise, on which they score every principle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cai_judge.engine.base import ScoreUnit
from tests.support.fake_engine import fake_logprobs


def preferring(tokenizer: Any) -> Callable[[ScoreUnit], tuple[float, float]]:
    """Log-probs for a FakeEngine's `logprobs`, favouring whichever option holds the
    "carefully" response."""
    careful = tokenizer.encode("carefully", add_special_tokens=False)[0]
    quick = tokenizer.encode("quickly", add_special_tokens=False)[0]

    def logprobs(unit: ScoreUnit) -> tuple[float, float]:
        ids = unit.prompt_token_ids
        noise_a, noise_b = fake_logprobs(unit)
        favoured, other = -0.3 + noise_a / 40, -1.6 + noise_b / 40
        return (favoured, other) if ids.index(careful) < ids.index(quick) else (other, favoured)

    return logprobs
