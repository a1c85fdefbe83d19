"""Sample detections in both seed formats, for `publish --samples`, tests and benchmarks."""

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from domain.detections import parse_detection
from domain.errors import DetectionFormatError

CATEGORIES = ("lateral_movement_psexec", "credential_dumping", "suspicious_powershell", "ransomware_note")
EXTRAHOP_TYPES = ("cifs_suspicious_share_access", "ssh_brute_force", "dns_tunnel", "data_exfiltration")


def message_key(oid: str, category: str, sensor: str) -> bytes:
    """`<oid>/<category>/<sensor>`: everything that could group together lands on one partition;
    the org is the part before the first `/` (ExtraHop detections carry no org of their own)."""
    return f"{oid}/{category}/{sensor}".encode()


def limacharlie(oid: str, rng: random.Random, *, ts_ms: int, detect_id: str | None = None) -> dict[str, Any]:
    sid = str(uuid.UUID(int=rng.getrandbits(128) % 50))
    cat = rng.choice(CATEGORIES)
    return {
        "detect_id": detect_id or str(uuid.UUID(int=rng.getrandbits(128))),
        "cat": cat,
        "source": "dr-general",
        "namespace": "general",
        "priority": rng.randint(0, 10),
        "ts": ts_ms,
        "routing": {
            "oid": oid,
            "sid": sid,
            "hostname": f"DESKTOP-{int(sid[-2:], 16):03d}",
            "event_type": "NEW_PROCESS",
            "event_time": ts_ms - 1000,
            "this": uuid.UUID(int=rng.getrandbits(128)).hex,
        },
        "detect": {"event": {"COMMAND_LINE": "psexec.exe \\\\host2 cmd.exe"}},
        "detect_mtd": {"level": "high", "description": "sample", "tags": ["attack.t1021"]},
    }


def extrahop(rng: random.Random, *, ts_ms: int, detection_id: int | None = None) -> dict[str, Any]:
    host = f"host-{rng.randint(1, 50)}"
    return {
        "id": detection_id if detection_id is not None else rng.getrandbits(48),
        "title": "Sample detection",
        "description": f"{host} did something odd",
        "type": rng.choice(EXTRAHOP_TYPES),
        "categories": ["sec.lateral"],
        "mitreTactics": ["TA0008"],
        "mitreTechniques": ["T1021"],
        "riskScore": rng.randint(0, 99),
        "startTime": ts_ms - 60_000,
        "endTime": ts_ms,
        "participants": [
            {"role": "offender", "object_type": "device", "hostname": host, "ipaddr": "192.168.6.20"},
            {"role": "victim", "object_type": "device", "hostname": "corpshare", "ipaddr": "192.168.6.179"},
        ],
        "ticketId": None,
        "status": None,
        "assignee": None,
        "resolution": None,
    }


def key_for(detection: dict[str, Any], oid: str) -> bytes:
    """The partition key from the normalised detection, so that it always agrees with the grouping
    key the ingest worker computes (`oid` is the org of ExtraHop detections)."""
    try:
        d = parse_detection(json.dumps(detection).encode(), key_oid=oid, arrival=datetime.now(UTC))
    except DetectionFormatError:
        return oid.encode()  # not a detection: it will be dead-lettered wherever it lands
    return message_key(d.oid, d.detection_cat, d.sensor_id)


def generate(
    oid: str, count: int, *, seed: int = 0, start_ms: int = 1_763_800_000_000
) -> Iterator[dict[str, Any]]:
    """`count` distinct detections, alternating formats, one second apart."""
    rng = random.Random(seed)
    for i in range(count):
        ts = start_ms + i * 1000
        yield limacharlie(oid, rng, ts_ms=ts) if i % 2 == 0 else extrahop(rng, ts_ms=ts)
