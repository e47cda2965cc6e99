"""Constitutions: named, versioned lists of principles (DESIGN.md §1).

A version is the sha256 of the canonical JSON of the content, so the same principles
always get the same version wherever they are loaded, and a stored version never changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from cai_judge.labeling.templates import TEMPLATES
from cai_judge.labeling.validation import describe_validation_error
from cai_judge.store import keys

_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
Identifier = Annotated[str, Field(pattern=_ID_PATTERN)]
logger = logging.getLogger(__name__)
# Shorter prefixes than this would make "harmless@ab" ambiguous far too easily.
MIN_VERSION_PREFIX = 8


class ConstitutionError(ValueError):
    """A constitution that cannot be used, naming where and why."""


class ConstitutionNotFound(LookupError):
    pass


class ConstitutionIdReserved(ValueError):
    """An id loaded at start-up (built in, or the operator's folder) cannot get new versions
    at run time: every unpinned request for it would silently switch principles."""


class Principle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    question: Annotated[str, Field(min_length=1, max_length=1000)]
    critique: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    revision: Annotated[str, Field(min_length=1, max_length=2000)] | None = None

    @field_validator("question")
    @classmethod
    def _question_cannot_fake_the_answer_stem(cls, question: str) -> str:
        # The question is rendered right before the answer stem; text that looks like the
        # stem or an option marker would confuse which token position is being scored.
        for forbidden in ("The answer is", "(A)", "(B)"):
            if forbidden in question:
                raise ValueError(f"must not contain {forbidden!r}")
        return question.strip()


class RevisionExample(BaseModel):
    """One worked SL-CAI exchange, shown before the real one as earlier chat turns so the
    model sees which turn critiques and which revises (CAI §3; few-shot prompting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Annotated[str, Field(min_length=1, max_length=8000)]
    response: Annotated[str, Field(min_length=1, max_length=8000)]
    critique_request: Annotated[str, Field(min_length=1, max_length=2000)]
    critique: Annotated[str, Field(min_length=1, max_length=8000)]
    revision_request: Annotated[str, Field(min_length=1, max_length=2000)]
    revision: Annotated[str, Field(min_length=1, max_length=8000)]


class ConstitutionSpec(BaseModel):
    """The stored content of one version: exactly what is hashed."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "polite",
                    "description": "Politeness only.",
                    "template": "cai-mc-v1",
                    "principles": [{"id": "polite", "question": "Which response is more polite?"}],
                }
            ]
        },
    )

    id: Identifier
    description: Annotated[str, Field(max_length=2000)] = ""
    template: str = Field(
        default="cai-mc-v1", json_schema_extra={"enum": list[JsonValue](sorted(TEMPLATES))}
    )
    principles: Annotated[tuple[Principle, ...], Field(min_length=1, max_length=256)]
    # Few-shot examples for SL-CAI critique and revision. Left out of the canonical JSON
    # when absent, so constitutions written before this field keep their versions.
    revision_examples: (
        Annotated[tuple[RevisionExample, ...], Field(min_length=1, max_length=8)] | None
    ) = None

    @field_validator("template")
    @classmethod
    def _template_is_known(cls, template: str) -> str:
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; known: {sorted(TEMPLATES)}")
        return template

    @model_validator(mode="after")
    def _principle_ids_unique(self) -> ConstitutionSpec:
        seen: set[str] = set()
        for principle in self.principles:
            if principle.id in seen:
                raise ValueError(f"duplicate principle id {principle.id!r}")
            seen.add(principle.id)
        return self

    def canonical_json(self) -> str:
        content = self.model_dump(mode="json")
        # Optional fields added after the first release are hashed only when present
        # (a principle's critique/revision predate this rule and stay in as null).
        if content.get("revision_examples") is None:
            content.pop("revision_examples", None)
        return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @property
    def version(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def principle_ids(self) -> list[str]:
        return [p.id for p in self.principles]

    def principle(self, principle_id: str) -> Principle:
        for principle in self.principles:
            if principle.id == principle_id:
                return principle
        raise KeyError(principle_id)

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"


def parse_constitution(data: Any, source: str) -> ConstitutionSpec:
    """Validate raw content; errors name the source, the field and the reason."""
    if not isinstance(data, dict):
        raise ConstitutionError(f"{source}: expected a mapping at the top level")
    try:
        return ConstitutionSpec.model_validate(data)
    except ValidationError as error:
        raise ConstitutionError(f"{source}: {describe_validation_error(error)}") from None


def load_constitution_file(path: Path) -> ConstitutionSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConstitutionError(f"{path}: not valid YAML: {error}") from None
    spec = parse_constitution(data, str(path))
    if spec.id != path.stem:
        raise ConstitutionError(f"{path}: id: {spec.id!r} must equal the file name {path.stem!r}")
    return spec


def builtin_constitution_files() -> list[Path]:
    folder = resources.files("cai_judge") / "constitutions"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def constitution_paths(extra_dirs: Iterable[Path] = ()) -> list[Path]:
    """The built-in files, then each operator folder's, in a stable order."""
    paths = builtin_constitution_files()
    for folder in extra_dirs:
        if not folder.is_dir():
            raise ConstitutionError(f"{folder}: constitutions directory does not exist")
        paths.extend(sorted(folder.glob("*.yaml")))
    return paths


class ConstitutionRegistry:
    """Every known version of every constitution; the latest added is the default.

    Thread-safe because the HTTP service adds versions while requests read them.
    """

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, ConstitutionSpec]] = {}
        self._latest: dict[str, str] = {}
        self._reserved: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> ConstitutionRegistry:
        """Load files; their ids are reserved: only the files define them."""
        registry = cls()
        registry.load_files(paths)
        return registry

    def load_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self.add(load_constitution_file(path), reserve=True)

    @classmethod
    def with_builtins(cls, extra_dirs: Iterable[Path] = ()) -> ConstitutionRegistry:
        return cls.from_files(constitution_paths(extra_dirs))

    def is_reserved(self, constitution_id: str) -> bool:
        with self._lock:
            return constitution_id in self._reserved

    def add(self, spec: ConstitutionSpec, *, reserve: bool = False) -> ConstitutionSpec:
        """Store a version (a no-op when that exact content is already stored).

        `reserve` marks the id as defined at start-up; later adds of a reserved id without
        `reserve` raise ConstitutionIdReserved.
        """
        with self._lock:
            if spec.id in self._reserved and not reserve:
                raise ConstitutionIdReserved(
                    f"constitution id {spec.id!r} is reserved: it is loaded at start-up and "
                    "cannot get versions at run time; choose another id"
                )
            if reserve:
                self._reserved.add(spec.id)
            versions = self._versions.setdefault(spec.id, {})
            versions.setdefault(spec.version, spec)
            self._latest[spec.id] = spec.version
            return versions[spec.version]

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._versions)

    def versions(self, constitution_id: str) -> list[str]:
        with self._lock:
            if constitution_id not in self._versions:
                raise ConstitutionNotFound(f"unknown constitution {constitution_id!r}")
            return list(self._versions[constitution_id])

    def resolve(self, ref: str) -> ConstitutionSpec:
        """`id` gives the latest version; `id@version` (or a unique prefix of it) pins one."""
        constitution_id, _, version = ref.partition("@")
        with self._lock:
            versions = self._versions.get(constitution_id)
            if versions is None:
                known = ", ".join(sorted(self._versions)) or "none"
                raise ConstitutionNotFound(
                    f"unknown constitution {constitution_id!r} (known: {known})"
                )
            if not version:
                return versions[self._latest[constitution_id]]
            if len(version) < MIN_VERSION_PREFIX:
                raise ConstitutionNotFound(
                    f"version {version!r} of {constitution_id!r} is too short: "
                    f"give at least {MIN_VERSION_PREFIX} hex digits"
                )
            matches = [v for v in versions if v.startswith(version)]
            if len(matches) != 1:
                raise ConstitutionNotFound(
                    f"no single version of {constitution_id!r} starts with {version!r}"
                )
            return versions[matches[0]]


class ConstitutionStoreUnavailable(RuntimeError):
    """The shared registry (Redis) cannot be reached to store a new version."""


# Adds one version atomically: refuses a reserved id, never overwrites a stored version,
# and appends it to the id's ordered version list only the first time it is stored.
_ADD_SCRIPT = """
if ARGV[4] == '0' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
if ARGV[4] == '1' then redis.call('SADD', KEYS[1], ARGV[1]) end
local added = redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
if added == 1 then redis.call('RPUSH', KEYS[3], ARGV[2]) end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[1])
return added
"""


class RedisConstitutionRegistry(ConstitutionRegistry):
    """The registry shared by every replica through Redis (DESIGN.md §5).

    Reserved ids (built-ins, the operator's folder) come from files that every replica
    loads, so they are served from memory and never wait on Redis: labels against them
    keep flowing while Redis is down. Ids added at run time live in Redis, and every
    replica sees a new version on its next request. Stored versions never change, so
    each is parsed once and memoized; only "which version is latest" is read per request.

    The registry's interface is synchronous (the Judge, the CLI and both transports call
    it), so this uses redis-py's blocking client with sub-second timeouts: one round trip
    per unpinned request for a run-time id. When Redis is down, reads fall back to the
    versions this replica has seen, and adds fail with ConstitutionStoreUnavailable (503).
    """

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._redis = client
        self._add_script = client.register_script(_ADD_SCRIPT)
        self._local_reserved: set[str] = set()

    @classmethod
    def connect(cls, url: str, extra_dirs: Iterable[Path] = ()) -> RedisConstitutionRegistry:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        registry = cls(client)
        registry.load_files(constitution_paths(extra_dirs))
        return registry

    def close(self) -> None:
        self._redis.close()

    def _call_redis(self, what: str, call: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return call()
        except RedisError as error:
            raise ConstitutionStoreUnavailable(
                f"the constitution registry (Redis) is unreachable while {what}: {error}; "
                "retry, or check CAI_JUDGE_REDIS_URL"
            ) from None

    def _store(self, spec: ConstitutionSpec, reserve: bool) -> int:
        return int(
            self._add_script(
                keys=[
                    keys.CONSTITUTION_RESERVED,
                    keys.constitution_versions(spec.id),
                    keys.constitution_order(spec.id),
                    keys.CONSTITUTION_LATEST,
                    keys.CONSTITUTION_IDS,
                ],
                args=[spec.id, spec.version, spec.canonical_json(), "1" if reserve else "0"],
            )
        )

    def is_reserved(self, constitution_id: str) -> bool:
        if super().is_reserved(constitution_id):
            return True
        try:
            return bool(self._redis.sismember(keys.CONSTITUTION_RESERVED, constitution_id))
        except Exception:
            return False

    def add(self, spec: ConstitutionSpec, *, reserve: bool = False) -> ConstitutionSpec:
        if reserve:
            stored = super().add(spec, reserve=True)
            try:  # so other replicas refuse run-time versions of this id as well
                self._store(spec, reserve=True)
            except Exception as error:
                logger.warning("could not publish reserved constitution %s: %r", spec.id, error)
            return stored
        if super().is_reserved(spec.id):
            return super().add(spec)  # raises ConstitutionIdReserved
        outcome = self._call_redis(f"adding {spec.id!r}", lambda: self._store(spec, False))
        if outcome == -1:
            raise ConstitutionIdReserved(
                f"constitution id {spec.id!r} is reserved: another replica loads it at "
                "start-up, so it cannot get versions at run time; choose another id"
            )
        return super().add(spec)

    def ids(self) -> list[str]:
        local = set(super().ids())
        try:
            shared = {m.decode() for m in self._redis.smembers(keys.CONSTITUTION_IDS)}
        except Exception as error:
            logger.warning("constitution ids from memory only, Redis failed: %r", error)
            shared = set()
        return sorted(local | shared)

    def _fetch(self, constitution_id: str, version: str) -> ConstitutionSpec | None:
        """One stored version, memoized: versions never change once stored."""
        with self._lock:
            known = self._versions.get(constitution_id, {}).get(version)
        if known is not None:
            return known
        raw = self._redis.hget(keys.constitution_versions(constitution_id), version)
        if raw is None:
            return None
        spec = parse_constitution(json.loads(raw), f"redis {constitution_id}@{version[:12]}")
        with self._lock:
            self._versions.setdefault(constitution_id, {}).setdefault(version, spec)
            self._latest.setdefault(constitution_id, version)
        return spec

    def _sync(self, constitution_id: str) -> None:
        """Bring this id's versions and latest pointer up to date from Redis."""
        order = [
            v.decode() for v in self._redis.lrange(keys.constitution_order(constitution_id), 0, -1)
        ]
        latest = self._redis.hget(keys.CONSTITUTION_LATEST, constitution_id)
        for version in order:
            self._fetch(constitution_id, version)
        if latest is not None:
            with self._lock:
                if latest.decode() in self._versions.get(constitution_id, {}):
                    self._latest[constitution_id] = latest.decode()

    def versions(self, constitution_id: str) -> list[str]:
        if not super().is_reserved(constitution_id):
            self._sync_quietly(constitution_id)
        return super().versions(constitution_id)

    def resolve(self, ref: str) -> ConstitutionSpec:
        constitution_id = ref.partition("@")[0]
        if not super().is_reserved(constitution_id):
            self._sync_quietly(constitution_id)
        return super().resolve(ref)

    def _sync_quietly(self, constitution_id: str) -> None:
        try:
            self._sync(constitution_id)
        except Exception as error:  # serve what this replica has seen
            logger.warning(
                "constitution %r from memory only, Redis failed: %r", constitution_id, error
            )
