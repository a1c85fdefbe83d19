"""Every error leaves as JSON with a human-readable message; nothing a client sends yields a 500."""

import logging
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from aiohttp import web

from domain.errors import (
    ConcurrencyError,
    DetectionAlreadyLinked,
    DetectionSuppressed,
    DomainError,
    DuplicateItem,
    InvalidTransition,
    ItemNotFound,
    LimitReached,
    MergeRefused,
    NotPurged,
    OrgUnsubscribed,
    TaskOpen,
    TicketAlreadyExists,
    TicketClosed,
    TicketNotFound,
)
from services.eventstore import postgres as store

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
# The database is unavailable, or busy past the API's lock wait (a projection rebuild holds its
# tables) or statement timeout, or no connection was free in time: the request may succeed later,
# so 503 with Retry-After rather than a 500.
UNAVAILABLE: tuple[type[Exception], ...] = (
    *store.UNAVAILABLE,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
)


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, message, field=field)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, message)


def json_error(
    status: int,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> web.Response:
    body: dict[str, object] = {"error": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return web.Response(
        status=status, body=_encoder.encode(body), content_type="application/json", headers=headers
    )


def status_for(exc: DomainError) -> int:
    if isinstance(exc, TicketNotFound | ItemNotFound):
        return 404
    if isinstance(exc, OrgUnsubscribed):
        return 410
    conflicts = (
        InvalidTransition,
        TicketAlreadyExists,
        DetectionAlreadyLinked,
        TicketClosed,
        DuplicateItem,
        LimitReached,
        NotPurged,
        TaskOpen,
    )
    if isinstance(exc, (*conflicts, ConcurrencyError, MergeRefused)):
        return 409
    return 422


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.message, exc.field, exc.headers)
    except DomainError as exc:
        if isinstance(exc, DetectionSuppressed):  # not an error: kept and counted, and no ticket
            body = {
                "suppressed": True,
                "detection_id": exc.detection_id,
                "suppression_id": str(exc.suppression_id),
            }
            return web.json_response({**body, "reason": str(exc)}, status=202)
        if isinstance(exc, InvalidTransition):
            return json_error(409, str(exc), allowed=list(exc.allowed))
        return json_error(status_for(exc), str(exc), getattr(exc, "field", None))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except UNAVAILABLE as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        return json_error(
            503, "the database is unavailable or busy; retry shortly", None, {"Retry-After": "1"}
        )
    except store.REFUSED_VALUE as exc:  # a value the request's checks let through and the database refused
        log.error("the database refused a value on %s %s: %s", request.method, request.path, exc)
        return json_error(422, f"the database refused a value of this request: {exc}")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")
