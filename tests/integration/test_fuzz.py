"""schemathesis drives the whole API from its own OpenAPI document: no request may get a 5xx.

Bounded here (make test); `make fuzz` runs the same with many more examples.
"""

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from projections.registry import all_projections
from services.api.app import create_app
from services.api.openapi import DOCUMENT
from services.api.ratelimit import RateLimiter
from services.auth.tokens import PERMISSIONS, TokenService
from services.bootstrap import make_handler
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.integration.support import seed
from tests.integration.test_access_matrix import add_evidence

ORG = "fuzz-org"


def pin_org(doc: dict[str, Any]) -> dict[str, Any]:
    """Point the generated org parameters at the seeded org, so requests reach real tickets. The
    live stream is left out: its answer never ends (its inputs are test_stream.py's)."""
    doc["paths"].pop("/api/v1/stream")
    for ops in doc["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] in ("oid", "oids"):
                    p["schema"] = {"type": "string", "enum": [ORG]}
    for name in ("BulkUpdateBody", "MergeBody", "ExtensionForm"):
        doc["components"]["schemas"][name]["properties"]["oid"] = {"type": "string", "enum": [ORG]}
    return doc


async def test_api_survives_fuzzing(pool: db.Pool, tokens: TokenService, tmp_path: Path) -> None:
    await seed(pool, 5, oid=ORG)
    await add_evidence(pool, ORG)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    app = create_app(pool, make_handler(), tokens, RateLimiter(100_000, 100_000))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        base = f"http://127.0.0.1:{server.port}"
        schema = tmp_path / "openapi.json"
        schema.write_text(json.dumps(pin_org(app[DOCUMENT])))
        token = tokens.mint("fuzzer@example.com", {ORG: list(PERMISSIONS)}, ttl_s=3600)
        examples = os.environ.get("TICKETING_FUZZ_EXAMPLES", "10")
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"), "run", str(schema), "--url", base,
            "--header", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
            "--max-examples", examples, "--seed", os.environ.get("TICKETING_FUZZ_SEED", "7"), "--workers", "1", "--no-shrink",
            "--request-timeout", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        out, _ = await proc.communicate()
    finally:
        await server.close()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    cases = re.search(r"generated, (\d+) passed", text)
    assert cases and int(cases.group(1)) >= 200, text[-2000:]  # it really exercised the API
