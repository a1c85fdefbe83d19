"""The services as real processes, started the way `make run` starts them."""

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.devstack.embedded import free_port
from services.settings import Settings


class Services:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**env, "TICKETING_API_PORT": str(free_port())}
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics: dict[str, int] = {}  # label -> the port of its metrics listener
        from services.auth.tokens import TokenService

        # an operator token reading every org: the e2e tests are about the pipeline, not access
        self.token = TokenService(env["TICKETING_JWT_SECRET"]).mint(
            "e2e@example.com", {"*": ["investigation.get"]}, ttl_s=3600, operator=True
        )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['TICKETING_API_PORT']}"

    def start(self, *names: str) -> None:
        for name in names:
            self.start_as(name, name)
        if "api" in names:
            self.wait_for(lambda: self.get("/readyz")[0] == 200, 30, "API ready")

    def start_as(self, label: str, service: str, **env: str) -> None:
        """Another instance of a service under its own label (a second ingest worker, say)."""
        log = open(self.logs / f"{label}.log", "ab")  # noqa: SIM115
        own = free_port() if service != "api" else 0  # the API serves /metrics on its own port
        self.metrics[label] = own or int(self.env["TICKETING_API_PORT"])
        self.procs[label] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", service],
            env={**self.env, "TICKETING_METRICS_PORT": str(own or ""), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            request = urllib.request.Request(
                self.api + path, headers={"Authorization": f"Bearer {self.token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)
        except OSError:
            return 0, None

    def wait_for(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited with {proc.returncode}: see {self.logs / (name + '.log')}"
                    )
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; logs in {self.logs}")


def query(settings: Settings, sql: str) -> list[Any]:
    """Rows of one statement on the test's database, from a test's synchronous code."""
    return query_at(settings.database_url or "", sql)


def query_at(url: str, sql: str) -> list[Any]:
    """Rows of one statement on that database, from a test's synchronous code."""
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


async def publish_paced(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], chunk: int, pause: float
) -> None:
    """A steady stream (chunks with pauses), so a worker can be killed while messages still arrive."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(0, len(messages), chunk):
            for key, value in messages[i : i + chunk]:
                await producer.send(topic, value, key=key)
            await producer.flush()
            await asyncio.sleep(pause)
    finally:
        await producer.stop()


@pytest.fixture
def services(service_env: dict[str, str], tmp_path: Path) -> Iterator[Services]:
    from services.bootstrap import prepare

    asyncio.run(prepare(Settings.from_env(service_env)))
    s = Services(service_env, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
