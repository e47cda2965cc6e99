"""The constitution registry: list, get (`id` or `id@version`), add."""

from __future__ import annotations

from fastapi import APIRouter

from cai_judge.api.deps import CallerDep, ServicesDep
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.schemas import ConstitutionDetail, ConstitutionList
from cai_judge.labeling.constitution import ConstitutionSpec

router = APIRouter(tags=["constitutions"], responses=ERROR_RESPONSES)


@router.get("/v1/constitutions", summary="List constitutions")
async def list_constitutions(services: ServicesDep, caller: CallerDep) -> ConstitutionList:
    return ConstitutionList.from_summaries(await services.constitutions.list())


@router.get("/v1/constitutions/{ref}", summary="One constitution: `id` (latest) or `id@version`")
async def get_constitution(
    ref: str, services: ServicesDep, caller: CallerDep
) -> ConstitutionDetail:
    return ConstitutionDetail.from_spec(await services.constitutions.get(ref))


@router.post(
    "/v1/constitutions",
    status_code=201,
    summary="Add an immutable constitution version (admin key when keys are set)",
)
async def add_constitution(
    spec: ConstitutionSpec, services: ServicesDep, caller: CallerDep
) -> ConstitutionDetail:
    # The body is validated by the same model the YAML loader uses.
    return ConstitutionDetail.from_spec(await services.constitutions.add(spec, caller))
