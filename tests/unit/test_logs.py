"""Log format selection (json by default, text under `hub run`), the JSON line's fields, and the
codec endpoint `hub run` gives its Temporal UI."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import uuid

import pytest

from api import logs
from api.embedded import ui_codec_flags
from hub.auth import read_token
from hub.settings import Settings


def test_json_by_default_text_under_hub_run_and_the_setting_wins():
    assert logs.resolved_format(Settings()) == "json"
    assert logs.resolved_format(Settings(), default="text") == "text"
    assert logs.resolved_format(Settings(log_format="JSON"), default="text") == "json"
    assert logs.resolved_format(Settings(log_format="text")) == "text"
    with pytest.raises(ValueError, match="HUB_LOG_FORMAT must be json or text"):
        logs.resolved_format(Settings(log_format="xml"))


def test_a_json_line_carries_the_request_scope_and_explicit_fields():
    # In a context of its own, so the request scope does not outlive the test.
    contextvars.copy_context().run(_log_in_a_request)


def _log_in_a_request():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger(f"hub.test.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    logs.new_scope(request_id="req-1")
    logs.bind(customer_id=uuid.UUID(int=7), conversation_id=None)
    logger.info("inbound %s", "sms", extra={"outcome": "stored", "duration_ms": 1.5})
    with logs.scope(message_id="m-1"):
        logger.warning("inside")
    logger.info("after")
    first, inside, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "inbound sms" and first["level"] == "INFO" and first["logger"] == logger.name
    assert first["request_id"] == "req-1" and first["customer_id"] == str(uuid.UUID(int=7))
    assert first["outcome"] == "stored" and first["duration_ms"] == 1.5
    assert "conversation_id" not in first and first["time"].endswith("+00:00")
    assert inside["message_id"] == "m-1" and inside["request_id"] == "req-1"
    assert "message_id" not in after


def test_hub_run_gives_the_ui_a_codec_endpoint_only_with_encryption_on(tmp_path):
    demo = {"agent_id": str(uuid.uuid4()), "customer_id": str(uuid.uuid4())}
    (tmp_path / "demo-login.json").write_text(json.dumps(demo))
    secret = "a-test-secret-of-at-least-32-bytes-0123456789"
    settings = Settings(data_dir=str(tmp_path), http_port=8123, jwt_secret=secret)
    assert ui_codec_flags(settings) == []
    encrypted = Settings(
        data_dir=str(tmp_path), http_port=8123, jwt_secret=secret, temporal_codec_key="k:" + "A" * 44
    )
    flag, endpoint = ui_codec_flags(encrypted)
    assert flag == "--ui-codec-endpoint"
    prefix = "http://127.0.0.1:8123/codec/"
    assert endpoint.startswith(prefix)
    assert str(read_token(endpoint[len(prefix) :], encrypted.jwt_secret).agent_id) == demo["agent_id"]
