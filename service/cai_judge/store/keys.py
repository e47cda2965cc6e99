"""Every Redis key the service uses, in one place, under a versioned prefix (DESIGN.md §5).

As arq does: one module names the keys, so a layout change bumps `PREFIX` (cai:v1: ->
cai:v2:) and old and new replicas never read each other's data by mistake. Ids that go
into keys are content hashes or server-made job ids, never raw user text.
"""

from __future__ import annotations

PREFIX = "cai:v1:"


# -- label cache: one string per score unit, value = packed (logprob_a, logprob_b, tokens)
def cache_unit(digest: str) -> str:
    return f"{PREFIX}cache:unit:{digest}"


# -- constitution registry
CONSTITUTION_IDS = f"{PREFIX}constitutions:ids"  # set of ids
CONSTITUTION_LATEST = f"{PREFIX}constitutions:latest"  # hash id -> version
CONSTITUTION_RESERVED = f"{PREFIX}constitutions:reserved"  # set of ids loaded from files


def constitution_versions(constitution_id: str) -> str:
    """Hash version -> canonical JSON, in the order added (HSETNX: a version never changes)."""
    return f"{PREFIX}constitutions:versions:{constitution_id}"


def constitution_order(constitution_id: str) -> str:
    """List of versions in the order they were first stored."""
    return f"{PREFIX}constitutions:order:{constitution_id}"


# -- batch jobs
JOBS_STREAM = f"{PREFIX}jobs:tasks"  # one entry per chunk of pairs: {job, start, end}
JOBS_GROUP = "workers"  # the consumer group every replica reads with
# Stream of chunks given up after too many deliveries: {job, start, end, deliveries, reason}.
JOBS_DEAD_LETTER = f"{PREFIX}jobs:dead"


def jobs_by_state(state: str) -> str:
    """Sorted set of job ids, scored by when they expire (+inf while active): the gauge."""
    return f"{PREFIX}jobs:state:{state}"


def job(job_id: str) -> str:
    """Hash: the job's options, counters, state and timestamps."""
    return f"{PREFIX}job:{job_id}"


def job_pairs(job_id: str) -> str:
    """List: the raw input lines, one per pair, in input order (LRANGE by chunk)."""
    return f"{PREFIX}job:{job_id}:pairs"


def job_results(job_id: str) -> str:
    """Hash index -> result JSON; written with HSETNX, so a redelivered chunk adds nothing."""
    return f"{PREFIX}job:{job_id}:results"


def job_chunk_failures(job_id: str) -> str:
    """Hash chunk start -> why its last delivery failed: the dead letter's reason."""
    return f"{PREFIX}job:{job_id}:chunk_failures"


def owner_jobs(owner_digest: str) -> str:
    """Sorted set of one key's job ids, scored by creation time: GET /v1/jobs."""
    return f"{PREFIX}owner:{owner_digest}:jobs"


def owner_usage(owner_digest: str) -> str:
    """Hash active_jobs, pairs_queued, bytes_stored: one key's quota use (active jobs)."""
    return f"{PREFIX}owner:{owner_digest}:usage"


def idempotency(scope_digest: str) -> str:
    """String `job_id body_digest`, for one (caller, Idempotency-Key)."""
    return f"{PREFIX}idempotency:{scope_digest}"


def job_keys(job_id: str) -> tuple[str, str, str]:
    return job(job_id), job_pairs(job_id), job_results(job_id)


# -- group rewards (services/group_rewards.py): one-sample trainers' samples held until their
# group has arrived. A scope digest hashes the caller, the options, the group size and the group
# key (the prompt by default): never raw text. Group ids are server-made (uuid4 hex).
REWARD_GROUP_PREFIX = f"{PREFIX}rgroup:"


def reward_group_open(scope_digest: str) -> str:
    """String: the id of the scope's open group (deleted when the group closes)."""
    return f"{REWARD_GROUP_PREFIX}open:{scope_digest}"


def reward_group_members(group_id: str) -> str:
    """List of member JSON, one per slot in arrival order. The join script builds this name
    from REWARD_GROUP_PREFIX in Lua (the group id is only known inside it), so keep the two in
    step: `{REWARD_GROUP_PREFIX}{group_id}:members`."""
    return f"{REWARD_GROUP_PREFIX}{group_id}:members"


def reward_group_judge(group_id: str) -> str:
    """String, SET NX: the one replica that judges the group."""
    return f"{REWARD_GROUP_PREFIX}{group_id}:judge"


def reward_group_results(group_id: str) -> str:
    """String: the group's results, a JSON list with one entry per slot."""
    return f"{REWARD_GROUP_PREFIX}{group_id}:results"
