"""The `hub` command: bootstrap, migrate, serve, and `run` (everything on embedded defaults)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import secrets
import sys
import uuid
from pathlib import Path

import msgspec

from hub import accounts, agents, db
from hub.auth import issue_token
from hub.errors import HubError
from hub.settings import Settings
from hub.strict import refuse_nul
from hub.tables import Agent

DEMO_NUMBER = "+15550001000"


async def _with_db(settings: Settings, work):
    engine = await db.open_engine(settings.resolved_database_url)
    await db.start(engine, pool_size=2)
    try:
        await db.migrate(engine)
        return await work()
    finally:
        await db.stop(engine)


JWT_SECRET_FILE = "jwt-secret"


def require_jwt_secret(settings: Settings) -> bool:
    """`hub serve` and `hub worker` run with a real secret only: one line on stderr otherwise."""
    problem = settings.jwt_secret_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
    return problem is None


def with_data_dir_jwt_secret(settings: Settings) -> Settings:
    """Without HUB_JWT_SECRET, `hub run` (and `hub bootstrap` for it) sign with a random secret kept
    in the data dir (owner-only file), so tokens survive a restart and no two installs share one."""
    if "HUB_JWT_SECRET" in os.environ:
        return settings
    path = Path(settings.data_dir) / JWT_SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
    else:
        secret = secrets.token_urlsafe(48)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
    return dataclasses.replace(settings, jwt_secret=secret)


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    async def nothing():
        return None

    asyncio.run(_with_db(settings, nothing))
    logging.getLogger("hub").info("migrations applied")
    return 0


def cmd_bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    if len(args.password) < 8:
        print("error: --password must have at least 8 characters", file=sys.stderr)
        return 2
    if "HUB_JWT_SECRET" not in os.environ:
        note = f"note: HUB_JWT_SECRET is unset; the token is for `hub run` on {settings.data_dir}"
        print(note, file=sys.stderr)
    settings = with_data_dir_jwt_secret(settings)
    if not require_jwt_secret(settings):
        return 2

    async def work():
        customer, agent = await agents.bootstrap(args.customer, args.username, args.password)
        token = issue_token(agent["id"], customer["id"], settings.jwt_secret, settings.jwt_ttl_seconds)
        return {"customer_id": str(customer["id"]), "agent_id": str(agent["id"]), "token": token}

    try:
        result = asyncio.run(_with_db(settings, work))
    except HubError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


DEMO_FLOW = {
    "name": "Demo auto-reply",
    "detail": "Answers every message of an unassigned conversation",
    "actions": [
        {
            "id": "reply",
            "type": "conversation_send",
            "option": {"text": 'Thanks ${conversation.peer.target}! We got "${message.text}".'},
        }
    ],
}


async def ensure_demo_flow(demo: dict) -> None:
    """The demo flow, attached to the demo accounts (once; a designer may change them later)."""
    from api.schemas import FlowCreate
    from hub import flows

    customer_id = uuid.UUID(demo["customer_id"])
    spec = msgspec.convert(DEMO_FLOW, FlowCreate)
    if await flows.find_flow(customer_id, None, spec.name) is not None:
        return
    flow = await flows.create_flow(customer_id, spec.name, spec.detail, spec.actions)
    for key in ("sms_account_id", "line_account_id", "email_account_id"):
        if key in demo:
            await accounts.update_account(customer_id, uuid.UUID(demo[key]), {"message_flow_id": flow["id"]})


DEMO_EMAIL = "support@demo.localhost"


async def ensure_demo_email(settings: Settings, demo: dict, login_file: Path) -> None:
    """The demo email account (also for a demo made before email existed), sending through the
    SMTP sink of `hub run`."""
    if "email_account_id" in demo:
        return
    account = await accounts.create_account(
        uuid.UUID(demo["customer_id"]),
        {
            "type": "email",
            "name": "Demo support mailbox",
            "address": DEMO_EMAIL,
            "secret": secrets.token_hex(16),
            "smtp_host": "127.0.0.1",
            "smtp_port": settings.fake_smtp_port or 8725,
            "smtp_security": "none",
        },
    )
    demo["email_account_id"] = str(account["id"])
    _write_login(login_file, demo)


def _write_login(login_file: Path, demo: dict) -> None:
    login_file.write_text(json.dumps(demo, indent=2))
    login_file.chmod(0o600)


async def ensure_demo(settings: Settings) -> dict:
    """A demo customer, admin and SMS account on first start; their login is kept in the data dir."""
    login_file = Path(settings.data_dir) / "demo-login.json"
    if login_file.exists():
        demo = json.loads(login_file.read_text())
        if await Agent.exists().where(Agent.username == demo["username"]):
            await ensure_demo_email(settings, demo, login_file)
            await ensure_demo_flow(demo)
            return demo
    password = secrets.token_urlsafe(12)
    username = "admin"
    if await Agent.exists().where(Agent.username == username):
        username = f"admin-{secrets.token_hex(3)}"
    customer, agent = await agents.bootstrap("demo", username, password)
    account = await accounts.create_account(
        customer["id"],
        {
            "type": "sms",
            "name": "Demo SMS number",
            "number": DEMO_NUMBER,
            "sid": "AC" + secrets.token_hex(16),
            "token": secrets.token_hex(16),
        },
    )
    line = await accounts.create_account(
        customer["id"],
        {
            "type": "line",
            "name": "Demo LINE channel",
            "secret": secrets.token_hex(16),
            "token": secrets.token_hex(24),
        },
    )
    demo = {
        "username": username,
        "password": password,
        "customer_id": str(customer["id"]),
        "agent_id": str(agent["id"]),
        "sms_account_id": str(account["id"]),
        "line_account_id": str(line["id"]),
    }
    login_file.parent.mkdir(parents=True, exist_ok=True)
    login_file.write_text(json.dumps(demo, indent=2))
    login_file.chmod(0o600)
    await ensure_demo_email(settings, demo, login_file)
    await ensure_demo_flow(demo)
    return demo


def _serve_api(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app

    if settings.http_workers > 1:
        # Each process builds its app from the same environment (and so the same settings).
        from api.metrics import prepare_multiprocess

        prepare_multiprocess(settings)
        app = "api.cli:api_process_app"
        extra = {"factory": True, "workers": settings.http_workers}
    else:
        app, extra = create_app(settings), {}
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        # Uvicorn's lines go through the process's handler (JSON or text) like every other.
        log_config=None,
        **extra,
    )


def api_process_app():
    """The app of one of several `hub serve` processes (started by uvicorn, not by `main`)."""
    from api.app import create_app

    settings = Settings.from_env()
    configure_process(settings, "serve")
    return create_app(settings)


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    if not require_jwt_secret(settings):
        return 2
    cmd_migrate(settings, _args)
    _serve_api(settings)
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from api.supervise import stop_on_sigterm

    stop_on_sigterm()  # SIGTERM (kill, a service manager) ends `hub run` as Ctrl-C does
    try:
        return _run(settings, args)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0  # whatever had started is stopped already


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from api.embedded import run_embedded
    from api.supervise import PortTaken, check_ports

    if "HUB_WEBHOOK_ALLOW_PRIVATE" not in os.environ:
        # On one machine the webhook receiver being tried out is usually on localhost too.
        settings = dataclasses.replace(settings, webhook_allow_private=True)
    try:
        check_ports(settings)
    except PortTaken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    settings = with_data_dir_jwt_secret(settings)
    if not require_jwt_secret(settings):
        return 2
    demo = asyncio.run(_with_db(settings, lambda: ensure_demo(settings)))
    base = f"http://{settings.http_host}:{settings.http_port}"
    hooks = f"{settings.resolved_public_url}/v1.0/hooks/accounts"
    temporal_ui = (
        f"http://127.0.0.1:{settings.temporal_ui_port}"
        if not settings.temporal_address
        else f"(external Temporal at {settings.temporal_address})"
    )

    def banner() -> None:
        lines = [
            "",
            "Conversation hub is running on embedded defaults",
            f"  API         : {base}/v1.0",
            f"  API docs    : {base}/schema  (OpenAPI JSON: {base}/schema/openapi.json)",
            f"  Inbox       : {base}/inbox  (log in with the login below)",
            f"  Temporal UI : {temporal_ui}",
            f"  login       : username={demo['username']} password={demo['password']}",
            f"  database    : {settings.resolved_database_url}",
            f"  SMS hook    : {hooks}/{demo['sms_account_id']}  (fake SMS provider "
            f"{settings.resolved_sms_api_url})",
            f"  LINE hook   : {hooks}/{demo['line_account_id']}  (fake LINE API "
            f"{settings.resolved_line_api_url})",
            f"  email hook  : {hooks}/{demo['email_account_id']}  ({DEMO_EMAIL}; replies go to the "
            + (
                f"SMTP sink 127.0.0.1:{settings.fake_smtp_port}, kept in {settings.data_dir}/mail)"
                if settings.fake_smtp_port
                else "account's SMTP relay)"
            ),
            "  try         : .venv/bin/hub simulate sms --text 'hello'   (or: simulate email)",
            "",
        ]
        print("\n".join(lines), flush=True)

    asyncio.run(run_embedded(settings, banner))
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from api.worker import run_worker

    if not require_jwt_secret(settings):
        return 2
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_fakes(settings: Settings, args: argparse.Namespace) -> int:
    from api.fakes import start_fakes

    async def serve() -> None:
        fakes = await start_fakes(settings.fake_sms_port, settings.fake_line_port)
        fakes.sms.auto_status = args.auto_status
        print(
            f"fake SMS provider on :{settings.fake_sms_port}, fake LINE API on :{settings.fake_line_port}",
            flush=True,
        )
        await asyncio.gather(*fakes.tasks)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


def _customer_for_cli(settings: Settings, given: str | None):
    async def pick():
        from hub.tables import Customer

        if given:
            return uuid.UUID(given)
        login_file = Path(settings.data_dir) / "demo-login.json"
        if login_file.exists():
            return uuid.UUID(json.loads(login_file.read_text())["customer_id"])
        rows = await Customer.select(Customer.id).limit(2)
        if len(rows) != 1:
            raise ValueError("several customers exist: pass --customer ID")
        return rows[0]["id"]

    return pick


def cmd_flows_apply(settings: Settings, args: argparse.Namespace) -> int:
    """Registers a flow from a JSON file, or updates the one with its id or name."""
    from api.schemas import FlowCreate
    from hub import flows
    from hub.models import flow_out

    try:
        raw = json.loads(Path(args.file).read_text())
        spec = msgspec.convert(raw, FlowCreate)
        refuse_nul(raw)
    except (OSError, ValueError, msgspec.ValidationError, HubError) as exc:
        print(f"error: {args.file}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1

    rules = flows.FlowRules.of(settings)

    async def work():
        customer_id = await _customer_for_cli(settings, args.customer)()
        existing = await flows.find_flow(customer_id, raw.get("id"), spec.name)
        if existing is None:
            row = await flows.create_flow(customer_id, spec.name, spec.detail, spec.actions, rules)
        else:
            values = {"name": spec.name, "detail": spec.detail, "actions": spec.actions}
            row = await flows.update_flow(customer_id, existing["id"], values, rules)
        return msgspec.json.encode(flow_out(row)).decode()

    try:
        print(asyncio.run(_with_db(settings, work)))
    except (HubError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    return 0


def cmd_flows_test(settings: Settings, args: argparse.Namespace) -> int:
    """Dry-runs a flow JSON document on a running hub (POST /v1.0/flows/test): prints the executed
    path, the captured messages and the final variables. Nothing is stored, nothing is sent."""
    import httpx

    try:
        raw = json.loads(Path(args.file).read_text())
        actions = raw["actions"] if isinstance(raw, dict) else raw
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    body = {
        "actions": actions,
        "message": {"text": args.text, "channel": args.channel},
        "replies": [{"text": text} for text in args.reply],
    }
    try:
        token = args.token or asyncio.run(_with_db(settings, lambda: _admin_token(settings, args.customer)))
        response = httpx.post(
            (args.url or settings.resolved_public_url).rstrip("/") + "/v1.0/flows/test",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
    except (HubError, ValueError, httpx.HTTPError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"error: {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=1))
    return 0


async def _admin_token(settings: Settings, customer: str | None) -> str:
    """A token of the customer's first admin, signed with this install's secret."""
    customer_id = await _customer_for_cli(settings, customer)()
    rows = await Agent.select(Agent.id, Agent.permission).where(
        Agent.customer_id == customer_id, Agent.tm_delete.is_null()
    )
    admin = next((r for r in rows if r["permission"] & 0x20), None)
    if admin is None:
        raise ValueError(f"customer {customer_id} has no admin: pass --token")
    return issue_token(admin["id"], customer_id, settings.jwt_secret, settings.jwt_ttl_seconds)


def cmd_flows(settings: Settings, args: argparse.Namespace) -> int:
    return (cmd_flows_test if args.flows_command == "test" else cmd_flows_apply)(settings, args)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from api.simulate import simulate

    try:
        result = asyncio.run(_with_db(settings, lambda: simulate(settings, args)))
    except (HubError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result.get("status_code", 500) < 300 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Conversation hub")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run everything on embedded defaults (SQLite, Temporal dev server, fakes)")
    sub.add_parser("worker", help="run the Temporal worker (workflows and activities)")
    fakes = sub.add_parser("fakes", help="serve the fake SMS and LINE providers")
    fakes.add_argument("--auto-status", default="delivered", help="status callback after each SMS")
    flows = sub.add_parser("flows", help="manage flows")
    flows_sub = flows.add_subparsers(dest="flows_command", required=True)
    apply = flows_sub.add_parser("apply", help="register or update a flow from a JSON file")
    apply.add_argument("file", help='{"name", "detail", "actions": [...]} (an "id" updates that flow)')
    apply.add_argument("--customer", help="customer id (default: the demo customer, or the only one)")
    dry = flows_sub.add_parser("test", help="dry-run a flow JSON file on a running hub (nothing is sent)")
    dry.add_argument("file", help='{"actions": [...]} (or the list of actions)')
    dry.add_argument("--text", default="", help="the text of the triggering message")
    dry.add_argument("--channel", default="sms", choices=["sms", "line", "email"])
    dry.add_argument("--reply", action="append", default=[], help="a reply its waits consume (repeatable)")
    dry.add_argument("--url", default="", help="hub base URL (default: HUB_PUBLIC_URL)")
    dry.add_argument("--token", default="", help="an admin's token (default: one minted for --customer)")
    dry.add_argument("--customer", help="customer id (default: the demo customer, or the only one)")
    sim = sub.add_parser("simulate", help="send a signed inbound SMS, LINE event or email to a running hub")
    sim.add_argument("channel", choices=["sms", "line", "email"])
    sim.add_argument("--account", help="account id (default: the demo account of that channel)")
    sim.add_argument(
        "--from", dest="sender", default="", help="sender: E.164 number, LINE user id or email address"
    )
    sim.add_argument("--text", default="hello from the simulator")
    sim.add_argument("--follow", action="store_true", help="LINE: send a follow event instead")
    sim.add_argument(
        "--name", default="", help="LINE: display name for the profile of --from; email: From name"
    )
    sim.add_argument("--subject", default="Hello", help="email: the subject")
    sim.add_argument("--attach", action="append", default=[], help="email: a file to attach (repeatable)")
    sim.add_argument("--in-reply-to", default="", help="email: the Message-Id this email answers")
    sim.add_argument("--url", default="", help="hub base URL (default: HUB_PUBLIC_URL)")
    sub.add_parser("serve", help="apply migrations and serve the API")
    sub.add_parser("migrate", help="apply database migrations")
    boot = sub.add_parser("bootstrap", help="create a customer and its admin; prints a JSON line")
    boot.add_argument("--customer", required=True)
    boot.add_argument("--username", required=True)
    boot.add_argument("--password", required=True)
    return parser


COMMANDS = {
    "run": cmd_run,
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "bootstrap": cmd_bootstrap,
    "worker": cmd_worker,
    "fakes": cmd_fakes,
    "simulate": cmd_simulate,
    "flows": cmd_flows,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        configure_process(settings, args.command)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](settings, args)


def configure_process(settings: Settings, command: str) -> None:
    """Logging (text under `hub run`, else JSON unless HUB_LOG_FORMAT says otherwise) and, for
    the processes that talk to Temporal, the SDK runtime (its metrics where a worker runs)."""
    from api import codec, logs

    codec.parse_keys(settings.temporal_codec_key)  # a bad key stops the process here
    logs.configure(settings, default_format="text" if command == "run" else "json")
    if command in ("run", "serve", "worker"):
        from api.metrics import install_temporal_runtime

        # The worker appends the SDK's metrics to its own endpoint; `hub run` to the API's.
        with_metrics = command == "run" or (command == "worker" and settings.worker_metrics_port != 0)
        install_temporal_runtime(with_metrics=with_metrics)


if __name__ == "__main__":
    sys.exit(main())
