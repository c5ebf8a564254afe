"""Channel capabilities and the pure delivery rules: limits, push splitting, retry keys,
summaries, and the order-independent delivery state."""

from __future__ import annotations

import uuid

from hub import channels
from hub.channels import line, sms
from hub.outbound import DONE, FAILED, PROGRESSING, callback_changes, outcome_changes
from hub.settings import Settings


def test_registry_and_limits():
    assert channels.capabilities("sms").text_limit == 1600
    assert channels.capabilities("line").text_limit == 5000
    assert channels.capabilities("line").max_push_messages == 5
    assert channels.capabilities("fax") is None
    assert channels.capabilities("email").attaches_media and channels.capabilities("email").threads
    assert channels.outgoing_problem(sms.CAPABILITIES, "x" * 1600, []) == ""
    assert "1,600" in channels.outgoing_problem(sms.CAPABILITIES, "x" * 1601, [])
    assert "5,000" in channels.outgoing_problem(line.CAPABILITIES, "x" * 5001, [])
    https_image = {"type": "image/png", "url": "https://x/a.png"}
    assert channels.outgoing_problem(line.CAPABILITIES, "", [https_image]) == ""
    assert "https" in channels.outgoing_problem(line.CAPABILITIES, "", [{"type": "image", "url": "http://x"}])
    assert "video" in channels.outgoing_problem(
        line.CAPABILITIES, "", [{"type": "video", "url": "https://x"}]
    )
    assert channels.outgoing_problem(sms.CAPABILITIES, "", [{"type": "video/mp4", "url": "http://x"}]) == ""


def test_line_pushes_keep_every_object_in_order():
    medias = [{"type": "image", "url": f"https://x/{i}.png"} for i in range(10)]
    objects = line.message_objects("hi", medias)
    batches = line.pushes(objects)
    assert [len(b) for b in batches] == [5, 5, 1]
    assert [o for b in batches for o in b] == objects
    assert line.pushes(line.message_objects("only text", [])) == [[{"type": "text", "text": "only text"}]]


def test_line_retry_keys_are_stable_distinct_uuids():
    message_id = str(uuid.uuid4())
    keys = [line.retry_key(message_id, i) for i in range(3)]
    assert keys[0] == message_id and len(set(keys)) == 3
    assert keys == [line.retry_key(message_id, i) for i in range(3)]
    assert all(str(uuid.UUID(k)) == k for k in keys)


def test_line_summaries():
    assert line.summary("text", {"text": "hi"}) == "hi"
    assert line.summary("sticker", {"packageId": "1"}) == "[sticker]"
    assert line.summary("sticker", {"text": "Hello!"}) == "[sticker: Hello!]"
    assert line.summary("location", {"title": "Tower", "address": "Tokyo"}) == "[location: Tower, Tokyo]"
    assert line.summary("location", {"latitude": 35.6, "longitude": 139.7}) == "[location: 35.6,139.7]"
    assert line.summary("file", {"fileName": "a.pdf"}) == "[file: a.pdf]"
    assert line.summary("image", {}) == "[image]"
    assert line.chat_target("group", "U1", "C1", "") == "C1"
    assert line.chat_target("room", "U1", "", "R1") == "R1"
    assert line.chat_target("user", "U1", "", "") == "U1"


def test_status_callback_url_names_the_message():
    url = sms.status_callback_url("https://hub.example", "acc", "11111111-1111-1111-1111-111111111111")
    assert (
        url == "https://hub.example/v1.0/hooks/accounts/acc?message_id=11111111-1111-1111-1111-111111111111"
    )


def test_line_data_host_default():
    assert (
        Settings(line_api_url="https://api.line.me").resolved_line_data_api_url == "https://api-data.line.me"
    )
    assert Settings().resolved_line_data_api_url == Settings().resolved_line_api_url  # the fake of `hub run`
    assert Settings(line_data_api_url="https://d.example/").resolved_line_data_api_url == "https://d.example"


def row(status=PROGRESSING, delivery_status="", provider_message_id=None):
    return {"status": status, "delivery_status": delivery_status, "provider_message_id": provider_message_id}


def test_an_early_failed_callback_wins_over_the_later_send_outcome():
    after_callback = {**row(), **callback_changes(row(), "failed", "ErrorCode=30003")}
    assert (after_callback["status"], after_callback["delivery_status"]) == (FAILED, "failed")
    later = outcome_changes(after_callback, DONE, ["SM1"], "", "queued")
    assert later == {"provider_message_id": "SM1", "provider_message_ids": '["SM1"]'}


def test_delivery_status_only_moves_forward():
    delivered = {**row(DONE, "sent", "SM1"), **callback_changes(row(DONE, "sent", "SM1"), "delivered", "")}
    assert delivered["delivery_status"] == "delivered" and delivered["tm_delivered"] is not None
    assert callback_changes(delivered, "sent", "") == {}
    assert callback_changes(delivered, "failed", "x") == {}
    assert outcome_changes(delivered, DONE, ["SM1"], "", "queued") == {}
    early_delivered = callback_changes(row(), "delivered", "")
    assert early_delivered["status"] == DONE
    assert callback_changes(row(), "sent", "") == {"delivery_status": "sent"}


def test_twilio_signature_check_agrees_with_twilio_validate():
    """sms.signature_valid is twilio's RequestValidator.validate with one HMAC for a valid post:
    the same verdict for each URL form Twilio may sign (with or without the port), a signature
    of other params or another token, a truncated one, and non-ASCII text."""
    from twilio.request_validator import RequestValidator

    params = {"Body": "héllo wörld", "From": "+15551230000", "MessageSid": "SM1", "MediaUrl0": ""}
    urls = [
        "https://hub.example.com/v1.0/hooks/accounts/a",
        "https://hub.example.com:443/v1.0/hooks/accounts/a",
        "http://127.0.0.1:8000/v1.0/hooks/accounts/a?message_id=1",
        "http://hub/v1.0/hooks/accounts/a",
    ]
    checked = 0
    for url in urls:
        for signed_url in {
            url,
            url.replace(":443", ""),
            url.replace("hub.example.com", "hub.example.com:443"),
        }:
            good = RequestValidator("token-1").compute_signature(signed_url, params)
            other_params = RequestValidator("token-1").compute_signature(signed_url, {**params, "Body": "x"})
            other_token = RequestValidator("token-2").compute_signature(signed_url, params)
            for signature in (good, other_params, other_token, good[:-1], "é" * 28):
                expected = RequestValidator("token-1").validate(url, params, signature)
                assert sms.signature_valid("token-1", url, params, signature) is expected
                checked += expected
    assert checked == 6  # every form signed of each URL passed (and nothing else)
    assert sms.signature_valid(
        "token-1",
        urls[0],
        params,
        RequestValidator("token-1").compute_signature(
            "https://hub.example.com:443/v1.0/hooks/accounts/a", params
        ),
    )
