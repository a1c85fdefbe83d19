"""`make run`: embedded broker and database, every service as a child process, restarted if it dies."""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

from services.auth.tokens import PERMISSIONS, TokenService
from services.devstack.embedded import RUNTIME_ROLE, as_role, ensure_role, free_port, infrastructure
from services.devstack.mailsink import MailSink
from services.settings import DEV_SECRET_FILE, Settings

SERVICES = ("ingest", "relay", "projector", "scheduler", "api")


@dataclass
class Child:
    name: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_path: str = ""
    _log: object = field(default=None, repr=False)

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _api_port(settings: Settings) -> int:
    if "TICKETING_API_PORT" in os.environ:
        return settings.api_port
    try:
        import socket

        with socket.socket() as s:
            s.bind((settings.api_host, settings.api_port))
        return settings.api_port
    except OSError:
        return free_port()


def _wait_ready(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def demo_org(settings: Settings) -> str:
    """A stable org id (a UUID, like LimaCharlie's) for trying the dev stack out."""
    path = settings.state_dir / "demo-oid"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(uuid.uuid4()))
    return path.read_text().strip()


def dev_secret(settings: Settings) -> None:
    """`make run` signs tokens with a secret it keeps in the state folder (see settings._secret)."""
    path = settings.state_dir / DEV_SECRET_FILE
    if settings.jwt_secret is None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)


DEV_TOKEN_TTL_S = 8 * 3600


async def dev_credentials(database_url: str, oid: str, token: str) -> str:
    """Records the dev token (so that it is listed and revocable like any) and returns the org API
    key `make run` prints (ticket.track on the demo org): a fresh one each run, since only a digest
    of a key is kept."""
    import asyncpg

    from services.auth import api_keys, credentials

    conn = await asyncpg.connect(database_url)
    try:
        await credentials.record(conn, token, "make run")
        await conn.execute("DELETE FROM api_keys WHERE oid = $1 AND name = 'make-run'", oid)
        return await api_keys.create(conn, oid, "make-run", [api_keys.TRACK], "make run")
    finally:
        await conn.close()


def dev_token(settings: Settings, oid: str) -> str:
    """The token `make run` prints: every permission on the demo org, for a working day."""
    return TokenService(settings.require_secret()).mint(
        "dev@localhost", {oid: list(PERMISSIONS)}, ttl_s=DEV_TOKEN_TTL_S
    )


def _mail(sink: MailSink | None, settings: Settings) -> str:
    if sink is not None:
        return f"{sink.folder}/  (each notification e-mail as a file; SMTP on {sink.url})"
    assert settings.smtp is not None
    return f"sent through {settings.smtp.host}:{settings.smtp.port} (TICKETING_SMTP_URL)"


def run_devstack() -> int:
    # The dev stack is the explicit opt-in to the dev environment (and its generated secret).
    environment = os.environ.setdefault("TICKETING_ENV", "dev")
    if environment == "prod":
        raise SystemExit("make run is the development stack; TICKETING_ENV=prod is for real deployments")
    dev_secret(Settings.from_env())
    settings = Settings.from_env()
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with infrastructure(
        settings.state_dir,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        database_url=settings.database_url,
    ) as infra:
        port = _api_port(settings)
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=infra.bootstrap_servers,
            DATABASE_URL=infra.database_url,
            TICKETING_API_PORT=str(port),
            TICKETING_ENV=environment,
            # the dev stack's webhook receivers run on this machine
            TICKETING_EGRESS_ALLOW=os.environ.get("TICKETING_EGRESS_ALLOW", "127.0.0.0/8,::1"),
        )
        sink = None if os.environ.get("TICKETING_SMTP_URL") else MailSink(settings.state_dir / "mail")
        if sink is not None:  # notification e-mail lands in files, unless a mail server is named
            sink.start()
            env["TICKETING_SMTP_URL"] = sink.url
        if infra.embedded_database:  # the services run as the least-privileged role, as in production
            asyncio.run(ensure_role(infra.database_url, RUNTIME_ROLE))
            env.update(
                DATABASE_URL=as_role(infra.database_url, RUNTIME_ROLE),
                TICKETING_MIGRATION_DATABASE_URL=infra.database_url,
                TICKETING_DB_RUNTIME_ROLE=RUNTIME_ROLE,
            )
        from services.bootstrap import prepare

        asyncio.run(prepare(Settings.from_env(env)))
        logs = settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # Each process but the API (which serves /metrics itself) gets a metrics listener of its own.
        metrics = {name: free_port() for name in SERVICES if name != "api"}
        children = [
            Child(
                name,
                {**env, "TICKETING_METRICS_PORT": str(metrics.get(name, ""))},
                log_path=str(logs / f"{name}.log"),
            )
            for name in SERVICES
        ]
        for child in children:
            child.start()
        api_url = f"http://{settings.api_host}:{port}"
        oid = demo_org(settings)
        token = dev_token(settings, oid)
        api_key = asyncio.run(dev_credentials(infra.database_url, oid, token))
        publish = (
            f"KAFKA_BOOTSTRAP_SERVERS={infra.bootstrap_servers} .venv/bin/python -m services.cli publish"
        )
        ready = _wait_ready(f"{api_url}/readyz")
        t = settings.topics
        print(
            "\n".join(
                [
                    "",
                    "SOC ticketing dev stack is running"
                    + ("" if ready else " (API not ready yet: see logs)"),
                    f"  API URL:          {api_url}",
                    f"  Console:          {api_url}/  (sign in with the dev token below)",
                    f"  Kafka bootstrap:  {infra.bootstrap_servers}",
                    f"  Database:         {infra.database_url}",
                    f"  Topics:           {t.detections} (in), {t.deadletter}, {t.ticket_events} (out)",
                    f"  Demo org id:      {oid}",
                    f"  Dev token:        {token}",
                    f"  Dev API key:      {api_key}",
                    f"  Logs:             {logs}/",
                    f"  Mail:             {_mail(sink, settings)}",
                    "  Metrics:          "
                    + "  ".join(
                        [f"api {api_url}/metrics"]
                        + [f"{name} http://127.0.0.1:{port}/metrics" for name, port in metrics.items()]
                    ),
                    f"  Publish samples:  {publish} --samples 100 --oid {oid}",
                    f"  Publish a file:   {publish} --file detections.jsonl --oid {oid}",
                    f"  List tickets:     curl -H 'Authorization: Bearer {token}' "
                    f"'{api_url}/api/v1/tickets?oids={oid}'",
                    "  More tokens:      TICKETING_ENV=dev .venv/bin/python -m services.cli token create"
                    " --sub you@example.com "
                    f"--oid {oid} --perm investigation.get --perm investigation.set --ttl 8h",
                    "Press Ctrl-C to stop everything.",
                ]
            ),
            flush=True,
        )
        try:
            while not stopping:
                for child in children:
                    assert child.proc is not None
                    if child.proc.poll() is not None and not stopping:
                        code = child.proc.returncode
                        # Back off when a service dies right after starting, so a crash loop stays cheap.
                        if time.monotonic() - child.started_at < 5:
                            time.sleep(min(2**child.restarts, 30) * 0.5)
                        child.restarts += 1
                        print(f"{child.name} exited with {code}; restart #{child.restarts}", flush=True)
                        child.start()
                time.sleep(0.5)
        finally:
            print("stopping services...", flush=True)
            for child in children:
                child.stop()
            if sink is not None:
                sink.stop()
    print("stopped.", flush=True)
    return 0
