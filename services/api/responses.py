"""JSON responses encoded with msgspec (structs, UUIDs and datetimes included)."""

from typing import Any

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json")
