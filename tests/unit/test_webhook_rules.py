"""Pure webhook rules: the retry schedule, which addresses are public, the body and its signature."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from activities.webhook_http import sign
from hub.events import payload
from hub.netguard import TargetRefused, check_address, ip_literal, is_public
from hub.settings import Settings
from hub.webhooks import new_secret, retry_after_seconds, retry_delay


def test_the_default_schedule_is_the_documented_one():
    schedule = Settings().resolved_webhook_retry_schedule
    assert schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert [retry_delay(n, schedule) for n in range(1, 9)] == [*schedule, None]
    assert retry_delay(0, schedule) is None


def test_retry_after_delays_the_next_attempt_up_to_the_longest_delay_of_the_schedule():
    schedule = (5.0, 300.0, 1800.0)
    assert retry_delay(1, schedule, 120) == 120  # later than the schedule says: honoured
    assert retry_delay(1, schedule, 86400) == 1800  # bounded by the schedule's longest delay
    assert retry_delay(2, schedule, 1) == 300  # never sooner than the schedule
    assert retry_delay(3, schedule, None) == 1800
    assert retry_delay(4, schedule, 60) is None  # no extra attempts either


def test_retry_after_is_read_as_seconds_or_an_http_date():
    stamp = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", stamp) == 120
    assert retry_after_seconds(" 0 ", stamp) == 0
    assert retry_after_seconds("Tue, 01 Dec 2026 10:02:30 GMT", stamp) == 150
    assert retry_after_seconds("Tue, 01 Dec 2026 09:00:00 GMT", stamp) == 0  # a date in the past
    for unreadable in (None, "", "soon", "-5", "1.5", "Tue, 99 Foo 2026"):
        assert retry_after_seconds(unreadable, stamp) is None, unreadable


def test_cors_origins_are_a_comma_separated_list_off_by_default():
    assert Settings().resolved_cors_origins == []
    given = Settings.from_env({"HUB_CORS_ORIGINS": " https://inbox.example.com/, http://localhost:5173 ,"})
    assert given.resolved_cors_origins == ["https://inbox.example.com", "http://localhost:5173"]


def test_a_malformed_schedule_is_refused():
    with pytest.raises(ValueError, match="comma-separated"):
        _ = Settings.from_env({"HUB_WEBHOOK_RETRY_SCHEDULE_S": "5,soon"}).resolved_webhook_retry_schedule
    with pytest.raises(ValueError, match="negative"):
        _ = Settings(webhook_retry_schedule_s="5,-1").resolved_webhook_retry_schedule
    assert Settings.from_env({"HUB_WEBHOOK_ALLOW_PRIVATE": "true"}).webhook_allow_private is True


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.31.255.255",
        "192.168.10.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_private_loopback_and_link_local_addresses_are_not_public(address):
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(TargetRefused, match="loopback, private or link-local"):
        check_address(address, allow_private=False)
    check_address(address, allow_private=True)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert is_public(ipaddress.ip_address(address))
    check_address(address, allow_private=False)


def test_ip_literals_are_told_from_names():
    assert ip_literal("127.0.0.1") == "127.0.0.1"
    assert ip_literal("[::1]") == "::1"
    assert ip_literal("localhost") is None and ip_literal("example.com") is None


def test_the_body_is_type_timestamp_and_the_untouched_outbox_data():
    happened = datetime(2026, 12, 1, 10, 9, 0, 344522, tzinfo=timezone(timedelta(hours=9)))
    body = payload("conversation_updated", '{"id":"x","name":"SMS \u00b7 +1"}', happened)
    assert json.loads(body) == {
        "type": "conversation_updated",
        "timestamp": "2026-12-01T01:09:00.344522Z",  # the event's time, RFC 3339 in UTC
        "data": {"id": "x", "name": "SMS \u00b7 +1"},
    }
    assert list(json.loads(body)) == ["type", "timestamp", "data"]


def test_signatures_verify_with_each_signing_secret_and_not_with_others():
    current, previous, stranger = new_secret(), new_secret(), new_secret()
    assert current.startswith("whsec_") and current != previous
    body = payload("conversation_created", '{"id": "x"}', datetime.now(UTC)).decode()
    stamp = datetime.now(UTC)
    headers = {
        "webhook-id": "evt-1",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": sign((current, previous), "evt-1", stamp, body),
    }
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (current, previous):
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(body.replace("x", "y"), headers)
