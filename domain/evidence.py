"""Investigation evidence on a ticket: entities (IOCs), telemetry references and artifacts."""

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args
from uuid import UUID

import msgspec

from domain.errors import InvalidValue

EntityType = Literal["ip", "domain", "hash", "url", "user", "email", "file", "process", "registry", "other"]
Verdict = Literal["malicious", "suspicious", "benign", "unknown", "informational"]
ENTITY_TYPES: Final = get_args(EntityType)
VERDICTS: Final = get_args(Verdict)
_LOWERED: Final = frozenset({"ip", "domain", "hash", "email"})

Short = Annotated[str, msgspec.Meta(max_length=1024)]
Long = Annotated[str, msgspec.Meta(max_length=8192)]


def normalize_entity_value(entity_type: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidValue("entity_value", "entity_value cannot be empty")
    if entity_type == "ip":
        try:
            return ipaddress.ip_address(value).compressed.lower()
        except ValueError:
            raise InvalidValue("entity_value", f"{value!r} is not an IPv4 or IPv6 address") from None
    if entity_type == "domain":
        value = value.rstrip(".")
    return value.lower() if entity_type in _LOWERED else value


class Entity(msgspec.Struct, frozen=True):
    entity_id: UUID
    entity_type: EntityType
    entity_value: str
    name: str | None = None
    verdict: Verdict = "unknown"
    context: str | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class Telemetry(msgspec.Struct, frozen=True):
    telemetry_id: UUID
    atom: str
    sid: str
    event_type: str | None = None
    event_summary: str | None = None
    verdict: Verdict | None = None
    relevance: str | None = None
    # the full LimaCharlie event, when it was given (at most TELEMETRY_EVENT_MAX bytes of JSON)
    event: dict[str, Any] | None = None


class Artifact(msgspec.Struct, frozen=True):
    """A reference (url, path, hash), or a file uploaded to the ticket: then its name, size,
    media type as sent and SHA-256, under which the evidence store keeps its content."""

    artifact_id: UUID
    artifact_type: str
    description: str | None = None
    verdict: Verdict | None = None
    url: str | None = None
    path: str | None = None
    hash: str | None = None
    name: str | None = None
    size: int | None = None
    media_type: str | None = None
    sha256: str | None = None
