"""The documented pattern of an account number (api.schemas.DIALABLE_PATTERN) admits exactly the
texts hub.addresses.normalize_tel turns into E.164: what the schema allows, the API takes."""

from __future__ import annotations

import random
import re

from api.schemas import DIALABLE_PATTERN
from hub.addresses import normalize_tel

PATTERN = re.compile(DIALABLE_PATTERN)


def test_the_number_pattern_is_what_normalises():
    rng = random.Random(14)
    alphabets = ["0123456789+ ().-", "0123456789", "01+ ", "0123456789 -"]
    checked = {"accepted": 0, "refused": 0}
    for _ in range(100_000):
        alphabet = rng.choice(alphabets)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 22)))
        accepted = bool(normalize_tel(text))
        assert accepted == bool(PATTERN.search(text)), (text, normalize_tel(text))
        checked["accepted" if accepted else "refused"] += 1
    assert min(checked.values()) > 10_000, checked


def test_the_number_pattern_on_known_forms():
    for text in ("+1 (415) 555-0123", "4155550123", "0014155550123", "+44 20 7946 0958", "", "0415550123"):
        assert PATTERN.search(text), text
    for text in ("nope", "+1 555 CALL NOW", "   ", "+0123456789", "123", "+1 415 555 0123\n", "00"):
        assert not PATTERN.search(text), text
