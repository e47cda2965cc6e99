"""API keys, admin keys and rate limits (services/security.py), without an engine."""

from __future__ import annotations

import pytest

from cai_judge.services.errors import RateLimited, Unauthenticated
from cai_judge.services.security import Authenticator, RateLimiter, hash_api_key


def test_no_keys_means_open_with_the_address_as_identity():
    caller = Authenticator([]).authenticate(None, anonymous_identity="10.0.0.7")
    assert caller.identity == "10.0.0.7" and caller.is_admin


def test_keys_deny_by_default_and_identify_by_digest_prefix():
    auth = Authenticator([hash_api_key("alpha"), hash_api_key("beta")])
    for presented in (None, "", "gamma", "alph", "alpha "):
        with pytest.raises(Unauthenticated) as caught:
            auth.authenticate(presented, anonymous_identity="ip")
        assert caught.value.param == "authorization"
    alpha = auth.authenticate("alpha", anonymous_identity="ip")
    beta = auth.authenticate("beta", anonymous_identity="ip")
    assert alpha.identity == hash_api_key("alpha")[:16] != beta.identity
    assert "alpha" not in alpha.identity
    assert not alpha.is_admin


def test_admin_keys_are_ordinary_keys_too():
    auth = Authenticator([hash_api_key("user")], admin_key_hashes=[hash_api_key("root")])
    assert auth.authenticate("root", anonymous_identity="ip").is_admin
    assert not auth.authenticate("user", anonymous_identity="ip").is_admin
    # Admin keys alone also turn authentication on.
    only_admin = Authenticator([], admin_key_hashes=[hash_api_key("root")])
    assert only_admin.enabled
    with pytest.raises(Unauthenticated):
        only_admin.authenticate(None, anonymous_identity="ip")


def test_digests_are_read_case_and_space_insensitively():
    auth = Authenticator([f"  {hash_api_key('k').upper()}  "])
    assert auth.authenticate("k", anonymous_identity="ip").identity == hash_api_key("k")[:16]


def test_rate_limit_is_per_identity_with_a_retry_after():
    limiter = RateLimiter("2/minute")
    limiter.check("a")
    limiter.check("a")
    limiter.check("b")  # another identity has its own window
    with pytest.raises(RateLimited) as caught:
        limiter.check("a")
    assert caught.value.retry_after_s is not None and 1 <= caught.value.retry_after_s <= 60
    assert "2/minute" in caught.value.message
