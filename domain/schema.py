"""Versions of the stored event documents, and the upcasters that bring older ones up to date.

Every event is stored with its document's schema version in its metadata (`schema`; absent on
events written before versions were recorded, which are version 1). A change to an event's
document that old documents would not decode under bumps its version here and registers an
upcaster from the previous version: a pure function of the old document to the new one. Stored
events are never rewritten; they are upcast when read.
"""

from collections.abc import Callable
from typing import Any, Final

Document = dict[str, Any]
Upcaster = Callable[[Document], Document]

# Event type -> its current version; a type not named is at version 1.
CURRENT: Final[dict[str, int]] = {}
# (event type, version) -> the upcaster from that version to the next.
UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {}


def schema_version(event_type: str) -> int:
    return CURRENT.get(event_type, 1)


def upcast(event_type: str, version: int, document: Document) -> Document:
    """The document as the current version of its type reads it."""
    current = schema_version(event_type)
    if version > current:
        raise ValueError(f"a {event_type} document of version {version}, newer than this code's {current}")
    while version < current:
        document = UPCASTERS[(event_type, version)](document)
        version += 1
    return document
