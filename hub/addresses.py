"""Addresses and their normalised targets (E.164 for phone numbers, LINE user ids as given)."""

from __future__ import annotations

import re

import msgspec

ADDRESS_TYPES = ("tel", "line", "agent", "email")
# The channel a participant's address is reached through.
CHANNEL_OF_ADDRESS = {"tel": "sms", "line": "line", "email": "email"}
# ASCII digits only: `\d` would let Arabic-Indic or full-width digits through to providers.
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
_TEL_STRIP = re.compile(r"[\s\-().]")
_E164 = re.compile(E164_PATTERN)
# What may remain once separators are gone: an optional '+' and digits; letters are never dropped.
_DIALABLE = re.compile(r"^\+?[0-9]+$")


class Address(msgspec.Struct, kw_only=True, omit_defaults=False):
    type: str = ""
    target: str = ""
    target_name: str = ""
    name: str = ""
    detail: str = ""


def normalize_tel(raw: str, default_country_code: str = "1") -> str:
    """Best-effort E.164: keeps '+' and digits, maps '00' to '+', adds the default country code
    to bare national numbers. Returns "" when nothing usable remains."""
    value = _TEL_STRIP.sub("", raw or "")
    if value.startswith("00"):
        value = "+" + value[2:]
    if not _DIALABLE.match(value):
        return ""
    if not value.startswith("+"):
        digits = re.sub(r"[^0-9]", "", value)
        if not digits:
            return ""
        if len(digits) == 10 and default_country_code == "1":
            value = "+1" + digits
        elif len(digits) == 11 and digits.startswith(default_country_code):
            value = "+" + digits
        else:
            value = "+" + digits
    value = "+" + re.sub(r"[^0-9]", "", value[1:])
    return value if _E164.match(value) else ""


def has_foreign_digits(text: str) -> bool:
    """Digits other than ASCII 0-9 (Arabic-Indic, full-width...): never part of a phone number."""
    return any(ch.isdigit() and not ch.isascii() for ch in text)


def normalize_target(address_type: str, target: str) -> str:
    if address_type == "tel":
        return normalize_tel(target)
    if address_type == "email":
        return target.strip().lower()
    return target.strip()
