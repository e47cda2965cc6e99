"""POST /v1/rewards and the trainer-shaped fronts /v1/rewards/openrlhf and /v1/rewards/slime
(DESIGN.md §9): each maps its wire to one RewardService call and back.

OpenRLHF's and slime's clients send a body they fix themselves, so these two take the
labeling options (and, as their clients send no headers, the API key) from the query string
(`?constitution=harmless&principles=4&api_key=KEY`) and answer in their clients' shapes.
Errors are the API's own status and envelope, never a reward: their clients raise for
status and retry 429/503 (OpenRLHF 5 tries, slime 10 with backoff), and a misspelt
constitution must stop a run, not train it on a constant (services/rewards.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from cai_judge.api.deps import CallerDep, ServicesDep, TrainerCallerDep, unless_disconnected
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.routes.group_rewards import openrlhf_grouped, slime_grouped  # group rewards
from cai_judge.api.schemas import (
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RewardsRequest,
    RewardsResponse,
    SlimeSample,
)
from cai_judge.api.trainer_query import TrainerRewardQuery  # group rewards
from cai_judge.services.rewards import RewardCommand

router = APIRouter(tags=["rewards"])

# Nginx's "client closed request": nobody reads it, but logs and metrics should say so.
CLIENT_CLOSED_REQUEST = 499
QueryOptions = Annotated[TrainerRewardQuery, Query()]  # the options, and group rewards


@router.post(
    "/v1/rewards",
    response_model=RewardsResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    summary="Rewards for RL trainers: completions judged in groups or against a reference",
)
async def create_rewards(
    body: RewardsRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> RewardsResponse | Response:
    outcome = await unless_disconnected(
        request, services.rewards.rewards(body.to_command(), caller)
    )
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return RewardsResponse.from_outcome(outcome)


@router.post(
    "/v1/rewards/openrlhf",
    response_model=OpenRLHFRewardResponse,
    responses=ERROR_RESPONSES,
    summary="OpenRLHF's --reward.remote_url: each response judged against its label",
)
async def openrlhf_rewards(
    body: OpenRLHFRewardRequest,
    query: QueryOptions,
    services: ServicesDep,
    caller: TrainerCallerDep,
) -> OpenRLHFRewardResponse:
    if query.group_size is not None:  # group rewards (routes/group_rewards.py)
        return await openrlhf_grouped(body, query, services, caller)
    rewards = await services.rewards.trainer_rewards(
        body.to_command(query.to_options(), query.exploits),
        caller,
        route="openrlhf",
        timeout_s=services.settings.trainer_reward_timeout_s,
        param_of=lambda index: f"query.{index}",
    )
    return OpenRLHFRewardResponse.from_rewards(rewards)


@router.post(
    "/v1/rewards/slime",
    responses=ERROR_RESPONSES,
    summary="slime's remote_rm: a sample (or a list of them) judged against its label",
)
async def slime_rewards(
    body: Annotated[SlimeSample | list[SlimeSample], Body()],
    query: QueryOptions,
    services: ServicesDep,
    caller: TrainerCallerDep,
) -> Any:
    samples = body if isinstance(body, list) else [body]
    if query.group_size is not None:  # group rewards (routes/group_rewards.py)
        grouped = await slime_grouped(samples, query, services, caller)
        return grouped if isinstance(body, list) else grouped[0]

    def param(index: int, field: str | None = None) -> str:
        path = [str(index)] if isinstance(body, list) else []
        return ".".join([*path, field] if field else path) or "response"

    command = RewardCommand(
        query.to_options(),
        "reference",
        [s.item(i, param(i, "label")) for i, s in enumerate(samples)],
        exploits=query.exploits,
    )
    rewards = await services.rewards.trainer_rewards(
        command,
        caller,
        route="slime",
        timeout_s=services.settings.trainer_reward_timeout_s,
        param_of=param,
    )
    return rewards if isinstance(body, list) else rewards[0]
