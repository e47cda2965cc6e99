"""The constitution registry as a use case: list, get, add (DESIGN.md §1).

Versions are immutable content hashes. Ids loaded at start-up (the built-ins and the
operator's folder) are reserved: adding a version of `harmless` at run time would switch
every unpinned request to new principles, so it is refused with 409. With API keys
configured, adding needs an admin key.

The registry is synchronous and, shared through Redis, blocks on the network: each call
runs in a worker thread, never on the event loop. A store that cannot be reached raises
StoreUnavailable, which the transports answer 503.
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass

from cai_judge.labeling.constitution import (
    ConstitutionIdReserved,
    ConstitutionNotFound,
    ConstitutionRegistry,
    ConstitutionSpec,
)
from cai_judge.services.errors import Conflict, NotFound, PermissionDenied
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

    async def list(self) -> list[ConstitutionSummary]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> builtins.list[ConstitutionSummary]:
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

    async def get(self, ref: str) -> ConstitutionSpec:
        try:
            return await asyncio.to_thread(self.registry.resolve, ref)
        except ConstitutionNotFound as error:
            raise NotFound(str(error).strip("'\""), param="constitution") from None

    async def add(self, spec: ConstitutionSpec, caller: Caller) -> ConstitutionSpec:
        if not caller.is_admin:
            raise PermissionDenied(
                "adding a constitution needs an admin key (CAI_JUDGE_ADMIN_KEY_HASHES)",
                param="authorization",
            )
        try:
            return await asyncio.to_thread(self.registry.add, spec)
        except ConstitutionIdReserved as error:
            raise Conflict(str(error), type="reserved_id", param="id") from None
