"""What the label cache keys on (engine/identity.py, engine/caching.py), without an engine.

Why: the cache once keyed on the `dtype` setting, not the dtype the engine ran in, and a
checkpoint's identity must follow its files, not its path. The digest runs on copies of the
tiny model's files; what the real engine reports is tests/e2e/test_engine_identity.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from cai_judge.engine.base import ScoreUnit
from cai_judge.engine.caching import model_identity, unit_digest
from cai_judge.engine.identity import EngineIdentity, checkpoint_digest


def test_the_checkpoint_digest_follows_the_files_not_the_path(tiny_model_dir: Path, tmp_path: Path):
    here = shutil.copytree(tiny_model_dir, tmp_path / "here" / "tiny")
    there = shutil.copytree(tiny_model_dir, tmp_path / "there" / "tiny")
    digest = checkpoint_digest(str(here))
    assert digest.startswith("sha256:") and digest == checkpoint_digest(str(there))
    # Retrained: same names and sizes, other numbers (past the safetensors header).
    weights = there / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 100] ^= 0xFF
    weights.write_bytes(bytes(data))
    retrained = checkpoint_digest(str(there))
    assert retrained != digest
    # Another architecture setting, same weights.
    config = json.loads((here / "config.json").read_text())
    config["rope_theta"] = float(config.get("rope_theta") or 10000.0) * 2
    (here / "config.json").write_text(json.dumps(config))
    assert checkpoint_digest(str(here)) not in (digest, retrained)
    assert checkpoint_digest("HuggingFaceTB/SmolLM2-135M-Instruct") == ""  # a hub ID


def test_cache_keys_differ_across_identities():
    base = EngineIdentity(model="tiny", revision="sha256:ab", dtype="float32")
    unit = ScoreUnit((1, 2, 3), (5, 7), prefix_length=0)

    class Reports:
        def __init__(self, identity: EngineIdentity) -> None:
            self.identity = identity

    identities = [
        model_identity(Reports(base), ""),  # type: ignore[arg-type]
        model_identity(Reports(replace(base, dtype="bfloat16")), ""),  # type: ignore[arg-type]
        model_identity(Reports(replace(base, revision="sha256:cd")), ""),  # type: ignore[arg-type]
        model_identity(Reports(replace(base, model="other")), ""),  # type: ignore[arg-type]
        model_identity(Reports(base), "retrained-2026-12"),  # type: ignore[arg-type]
    ]
    digests = {unit_digest(identity, unit) for identity in identities}
    assert len(digests) == len(identities)
