"""hub.auth.read_token: PyJWT's verdict on a token, remembered for the tokens it accepted, with
the expiry checked again on every read."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from hub import auth
from hub.auth import issue_token, read_token
from hub.errors import Unauthorized

SECRET = "unit-secret-0123456789-0123456789-0123456789-0123456789"


def test_a_valid_token_is_verified_once_and_read_alike_after():
    agent = uuid.uuid4()
    token = issue_token(agent, uuid.uuid4(), SECRET, 60, version=3)
    before = auth._verified.cache_info()
    assert read_token(token, SECRET) == (agent, 3)
    assert read_token(token, SECRET) == (agent, 3)
    after = auth._verified.cache_info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1


def test_a_remembered_token_still_expires(monkeypatch):
    token = issue_token(uuid.uuid4(), uuid.uuid4(), SECRET, 30)
    read_token(token, SECRET)
    expires = jwt.decode(token, SECRET, algorithms=["HS256"])["exp"]
    monkeypatch.setattr(auth.time, "time", lambda: expires - 0.5)
    assert read_token(token, SECRET).version == 0
    monkeypatch.setattr(auth.time, "time", lambda: float(expires))  # exp <= now: expired
    with pytest.raises(Unauthorized):
        read_token(token, SECRET)


def test_refused_tokens_are_refused_every_time_and_not_remembered():
    good = issue_token(uuid.uuid4(), uuid.uuid4(), SECRET, 60)
    header, payload, signature = good.split(".")
    now = int(time.time())
    refused = [
        issue_token(uuid.uuid4(), uuid.uuid4(), "another-secret-0123456789-0123456789", 60),
        f"{header}.{payload}.{signature[:-2]}AA",
        issue_token(uuid.uuid4(), uuid.uuid4(), SECRET, -1),
        jwt.encode({"sub": str(uuid.uuid4()), "exp": now + 60}, SECRET, algorithm="HS384"),
        jwt.encode({"sub": str(uuid.uuid4())}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "not-a-uuid", "exp": now + 60}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": str(uuid.uuid4()), "exp": now + 60, "ver": "1"}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": str(uuid.uuid4()), "exp": now + 60, "nbf": now + 30}, SECRET, algorithm="HS256"),
        "garbage",
    ]
    size = auth._verified.cache_info().currsize
    for token in refused:
        for _ in range(2):
            with pytest.raises(Unauthorized):
                read_token(token, SECRET)
    assert auth._verified.cache_info().currsize == size
