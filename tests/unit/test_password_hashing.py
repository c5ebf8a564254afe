"""The product hashes passwords with argon2id at RFC 9106's low-memory profile; the suite's cheaper
hasher (tests/conftest.py) changes the cost, not the algorithm, and hashes of either cost verify."""

from __future__ import annotations

from argon2 import PasswordHasher, Type, extract_parameters

from hub import auth


def test_the_product_hashes_with_argon2id_at_rfc_9106_low_memory_cost():
    hasher = auth.PASSWORD_HASHER
    assert (hasher.type, hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (Type.ID, 3, 65536, 4)
    parameters = extract_parameters(hasher.hash("correct horse"))
    assert (parameters.type, parameters.time_cost, parameters.memory_cost) == (Type.ID, 3, 65536)


async def test_hashes_of_either_cost_verify_and_a_wrong_password_does_not():
    product, cheap = auth.PASSWORD_HASHER, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    for made_by in (product, cheap):
        stored = made_by.hash("correct horse")
        assert await auth.verify_password(stored, "correct horse")
        assert not await auth.verify_password(stored, "battery staple")
    # What the suite's tests hash goes through hub.auth like the product's.
    stored = await auth.hash_password("correct horse")
    assert extract_parameters(stored).type == Type.ID
    assert await auth.verify_password(stored, "correct horse")
