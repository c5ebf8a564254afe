"""Pure rules of participants: which accounts can send, the order of selection, flow variables,
addresses given to the participants API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hub.addresses import Address
from hub.errors import BadRequest
from hub.participants import _by_activity, account_problem, normalized_address, variables

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_accounts_deleted_or_without_credentials_cannot_send():
    sms = {"type": "sms", "sid": "AC1", "token": "t", "tm_delete": None}
    assert account_problem(sms) == ""
    assert account_problem(None) == "its account was deleted"
    assert account_problem({**sms, "tm_delete": T0}) == "its account was deleted"
    assert "sid" in account_problem({**sms, "sid": ""})
    assert "token" in account_problem({"type": "line", "token": "", "tm_delete": None})
    assert account_problem({"type": "line", "token": "t", "tm_delete": None}) == ""


def test_selection_order_is_latest_inbound_first_then_the_never_active_first_participant_first():
    rows = [
        {"id": "first", "tm_last_active": None},
        {"id": "old", "tm_last_active": T0},
        {"id": "added", "tm_last_active": None},
        {"id": "latest", "tm_last_active": T0 + timedelta(minutes=1)},
    ]
    assert [r["id"] for r in _by_activity(rows)] == ["latest", "old", "first", "added"]


def test_flow_variables_number_the_participants_from_the_first():
    contact = uuid.uuid4()
    rows = [
        {
            "id": 1,
            "account_id": 2,
            "address_type": "tel",
            "target": "+1415",
            "target_name": "",
            "contact_id": None,
        },
        {
            "id": 3,
            "account_id": 4,
            "address_type": "line",
            "target": "Uab",
            "target_name": "Al",
            "contact_id": contact,
        },
    ]
    got = variables(rows)
    assert got["conversation.participants.count"] == "2"
    assert (got["conversation.participants.0.channel"], got["conversation.participants.0.contact_id"]) == (
        "sms",
        "",
    )
    assert got["conversation.participants.1.address.target_name"] == "Al"
    assert got["conversation.participants.1.contact_id"] == str(contact)


def test_addresses_for_the_api_are_normalised_or_refused():
    assert normalized_address(Address(type="tel", target="(415) 555-1234")).target == "+14155551234"
    assert (
        normalized_address(Address(type="email", target=" Alice@Example.COM ")).target == "alice@example.com"
    )
    for bad in (
        Address(type="tel", target="call me"),
        Address(type="email", target="not-an-email"),
        Address(type="line", target="U 1"),
        Address(type="agent", target="x"),
    ):
        with pytest.raises(BadRequest):
            normalized_address(bad)
