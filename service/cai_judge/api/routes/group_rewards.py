"""Group rewards on the wire (services/group_rewards.py, DESIGN.md §9): the grouped path of
/v1/rewards/openrlhf and /v1/rewards/slime (`?group_size=G`, called by routes/rewards.py), and
POST /v1/rewards/sample for adapters with no trainer-fixed body (verl). Each maps its body to
samples, one GroupRewardService call, and its trainer's answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query

from cai_judge.api.deps import CallerDep, ServicesDep
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.schemas import OpenRLHFRewardRequest, OpenRLHFRewardResponse, SlimeSample
from cai_judge.api.trainer_query import (
    SampleRewardRequest,
    SampleRewardResponse,
    TrainerRewardQuery,
)
from cai_judge.services.container import Services
from cai_judge.services.group_rewards import GroupSample
from cai_judge.services.rewards import openrlhf_response, policy_response
from cai_judge.services.security import Caller


async def openrlhf_grouped(
    body: OpenRLHFRewardRequest, query: TrainerRewardQuery, services: Services, caller: Caller
) -> OpenRLHFRewardResponse:
    """OpenRLHF has no group key: the prompt is the group's (its n_samples_per_prompt samples
    share it); the label judges a group of one."""
    # A null label is no reference: a group of one without one falls back, flagged.
    samples = [
        GroupSample(prompt, openrlhf_response(text, prompt)[0], _reference(label))
        for text, prompt, label in zip(body.query, body.prompts, body.labels, strict=True)
    ]
    answers = await services.group_rewards.sample_rewards(
        samples, query.to_spec(services.settings), caller, route="openrlhf"
    )
    response = OpenRLHFRewardResponse.from_rewards(
        [a.reward for a in answers], [a.fallback for a in answers]
    )
    response.extra_logs["cai_judge_group_size"] = [float(a.group_size) for a in answers]
    return response


async def slime_grouped(
    samples: Sequence[SlimeSample], query: TrainerRewardQuery, services: Services, caller: Caller
) -> list[float]:
    """slime's remote_rm body carries no group index (THUDM/slime, rm_hub `remote_rm`: prompt,
    response, label), so the prompt is the group key."""
    grouped = [
        GroupSample(
            s.prompt if isinstance(s.prompt, str) else [m.model_dump() for m in s.prompt],
            policy_response(s.response),
            _reference(s.label),
        )
        for s in samples
    ]
    answers = await services.group_rewards.sample_rewards(
        grouped, query.to_spec(services.settings), caller, route="slime"
    )
    return [a.reward for a in answers]


def _reference(label: object) -> str | None:
    """A dataset label as the reference of a group of one: none when null or empty (that
    sample then falls back, flagged), a number as its text."""
    return None if label is None or label == "" else str(label)


router = APIRouter(tags=["rewards"])


@router.post(
    "/v1/rewards/sample",
    response_model=SampleRewardResponse,
    responses=ERROR_RESPONSES,
    summary="One sample's reward in its group: held until the group arrives or the wait ends",
)
async def sample_reward(
    body: SampleRewardRequest,
    query: Annotated[TrainerRewardQuery, Query()],
    services: ServicesDep,
    caller: CallerDep,
) -> SampleRewardResponse:
    spec = query.to_spec(services.settings, default_size=1)
    [answer] = await services.group_rewards.sample_rewards(
        [body.sample()], spec, caller, route="sample"
    )
    return SampleRewardResponse.from_reward(answer)
