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
from cai_judge.api.group_protocol import (
    SampleRewardRequest,
    SampleRewardResponse,
    TrainerRewardQuery,
)
from cai_judge.api.protocol import OpenRLHFRewardRequest, OpenRLHFRewardResponse, SlimeSample
from cai_judge.services.container import Services
from cai_judge.services.group_rewards import GroupSample
from cai_judge.services.rewards import openrlhf_response
from cai_judge.services.security import Caller


async def openrlhf_grouped(
    body: OpenRLHFRewardRequest, query: TrainerRewardQuery, services: Services, caller: Caller
) -> OpenRLHFRewardResponse:
    """OpenRLHF has no group key: the prompt is the group's (its n_samples_per_prompt samples
    share it); the label judges a group of one."""
    samples = [
        GroupSample(prompt, openrlhf_response(text, prompt), str(label) if label else None)
        for text, prompt, label in zip(body.query, body.prompts, body.labels, strict=True)
    ]
    answers = await services.group_rewards.sample_rewards(
        samples, query.to_spec(services.settings), caller, route="openrlhf"
    )
    rewards = [a.reward for a in answers]
    count = max(len(answers), 1)
    return OpenRLHFRewardResponse(
        rewards=rewards,
        scores=rewards,
        extra_logs={
            "cai_judge_fallback": sum(a.fallback for a in answers) / count,
            "cai_judge_group_size": sum(a.group_size for a in answers) / count,
        },
    )


async def slime_grouped(
    samples: Sequence[SlimeSample], query: TrainerRewardQuery, services: Services, caller: Caller
) -> list[float]:
    """slime's remote_rm body carries no group index (THUDM/slime, rm_hub `remote_rm`: prompt,
    response, label), so the prompt is the group key."""
    grouped = [
        GroupSample(
            s.prompt if isinstance(s.prompt, str) else [m.model_dump() for m in s.prompt],
            s.response,
            s.label or None,
        )
        for s in samples
    ]
    answers = await services.group_rewards.sample_rewards(
        grouped, query.to_spec(services.settings), caller, route="slime"
    )
    return [a.reward for a in answers]


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
