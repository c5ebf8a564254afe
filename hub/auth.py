"""Password hashing (Argon2id) and the hub's JSON Web Tokens (HS256)."""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache
from typing import NamedTuple
from uuid import UUID

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub.errors import Unauthorized

# argon2-cffi's defaults, RFC 9106's low-memory profile: time cost 3, 64 MiB, 4 lanes (about a
# quarter of a second per hash on these machines). The test suite swaps in a cheaper hasher of
# the same algorithm (tests/conftest.py); every hash carries its own parameters, so either
# verifies the other's.
PASSWORD_HASHER = PasswordHasher()
_hasher = PASSWORD_HASHER
# What an unknown username is verified against, so that its answer takes as long as a wrong
# password's: made at start-up by the hasher in use, and again if that hasher is replaced.
_dummy = (_hasher, _hasher.hash("not-a-real-password"))


def dummy_hash() -> str:
    global _dummy
    if _dummy[0] is not _hasher:
        _dummy = (_hasher, _hasher.hash("not-a-real-password"))
    return _dummy[1]


async def hash_password(password: str) -> str:
    # Argon2 is deliberately slow; keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class TokenClaims(NamedTuple):
    agent_id: UUID
    # The agent's token version when it was issued; a password change bumps the agent's, which
    # ends every older token. Tokens issued before versions existed carry none: version 0.
    version: int


def issue_token(agent_id: UUID, customer_id: UUID, secret: str, ttl_seconds: int, version: int = 0) -> str:
    now = int(time.time())
    claims = {
        "sub": str(agent_id),
        "customer_id": str(customer_id),
        "ver": version,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def read_token(token: str, secret: str) -> TokenClaims:
    """The agent and token version a valid token names; anything else is Unauthorized.

    Every request presents one, and PyJWT's checks cost a tenth of a millisecond (base64 by the
    character, the key vetted as not being a public key each time): a token that passed them is
    remembered, and only its expiry, the one check whose answer changes with time, is made
    again. Refused tokens are never remembered (nbf and iat could make them valid later)."""
    claims, expires = _verified(token, secret)
    if expires <= time.time():  # PyJWT's rule: expired once exp <= now
        raise Unauthorized("invalid or expired token")
    return claims


@lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> tuple[TokenClaims, int]:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        version = claims.get("ver", 0)
        if type(version) is not int:
            raise TypeError("ver must be an integer")
        return TokenClaims(UUID(claims["sub"]), version), int(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise Unauthorized("invalid or expired token") from exc
