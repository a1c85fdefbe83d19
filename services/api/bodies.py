"""JSON request bodies decoded straight into msgspec types; errors name the field (422)."""

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from multidict import MultiDictProxy

from domain.limits import nul_at
from services.api.errors import ApiError, invalid

T = TypeVar("T")
_PATH = re.compile(r"(?:at|in) `\$\.?([^`]*)`")  # "in": a mapping's key
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def field_of(error: msgspec.ValidationError) -> str:
    text = str(error)
    for pattern in (_UNKNOWN, _MISSING):
        if m := pattern.search(text):
            parent = _PATH.search(text)
            prefix = parent.group(1) + "." if parent and parent.group(1) else ""
            return prefix + m.group(1)
    m = _PATH.search(text)
    return m.group(1) if m and m.group(1) else "body"


def decode_body(raw: bytes, type_: type[T]) -> T:
    try:
        value = msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise invalid(field_of(exc), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise invalid("body", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid("body", "the body nests deeper than the decoder's limit") from None
    if b"\\u0000" in raw and (where := nul_at(value)):
        raise invalid(where, f"{where} holds a NUL character (\\u0000), which cannot be stored")
    return value


async def json_body(request: web.Request, type_: type[T]) -> T:
    if request.content_type != "application/json":
        raise ApiError(415, "this route takes a JSON body: send Content-Type: application/json")
    return decode_body(await request.read(), type_)


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def form_body(request: web.Request) -> MultiDictProxy[Any]:
    """A form body (the extension-request route); a malformed one is the client's error, not ours."""
    if request.content_type not in FORM_TYPES:
        raise ApiError(415, "this route takes a form body: application/x-www-form-urlencoded")
    try:
        return await request.post()
    except (ValueError, AssertionError, LookupError, UnicodeDecodeError, web.HTTPException) as exc:
        raise ApiError(400, f"malformed form body: {type(exc).__name__}") from None
