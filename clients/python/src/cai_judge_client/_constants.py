"""Defaults for the clients: one place, so the README, the clients and the tests agree."""

from __future__ import annotations

import httpx

BASE_URL_ENV = "CAI_JUDGE_BASE_URL"
API_KEY_ENV = "CAI_JUDGE_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

# A label request on a busy CPU judge can take minutes; connecting should not.
DEFAULT_TIMEOUT = httpx.Timeout(timeout=600.0, connect=10.0)
DEFAULT_MAX_RETRIES = 5
DEFAULT_CONNECTION_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)

# Exponential backoff with full jitter between these bounds (seconds).
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 20.0
# A Retry-After above this is cut to it: a replica that asks for an hour is not waited on.
MAX_RETRY_AFTER_S = 60.0

# 408 timeout, 409 conflict (a lock that clears), 429 rate limit, 5xx the server's side
# (503 is a full queue or a draining replica: the next attempt lands elsewhere).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

IDEMPOTENCY_HEADER = "Idempotency-Key"
REQUEST_ID_HEADER = "X-Request-Id"

# The batch-jobs wire contract (DESIGN.md §5).
NEXT_CURSOR_HEADER = "X-Next-Cursor"
JOB_STATE_HEADER = "X-Job-State"
DEFAULT_RESULTS_PAGE = 1000
