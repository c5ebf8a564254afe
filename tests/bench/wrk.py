"""The bench's HTTP load: `wrk` (a native load generator) replaying pre-signed requests, so the two
cores measure the hub and not a Python client. Installs the Debian package when it is missing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("replay.lua")



def interrupt(proc: subprocess.Popen) -> str:
    """SIGINT until wrk prints its summary and exits. One is not always enough: a signal that lands
    after wrk installed its handler but before its main thread went to sleep for `-d` only sets
    the stop flag, and the sleep that follows lasts the whole duration."""
    for _ in range(60):
        try:
            out, _ = proc.communicate(timeout=0.5)
            return out
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
    proc.kill()
    out, _ = proc.communicate()
    return out

def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    """The path of `wrk`, installing the Debian package (apt-get) when it is not on PATH."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is not installed: installing the Debian package `wrk` with apt-get")
    apt = ["apt-get"] if shutil.which("sudo") is None else ["sudo", "-n", "apt-get"]
    try:
        subprocess.run(
            [*apt, "install", "-y", "--no-install-recommends", "wrk"], check=True, stdout=subprocess.DEVNULL
        )
    except (OSError, subprocess.CalledProcessError):
        subprocess.run([*apt, "update"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(
            [*apt, "install", "-y", "--no-install-recommends", "wrk"], check=False, stdout=subprocess.DEVNULL
        )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "make bench needs wrk (Debian package `wrk`) and could not install it: "
            "run `apt-get install wrk` as root, then `make bench` again"
        )
    return found


def version(wrk: str) -> str:
    answer = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    first = (answer.stdout or answer.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


@dataclass
class Run:
    ok: int
    bad: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def replay(
    wrk: str,
    base_url: str,
    requests: list[tuple[str, str, str, bytes]],
    threads: int,
    connections: int,
    within_s: float = 600,
) -> Run:
    """Sends every (method, path, signature, body) once over `connections` keep-alive connections;
    the time is from the moment every wrk thread is ready until the last one has its answers."""
    threads = max(1, min(threads, len(requests)))
    connections = max(threads, connections)
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as file:
        for method, path, signature, body in requests:
            file.write(f"{method}\t{path}\t{signature}\t{body.decode()}\n")
        name = file.name
    command = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{int(within_s)}s",
        "--timeout",
        "60s",
        "-s",
        str(SCRIPT),
        base_url,
        "--",
        name,
        str(threads),
    ]
    ready: list[float] = []
    running: list[float] = []
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def read_stderr() -> None:
            for line in proc.stderr:
                if line.startswith("WRK_READY"):
                    ready.append(time.perf_counter())
                elif line.startswith("WRK_RUNNING"):
                    running.append(time.perf_counter())

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        tasks = Path(f"/proc/{proc.pid}/task")
        ended = None
        while proc.poll() is None:
            # Every thread has stopped when only wrk's main thread (asleep until -d) is left, once
            # each ran (`init` prints its readiness in wrk's main thread, before the thread exists).
            if len(running) >= threads and len(list(tasks.iterdir())) == 1:
                ended = time.perf_counter()
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.005)
        out = interrupt(proc)
        reader.join(timeout=5)
    finally:
        Path(name).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None or ended is None or not ready:
        raise RuntimeError(f"wrk did not finish its requests within {within_s:g} s:\n{out}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return Run(
        ok=data["ok"],
        bad=data["bad"],
        seconds=ended - ready[-1],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=data["errors"],
    )
