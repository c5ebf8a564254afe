"""docker-compose.yml and the Dockerfile stay in step with the code (no Docker engine runs here)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from api.cli import build_parser
from hub.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_production_stack():
    services = compose()["services"]
    assert {"postgres", "redis", "temporal", "temporal-ui", "api", "worker"} <= set(services)
    assert services["api"]["command"] == ["hub", "serve"]
    assert services["worker"]["command"] == ["hub", "worker"]
    assert services["migrate"]["command"] == ["hub", "migrate"]


def test_every_hub_variable_in_compose_is_a_setting():
    known = {f"HUB_{f.name.upper()}" for f in fields(Settings)}
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}) or {}:
            if variable.startswith("HUB_"):
                assert variable in known, f"{name}: {variable} is not read by hub.settings.Settings"


def test_compose_commands_exist_in_the_cli():
    parser = build_parser()
    for service in compose()["services"].values():
        command = service.get("command")
        if isinstance(command, list) and command[0] == "hub":
            parser.parse_args(command[1:])  # exits (fails the test) on an unknown command


def test_dockerfile_installs_every_package():
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("hub", "workflows", "activities", "api"):
        assert f"COPY {package} ./{package}" in dockerfile


def _environment(service: dict) -> dict:
    return service.get("environment", {}) or {}


def test_metrics_ports_and_payload_encryption_are_wired():
    services = compose()["services"]
    api, worker, ui = services["api"], services["worker"], services["temporal-ui"]
    port = _environment(worker)["HUB_WORKER_METRICS_PORT"]
    assert Settings.from_env({"HUB_WORKER_METRICS_PORT": port}).worker_metrics_port == int(port)
    assert f"{port}:{port}" in worker["ports"]
    assert _environment(worker)["HUB_HTTP_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert f"{_environment(api)['HUB_HTTP_PORT']}:8000" in api["ports"]  # /metrics and /readyz
    # Both sides of Temporal use the same keys, or one could not read what the other wrote.
    assert _environment(api)["HUB_TEMPORAL_CODEC_KEY"] == _environment(worker)["HUB_TEMPORAL_CODEC_KEY"]
    assert _environment(api)["HUB_TEMPORAL_CODEC_KEY"].startswith("${HUB_TEMPORAL_CODEC_KEY")
    # The UI's browser origin may call the API's codec endpoint.
    ui_origin = f"http://localhost:{ui['ports'][0].split(':')[0]}"
    origins = Settings.from_env({"HUB_TEMPORAL_UI_ORIGINS": _environment(api)["HUB_TEMPORAL_UI_ORIGINS"]})
    assert ui_origin in origins.resolved_temporal_ui_origins
    assert "TEMPORAL_CODEC_ENDPOINT" in _environment(ui)
