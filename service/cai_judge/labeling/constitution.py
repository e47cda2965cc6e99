"""Constitutions: named, versioned lists of principles (DESIGN.md §1).

A version is the sha256 of the canonical JSON of the content, so the same principles
always get the same version wherever they are loaded, and a stored version never changes.

A constitution loaded from a file (built in, or the operator's folder) that is reworded
gets a new version, and labels, jobs and calibration profiles that name the old one must
still resolve it: the old text is kept in the folder's `earlier/` subfolder as
`<id>@<version prefix>.yaml`, loaded before the current file, so `id` gives the current
text and `id@<old version>` the old. The file name pins the version: an edit to an earlier
file's text is refused at load, as a stored version never changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

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

# `cai_judge.store.errors` (it imports redis-py: ~0.2 s idle, more on a busy machine) is
# imported by the SharedConstitutionRegistry methods that catch its StoreUnavailable: only
# servers build that registry, and every `cai-judge` command imports this module.

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

    @cached_property
    def version(self) -> str:
        # Cached: the spec is frozen, and labeling reads the version once per pair (a
        # SHA-256 over every principle's text each time was ~4% of a reward request).
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


# A constitution folder's subfolder of earlier versions (see the module docstring).
EARLIER_FOLDER = "earlier"


def load_constitution_file(path: Path) -> ConstitutionSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConstitutionError(f"{path}: not valid YAML: {error}") from None
    spec = parse_constitution(data, str(path))
    if path.parent.name == EARLIER_FOLDER:
        _check_earlier_name(path, spec)
    elif spec.id != path.stem:
        raise ConstitutionError(f"{path}: id: {spec.id!r} must equal the file name {path.stem!r}")
    return spec


def _check_earlier_name(path: Path, spec: ConstitutionSpec) -> None:
    """An earlier version's file is named `<id>@<version prefix>`: both must match."""
    name_id, at, prefix = path.stem.partition("@")
    if not at or len(prefix) < MIN_VERSION_PREFIX:
        raise ConstitutionError(
            f"{path}: an earlier version's file name must be <id>@<version prefix> with at "
            f"least {MIN_VERSION_PREFIX} hex digits, e.g. {spec.id}@{spec.version[:12]}.yaml"
        )
    if spec.id != name_id:
        raise ConstitutionError(f"{path}: id: {spec.id!r} must equal the file name's {name_id!r}")
    if not spec.version.startswith(prefix):
        raise ConstitutionError(
            f"{path}: the content's version is {spec.version[:12]}, not the file name's "
            f"{prefix!r}: an earlier version's text must never change (put new text in "
            f"{spec.id}.yaml)"
        )


def _folder_files(folder: Path) -> list[Path]:
    """A folder's earlier versions, then its current files: the last loaded is latest."""
    earlier = folder / EARLIER_FOLDER
    older = sorted(earlier.glob("*.yaml")) if earlier.is_dir() else []
    return older + sorted(folder.glob("*.yaml"))


def builtin_constitution_files() -> list[Path]:
    return _folder_files(Path(str(resources.files("cai_judge") / "constitutions")))


def constitution_paths(extra_dirs: Iterable[Path] = ()) -> list[Path]:
    """The built-in files, then each operator folder's, in a stable order; each folder's
    earlier versions before its current files."""
    paths = builtin_constitution_files()
    for folder in extra_dirs:
        if not folder.is_dir():
            raise ConstitutionError(f"{folder}: constitutions directory does not exist")
        paths.extend(_folder_files(folder))
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


class ConstitutionStore(Protocol):
    """What the shared registry needs from a store (store/constitutions.py): raw versions
    by id. Every method may raise StoreUnavailable."""

    def add(
        self, constitution_id: str, version: str, canonical_json: str, *, reserve: bool
    ) -> Literal["added", "exists", "reserved"]: ...

    def is_reserved(self, constitution_id: str) -> bool: ...

    def ids(self) -> set[str]: ...

    def versions(self, constitution_id: str) -> list[str]: ...

    def latest(self, constitution_id: str) -> str | None: ...

    def get(self, constitution_id: str, version: str) -> str | None: ...

    def close(self) -> None: ...


class SharedConstitutionRegistry(ConstitutionRegistry):
    """The registry shared by every replica through a store (Redis; DESIGN.md §5).

    Reserved ids (built-ins, the operator's folder) come from files that every replica
    loads, so they are served from memory and never wait on the store: labels against them
    keep flowing while Redis is down. Ids added at run time live in the store, and every
    replica sees a new version on its next request. Stored versions never change, so
    each is parsed once and memoized; only "which version is latest" is read per request.
    When the store is down, reads fall back to the versions this replica has seen, and
    adds raise StoreUnavailable (503).
    """

    def __init__(self, store: ConstitutionStore) -> None:
        super().__init__()
        self.store = store

    @classmethod
    def over(
        cls, store: ConstitutionStore, extra_dirs: Iterable[Path] = ()
    ) -> SharedConstitutionRegistry:
        """The registry on `store`, with the built-ins and `extra_dirs` loaded (reserved)."""
        registry = cls(store)
        registry.load_files(constitution_paths(extra_dirs))
        return registry

    def close(self) -> None:
        self.store.close()

    def _store(self, spec: ConstitutionSpec, reserve: bool) -> str:
        return self.store.add(spec.id, spec.version, spec.canonical_json(), reserve=reserve)

    def is_reserved(self, constitution_id: str) -> bool:
        from cai_judge.store.errors import StoreUnavailable

        if super().is_reserved(constitution_id):
            return True
        try:
            return self.store.is_reserved(constitution_id)
        except StoreUnavailable:
            return False

    def add(self, spec: ConstitutionSpec, *, reserve: bool = False) -> ConstitutionSpec:
        from cai_judge.store.errors import StoreUnavailable

        if reserve:
            stored = super().add(spec, reserve=True)
            try:  # so other replicas refuse run-time versions of this id as well
                self._store(spec, reserve=True)
            except StoreUnavailable as error:
                logger.warning("could not publish reserved constitution %s: %r", spec.id, error)
            return stored
        if super().is_reserved(spec.id):
            return super().add(spec)  # raises ConstitutionIdReserved
        if self._store(spec, False) == "reserved":  # StoreUnavailable: nothing was added
            raise ConstitutionIdReserved(
                f"constitution id {spec.id!r} is reserved: another replica loads it at "
                "start-up, so it cannot get versions at run time; choose another id"
            )
        return super().add(spec)

    def ids(self) -> list[str]:
        from cai_judge.store.errors import StoreUnavailable

        local = set(super().ids())
        try:
            shared = self.store.ids()
        except StoreUnavailable as error:
            logger.warning("constitution ids from memory only: %s", error)
            shared = set()
        return sorted(local | shared)

    def _fetch(self, constitution_id: str, version: str) -> ConstitutionSpec | None:
        """One stored version, memoized: versions never change once stored."""
        with self._lock:
            known = self._versions.get(constitution_id, {}).get(version)
        if known is not None:
            return known
        raw = self.store.get(constitution_id, version)
        if raw is None:
            return None
        spec = parse_constitution(json.loads(raw), f"redis {constitution_id}@{version[:12]}")
        with self._lock:
            self._versions.setdefault(constitution_id, {}).setdefault(version, spec)
            self._latest.setdefault(constitution_id, version)
        return spec

    def _sync(self, constitution_id: str) -> None:
        """Bring this id's versions and latest pointer up to date from the store."""
        order = self.store.versions(constitution_id)
        latest = self.store.latest(constitution_id)
        for version in order:
            self._fetch(constitution_id, version)
        if latest is not None:
            with self._lock:
                if latest in self._versions.get(constitution_id, {}):
                    self._latest[constitution_id] = latest

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
        from cai_judge.store.errors import StoreUnavailable

        try:
            self._sync(constitution_id)
        except StoreUnavailable as error:  # serve what this replica has seen
            logger.warning("constitution %r from memory only: %s", constitution_id, error)
