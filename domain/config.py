"""Per-org configuration: the seed's keys and defaults."""

from typing import Final

import msgspec

from domain.severity import DEFAULT_SEVERITY_MAPPING, Severity, SeverityMapping


class SlaTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mtta_minutes: int
    mttr_minutes: int


def _default_sla() -> dict[Severity, SlaTarget]:
    return {
        "critical": SlaTarget(15, 240),
        "high": SlaTarget(15, 720),
        "medium": SlaTarget(60, 1440),
        "low": SlaTarget(100, 2800),
    }


class OrgConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    severity_mapping: SeverityMapping = DEFAULT_SEVERITY_MAPPING
    sla_config: dict[Severity, SlaTarget] = msgspec.field(default_factory=_default_sla)
    retention_days: int = 90
    auto_close_resolved_after_days: int = 7
    auto_grouping_enabled: bool = False


DEFAULT_CONFIG: Final = OrgConfig()
