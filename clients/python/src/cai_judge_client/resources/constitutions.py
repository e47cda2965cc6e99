"""`client.constitutions`: the registry (list, one version, add an immutable version).
`Constitutions` and `AsyncConstitutions` differ only in `await`."""

from __future__ import annotations

import builtins
from typing import Any

from cai_judge_client import _constants as c
from cai_judge_client._base_client import RequestOptions
from cai_judge_client._labeling_plan import spec_body
from cai_judge_client._resource import AsyncAPIResource, SyncAPIResource
from cai_judge_client.types import (
    Constitution,
    ConstitutionList,
    ConstitutionSpec,
    ConstitutionSummary,
)

__all__ = ["AsyncConstitutions", "Constitutions"]

# Creating a constitution answers 409 for a reserved id: permanent, so not retried.
_NO_CONFLICT_RETRY = c.RETRYABLE_STATUSES - {409}
_LIST = RequestOptions("GET", "/v1/constitutions")


def _create(spec: ConstitutionSpec | dict[str, Any]) -> RequestOptions:
    return RequestOptions(
        "POST", "/v1/constitutions", json=spec_body(spec), retry_statuses=_NO_CONFLICT_RETRY
    )


class Constitutions(SyncAPIResource):
    def list(self) -> builtins.list[ConstitutionSummary]:
        return ConstitutionList.model_validate(self._request(_LIST).json()).constitutions

    def retrieve(self, ref: str) -> Constitution:
        """`id` (the latest version) or `id@version` (a unique prefix of ≥ 8 hex digits)."""
        response = self._request(RequestOptions("GET", f"/v1/constitutions/{ref}"))
        return Constitution.model_validate(response.json())

    def create(self, spec: ConstitutionSpec | dict[str, Any]) -> Constitution:
        """Add an immutable version (needs an admin key when the server has keys)."""
        return Constitution.model_validate(self._request(_create(spec)).json())


class AsyncConstitutions(AsyncAPIResource):
    async def list(self) -> builtins.list[ConstitutionSummary]:
        response = await self._request(_LIST)
        return ConstitutionList.model_validate(response.json()).constitutions

    async def retrieve(self, ref: str) -> Constitution:
        """`Constitutions.retrieve`, awaited."""
        response = await self._request(RequestOptions("GET", f"/v1/constitutions/{ref}"))
        return Constitution.model_validate(response.json())

    async def create(self, spec: ConstitutionSpec | dict[str, Any]) -> Constitution:
        """`Constitutions.create`, awaited."""
        return Constitution.model_validate((await self._request(_create(spec))).json())
