"""Per-org configuration: the seed's keys and defaults, plus grouping controls, validated as a whole."""

import re
import urllib.parse
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from domain.errors import InvalidValue
from domain.escalation import EscalationPolicies, validate_policies
from domain.fingerprints import fingerprint
from domain.notifications import Notifications, validate_notifications
from domain.roles import RoleMappings
from domain.routing import Routing
from domain.rules import GroupingRule
from domain.severity import DEFAULT_SEVERITY_MAPPING, SEVERITIES, Severity, SeverityMapping
from domain.tasks import MAX_TASK_TEMPLATES, TaskTemplate

Minutes = Annotated[int, msgspec.Meta(ge=1, le=525_600)]  # up to a year
GroupingField = Literal["category", "sensor", "hostname", "source"]
KeyFields = Annotated[list[GroupingField], msgspec.Meta(min_length=1, max_length=4)]
# http(s), printable ASCII without spaces (anything else percent-encoded), as a URL is sent
HttpUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[!-~]+$")]
ExternalTicketTemplate = Annotated[
    str, msgspec.Meta(max_length=2048, pattern=r"^https?://[!-~]*\$ticket_id[!-~]*$")
]


class SlaTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mtta_minutes: Minutes
    mttr_minutes: Minutes


def _default_sla() -> dict[Severity, SlaTarget]:
    return {
        "critical": SlaTarget(15, 240),
        "high": SlaTarget(15, 720),
        "medium": SlaTarget(60, 1440),
        "low": SlaTarget(100, 2800),
    }


class Recurrence(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a detection does whose group key matches a ticket resolved within the window:
    nothing special (`off`, the seed's), reopen that ticket, or open a new one linked to it."""

    policy: Literal["off", "reopen", "link"] = "off"
    window_minutes: Annotated[int, msgspec.Meta(ge=1, le=43_200)] = 1440


class RuleTuning(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When the rule report marks a detection rule `needs_tuning`: its tickets' false-positive rate
    is at least `false_positive_rate` over at least `min_classified` classified tickets."""

    false_positive_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.8
    min_classified: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10


MAX_GROUPING_RULES: Final = 100


class ExtraHopTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The appliance this org's ExtraHop detections are tracked on. Its API key is a secret and
    never part of the configuration (which is recorded in the event store and shown by GET):
    the API keeps it apart and records here only its fingerprint, to show that one is set."""

    url: HttpUrl  # the appliance's base URL: PATCH {url}/api/v1/detections/{id}
    enabled: bool = True
    api_key_fingerprint: str | None = None


class OrgConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    severity_mapping: SeverityMapping = DEFAULT_SEVERITY_MAPPING
    sla_config: dict[Severity, SlaTarget] = msgspec.field(default_factory=_default_sla)
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 90
    auto_close_resolved_after_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] = 7  # 0: never
    # A running SLA clock that has used this share of its budget records `sla_at_risk` (once).
    sla_at_risk_percent: Annotated[int, msgspec.Meta(ge=1, le=99)] = 75
    auto_grouping_enabled: bool = False
    grouping_window_minutes: Annotated[int, msgspec.Meta(ge=1, le=10_080)] = 60
    grouping_max_detections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    grouping_key_fields: KeyFields = msgspec.field(default_factory=lambda: ["category", "sensor"])
    # Ordered: the first rule that matches a detection groups it; one matching none is grouped by
    # the keys above when auto_grouping_enabled (docs/noise-control.md).
    grouping_rules: Annotated[tuple[GroupingRule, ...], msgspec.Meta(max_length=MAX_GROUPING_RULES)] = ()
    recurrence: Recurrence = Recurrence()
    rule_tuning: RuleTuning = RuleTuning()
    # What people call the org: shown wherever the console shows its id (the id stays the key).
    org_name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")] | None
    ) = None
    # Who a new ticket without an assignee, or one escalated to a group, goes to (docs/routing.md).
    routing: Routing = Routing()
    # Who is told what, on which channels (docs/notifications.md); webhook URLs are write-only.
    notifications: Notifications = Notifications()
    # Per severity, the steps taken while nobody acknowledges a ticket (docs/escalation.md).
    escalation_policies: EscalationPolicies = msgspec.field(default_factory=dict)
    # The identity provider's group names -> the permissions their members hold in this org, for
    # users who sign in through single sign-on (docs/access-control.md).
    role_mappings: RoleMappings = msgspec.field(default_factory=dict)
    # Every template that matches a new ticket adds its tasks to it (docs/tasks.md).
    task_templates: Annotated[tuple[TaskTemplate, ...], msgspec.Meta(max_length=MAX_TASK_TEMPLATES)] = ()
    webhook_url: HttpUrl | None = None  # the org's webhook endpoint: every ticket event, POSTed
    # The ExtraHop seed's URL template: where a ticket's external issue lives, `$ticket_id` in it.
    external_ticket_url_template: ExternalTicketTemplate | None = None
    # Jira-style issue keys answered to a work-tracker's create-issue call: <prefix>-<ticket number>.
    ticket_key_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9_]{0,9}$")] = "SOC"
    extrahop: ExtraHopTarget | None = None  # detection tracking back to the org's appliance
    # What one ticket may hold: analysts' and integrations' additions are refused beyond these.
    max_notes_per_ticket: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    max_entities_per_ticket: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    max_artifacts_per_ticket: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    max_tasks_per_ticket: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    # The largest evidence file one upload may bring (413 beyond it): 512 MiB, up to 64 GiB.
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 << 30)] = 512 << 20


DEFAULT_CONFIG: Final = OrgConfig()


class ConfigUpdated(msgspec.Struct, frozen=True, tag="config_updated", tag_field="type"):
    """Recorded on the org's configuration stream: configuration changes are audited too."""

    ts: datetime
    oid: str
    old: OrgConfig
    new: OrgConfig
    changed: tuple[str, ...]


def check_http_url(field: str, url: str | None) -> None:
    """A URL the service will call or link to must parse, with a host: the pattern of HttpUrl lets
    through text such as `http://[` that no client can use."""
    if url is None:
        return
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidValue(field, f"{field} is not a usable URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidValue(field, f"{field} needs an http(s) URL with a host")


def validate(config: OrgConfig) -> OrgConfig:
    m = config.severity_mapping
    if not 0 <= m.medium_min < m.high_min < m.critical_min <= 10:
        raise InvalidValue(
            "severity_mapping", "thresholds must satisfy 0 <= medium_min < high_min < critical_min <= 10"
        )
    missing = [s for s in SEVERITIES if s not in config.sla_config]
    if missing:
        raise InvalidValue("sla_config", f"sla_config needs a target for {', '.join(missing)}")
    if len(set(config.grouping_key_fields)) != len(config.grouping_key_fields):
        raise InvalidValue("grouping_key_fields", "a grouping key field is named twice")
    validate_notifications(config.notifications)
    validate_policies(config.escalation_policies, config.notifications)
    check_http_url("webhook_url", config.webhook_url)
    check_http_url("extrahop.url", config.extrahop.url if config.extrahop else None)
    template = config.external_ticket_url_template
    check_http_url("external_ticket_url_template", template.replace("$ticket_id", "1") if template else None)
    names: set[str] = set()
    for i, rule in enumerate(config.grouping_rules):
        at = f"grouping_rules[{i}]"
        if rule.name.casefold() in names:
            raise InvalidValue(f"{at}.name", f"two grouping rules are named {rule.name!r}")
        names.add(rule.name.casefold())
        if len(set(rule.key)) != len(rule.key):
            raise InvalidValue(f"{at}.key", "a key field is named twice")
        if rule.match.priority_min > rule.match.priority_max:
            raise InvalidValue(f"{at}.match.priority_min", "priority_min is above priority_max")
        if rule.max_span_minutes is not None:
            if rule.window != "sliding":
                raise InvalidValue(f"{at}.max_span_minutes", "only a sliding window has a maximum span")
            if rule.max_span_minutes < rule.window_minutes:
                raise InvalidValue(f"{at}.max_span_minutes", "the maximum span is shorter than the window")
    return config


def _merge(base: Any, patch: Any, top: bool = True) -> Any:
    """A JSON merge patch (RFC 7386) below the top level: null removes a key of a mapping (how a
    group leaves role_mappings); at the top, null is the value (an optional setting cleared)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            if v is None and not top:
                merged.pop(k, None)
            else:
                merged[k] = _merge(base[k], v, False) if k in base else v
        return merged
    return patch


def apply_patch(current: OrgConfig, patch: dict[str, Any]) -> OrgConfig:
    """A partial configuration over the current one: keys left out keep their value, at any depth."""
    merged = _merge(msgspec.to_builtins(current), patch)
    try:
        return validate(msgspec.convert(merged, OrgConfig))
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in text else "config"
        for says in ("unknown field `", "missing required field `"):
            if says in text:
                name = text.split(says, 1)[1].split("`", 1)[0]
                field = f"{field}.{name}" if field != "config" else name
        raise InvalidValue(field, text) from None


def split_api_key(patch: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The patch as the configuration may hold it, and the ExtraHop API key it carried (None:
    none given, the stored one stays). The key is replaced by its fingerprint, so that setting or
    rotating it is audited like any change without the secret ever reaching the event store."""
    target = patch.get("extrahop")
    if not isinstance(target, dict):
        return patch, None
    if "api_key_fingerprint" in target:
        raise InvalidValue("extrahop.api_key_fingerprint", "set by the service from extrahop.api_key")
    if "api_key" not in target:
        return patch, None
    key = target["api_key"]
    if not isinstance(key, str) or not re.fullmatch(r"[!-~]{8,512}", key):
        raise InvalidValue("extrahop.api_key", "an API key is 8 to 512 printable characters without spaces")
    rest = {k: v for k, v in target.items() if k != "api_key"}
    return {**patch, "extrahop": {**rest, "api_key_fingerprint": fingerprint(key)}}, key


def decide_config(oid: str, current: OrgConfig, new: OrgConfig, now: datetime) -> list[ConfigUpdated]:
    old_b, new_b = msgspec.to_builtins(current), msgspec.to_builtins(new)
    changed = tuple(k for k in new_b if old_b.get(k) != new_b[k])
    return [ConfigUpdated(ts=now, oid=oid, old=current, new=new, changed=changed)] if changed else []
