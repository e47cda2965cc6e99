"""The constitution registry in Redis (store/constitutions.py) without an app: an id that one
replica reserves (it ships a file of that id) is refused on another replica that has no such
file, and the other still serves the reserving replica's version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cai_judge.labeling.constitution import SharedConstitutionRegistry
from cai_judge.store.constitutions import RedisConstitutionStore


def test_an_id_reserved_by_one_replica_is_refused_on_another(redis_url: str, tmp_path: Path):
    folder = tmp_path / "ops"
    folder.mkdir()
    (folder / "house-rules.yaml").write_text(
        "id: house-rules\nprinciples:\n  - id: kind\n    question: Which is kinder?\n"
    )
    with_folder = SharedConstitutionRegistry.over(
        RedisConstitutionStore.connect(redis_url), [folder]
    )
    without = SharedConstitutionRegistry.over(RedisConstitutionStore.connect(redis_url))
    assert without.is_reserved("house-rules")
    from cai_judge.labeling.constitution import ConstitutionIdReserved, ConstitutionSpec

    spec = ConstitutionSpec.model_validate(
        {"id": "house-rules", "principles": [{"id": "x", "question": "Which is shorter?"}]}
    )
    with pytest.raises(ConstitutionIdReserved, match="reserved"):
        without.add(spec)
    assert without.resolve("house-rules").principle_ids == ["kind"]
    with_folder.close()
    without.close()
