"""`hub run` and its Temporal dev server: SIGTERM stops everything, the dev server dies with a killed
`hub run`, a taken port is one line of error, and a first start prints no traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.supervise import PortTaken, check_ports
from hub.settings import Settings
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
PORT_SETTINGS = (
    "HUB_HTTP_PORT",
    "HUB_TEMPORAL_PORT",
    "HUB_TEMPORAL_UI_PORT",
    "HUB_FAKE_SMS_PORT",
    "HUB_FAKE_LINE_PORT",
    "HUB_FAKE_SMTP_PORT",
)
# Generous: the machine may be busy; this bounds a hang, it measures nothing.
START_WITHIN_S = 300


def run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_DATA_DIR"] = str(tmp_path / "data")
    for name in PORT_SETTINGS:
        env[name] = str(free_port())
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env({k: v for k, v in env.items() if k.startswith("HUB_")})


def start_run(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        # A session of its own, so the test can clean up whatever is left, whatever happens.
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command may contain spaces and parentheses: fields follow the last ")".
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_started(proc: subprocess.Popen, log: Path) -> int:
    """Waits for the banner and the API; returns the pid of the Temporal dev server."""
    deadline = time.monotonic() + START_WITHIN_S
    while "Uvicorn running on" not in log.read_text():
        assert proc.poll() is None, "hub run exited:\n" + log.read_text()
        assert time.monotonic() < deadline, "hub run did not start:\n" + log.read_text()
        time.sleep(0.2)
    [dev_server] = [p for p in children(proc.pid) if "temporal" in Path(f"/proc/{p}/cmdline").read_text()]
    return dev_server


def wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def cleanup(proc: subprocess.Popen, *pids: int) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_sigterm_stops_everything_and_frees_every_port(tmp_path):
    env = run_env(tmp_path)
    log = tmp_path / "run.log"
    proc = start_run(env, log)
    dev_server = 0
    try:
        dev_server = wait_started(proc, log)
        first_start = log.read_text()
        # A fresh data dir: the worker only starts once the new dev server answers.
        assert "Traceback" not in first_start, first_start
        os.kill(proc.pid, signal.SIGTERM)  # what kill, a service manager or a harness send
        assert proc.wait(timeout=120) == 0, log.read_text()
        assert wait_gone(dev_server, within=60), "the Temporal dev server outlived hub run"
        assert children(proc.pid) == []
        check_ports(settings_of(env))  # raises PortTaken if anything still listens
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        cleanup(proc, dev_server)


@pytest.mark.slow
def test_the_dev_server_dies_with_a_killed_hub_run(tmp_path):
    env = run_env(tmp_path)
    log = tmp_path / "run.log"
    proc = start_run(env, log)
    dev_server = 0
    try:
        dev_server = wait_started(proc, log)
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs: only the kernel can tell the child
        proc.wait(timeout=30)
        assert wait_gone(dev_server, within=60), "the Temporal dev server outlived a killed hub run"
    finally:
        cleanup(proc, dev_server)


@pytest.mark.slow
@pytest.mark.parametrize("setting", PORT_SETTINGS)
def test_a_taken_port_is_one_line_naming_it_and_its_setting(tmp_path, setting):
    env = run_env(tmp_path)
    port = int(env[setting])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(PortTaken):
            check_ports(settings_of(env))
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "run"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line == f"error: port {port} ({setting}) is already in use on 127.0.0.1", done.stderr
    assert not (tmp_path / "data" / "temporal.sqlite").exists(), "nothing was started"
