"""The deployment, started as far as a machine without a container engine can: the image's build
steps (deploy/build.sh) on a clean virtual environment, then the migrate step and every process of
the compose file, from the image's entry point with the compose file's own variables (its hosts
pointed at this test's broker and database), and a detection through them."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.devstack.embedded import free_port
from services.devstack.samples import generate, key_for
from services.settings import Settings
from tests.e2e.test_pipeline import produce

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("ingest", "relay", "projector", "scheduler", "api")


def entrypoint(venv: Path) -> list[str]:
    """The Dockerfile's ENTRYPOINT, with the image's venv replaced by the test's."""
    line = next(
        x for x in (ROOT / "deploy" / "Dockerfile").read_text().splitlines() if x.startswith("ENTRYPOINT")
    )
    return [part.replace("/opt/ticketing", str(venv)) for part in json.loads(line.split(None, 1)[1])]


def compose_env(service: dict[str, Any], test: dict[str, str], port: int, metrics: int) -> dict[str, str]:
    """The service's variables as compose sets them, with what compose interpolates (secrets) or
    names by container host (kafka, postgres) replaced by this test's own."""
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    for key, value in env.items():
        if "${" in value or key in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
            # what the test's environment does not set takes compose's `${NAME:-default}`
            env[key] = test[key] if key in test else value.partition(":-")[2].rstrip("}")
        env[key] = env[key].replace("$$", "$")
    if "TICKETING_METRICS_PORT" in env:
        env["TICKETING_METRICS_PORT"] = str(metrics)
    return {
        **env,
        # what a container has of its own: its port, its scratch dir; and this test's topic names
        "TICKETING_API_PORT": str(port),
        "TICKETING_STATE_DIR": test["TICKETING_STATE_DIR"],
        "TICKETING_TOPIC_PREFIX": test["TICKETING_TOPIC_PREFIX"],
        "TICKETING_INGEST_GROUP": test["TICKETING_INGEST_GROUP"],
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
    }


@pytest.mark.timeout(600)
def test_the_built_image_steps_run_the_compose_processes(
    service_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    venv, context = tmp_path / "venv", tmp_path / "context"
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():  # the image's COPY steps
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            for source in sources:
                dest = context / (source if target in ("./", ".") else target)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, dest, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, dest)
    started = time.monotonic()
    build = subprocess.run(
        ["sh", str(context / "deploy" / "build.sh"), str(venv), str(context)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr[-2000:]
    print(f"build.sh: {time.monotonic() - started:.0f} s")
    services = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"]
    port = free_port()
    command = entrypoint(venv)
    migrate = subprocess.run(
        command + services["migrate"]["command"],
        env=compose_env(services["migrate"], service_env, port, 0),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    assert re.search(r"schema (was )?current|applied:", migrate.stdout), migrate.stdout
    logs, procs, metrics = tmp_path / "logs", {}, {}
    logs.mkdir()
    try:
        for name in PROCESSES:
            metrics[name] = port if name == "api" else free_port()
            with open(logs / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    command + services[name]["command"],
                    env=compose_env(services[name], service_env, port, metrics[name]),
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip

        def answers(url: str) -> bool:
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited: {(logs / f'{name}.log').read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        def wait(check: Any, what: str, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                assert time.monotonic() < deadline, f"timed out waiting for {what}; logs in {logs}"
                time.sleep(0.3)

        wait(lambda: answers(f"http://127.0.0.1:{port}/readyz"), "the API")
        for name, metrics_port in metrics.items():
            wait(lambda p=metrics_port: answers(f"http://127.0.0.1:{p}/metrics"), f"{name}'s metrics")
        oid = "deploy-org"
        detections = list(generate(oid, 3, seed=5))
        import asyncio

        asyncio.run(produce(settings, [(key_for(d, oid), json.dumps(d).encode()) for d in detections]))
        from services.auth.tokens import TokenService

        token = TokenService(service_env["TICKETING_JWT_SECRET"]).mint(
            "ops@x", {oid: ["investigation.get"]}, ttl_s=300
        )

        def tickets() -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/tickets?oids={oid}",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                return len(json.load(r)["tickets"])

        wait(lambda: tickets() == 3, "three tickets through the deployed processes")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
