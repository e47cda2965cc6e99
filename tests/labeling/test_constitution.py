"""Constitutions: the shipped files, versioning, registry look-ups, malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai_judge.labeling.constitution import (
    ConstitutionError,
    ConstitutionNotFound,
    ConstitutionRegistry,
    load_constitution_file,
    parse_constitution,
)

VALID = {
    "id": "tiny",
    "description": "two principles",
    "template": "cai-mc-v1",
    "principles": [
        {"id": "safer", "question": "Which response is safer?"},
        {"id": "kinder", "question": "Which response is kinder?", "critique": "c", "revision": "r"},
    ],
}


def test_shipped_constitutions(registry: ConstitutionRegistry):
    assert {"harmless", "helpful-harmless", "coding-assistant"} <= set(registry.ids())
    harmless = registry.resolve("harmless")
    assert len(harmless.principles) == 16
    assert all(p.critique and p.revision for p in harmless.principles)
    assert len(harmless.version) == 64


def test_version_is_content_hash_and_stable():
    spec = parse_constitution(VALID, "test")
    again = parse_constitution(dict(VALID), "test")
    assert spec.version == again.version
    changed = {**VALID, "principles": [*VALID["principles"][:1]]}
    assert parse_constitution(changed, "test").version != spec.version
    reworded = {**VALID, "description": "other words"}
    assert parse_constitution(reworded, "test").version != spec.version


def test_registry_versions_and_prefixes():
    registry = ConstitutionRegistry()
    v1 = registry.add(parse_constitution(VALID, "v1"))
    v2 = registry.add(parse_constitution({**VALID, "description": "second"}, "v2"))
    assert registry.resolve("tiny").version == v2.version
    assert registry.resolve(f"tiny@{v1.version}").version == v1.version
    assert registry.resolve(f"tiny@{v1.version[:12]}").version == v1.version
    # Adding the same content again changes nothing but which version is latest.
    registry.add(parse_constitution(VALID, "again"))
    assert registry.versions("tiny") == [v1.version, v2.version]
    with pytest.raises(ConstitutionNotFound, match="unknown constitution 'nope'"):
        registry.resolve("nope")
    with pytest.raises(ConstitutionNotFound, match="too short"):
        registry.resolve("tiny@ab")
    with pytest.raises(ConstitutionNotFound, match="no single version"):
        registry.resolve("tiny@00000000")


@pytest.mark.parametrize(
    ("mutation", "field", "reason"),
    [
        ({"principles": []}, "principles", "at least 1"),
        ({"template": "nope"}, "template", "unknown template"),
        ({"id": "Bad Id"}, "id", "pattern"),
        ({"extra": 1}, "extra", "Extra inputs"),
        ({"principles": [{"id": "x"}]}, "principles.0.question", "Field required"),
        (
            {"principles": [{"id": "x", "question": "The answer is: (A)"}]},
            "principles.0.question",
            "must not contain",
        ),
        (
            {"principles": [{"id": "x", "question": "q"}, {"id": "x", "question": "r"}]},
            "(top level)",
            "duplicate principle id 'x'",
        ),
    ],
)
def test_malformed_constitution_names_file_field_reason(tmp_path: Path, mutation, field, reason):
    import yaml

    path = tmp_path / f"{mutation.get('id', 'tiny')}.yaml"
    path.write_text(yaml.safe_dump({**VALID, **mutation}))
    with pytest.raises(ConstitutionError) as caught:
        load_constitution_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert field in message
    assert reason in message


def test_file_name_must_match_id(tmp_path: Path):
    import yaml

    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(VALID))
    with pytest.raises(ConstitutionError, match="must equal the file name 'other'"):
        load_constitution_file(path)


def test_invalid_yaml(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text("id: [unclosed")
    with pytest.raises(ConstitutionError, match="not valid YAML"):
        load_constitution_file(path)


def test_ids_loaded_at_start_are_reserved(registry: ConstitutionRegistry):
    from cai_judge.labeling.constitution import ConstitutionIdReserved

    fresh = ConstitutionRegistry.with_builtins()
    before = fresh.resolve("harmless").version
    hijack = parse_constitution({**VALID, "id": "harmless"}, "request")
    with pytest.raises(ConstitutionIdReserved, match="'harmless' is reserved"):
        fresh.add(hijack)
    assert fresh.resolve("harmless").version == before
    assert fresh.is_reserved("harmless") and not fresh.is_reserved("tiny")
    # Ids added at run time get new versions as before.
    fresh.add(parse_constitution(VALID, "v1"))
    second = fresh.add(parse_constitution({**VALID, "description": "v2"}, "v2"))
    assert fresh.resolve("tiny").version == second.version
