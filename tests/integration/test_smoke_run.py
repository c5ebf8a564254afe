"""The README's run command, started as a new user would, answers login and /schema."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
LOGIN = re.compile(r"login\s*:\s*username=(\S+) password=(\S+)")


@pytest.mark.slow
def test_make_run_serves_login_and_schema(tmp_path):
    port = free_port()
    ui_port, sms_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_HTTP_PORT": str(port),
        "HUB_DATA_DIR": str(tmp_path / "data"),
        "HUB_TEMPORAL_PORT": str(free_port()),
        "HUB_TEMPORAL_UI_PORT": str(ui_port),
        "HUB_FAKE_SMS_PORT": str(sms_port),
        "HUB_FAKE_LINE_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        credentials = None
        while credentials is None:
            assert time.monotonic() < deadline, "no login line within 60 s:\n" + "".join(output)
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "make run exited:\n" + "".join(output)
            output.append(line)
            if match := LOGIN.search(line):
                credentials = match.groups()
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/schema" in "".join(output)
        with httpx.Client(base_url=base, timeout=5) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "API not up within 60 s"
                time.sleep(0.2)
            login = client.post("/auth/login", json={"username": credentials[0], "password": credentials[1]})
            assert login.status_code == 200, login.text
            token = login.json()["token"]
            conversations = client.get("/v1.0/conversations", headers={"Authorization": f"Bearer {token}"})
            assert conversations.status_code == 200
            schema = client.get("/schema/openapi.json")
            assert schema.status_code == 200
            assert "/v1.0/conversations" in schema.json()["paths"]
            assert client.get("/schema").status_code == 200
            assert f"Temporal UI : http://127.0.0.1:{ui_port}" in "".join(output)

            # A new user's first minute: simulate an inbound SMS, answer it, see it delivered.
            simulate = subprocess.run(
                [str(REPO / ".venv/bin/hub"), "simulate", "sms", "--text", "hi from a phone"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert simulate.returncode == 0, simulate.stdout + simulate.stderr
            auth = {"Authorization": f"Bearer {token}"}
            [conversation] = client.get("/v1.0/conversations", headers=auth).json()["result"]
            assert conversation["name"] == "SMS \u00b7 +14155551234"
            sent = client.post(
                f"/v1.0/conversations/{conversation['id']}/messages",
                json={"text": "hello back"},
                headers=auth,
            ).json()
            message = sent
            while message["status"] == "progressing":
                assert time.monotonic() < deadline + 30, "message not delivered in time"
                time.sleep(0.2)
                message = client.get(f"/v1.0/conversation_messages/{sent['id']}", headers=auth).json()
            assert message["status"] == "done"
            # The demo flow answered the simulated SMS on its own; the agent's reply went out too.
            while len(httpx.get(f"http://127.0.0.1:{sms_port}/_fake/state").json()["received"]) < 2:
                assert time.monotonic() < deadline + 30, "automatic reply not delivered in time"
                time.sleep(0.2)
            fake = httpx.get(f"http://127.0.0.1:{sms_port}/_fake/state").json()
            assert sorted(m["body"] for m in fake["received"]) == [
                'Thanks +14155551234! We got "hi from a phone".',
                "hello back",
            ]
            listing = httpx.get(f"http://127.0.0.1:{ui_port}/api/v1/namespaces/default/workflows").json()
            ids = [e["execution"]["workflowId"] for e in listing.get("executions", [])]
            assert f"send-{sent['id']}" in ids
            assert any(i.startswith("activeflow-") for i in ids), ids
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
