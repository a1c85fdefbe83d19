"""Priority (0-10) to severity, with the seed's default thresholds."""

from typing import Final, Literal

import msgspec

Severity = Literal["critical", "high", "medium", "low"]

SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "high", "medium", "low")
# Sorting and "did it go up" both need an order; higher is more urgent.
SEVERITY_RANK: Final[dict[Severity, int]] = {"low": 1, "medium": 2, "high": 3, "critical": 4}


class SeverityMapping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    critical_min: int = 8
    high_min: int = 5
    medium_min: int = 3


DEFAULT_SEVERITY_MAPPING: Final = SeverityMapping()


def severity_for(priority: int, mapping: SeverityMapping = DEFAULT_SEVERITY_MAPPING) -> Severity:
    if priority >= mapping.critical_min:
        return "critical"
    if priority >= mapping.high_min:
        return "high"
    if priority >= mapping.medium_min:
        return "medium"
    return "low"
