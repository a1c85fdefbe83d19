"""A real OpenID Connect provider for the tests: npm's certified `oidc-provider`, which `make test`
installs into .venv/oidc (`make browser`), run by node from tests/e2e/oidc_provider.mjs."""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.support import CLIENT_ID, CLIENT_SECRET

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".venv" / "oidc" / "node_modules"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")


@contextmanager
def provider(port: int, console: str, accounts: dict[str, dict[str, Any]]) -> Iterator[str]:
    """The provider on 127.0.0.1:port, its client this service at `console`; yields its issuer."""
    if not (MODULES / "oidc-provider" / "package.json").exists():
        raise RuntimeError(f"{MODULES}/oidc-provider is missing: `make browser` installs it (npm)")
    config = {
        "port": port,
        "client": {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [f"{console}/auth/callback"],
            "post_logout_redirect_uris": [f"{console}/"],
        },
        "accounts": accounts,
    }
    env = {**os.environ, "OIDC_PROVIDER_DIR": str(MODULES), "OIDC_TEST_CONFIG": json.dumps(config)}
    proc = subprocess.Popen(["node", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"the OIDC provider did not start: {out}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
