"""The seed's limits and what the store can hold, in one place for the domain and the API."""

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from domain.errors import InvalidValue

TEXT_MAX: Final = 8192  # summary, conclusion, note content
TELEMETRY_EVENT_MAX: Final = 256 * 1024  # a full LimaCharlie event kept with its telemetry reference
TAG_MAX_LENGTH: Final = 128
TAGS_MAX: Final = 50
BULK_UPDATE_MAX: Final = 200
MERGE_SOURCES_MAX: Final = 20
LOG_SHARDS_MAX: Final = 256  # the event log's shards (log_layout's CHECK, migration 0036)
EARLIEST_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME: Final = datetime(9999, 1, 1, tzinfo=UTC)


def check_time(field: str, value: datetime | None) -> None:
    """A time a client gives (an IOC's sightings, a report's period) lies in 1970-9998, read as UTC.

    Python takes 0001-01-01T00:00+14:00, but in UTC it is in year 0, which the database driver can
    neither store nor read back: an entity holding it would stop the projector at its event. The
    range also catches unit mistakes, as the detections' own times are checked.
    """
    if value is None:
        return
    utc = value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # naive times are UTC
    if not EARLIEST_TIME <= utc < LATEST_TIME:
        raise InvalidValue(field, f"{field} must lie between 1970-01-01 and 9998-12-31 (UTC)")


def nul_at(value: Any) -> str | None:
    """Where a decoded value (struct, list, dict, string) first holds a NUL character, or None.

    JSON may carry `\\u0000`, but PostgreSQL stores no NUL in text or jsonb: a detection holding one
    failed its whole batch's append, again on every re-delivery. Paths use the wire names
    (`detection.hostname`, `tags[2]`), as the decoder's own errors do. A loop, not recursion: a
    value may nest as deep as its decoder allows.
    """
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        path, v = todo.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return path or "body"
        elif isinstance(v, msgspec.Struct):
            names = zip(v.__struct_fields__, v.__struct_encode_fields__, strict=True)
            todo.extend(reversed([(_join(path, e), getattr(v, f)) for f, e in names]))
        elif isinstance(v, dict):
            for k, x in reversed(v.items()):
                todo += [(_join(path, str(k)), x), (_join(path, str(k)), k)]
        elif isinstance(v, list | tuple | set | frozenset):
            todo.extend(reversed([(f"{path}[{i}]", x) for i, x in enumerate(v)]))
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
