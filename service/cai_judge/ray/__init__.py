"""Offline labeling on a Ray cluster: the CLI's judge as a Ray Data stage.

RL teams (OpenRLHF, verl, slime) already run Ray, and Ray Data is the field's way to run batch
inference on vLLM, so `cai-judge label IN -o OUT --ray` labels a pairs file there instead of
beside a service (DESIGN.md §4: the offline engine; §8: one labeling path for every front).
`stage.LabelStage` is the actor, one per engine; `run.label_with_ray` is the driver.

Why not `ray.data.llm.build_processor` (ray 2.60, read in `ray/llm/_internal/batch`): it
could carry the two answer tokens' log-probs (its sampling params pass through to vLLM, so
`logprob_token_ids` would reach the engine), but its unit of work is one row = one prompt =
one vLLM request. A label is 2·K score units of one pair (every principle in both orders,
DESIGN.md §2), so pairs would be exploded into units and gathered back with a groupby: an
all-to-all shuffle that gives up streaming and input order. It dedupes nothing, so a pair and
its swap would no longer share their units and antisymmetry would no longer hold to the bit
(DESIGN.md §3). It submits every row of a batch to an `AsyncLLMEngine` at once, without the
Judge's prefix-group scheduling (each order's prefix cached before its K tails: 2.6× against
2.2× for plain vLLM with everything submitted at once, DESIGN.md §3). And rendering, the label
math and calibration would move into its per-row callbacks: a second labeling path. Plain
`map_batches` over a callable class gives what is needed (one actor per engine, a dead actor
restarted and its blocks retried, streaming, input order) and leaves labeling to the Judge.

`ray` is an optional extra (`pip install 'cai-judge[ray]'`); nothing here is imported unless
`--ray` is asked for.
"""
