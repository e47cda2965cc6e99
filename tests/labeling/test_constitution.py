"""Constitutions: the shipped files, versioning, registry look-ups, malformed files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

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


# The built-ins' versions before their principles stated non-evasiveness (issue 32).
EARLIER_BUILTINS = {
    "harmless": "a6e7e4b62c512f727c2e556293859ea1befe7027608222b219fee658cc4f63ca",
    "helpful-harmless": "68775140db3e9d7e1af6b4e903ca00bd7fdebae7327ce9fdeb8e417bc7c4dc19",
}


def test_shipped_constitutions(registry: ConstitutionRegistry):
    assert {"harmless", "helpful-harmless", "coding-assistant"} <= set(registry.ids())
    harmless = registry.resolve("harmless")
    assert len(harmless.principles) == 16
    assert all(p.critique and p.revision for p in harmless.principles)
    assert len(harmless.version) == 64


@pytest.mark.parametrize("constitution_id", sorted(EARLIER_BUILTINS))
def test_harm_constitutions_state_non_evasiveness(
    registry: ConstitutionRegistry, constitution_id: str
) -> None:
    """As the CAI paper's principles did: harmless without being evasive, a refusal
    explains its objection (issue 32)."""
    spec = registry.resolve(constitution_id)
    principle = spec.principle("not-evasive")
    assert "evasive" in principle.question and "objection" in principle.question
    assert principle.critique and principle.revision
    assert "non-evasive" in spec.description


@pytest.mark.parametrize(("constitution_id", "version"), sorted(EARLIER_BUILTINS.items()))
def test_earlier_builtin_versions_still_resolve(
    registry: ConstitutionRegistry, constitution_id: str, version: str
) -> None:
    """Labels, jobs and calibration profiles name the version that made them; rewording
    a built-in must not orphan them (DESIGN.md §1: versions never change once stored)."""
    latest = registry.resolve(constitution_id)
    assert latest.version != version
    assert registry.resolve(f"{constitution_id}@{version[:12]}").version == version
    assert registry.versions(constitution_id) == [version, latest.version]
    assert "not-evasive" not in registry.resolve(f"{constitution_id}@{version}").principle_ids


def _earlier_folder(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """An operator folder whose `tiny` has a current and an earlier version."""
    (tmp_path / "earlier").mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**VALID, "description": "now"}))
    return tmp_path, {**VALID, "description": "before"}


def test_earlier_versions_load_first_and_the_current_file_is_latest(tmp_path: Path) -> None:
    folder, before = _earlier_folder(tmp_path)
    version = parse_constitution(before, "t").version
    (folder / "earlier" / f"tiny@{version[:12]}.yaml").write_text(yaml.safe_dump(before))
    registry = ConstitutionRegistry.with_builtins([folder])
    assert registry.resolve("tiny").description == "now"
    assert registry.resolve(f"tiny@{version[:8]}").description == "before"
    assert registry.versions("tiny")[0] == version
    assert registry.is_reserved("tiny")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tiny@{v}", "must never change"),  # the text was edited after it was named
        ("tiny", "<id>@<version prefix>"),
        ("tiny@{short}", "at least 8 hex digits"),
        ("other@{right}", "must equal the file name's 'other'"),
    ],
)
def test_earlier_version_file_names_pin_id_and_version(
    tmp_path: Path, name: str, reason: str
) -> None:
    folder, before = _earlier_folder(tmp_path)
    right = parse_constitution(before, "t").version
    stale = parse_constitution({**before, "description": "edited"}, "t").version
    file_name = name.format(v=stale[:12], short=right[:6], right=right[:12])
    (folder / "earlier" / f"{file_name}.yaml").write_text(yaml.safe_dump(before))
    with pytest.raises(ConstitutionError, match=re.escape(reason)):
        ConstitutionRegistry.with_builtins([folder])


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
