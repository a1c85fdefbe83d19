"""The seed's limits, in one place for the domain and the API's body types."""

from datetime import UTC, datetime
from typing import Final

from domain.errors import InvalidValue

TEXT_MAX: Final = 8192  # summary, conclusion, note content
TAG_MAX_LENGTH: Final = 128
TAGS_MAX: Final = 50
BULK_UPDATE_MAX: Final = 200
MERGE_SOURCES_MAX: Final = 20
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
