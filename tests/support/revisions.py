"""A constitution and a worked example for the SL-CAI tests, engine and no engine alike."""

from __future__ import annotations

from typing import Any

from cai_judge.labeling.constitution import parse_constitution

EXAMPLE = {
    "prompt": "EXAMPLE-PROMPT",
    "response": "EXAMPLE-RESPONSE",
    "critique_request": "EXAMPLE-CRITIQUE-REQUEST",
    "critique": "EXAMPLE-CRITIQUE",
    "revision_request": "EXAMPLE-REVISION-REQUEST",
    "revision": "EXAMPLE-REVISION",
}


def mixed_constitution(**extra: Any) -> Any:
    """Two principles, only the second revisable, and optional extra fields."""
    return parse_constitution(
        {
            "id": "mixed",
            "principles": [
                {"id": "judge-only", "question": "Which is kinder?"},
                {
                    "id": "revisable",
                    "question": "Which is safer?",
                    "critique": "CRITIQUE-REQUEST",
                    "revision": "REVISION-REQUEST",
                },
            ],
            **extra,
        },
        "test",
    )
