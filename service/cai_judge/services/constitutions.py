"""The constitution registry as a use case: list, get, add (DESIGN.md §1).

Versions are immutable content hashes. Ids loaded at start-up (the built-ins and the
operator's folder) are reserved: adding a version of `harmless` at run time would switch
every unpinned request to new principles, so it is refused with 409. With API keys
configured, adding needs an admin key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai_judge.labeling.constitution import (
    ConstitutionIdReserved,
    ConstitutionNotFound,
    ConstitutionRegistry,
    ConstitutionSpec,
    ConstitutionStoreUnavailable,
)
from cai_judge.services.errors import Conflict, NotFound, PermissionDenied, Unavailable
from cai_judge.services.security import Caller


@dataclass(frozen=True, slots=True)
class ConstitutionSummary:
    id: str
    latest_version: str
    versions: list[str]
    principles: int
    description: str


class ConstitutionService:
    def __init__(self, registry: ConstitutionRegistry) -> None:
        self.registry = registry

    def list(self) -> list[ConstitutionSummary]:
        summaries = []
        for constitution_id in self.registry.ids():
            latest = self.registry.resolve(constitution_id)
            summaries.append(
                ConstitutionSummary(
                    id=latest.id,
                    latest_version=latest.version,
                    versions=self.registry.versions(constitution_id),
                    principles=len(latest.principles),
                    description=latest.description,
                )
            )
        return summaries

    def get(self, ref: str) -> ConstitutionSpec:
        try:
            return self.registry.resolve(ref)
        except ConstitutionNotFound as error:
            raise NotFound(str(error).strip("'\""), param="constitution") from None

    def add(self, spec: ConstitutionSpec, caller: Caller) -> ConstitutionSpec:
        if not caller.is_admin:
            raise PermissionDenied(
                "adding a constitution needs an admin key (CAI_JUDGE_ADMIN_KEY_HASHES)",
                param="authorization",
            )
        try:
            return self.registry.add(spec)
        except ConstitutionIdReserved as error:
            raise Conflict(str(error), type="reserved_id", param="id") from None
        except ConstitutionStoreUnavailable as error:
            raise Unavailable(str(error), type="store_unavailable", retry_after_s=2) from None
