"""`DELETE /api/v1/orgs/{oid}`: an operator unsubscribes an org, deleting all its ticket data;
`POST /api/v1/orgs/{oid}/subscription` takes it in again."""

from pathlib import Path
from typing import Final

from aiohttp import web

from services.api.auth import principal
from services.api.context import POOL
from services.api.databases import pool_of
from services.api.responses import json_response
from services.commands.org_purge import purge_org, resubscribe_org
from services.evidence.store import EvidenceStore

ARCHIVE_DIR: Final = web.AppKey("archive_dir", Path)
EVIDENCE: Final = web.AppKey[EvidenceStore]("evidence")  # uploaded artifact files


async def purge(request: web.Request) -> web.Response:
    """Idempotent: asking again answers the tombstone of the first purge (and finishes a purge that
    was interrupted)."""
    tombstone = await purge_org(
        pool_of(request),
        request.match_info["oid"],
        principal(request).subject,
        request.app[ARCHIVE_DIR],
        evidence=request.app[EVIDENCE],
        credentials=request.app[POOL],  # tokens and API keys are on the home database
    )
    return json_response(tombstone)


async def resubscribe(request: web.Request) -> web.Response:
    oid = request.match_info["oid"]
    tombstone = await resubscribe_org(pool_of(request), oid, principal(request).subject)
    return json_response(tombstone, status=201)
