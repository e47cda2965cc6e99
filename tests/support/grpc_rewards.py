"""A POST /v1/rewards body as a gRPC RewardsRequest, and a RewardsResponse back in the HTTP
answer's shape, so a test compares the two wires' answers as one dict (the HTTP route leaves
None fields out; so does `response_json`)."""

from __future__ import annotations

from typing import Any

from cai_judge.grpc.gen.v1 import judge_pb2 as pb


def with_prompt(message: Any, prompt: str | list[dict[str, str]] | None) -> Any:
    if isinstance(prompt, str):
        message.text = prompt
    elif prompt is not None:
        for turn in prompt:
            message.chat.messages.add(**turn)
    return message


def group_proto(raw: dict[str, Any]) -> pb.RewardGroup:
    message = pb.RewardGroup(id=raw["id"], completions=raw["completions"])
    return with_prompt(message, raw.get("prompt"))  # type: ignore[no-any-return]


def item_proto(raw: dict[str, Any]) -> pb.RewardItem:
    message = pb.RewardItem(id=raw["id"], completion=raw["completion"], reference=raw["reference"])
    return with_prompt(message, raw.get("prompt"))  # type: ignore[no-any-return]


SCORING = {"mean": pb.SCORING_MEAN, "bradley_terry": pb.SCORING_BRADLEY_TERRY}
EXPLOITS = {"flag": pb.EXPLOIT_POLICY_FLAG, "floor": pb.EXPLOIT_POLICY_FLOOR}
AGGREGATOR = {"mean_logodds": pb.AGGREGATOR_MEAN_LOGODDS, "mean_prob": pb.AGGREGATOR_MEAN_PROB}


def request_proto(body: dict[str, Any]) -> pb.RewardsRequest:
    """The JSON body of POST /v1/rewards as a RewardsRequest."""
    options = pb.LabelOptions(
        constitution=body["constitution"],
        principles=body.get("principles", 0),
        seed=body.get("seed", 0),
        aggregator=AGGREGATOR[body.get("aggregator", "mean_logodds")],
    )
    request = pb.RewardsRequest(
        options=options,
        opponents=0 if body.get("opponents", "all") == "all" else body["opponents"],
        scoring=SCORING[body.get("scoring", "mean")],
        detail=body.get("detail", False),
        exploits=EXPLOITS[body.get("exploits", "flag")],
    )
    if "groups" in body:
        request.groups.groups.extend(group_proto(g) for g in body["groups"])
    else:
        request.items.items.extend(item_proto(i) for i in body["items"])
    return request


def provenance_json(provenance: pb.RewardProvenance) -> dict[str, Any]:
    return {
        "model": provenance.model,
        "constitution": {
            "id": provenance.constitution.id,
            "version": provenance.constitution.version,
        },
        "template": {"id": provenance.template.id, "version": provenance.template.version},
        "principles": list(provenance.principles),
        "seed": provenance.seed,
        "aggregator": {v: k for k, v in AGGREGATOR.items()}[provenance.aggregator],
    }


def detail_json(detail: pb.CompletionDetail) -> dict[str, Any]:
    raw = {"raw_reward": detail.raw_reward} if detail.HasField("raw_reward") else {}
    return {
        "matches": [
            {
                "opponent": "reference"
                if m.WhichOneof("opponent") == "reference"
                else m.completion,
                "outcome": m.outcome,
                "margin": m.margin,
                "consistency": m.consistency,
            }
            for m in detail.matches
        ],
        "mean_margin": detail.mean_margin,
        "consistency": detail.consistency,
        **raw,
    }


def result_json(result: pb.RewardResult) -> dict[str, Any]:
    """One RewardResult in the HTTP answer's shape (None fields left out, as the route does)."""
    kind = result.WhichOneof("result")
    if kind == "error":
        error = result.error
        detail = {"type": error.error.type, "message": error.error.message}
        if error.error.HasField("param"):
            detail["param"] = error.error.param
        return {**({"id": error.id} if error.HasField("id") else {}), "index": error.index,
                "error": detail}  # fmt: skip
    if kind == "group":
        group = result.group
        answer = {"id": group.id, "rewards": list(group.rewards),
                  "provenance": provenance_json(group.provenance)}  # fmt: skip
        if group.detail:
            answer["detail"] = [detail_json(d) for d in group.detail]
        if group.HasField("converged"):
            answer["converged"] = group.converged
        if group.low_confidence:
            answer["low_confidence"] = list(group.low_confidence)
        if group.exploits:
            answer["exploits"] = [list(e.reasons) for e in group.exploits]
        return answer
    assert kind == "item", result
    item = result.item
    answer = {"id": item.id, "reward": item.reward, "provenance": provenance_json(item.provenance)}
    if item.HasField("detail"):
        answer["detail"] = detail_json(item.detail)
    if item.low_confidence:
        answer["low_confidence"] = True
    if item.exploits:
        answer["exploits"] = list(item.exploits)
    return answer


def response_json(response: pb.RewardsResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "results": [result_json(r) for r in response.results],
        "usage": {
            "pairs": usage.pairs,
            "score_units": usage.score_units,
            "prompt_tokens": usage.prompt_tokens,
            "cached_prompt_tokens": usage.cached_prompt_tokens,
            "cached_score_units": usage.cached_score_units,
        },
    }
