"""Pure domain rules: auto titles, E.164 normalisation, permission helpers, page tokens."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub.addresses import normalize_target, normalize_tel
from hub.errors import BadRequest, Forbidden
from hub.pagination import check_page_size, decode_token, encode_token
from hub.permissions import (
    ADMIN,
    MANAGER,
    NIL_UUID,
    check_grant,
    check_list_owner_filter,
    check_manage,
    check_unassign,
    is_admin_or_manager,
    owner_type_for,
    require_admin_or_manager,
)
from hub.titles import auto_title

LINE_USER_ID = "U4af4980629" + "0123456789abcdef0123"

# ---------------------------------------------------------------------------------------- titles


@pytest.mark.parametrize(
    ("target", "known_name", "expected"),
    [
        ("+14155551234", "Alice", "SMS \u00b7 Alice (+14155551234)"),
        ("+14155551234", "", "SMS \u00b7 +14155551234"),
        ("", "", "SMS \u00b7 Unknown"),
    ],
)
def test_sms_titles_byte_for_byte(target, known_name, expected):
    name, detail = auto_title("message", target, known_name)
    assert name == expected
    assert detail == "SMS conversation"
    # U+00B7 MIDDLE DOT, not a period, bullet or ASCII substitute, surrounded by single spaces.
    encoded = name.encode("utf-8")
    assert b"SMS \xc2\xb7 " in encoded
    assert encoded.count(b"\xc2\xb7") == 1
    assert encoded == expected.encode("utf-8")


def test_sms_title_exact_bytes_with_contact_name():
    name, detail = auto_title("message", "+14155551234", "Alice")
    assert name.encode("utf-8") == b"SMS \xc2\xb7 Alice (+14155551234)"
    assert detail.encode("utf-8") == b"SMS conversation"


@pytest.mark.parametrize(
    ("display_name", "expected"),
    [("Alice", "LINE \u00b7 Alice"), ("", "LINE \u00b7 Unknown")],
)
def test_line_titles_never_show_the_line_user_id(display_name, expected):
    name, detail = auto_title("line", LINE_USER_ID, display_name)
    assert name == expected
    assert name.encode("utf-8") == b"LINE \xc2\xb7 " + expected.split(" ", 2)[2].encode("utf-8")
    assert detail == "LINE conversation"
    assert LINE_USER_ID not in name and LINE_USER_ID not in detail
    assert "U4af" not in name


def test_line_title_with_non_ascii_display_name():
    name, _ = auto_title("line", LINE_USER_ID, "山田太郎")
    assert name == "LINE \u00b7 山田太郎"


# ------------------------------------------------------------------------------ E.164 normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155551234", "+14155551234"),
        ("+1 (415) 555-1234", "+14155551234"),
        ("+1 415-555-1234", "+14155551234"),
        ("415.555.1234", "+14155551234"),
        ("4155551234", "+14155551234"),  # bare national number: default country code 1
        ("14155551234", "+14155551234"),
        ("  +81-90-1234-5678 ", "+819012345678"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),  # international 00 prefix
        ("+1234567", "+1234567"),  # shortest accepted: 7 digits
        ("+123456789012345", "+123456789012345"),  # longest accepted: 15 digits
    ],
)
def test_normalize_tel_to_e164(raw, expected):
    assert normalize_tel(raw) == expected
    # Normalisation is idempotent.
    assert normalize_tel(expected) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        None,
        "   ",
        "abc",
        "+",
        "12345",  # too short
        "+123456",  # 6 digits
        "+1234567890123456",  # 16 digits
        "+0123456789",  # country codes never start with 0
        "++14155551234",
        "nope",
        "+1 415 555 1234 ext 5",  # letters are not separators: never a different, valid-looking number
        "+1abc4155551234",
        "1-800-FLOWERS",
    ],
)
def test_normalize_tel_rejects_garbage(raw):
    assert normalize_tel(raw) == ""


def test_normalize_target_by_address_type():
    assert normalize_target("tel", "+1 (415) 555-1234") == "+14155551234"
    assert normalize_target("tel", "not a number") == ""
    assert normalize_target("email", "  Alice@Example.COM ") == "alice@example.com"
    # LINE user ids are opaque and case-sensitive: only surrounding whitespace goes.
    assert normalize_target("line", f" {LINE_USER_ID} ") == LINE_USER_ID


# ------------------------------------------------------------------------------------ permissions

AGENT = uuid.uuid4()
OTHER = uuid.uuid4()


@pytest.mark.parametrize(
    ("permission", "expected"),
    [(0, False), (ADMIN, True), (MANAGER, True), (ADMIN | MANAGER, True), (0x01, False)],
)
def test_is_admin_or_manager(permission, expected):
    assert is_admin_or_manager(permission) is expected
    if expected:
        require_admin_or_manager(permission)
    else:
        with pytest.raises(Forbidden):
            require_admin_or_manager(permission)


def test_permission_bit_values_match_the_contract():
    assert (ADMIN, MANAGER) == (0x20, 0x40)
    assert NIL_UUID == uuid.UUID("00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize("permission", [ADMIN, MANAGER])
def test_list_owner_filter_for_admin_and_manager(permission):
    assert check_list_owner_filter(AGENT, permission, None) is None
    assert check_list_owner_filter(AGENT, permission, NIL_UUID) is None
    assert check_list_owner_filter(AGENT, permission, OTHER) == OTHER
    assert check_list_owner_filter(AGENT, permission, AGENT) == AGENT


def test_list_owner_filter_for_plain_agent():
    assert check_list_owner_filter(AGENT, 0, AGENT) == AGENT
    for owner_id in (None, NIL_UUID, OTHER):
        with pytest.raises(Forbidden):
            check_list_owner_filter(AGENT, 0, owner_id)


def test_check_unassign():
    for permission in (ADMIN, MANAGER):
        check_unassign(AGENT, permission, OTHER)
        check_unassign(AGENT, permission, NIL_UUID)
    check_unassign(AGENT, 0, AGENT)  # the owner may
    with pytest.raises(Forbidden):
        check_unassign(AGENT, 0, OTHER)
    with pytest.raises(Forbidden):
        check_unassign(AGENT, 0, NIL_UUID)


def test_check_grant():
    for requested in (0, ADMIN, MANAGER, ADMIN | MANAGER):
        check_grant(ADMIN, requested)
    check_grant(MANAGER, 0)
    check_grant(MANAGER, MANAGER)
    for requested in (ADMIN, ADMIN | MANAGER):
        with pytest.raises(Forbidden):
            check_grant(MANAGER, requested)
    check_grant(0, 0)
    with pytest.raises(Forbidden):
        check_grant(0, MANAGER)


def test_check_manage():
    for target in (0, ADMIN, MANAGER, ADMIN | MANAGER):
        check_manage(ADMIN, target)
    check_manage(MANAGER, 0)
    check_manage(MANAGER, MANAGER)
    # A manager may not reset the password of (or delete) an admin.
    for target in (ADMIN, ADMIN | MANAGER):
        with pytest.raises(Forbidden):
            check_manage(MANAGER, target)


def test_owner_type_is_derived_from_owner_id():
    assert owner_type_for(NIL_UUID) == ""
    assert owner_type_for(AGENT) == "agent"


# ------------------------------------------------------------------------------------ page tokens


@pytest.mark.parametrize(
    "tm_create",
    [
        datetime(2026, 11, 25, 11, 30, 0, 123456, tzinfo=UTC),
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=9))),
    ],
)
def test_page_token_round_trip(tm_create):
    row_id = uuid.uuid4()
    token = encode_token(tm_create, row_id)
    assert isinstance(token, str) and token
    # Opaque and URL-safe: usable in a query string without escaping.
    assert all(c.isalnum() or c in "-_" for c in token)
    decoded_tm, decoded_id = decode_token(token)
    assert decoded_tm == tm_create
    assert decoded_tm.utcoffset() == timedelta(0)  # handed to the database in UTC
    assert decoded_id == row_id


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!!",
        "a",
        "é",
        "\x00",
        _b64(b"not json"),
        _b64(b"\xff\xfe\xfd"),
        _b64(b"null"),
        _b64(b"[]"),
        _b64(b"[1]"),
        _b64(b"[1, 2]"),
        _b64(b'"ab"'),
        _b64(b'{"a": 1, "b": 2}'),
        _b64(b'["not a date", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'),  # naive time
        _b64(b'["2026-01-01T00:00:00+00:00", "not-a-uuid"]'),
        # Valid ISO times that leave the calendar once in UTC (a 500 from the driver before).
        _b64(b'["0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'["9999-12-31T23:59:59-14:00", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'["2026-01-01T00:00:00+00:00", 5]'),
        _b64(b'["2026-01-01T00:00:00+00:00", "00000000-0000-0000-0000-000000000000", 3]'),
    ],
)
def test_garbage_page_tokens_are_bad_request(token):
    with pytest.raises(BadRequest) as info:
        decode_token(token)
    assert info.value.status == 400
    assert "page_token" in info.value.message


@pytest.mark.parametrize("size", [1, 50, 100])
def test_page_size_in_range(size):
    assert check_page_size(size) == size


@pytest.mark.parametrize("size", [0, -1, 101, 10_000])
def test_page_size_out_of_range(size):
    with pytest.raises(BadRequest):
        check_page_size(size)
