"""The seed's limits, in one place for the domain and the API's body types."""

from typing import Final

TEXT_MAX: Final = 8192  # summary, conclusion, note content
TAG_MAX_LENGTH: Final = 128
TAGS_MAX: Final = 50
BULK_UPDATE_MAX: Final = 200
MERGE_SOURCES_MAX: Final = 20
