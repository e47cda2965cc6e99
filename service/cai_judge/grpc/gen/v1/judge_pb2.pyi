from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Aggregator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATOR_UNSPECIFIED: _ClassVar[Aggregator]
    AGGREGATOR_MEAN_LOGODDS: _ClassVar[Aggregator]
    AGGREGATOR_MEAN_PROB: _ClassVar[Aggregator]

class Ensemble(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENSEMBLE_UNSPECIFIED: _ClassVar[Ensemble]
    ENSEMBLE_FULL: _ClassVar[Ensemble]
    ENSEMBLE_ADAPTIVE: _ClassVar[Ensemble]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_PLAIN: _ClassVar[Mode]
    MODE_COT: _ClassVar[Mode]

class Scoring(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORING_UNSPECIFIED: _ClassVar[Scoring]
    SCORING_MEAN: _ClassVar[Scoring]
    SCORING_BRADLEY_TERRY: _ClassVar[Scoring]

class ExploitPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLOIT_POLICY_UNSPECIFIED: _ClassVar[ExploitPolicy]
    EXPLOIT_POLICY_FLAG: _ClassVar[ExploitPolicy]
    EXPLOIT_POLICY_FLOOR: _ClassVar[ExploitPolicy]
AGGREGATOR_UNSPECIFIED: Aggregator
AGGREGATOR_MEAN_LOGODDS: Aggregator
AGGREGATOR_MEAN_PROB: Aggregator
ENSEMBLE_UNSPECIFIED: Ensemble
ENSEMBLE_FULL: Ensemble
ENSEMBLE_ADAPTIVE: Ensemble
MODE_UNSPECIFIED: Mode
MODE_PLAIN: Mode
MODE_COT: Mode
SCORING_UNSPECIFIED: Scoring
SCORING_MEAN: Scoring
SCORING_BRADLEY_TERRY: Scoring
EXPLOIT_POLICY_UNSPECIFIED: ExploitPolicy
EXPLOIT_POLICY_FLAG: ExploitPolicy
EXPLOIT_POLICY_FLOOR: ExploitPolicy

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ChatPrompt(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class Pair(_message.Message):
    __slots__ = ("id", "text", "chat", "response_a", "response_b")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    chat: ChatPrompt
    response_a: str
    response_b: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., chat: _Optional[_Union[ChatPrompt, _Mapping]] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ...) -> None: ...

class LabelOptions(_message.Message):
    __slots__ = ("constitution", "principles", "seed", "aggregator", "per_principle", "calibrated", "mode", "cot_max_tokens", "ensemble", "ensemble_delta")
    CONSTITUTION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    PER_PRINCIPLE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_DELTA_FIELD_NUMBER: _ClassVar[int]
    constitution: str
    principles: int
    seed: int
    aggregator: Aggregator
    per_principle: bool
    calibrated: bool
    mode: Mode
    cot_max_tokens: int
    ensemble: Ensemble
    ensemble_delta: float
    def __init__(self, constitution: _Optional[str] = ..., principles: _Optional[int] = ..., seed: _Optional[int] = ..., aggregator: _Optional[_Union[Aggregator, str]] = ..., per_principle: _Optional[bool] = ..., calibrated: _Optional[bool] = ..., mode: _Optional[_Union[Mode, str]] = ..., cot_max_tokens: _Optional[int] = ..., ensemble: _Optional[_Union[Ensemble, str]] = ..., ensemble_delta: _Optional[float] = ...) -> None: ...

class LabelRequest(_message.Message):
    __slots__ = ("options", "pairs")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    options: LabelOptions
    pairs: _containers.RepeatedCompositeFieldContainer[Pair]
    def __init__(self, options: _Optional[_Union[LabelOptions, _Mapping]] = ..., pairs: _Optional[_Iterable[_Union[Pair, _Mapping]]] = ...) -> None: ...

class ConstitutionRef(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class TemplateRef(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class PrincipleResult(_message.Message):
    __slots__ = ("principle", "s_ab", "s_ba", "margin", "position_bias", "agree", "answer_mass", "raw_s_ab", "raw_s_ba", "raw_margin")
    PRINCIPLE_FIELD_NUMBER: _ClassVar[int]
    S_AB_FIELD_NUMBER: _ClassVar[int]
    S_BA_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    POSITION_BIAS_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MASS_FIELD_NUMBER: _ClassVar[int]
    RAW_S_AB_FIELD_NUMBER: _ClassVar[int]
    RAW_S_BA_FIELD_NUMBER: _ClassVar[int]
    RAW_MARGIN_FIELD_NUMBER: _ClassVar[int]
    principle: str
    s_ab: float
    s_ba: float
    margin: float
    position_bias: float
    agree: bool
    answer_mass: float
    raw_s_ab: float
    raw_s_ba: float
    raw_margin: float
    def __init__(self, principle: _Optional[str] = ..., s_ab: _Optional[float] = ..., s_ba: _Optional[float] = ..., margin: _Optional[float] = ..., position_bias: _Optional[float] = ..., agree: _Optional[bool] = ..., answer_mass: _Optional[float] = ..., raw_s_ab: _Optional[float] = ..., raw_s_ba: _Optional[float] = ..., raw_margin: _Optional[float] = ...) -> None: ...

class Rationale(_message.Message):
    __slots__ = ("principle", "ab", "ba")
    PRINCIPLE_FIELD_NUMBER: _ClassVar[int]
    AB_FIELD_NUMBER: _ClassVar[int]
    BA_FIELD_NUMBER: _ClassVar[int]
    principle: str
    ab: str
    ba: str
    def __init__(self, principle: _Optional[str] = ..., ab: _Optional[str] = ..., ba: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("id", "preferred", "margin", "p_a", "position_bias", "consistency", "answer_mass", "low_confidence", "principles", "selection", "aggregator", "constitution", "template", "model", "seed", "per_principle", "calibration", "mode", "raw_margin", "raw_p_a", "cot_max_probability", "cot_max_tokens", "rationales", "ensemble")
    ID_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    P_A_FIELD_NUMBER: _ClassVar[int]
    POSITION_BIAS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MASS_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    CONSTITUTION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PER_PRINCIPLE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RAW_MARGIN_FIELD_NUMBER: _ClassVar[int]
    RAW_P_A_FIELD_NUMBER: _ClassVar[int]
    COT_MAX_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    COT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RATIONALES_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    preferred: str
    margin: float
    p_a: float
    position_bias: float
    consistency: float
    answer_mass: float
    low_confidence: bool
    principles: _containers.RepeatedScalarFieldContainer[str]
    selection: int
    aggregator: Aggregator
    constitution: ConstitutionRef
    template: TemplateRef
    model: str
    seed: int
    per_principle: _containers.RepeatedCompositeFieldContainer[PrincipleResult]
    calibration: Calibration
    mode: Mode
    raw_margin: float
    raw_p_a: float
    cot_max_probability: float
    cot_max_tokens: int
    rationales: _containers.RepeatedCompositeFieldContainer[Rationale]
    ensemble: EnsembleProvenance
    def __init__(self, id: _Optional[str] = ..., preferred: _Optional[str] = ..., margin: _Optional[float] = ..., p_a: _Optional[float] = ..., position_bias: _Optional[float] = ..., consistency: _Optional[float] = ..., answer_mass: _Optional[float] = ..., low_confidence: _Optional[bool] = ..., principles: _Optional[_Iterable[str]] = ..., selection: _Optional[int] = ..., aggregator: _Optional[_Union[Aggregator, str]] = ..., constitution: _Optional[_Union[ConstitutionRef, _Mapping]] = ..., template: _Optional[_Union[TemplateRef, _Mapping]] = ..., model: _Optional[str] = ..., seed: _Optional[int] = ..., per_principle: _Optional[_Iterable[_Union[PrincipleResult, _Mapping]]] = ..., calibration: _Optional[_Union[Calibration, _Mapping]] = ..., mode: _Optional[_Union[Mode, str]] = ..., raw_margin: _Optional[float] = ..., raw_p_a: _Optional[float] = ..., cot_max_probability: _Optional[float] = ..., cot_max_tokens: _Optional[int] = ..., rationales: _Optional[_Iterable[_Union[Rationale, _Mapping]]] = ..., ensemble: _Optional[_Union[EnsembleProvenance, _Mapping]] = ...) -> None: ...

class EnsembleProvenance(_message.Message):
    __slots__ = ("rule", "delta", "clip", "round", "rounds", "scored", "selected", "score_units", "decided", "certain")
    RULE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    SCORE_UNITS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    CERTAIN_FIELD_NUMBER: _ClassVar[int]
    rule: str
    delta: float
    clip: float
    round: int
    rounds: int
    scored: int
    selected: int
    score_units: int
    decided: str
    certain: bool
    def __init__(self, rule: _Optional[str] = ..., delta: _Optional[float] = ..., clip: _Optional[float] = ..., round: _Optional[int] = ..., rounds: _Optional[int] = ..., scored: _Optional[int] = ..., selected: _Optional[int] = ..., score_units: _Optional[int] = ..., decided: _Optional[str] = ..., certain: _Optional[bool] = ...) -> None: ...

class Calibration(_message.Message):
    __slots__ = ("profile", "raw_margin", "raw_p_a")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RAW_MARGIN_FIELD_NUMBER: _ClassVar[int]
    RAW_P_A_FIELD_NUMBER: _ClassVar[int]
    profile: str
    raw_margin: float
    raw_p_a: float
    def __init__(self, profile: _Optional[str] = ..., raw_margin: _Optional[float] = ..., raw_p_a: _Optional[float] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("type", "message", "param")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    param: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., param: _Optional[str] = ...) -> None: ...

class PairError(_message.Message):
    __slots__ = ("id", "index", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: int
    error: ErrorDetail
    def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ...) -> None: ...

class LabelResult(_message.Message):
    __slots__ = ("label", "error")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    label: Label
    error: PairError
    def __init__(self, label: _Optional[_Union[Label, _Mapping]] = ..., error: _Optional[_Union[PairError, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("pairs", "score_units", "prompt_tokens", "cached_prompt_tokens", "cached_score_units")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    SCORE_UNITS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_SCORE_UNITS_FIELD_NUMBER: _ClassVar[int]
    pairs: int
    score_units: int
    prompt_tokens: int
    cached_prompt_tokens: int
    cached_score_units: int
    def __init__(self, pairs: _Optional[int] = ..., score_units: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., cached_score_units: _Optional[int] = ...) -> None: ...

class LabelResponse(_message.Message):
    __slots__ = ("results", "usage")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LabelResult]
    usage: Usage
    def __init__(self, results: _Optional[_Iterable[_Union[LabelResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class LabelStreamRequest(_message.Message):
    __slots__ = ("options", "pair")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    options: LabelOptions
    pair: Pair
    def __init__(self, options: _Optional[_Union[LabelOptions, _Mapping]] = ..., pair: _Optional[_Union[Pair, _Mapping]] = ...) -> None: ...

class LabelStreamResponse(_message.Message):
    __slots__ = ("id", "index", "result")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: int
    result: LabelResult
    def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., result: _Optional[_Union[LabelResult, _Mapping]] = ...) -> None: ...

class RewardGroup(_message.Message):
    __slots__ = ("id", "text", "chat", "completions")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    chat: ChatPrompt
    completions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., chat: _Optional[_Union[ChatPrompt, _Mapping]] = ..., completions: _Optional[_Iterable[str]] = ...) -> None: ...

class RewardItem(_message.Message):
    __slots__ = ("id", "text", "chat", "completion", "reference")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    chat: ChatPrompt
    completion: str
    reference: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., chat: _Optional[_Union[ChatPrompt, _Mapping]] = ..., completion: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class RewardGroups(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[RewardGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[RewardGroup, _Mapping]]] = ...) -> None: ...

class RewardItems(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RewardItem]
    def __init__(self, items: _Optional[_Iterable[_Union[RewardItem, _Mapping]]] = ...) -> None: ...

class RewardsRequest(_message.Message):
    __slots__ = ("options", "groups", "items", "opponents", "scoring", "detail", "exploits")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OPPONENTS_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    EXPLOITS_FIELD_NUMBER: _ClassVar[int]
    options: LabelOptions
    groups: RewardGroups
    items: RewardItems
    opponents: int
    scoring: Scoring
    detail: bool
    exploits: ExploitPolicy
    def __init__(self, options: _Optional[_Union[LabelOptions, _Mapping]] = ..., groups: _Optional[_Union[RewardGroups, _Mapping]] = ..., items: _Optional[_Union[RewardItems, _Mapping]] = ..., opponents: _Optional[int] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., detail: _Optional[bool] = ..., exploits: _Optional[_Union[ExploitPolicy, str]] = ...) -> None: ...

class RewardProvenance(_message.Message):
    __slots__ = ("model", "constitution", "template", "principles", "seed", "aggregator", "calibration_profile")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONSTITUTION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_PROFILE_FIELD_NUMBER: _ClassVar[int]
    model: str
    constitution: ConstitutionRef
    template: TemplateRef
    principles: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    aggregator: Aggregator
    calibration_profile: str
    def __init__(self, model: _Optional[str] = ..., constitution: _Optional[_Union[ConstitutionRef, _Mapping]] = ..., template: _Optional[_Union[TemplateRef, _Mapping]] = ..., principles: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., aggregator: _Optional[_Union[Aggregator, str]] = ..., calibration_profile: _Optional[str] = ...) -> None: ...

class MatchDetail(_message.Message):
    __slots__ = ("completion", "reference", "outcome", "margin", "consistency")
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    completion: int
    reference: bool
    outcome: float
    margin: float
    consistency: float
    def __init__(self, completion: _Optional[int] = ..., reference: _Optional[bool] = ..., outcome: _Optional[float] = ..., margin: _Optional[float] = ..., consistency: _Optional[float] = ...) -> None: ...

class CompletionDetail(_message.Message):
    __slots__ = ("matches", "mean_margin", "consistency", "raw_reward")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    MEAN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    RAW_REWARD_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[MatchDetail]
    mean_margin: float
    consistency: float
    raw_reward: float
    def __init__(self, matches: _Optional[_Iterable[_Union[MatchDetail, _Mapping]]] = ..., mean_margin: _Optional[float] = ..., consistency: _Optional[float] = ..., raw_reward: _Optional[float] = ...) -> None: ...

class ExploitReasons(_message.Message):
    __slots__ = ("reasons",)
    REASONS_FIELD_NUMBER: _ClassVar[int]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class GroupRewards(_message.Message):
    __slots__ = ("id", "rewards", "provenance", "detail", "converged", "low_confidence", "exploits")
    ID_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLOITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    rewards: _containers.RepeatedScalarFieldContainer[float]
    provenance: RewardProvenance
    detail: _containers.RepeatedCompositeFieldContainer[CompletionDetail]
    converged: bool
    low_confidence: _containers.RepeatedScalarFieldContainer[int]
    exploits: _containers.RepeatedCompositeFieldContainer[ExploitReasons]
    def __init__(self, id: _Optional[str] = ..., rewards: _Optional[_Iterable[float]] = ..., provenance: _Optional[_Union[RewardProvenance, _Mapping]] = ..., detail: _Optional[_Iterable[_Union[CompletionDetail, _Mapping]]] = ..., converged: _Optional[bool] = ..., low_confidence: _Optional[_Iterable[int]] = ..., exploits: _Optional[_Iterable[_Union[ExploitReasons, _Mapping]]] = ...) -> None: ...

class ItemReward(_message.Message):
    __slots__ = ("id", "reward", "provenance", "detail", "low_confidence", "exploits")
    ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPLOITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    reward: float
    provenance: RewardProvenance
    detail: CompletionDetail
    low_confidence: bool
    exploits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., reward: _Optional[float] = ..., provenance: _Optional[_Union[RewardProvenance, _Mapping]] = ..., detail: _Optional[_Union[CompletionDetail, _Mapping]] = ..., low_confidence: _Optional[bool] = ..., exploits: _Optional[_Iterable[str]] = ...) -> None: ...

class RewardResult(_message.Message):
    __slots__ = ("group", "item", "error")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    group: GroupRewards
    item: ItemReward
    error: PairError
    def __init__(self, group: _Optional[_Union[GroupRewards, _Mapping]] = ..., item: _Optional[_Union[ItemReward, _Mapping]] = ..., error: _Optional[_Union[PairError, _Mapping]] = ...) -> None: ...

class RewardsResponse(_message.Message):
    __slots__ = ("results", "usage")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RewardResult]
    usage: Usage
    def __init__(self, results: _Optional[_Iterable[_Union[RewardResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ListConstitutionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConstitutionSummary(_message.Message):
    __slots__ = ("id", "latest_version", "versions", "principles", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    latest_version: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    principles: int
    description: str
    def __init__(self, id: _Optional[str] = ..., latest_version: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., principles: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class ListConstitutionsResponse(_message.Message):
    __slots__ = ("constitutions",)
    CONSTITUTIONS_FIELD_NUMBER: _ClassVar[int]
    constitutions: _containers.RepeatedCompositeFieldContainer[ConstitutionSummary]
    def __init__(self, constitutions: _Optional[_Iterable[_Union[ConstitutionSummary, _Mapping]]] = ...) -> None: ...

class GetConstitutionRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class Principle(_message.Message):
    __slots__ = ("id", "question", "critique", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    question: str
    critique: str
    revision: str
    def __init__(self, id: _Optional[str] = ..., question: _Optional[str] = ..., critique: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class Constitution(_message.Message):
    __slots__ = ("id", "version", "description", "template", "principles")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    description: str
    template: str
    principles: _containers.RepeatedCompositeFieldContainer[Principle]
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., template: _Optional[str] = ..., principles: _Optional[_Iterable[_Union[Principle, _Mapping]]] = ...) -> None: ...
