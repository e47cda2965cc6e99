"""Proto messages to and from the service layer's types (as `api/schemas.py` does for JSON).

Pairs, reward groups and reward items are handed to the service as plain mappings, exactly
as the HTTP API hands over a JSON object, so one validator (the domain's `Pair`,
`RewardGroup` and `RewardItem` models) judges both wires and a bad entry gets the same
per-item error, naming the same field, on either. Options become the domain's one
`LabelOptions` object, which checks them, for the same reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Literal

from pydantic import ValidationError

from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.ensemble import Ensemble
from cai_judge.labeling.exploits import ExploitPolicy
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.pipeline import LabelOutcome
from cai_judge.labeling.reward_schema import (
    CompletionDetail,
    GroupRewards,
    ItemReward,
    MatchDetail,
    RewardProvenance,
)
from cai_judge.labeling.schema import Label, LabelOptions, PairError, Usage
from cai_judge.labeling.validation import describe_errors
from cai_judge.services.constitutions import ConstitutionSummary
from cai_judge.services.errors import InvalidRequest
from cai_judge.services.labels import LabelCommand
from cai_judge.services.rewards import RewardCommand, RewardOutcome, RewardResult, Scoring

# UNSPECIFIED (proto3's zero) is None: the option is left out and takes the domain's default.
AGGREGATOR_FROM_PROTO: dict[int, Aggregator | None] = {
    pb.AGGREGATOR_UNSPECIFIED: None,
    pb.AGGREGATOR_MEAN_LOGODDS: Aggregator.MEAN_LOGODDS,
    pb.AGGREGATOR_MEAN_PROB: Aggregator.MEAN_PROB,
}
MODE_FROM_PROTO: dict[int, Literal["plain", "cot"] | None] = {
    pb.MODE_UNSPECIFIED: None,
    pb.MODE_PLAIN: "plain",
    pb.MODE_COT: "cot",
}
ENSEMBLE_FROM_PROTO: dict[int, Ensemble] = {
    pb.ENSEMBLE_UNSPECIFIED: "full",
    pb.ENSEMBLE_FULL: "full",
    pb.ENSEMBLE_ADAPTIVE: "adaptive",
}
AGGREGATOR_TO_PROTO = {
    Aggregator.MEAN_LOGODDS: pb.AGGREGATOR_MEAN_LOGODDS,
    Aggregator.MEAN_PROB: pb.AGGREGATOR_MEAN_PROB,
}
EXPLOITS_FROM_PROTO: dict[int, ExploitPolicy] = {
    pb.EXPLOIT_POLICY_UNSPECIFIED: "flag",
    pb.EXPLOIT_POLICY_FLAG: "flag",
    pb.EXPLOIT_POLICY_FLOOR: "floor",
}
SCORING_FROM_PROTO: dict[int, Scoring] = {
    pb.SCORING_UNSPECIFIED: "mean",
    pb.SCORING_MEAN: "mean",
    pb.SCORING_BRADLEY_TERRY: "bradley_terry",
}


def prompt_from_proto(message: pb.Pair | pb.RewardGroup | pb.RewardItem) -> dict[str, Any]:
    """`{"prompt": ...}` as the JSON API receives it, or `{}`: a missing prompt stays missing,
    so the validator reports `prompt` as required (every message with a prompt has the same
    `prompt` oneof of text or chat)."""
    kind = message.WhichOneof("prompt")
    if kind == "text":
        return {"prompt": message.text}
    if kind == "chat":
        return {"prompt": [{"role": m.role, "content": m.content} for m in message.chat.messages]}
    return {}


def pair_from_proto(pair: pb.Pair) -> dict[str, Any]:
    """The pair as the HTTP API would receive it."""
    return {
        "id": pair.id,
        **prompt_from_proto(pair),
        "response_a": pair.response_a,
        "response_b": pair.response_b,
    }


def _check_enum(name: str, value: int, known: Collection[int]) -> None:
    """An enum number this server's proto does not define (a newer client's) is refused by
    name, never read as the default."""
    if value not in known:
        raise InvalidRequest(f"{name} {value} is not one of {sorted(known)}", param=name)


def options_from_proto(options: pb.LabelOptions) -> LabelOptions:
    """The domain's one options object, or InvalidRequest naming the option and its limit.

    gRPC carries every option of the domain's LabelOptions (proto3 zero means its default),
    and the domain model checks each bound, so the two wires refuse the same values."""
    if not options.constitution:
        raise InvalidRequest(
            "options.constitution is required: `id` or `id@version`",
            param="options.constitution",
        )
    _check_enum("options.aggregator", options.aggregator, AGGREGATOR_FROM_PROTO)
    _check_enum("options.mode", options.mode, MODE_FROM_PROTO)
    _check_enum("options.ensemble", options.ensemble, ENSEMBLE_FROM_PROTO)
    # proto3 cannot tell an unset scalar from its zero: a zero is left out, so the field
    # takes the domain's default (principles 0 is `all`, cot_max_tokens 0 the default budget)
    # and no default is restated on this wire.
    values = {
        "constitution": options.constitution,
        "principles": options.principles,
        "seed": options.seed,
        "aggregator": AGGREGATOR_FROM_PROTO[options.aggregator],
        "per_principle": options.per_principle,
        "calibrated": options.calibrated,
        "mode": MODE_FROM_PROTO[options.mode],
        "cot_max_tokens": options.cot_max_tokens,
        "ensemble": ENSEMBLE_FROM_PROTO[options.ensemble],
        "ensemble_delta": options.ensemble_delta,
    }
    try:
        return LabelOptions.model_validate({k: v for k, v in values.items() if v})
    except ValidationError as error:
        message, param = describe_errors(error.errors(), prefix=("options",))
        raise InvalidRequest(message, param=param) from None


def command_from_proto(options: pb.LabelOptions, pairs: Iterable[pb.Pair]) -> LabelCommand:
    """A LabelCommand, or InvalidRequest naming the option and its limit."""
    return LabelCommand(options_from_proto(options), [pair_from_proto(p) for p in pairs])


def group_from_proto(group: pb.RewardGroup) -> dict[str, Any]:
    return {"id": group.id, **prompt_from_proto(group), "completions": list(group.completions)}


def item_from_proto(item: pb.RewardItem) -> dict[str, Any]:
    return {
        "id": item.id,
        **prompt_from_proto(item),
        "completion": item.completion,
        "reference": item.reference,
    }


def reward_command_from_proto(request: pb.RewardsRequest) -> RewardCommand:
    """A RewardCommand, or InvalidRequest naming the field. Groups and items stay unvalidated
    mappings: the rewards service validates each and reports a bad one in its place, and
    checks their count against the per-request limit, as for POST /v1/rewards."""
    options = options_from_proto(request.options)
    _check_enum("scoring", request.scoring, SCORING_FROM_PROTO)
    _check_enum("exploits", request.exploits, EXPLOITS_FROM_PROTO)
    entries: list[dict[str, Any]]
    kind = request.WhichOneof("entries")
    if kind == "groups":
        entries = [group_from_proto(g) for g in request.groups.groups]
    elif kind == "items":
        entries = [item_from_proto(i) for i in request.items.items]
    else:
        raise InvalidRequest(
            "send either `groups` (group mode) or `items` (reference mode)", param="groups"
        )
    if not entries:
        raise InvalidRequest(f"{kind}: at least 1 entry is required", param=kind)
    return RewardCommand(
        options,
        "group" if kind == "groups" else "reference",
        entries,
        opponents=request.opponents or "all",
        scoring=SCORING_FROM_PROTO[request.scoring],
        detail=request.detail,
        exploits=EXPLOITS_FROM_PROTO[request.exploits],
    )


def label_to_proto(label: Label) -> pb.Label:
    return pb.Label(
        id=label.id,
        preferred=label.preferred,
        margin=label.margin,
        p_a=label.p_a,
        position_bias=label.position_bias,
        consistency=label.consistency,
        answer_mass=label.answer_mass,
        low_confidence=label.low_confidence,
        principles=label.principles,
        selection=0 if label.selection == "all" else label.selection,
        aggregator=AGGREGATOR_TO_PROTO[label.aggregator],
        constitution=pb.ConstitutionRef(
            id=label.constitution.id, version=label.constitution.version
        ),
        template=pb.TemplateRef(id=label.template.id, version=label.template.version),
        model=label.model,
        seed=label.seed,
        per_principle=[
            pb.PrincipleResult(
                principle=p.principle,
                s_ab=p.s_ab,
                s_ba=p.s_ba,
                margin=p.margin,
                position_bias=p.position_bias,
                agree=p.agree,
                answer_mass=p.answer_mass,
                raw_s_ab=p.raw_s_ab,
                raw_s_ba=p.raw_s_ba,
                raw_margin=p.raw_margin,
            )
            for p in label.per_principle or []
        ],
        calibration=None
        if label.calibration is None
        else pb.Calibration(
            profile=label.calibration.profile,
            raw_margin=label.calibration.raw_margin,
            raw_p_a=label.calibration.raw_p_a,
        ),
        mode=pb.MODE_COT if label.mode == "cot" else pb.MODE_UNSPECIFIED,
        raw_margin=label.raw_margin,
        raw_p_a=label.raw_p_a,
        cot_max_probability=label.cot_max_probability,
        cot_max_tokens=label.cot_max_tokens,
        rationales=[
            pb.Rationale(principle=r.principle, ab=r.ab, ba=r.ba) for r in label.rationales or []
        ],
        ensemble=None
        if label.ensemble is None
        else pb.EnsembleProvenance(
            **label.ensemble.model_dump(exclude={"mode", "decided"}),
            decided=label.ensemble.decided or "",
        ),
    )


def pair_error_to_proto(error: PairError) -> pb.PairError:
    return pb.PairError(
        id=error.id,
        index=error.index,
        error=pb.ErrorDetail(
            type=error.error.type, message=error.error.message, param=error.error.param
        ),
    )


def result_to_proto(result: Label | PairError) -> pb.LabelResult:
    if isinstance(result, Label):
        return pb.LabelResult(label=label_to_proto(result))
    return pb.LabelResult(error=pair_error_to_proto(result))


def usage_to_proto(usage: Usage) -> pb.Usage:
    return pb.Usage(
        pairs=usage.pairs,
        score_units=usage.score_units,
        prompt_tokens=usage.prompt_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        cached_score_units=usage.cached_score_units,
    )


def label_response(outcome: LabelOutcome) -> pb.LabelResponse:
    return pb.LabelResponse(
        results=[result_to_proto(r) for r in outcome.results], usage=usage_to_proto(outcome.usage)
    )


def provenance_to_proto(provenance: RewardProvenance) -> pb.RewardProvenance:
    return pb.RewardProvenance(
        model=provenance.model,
        constitution=pb.ConstitutionRef(
            id=provenance.constitution.id, version=provenance.constitution.version
        ),
        template=pb.TemplateRef(id=provenance.template.id, version=provenance.template.version),
        principles=provenance.principles,
        seed=provenance.seed,
        aggregator=AGGREGATOR_TO_PROTO[Aggregator(provenance.aggregator)],
        calibration_profile=provenance.calibration_profile,
    )


def match_to_proto(match: MatchDetail) -> pb.MatchDetail:
    opponent = (
        {"reference": True} if match.opponent == "reference" else {"completion": match.opponent}
    )
    return pb.MatchDetail(
        **opponent, outcome=match.outcome, margin=match.margin, consistency=match.consistency
    )


def completion_detail_to_proto(detail: CompletionDetail) -> pb.CompletionDetail:
    return pb.CompletionDetail(
        matches=[match_to_proto(m) for m in detail.matches],
        mean_margin=detail.mean_margin,
        consistency=detail.consistency,
        raw_reward=detail.raw_reward,
    )


def reward_result_to_proto(result: RewardResult) -> pb.RewardResult:
    if isinstance(result, GroupRewards):
        return pb.RewardResult(
            group=pb.GroupRewards(
                id=result.id,
                rewards=result.rewards,
                provenance=provenance_to_proto(result.provenance),
                detail=[completion_detail_to_proto(d) for d in result.detail or []],
                converged=result.converged,
                low_confidence=result.low_confidence or [],
                exploits=[pb.ExploitReasons(reasons=r) for r in result.exploits or []],
            )
        )
    if isinstance(result, ItemReward):
        return pb.RewardResult(
            item=pb.ItemReward(
                id=result.id,
                reward=result.reward,
                provenance=provenance_to_proto(result.provenance),
                detail=None if result.detail is None else completion_detail_to_proto(result.detail),
                low_confidence=bool(result.low_confidence),
                exploits=result.exploits or [],
            )
        )
    return pb.RewardResult(error=pair_error_to_proto(result))


def rewards_response(outcome: RewardOutcome) -> pb.RewardsResponse:
    return pb.RewardsResponse(
        results=[reward_result_to_proto(r) for r in outcome.results],
        usage=usage_to_proto(outcome.usage),
    )


def stream_response(index: int, result: Label | PairError) -> pb.LabelStreamResponse:
    return pb.LabelStreamResponse(id=result.id or "", index=index, result=result_to_proto(result))


def constitution_list(summaries: list[ConstitutionSummary]) -> pb.ListConstitutionsResponse:
    return pb.ListConstitutionsResponse(
        constitutions=[
            pb.ConstitutionSummary(
                id=s.id,
                latest_version=s.latest_version,
                versions=s.versions,
                principles=s.principles,
                description=s.description,
            )
            for s in summaries
        ]
    )


def constitution_to_proto(spec: ConstitutionSpec) -> pb.Constitution:
    return pb.Constitution(
        id=spec.id,
        version=spec.version,
        description=spec.description,
        template=spec.template,
        principles=[
            pb.Principle(id=p.id, question=p.question, critique=p.critique, revision=p.revision)
            for p in spec.principles
        ],
    )
