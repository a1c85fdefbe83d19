"""LimaCharlie and ExtraHop detections, told apart by shape and normalised into one record.

Parsing is strict where a wrong value would make a wrong ticket (ids, org, priority range) and
lenient where the seed formats leave fields optional (hostname, sensor, timestamps).
"""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from domain.errors import DetectionFormatError
from domain.limits import TAG_MAX_LENGTH, TAGS_MAX, TEXT_MAX, nul_at

MAX_ID = 256
MAX_TEXT = 1024

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=10)]
SourceFormat = Literal["limacharlie", "extrahop", "manual"]


class DetectionEntities(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Entity values a detection carries, which grouping rules and suppressions may key on (where
    each is read from in either format: docs/noise-control.md, and the parsers below)."""

    user: str | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    ext_ip: str | None = None
    dst_host: str | None = None


ENTITY_KEYS: Final = DetectionEntities.__struct_fields__


class Detection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The normalised detection; field names are the ones the API and the seed use.

    `title`, `description` and `tags` (categories and MITRE ids) are what an ExtraHop detection
    says of itself, over Kafka or through the create-issue door alike; a LimaCharlie detection
    leaves them out (and so do its stored documents: the defaults are not written).
    """

    detection_id: Id
    oid: Id
    detection_cat: Text
    detection_source: Text
    detection_priority: Priority
    sensor_id: Text
    hostname: Text
    detected_at: datetime
    source_format: SourceFormat
    title: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    # Not content: an update of a known detection is told by CONTENT_FIELDS alone, so that digests
    # kept before entities were read still match.
    entities: DetectionEntities | None = None


# The fields an update of a known detection may change (its time and ids never do).
CONTENT_FIELDS: Final = (
    "detection_cat",
    "detection_priority",
    "sensor_id",
    "hostname",
    "title",
    "description",
    "tags",
)


def detection_tags(values: Iterable[object]) -> tuple[str, ...]:
    """Categories and MITRE ids as tags: printable ASCII (what ExtraHop's categories and MITRE ids
    are, and what folds alike in Python and PostgreSQL), trimmed to the tag length,
    case-insensitively distinct, at most TAGS_MAX; anything else is left out rather than refusing
    the detection."""
    tags: dict[str, str] = {}
    for value in values:
        if not isinstance(value, str | int) or isinstance(value, bool):
            continue
        clean = str(value)
        if not (clean.isascii() and clean.isprintable() and len(clean) <= TAG_MAX_LENGTH):  # else cleaned
            clean = "".join(c for c in clean.strip() if c.isprintable())[:TAG_MAX_LENGTH]
        clean = clean.strip()
        if clean and clean.isascii():
            tags.setdefault(clean.casefold(), clean)
    return tuple(tags.values())[:TAGS_MAX]


# --- LimaCharlie wire shape ---------------------------------------------------------------------


class _Routing(msgspec.Struct):
    oid: Id | None = None  # else the message key's org (Kafka) or the route's (API)
    sid: Text = ""
    hostname: Text = ""
    event_time: int | None = None
    int_ip: Any = None  # entity values are taken when they are text, never a reason to refuse
    ext_ip: Any = None


class _LcEvent(msgspec.Struct):
    USER_NAME: Any = None


class _LcDetect(msgspec.Struct):
    event: _LcEvent | None = None


class _LimaCharlie(msgspec.Struct):
    detect_id: Id
    cat: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    routing: _Routing
    source: Text | None = None
    namespace: Text | None = None
    priority: Priority = 0
    ts: int | None = None
    # Only the fast path reads `detect` through this shape; the general path takes the user name
    # from the body leniently (a `detect` of another shape is no reason to refuse a detection).
    detect: _LcDetect | None = None


# --- ExtraHop wire shape ------------------------------------------------------------------------


class _Participant(msgspec.Struct):
    role: str = ""
    hostname: Text | None = None
    ipaddr: Text | None = None
    object_id: int | str | None = None
    username: Any = None


class _ExtraHop(msgspec.Struct):
    id: Annotated[int, msgspec.Meta(ge=0)]
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    riskScore: Annotated[int, msgspec.Meta(ge=0, le=99)]
    participants: list[_Participant] = []
    title: str | None = None
    description: str | None = None
    categories: list[Any] | None = None
    mitreTactics: list[Any] | None = None
    mitreTechniques: list[Any] | None = None
    startTime: int | None = None
    endTime: int | None = None


EXTRAHOP_SOURCE: Final = "extrahop"
_decoder = msgspec.json.Decoder()
_lc_decoder = msgspec.json.Decoder(_LimaCharlie)
_eh_decoder = msgspec.json.Decoder(_ExtraHop)


def _ms_to_datetime(ms: int, field: str) -> datetime:
    # Epoch milliseconds; anything outside years 2000-2200 is a unit mistake, not a detection time.
    if not 946_684_800_000 <= ms <= 7_258_118_400_000:
        raise DetectionFormatError(f"{field} must be epoch milliseconds (got {ms})", "invalid_time")
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def extrahop_priority(risk_score: int) -> int:
    """ExtraHop risk 0-99 scaled onto 0-10, rounding half up (83 -> 8, 99 -> 10)."""
    return (risk_score * 10 + 49) // 99


def _from_limacharlie(raw: dict[str, Any], oid: str | None, arrival: datetime) -> Detection:
    body = raw.get("detect")
    event = body.get("event") if isinstance(body, dict) else None
    user = event.get("USER_NAME") if isinstance(event, dict) else None
    lc = msgspec.convert({k: v for k, v in raw.items() if k != "detect"}, _LimaCharlie)
    return _limacharlie(lc, oid, arrival, user)


def _entity(value: Any) -> str | None:
    """An entity value as text, or None where the detection carries none worth keying on."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:MAX_TEXT] if value and "\x00" not in value else None


def _entities(**values: Any) -> DetectionEntities | None:
    found = {k: v for k, v in ((k, _entity(v)) for k, v in values.items()) if v is not None}
    return DetectionEntities(**found) if found else None


def _org(oid: str | None, where: str) -> str:
    """The detection's org: given by the detection, the message key, the default or the route."""
    if not oid:
        raise DetectionFormatError(
            f"{where} has no org: publish it with the org id as the message key or configure"
            " TICKETING_DEFAULT_OID",
            "no_org",
        )
    if len(oid) > MAX_ID:  # the key's org is not checked by the wire type, as `routing.oid` is
        raise DetectionFormatError(f"the org in the message key is longer than {MAX_ID} characters", "no_org")
    return oid


def _limacharlie(lc: _LimaCharlie, key_oid: str | None, arrival: datetime, user: Any = None) -> Detection:
    oid = _org(lc.routing.oid or key_oid, "LimaCharlie detection without routing.oid")
    if lc.ts is not None:
        detected_at = _ms_to_datetime(lc.ts, "ts")
    elif lc.routing.event_time is not None:
        detected_at = _ms_to_datetime(lc.routing.event_time, "routing.event_time")
    else:
        detected_at = arrival
    return Detection(
        detection_id=lc.detect_id,
        oid=oid,
        detection_cat=lc.cat,
        detection_source=lc.source or lc.namespace or "",
        detection_priority=lc.priority,
        sensor_id=lc.routing.sid,
        hostname=lc.routing.hostname,
        detected_at=detected_at,
        source_format="limacharlie",
        entities=_entities(
            user=user if lc.detect is None or lc.detect.event is None else lc.detect.event.USER_NAME,
            src_ip=lc.routing.int_ip,
            ext_ip=lc.routing.ext_ip,
        ),
    )


def _from_extrahop(raw: dict[str, Any], oid: str | None, arrival: datetime) -> Detection:
    return _extrahop(msgspec.convert(raw, _ExtraHop), oid, arrival)


def _extrahop(eh: _ExtraHop, key_oid: str | None, arrival: datetime) -> Detection:
    oid = _org(key_oid, "ExtraHop detection")
    offender = next((p for p in eh.participants if p.role == "offender"), None)
    victim = next((p for p in eh.participants if p.role == "victim"), None)
    if eh.startTime is not None:
        detected_at = _ms_to_datetime(eh.startTime, "startTime")
    elif eh.endTime is not None:
        detected_at = _ms_to_datetime(eh.endTime, "endTime")
    else:
        detected_at = arrival
    sensor = ""
    hostname = ""
    if offender is not None:
        hostname = offender.hostname or offender.ipaddr or ""
        sensor = str(offender.object_id) if offender.object_id is not None else (offender.ipaddr or hostname)
    return Detection(
        detection_id=str(eh.id),
        oid=oid,
        detection_cat=eh.type,
        detection_source=EXTRAHOP_SOURCE,
        detection_priority=extrahop_priority(eh.riskScore),
        sensor_id=sensor,
        hostname=hostname,
        detected_at=detected_at,
        source_format="extrahop",
        title=_clip(eh.title, MAX_TEXT),
        description=_clip(eh.description, TEXT_MAX),
        tags=detection_tags([*(eh.categories or ()), *(eh.mitreTactics or ()), *(eh.mitreTechniques or ())]),
        entities=_entities(
            user=offender and offender.username,
            src_ip=offender and offender.ipaddr,
            dst_ip=victim and victim.ipaddr,
            dst_host=victim and victim.hostname,
        ),
    )


def _clip(text: str | None, limit: int) -> str | None:
    return text.strip()[:limit] or None if text else None


def parse_detection(payload: bytes, *, key_oid: str | None, arrival: datetime) -> Detection:
    """Parse one message of the detections topic.

    `key_oid` is the org named by the message key, the configured default, or (over the API) the
    ticket's: an ExtraHop detection always takes it, a LimaCharlie one when `routing.oid` is absent.
    Raises DetectionFormatError with a reason that names the offending field.
    """
    detection = _typed(payload, key_oid, arrival)
    if detection is None:
        detection = _untyped(payload, key_oid, arrival)
    # The escape is rare: look only then (or when the message key gave the org).
    if (b"\\u0000" in payload or "\x00" in (key_oid or "")) and (where := nul_at(detection)):
        raise DetectionFormatError(
            f"{where} holds a NUL character (\\u0000), which cannot be stored", "nul_character"
        )
    return detection


def _typed(payload: bytes, key_oid: str | None, arrival: datetime) -> Detection | None:
    """A well-formed detection decoded straight into its wire shape, its unused `detect` body
    skipped instead of built as a dict and converted (the common case, made cheap). None for
    anything else, which the general path then parses and explains; the format is only guessed."""
    if b'"detect_id"' in payload:
        try:
            return _limacharlie(_lc_decoder.decode(payload), key_oid, arrival)
        except _DECLINED:
            pass
    if b'"riskScore"' in payload:
        try:
            return _extrahop(_eh_decoder.decode(payload), key_oid, arrival)
        except _DECLINED:
            pass
    return None


_DECLINED = (msgspec.DecodeError, RecursionError, DetectionFormatError)


def _untyped(payload: bytes, key_oid: str | None, arrival: datetime) -> Detection:
    try:
        raw = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise DetectionFormatError(f"not valid JSON: {exc}", "not_json") from None
    except RecursionError:  # uncaught, it failed the batch on every re-delivery
        raise DetectionFormatError("the JSON nests deeper than the decoder's limit", "not_json") from None
    if not isinstance(raw, dict):
        raise DetectionFormatError(
            f"a detection is a JSON object, got {type(raw).__name__}", "unknown_format"
        )
    return _detection(raw, key_oid, arrival)


def _detection(raw: dict[str, Any], key_oid: str | None, arrival: datetime) -> Detection:
    try:
        if "detect_id" in raw or "routing" in raw:
            return _from_limacharlie(raw, key_oid, arrival)
        if "riskScore" in raw or ("id" in raw and "type" in raw):
            return _from_extrahop(raw, key_oid, arrival)
    except msgspec.ValidationError as exc:
        fmt = "LimaCharlie" if "detect_id" in raw or "routing" in raw else "ExtraHop"
        raise DetectionFormatError(f"invalid {fmt} detection: {exc}") from None
    raise DetectionFormatError(
        "unrecognised detection: expected a LimaCharlie detection (detect_id, cat, routing.oid) "
        "or an ExtraHop detection (id, type, riskScore)",
        "unknown_format",
    )
