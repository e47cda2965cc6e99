"""SL-CAI without an engine (sl_cai/, DESIGN.md §1): constitution versions with and without
`revision_examples`, the seeded choice of a revisable principle, and the prompt schema.

The chain itself, on the real engine, is tests/e2e/test_sl_cai.py.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from cai_judge.labeling.constitution import ConstitutionRegistry, parse_constitution
from cai_judge.sl_cai.reviser import (
    NoRevisablePrinciples,
    principle_seed,
    revisable_principles,
    sample_principle,
)
from cai_judge.sl_cai.schema import RevisionPrompt
from tests.support.revisions import EXAMPLE, mixed_constitution

# The shipped constitutions' versions before `revision_examples` existed: adding an
# optional field must never change a stored version (DESIGN.md §1). `harmless` and
# `helpful-harmless` were reworded since (non-evasive principles); these versions are kept
# under constitutions/earlier/ and must still resolve, to the same hash.
SHIPPED_VERSIONS = {
    "coding-assistant": "50be965a55cde2dbd2424fcf9e76d3fb5d2452af4d8b6341c769a6d3627ac960",
    "harmless": "a6e7e4b62c512f727c2e556293859ea1befe7027608222b219fee658cc4f63ca",
    "helpful-harmless": "68775140db3e9d7e1af6b4e903ca00bd7fdebae7327ce9fdeb8e417bc7c4dc19",
}


def test_shipped_constitution_versions_are_unchanged(registry: ConstitutionRegistry):
    for constitution_id, version in SHIPPED_VERSIONS.items():
        for spec in (registry.resolve(f"{constitution_id}@{version}"),
                     registry.resolve(constitution_id)):  # fmt: skip
            assert spec.revision_examples is None
            assert "revision_examples" not in json.loads(spec.canonical_json())
        assert registry.resolve(f"{constitution_id}@{version}").version == version


def test_revision_examples_are_part_of_the_version_when_present():
    plain = mixed_constitution()
    with_examples = mixed_constitution(revision_examples=[EXAMPLE])
    assert plain.version != with_examples.version
    assert json.loads(with_examples.canonical_json())["revision_examples"] == [EXAMPLE]


def test_principle_sampling_is_seeded_and_only_picks_revisable_principles(
    registry: ConstitutionRegistry,
):
    spec = registry.resolve("harmless")
    eligible = revisable_principles(spec)
    # The seed is sha256 of [prompt, version, request seed, round]: recomputed by hand.
    material = json.dumps(["Hi", spec.version, 7, 2], separators=(",", ":"))
    expected = int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big")
    assert principle_seed("Hi", spec.version, 7, 2) == expected
    picked = sample_principle(eligible, expected)
    assert picked is eligible[random.Random(expected).randrange(len(eligible))]
    seen = {sample_principle(eligible, principle_seed(f"q{i}", spec.version, 0, 1)).id
            for i in range(200)}  # fmt: skip
    assert len(seen) > len(eligible) // 2  # spread over the constitution
    mixed = mixed_constitution()
    assert [p.id for p in revisable_principles(mixed)] == ["revisable"]
    with pytest.raises(NoRevisablePrinciples, match="no principle with both"):
        revisable_principles(
            parse_constitution({"id": "x", "principles": [{"id": "a", "question": "Q?"}]}, "t")
        )


def test_prompts_must_end_on_a_user_turn():
    with pytest.raises(ValueError, match="must end on a user turn"):
        RevisionPrompt.model_validate(
            {
                "id": "x",
                "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            }
        )
